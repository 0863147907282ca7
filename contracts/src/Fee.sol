// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// The protocol fee (basis points) and who receives it: the owner (the SDK's Fee).
contract Fee {
    uint16 public FEE;
    address public owner;

    event FeeUpdated(uint16 fee);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error Unauthorized();
    error FeeTooHigh();

    constructor(address feeRecipient, uint16 fee) {
        _setFee(fee);
        owner = feeRecipient;
        emit OwnershipTransferred(address(0), feeRecipient);
    }

    function FEE_RECIPIENT() external view returns (address) {
        return owner;
    }

    function updateFee(uint16 newFee) external {
        if (msg.sender != owner) revert Unauthorized();
        _setFee(newFee);
    }

    function transferOwnership(address newOwner) external {
        if (msg.sender != owner) revert Unauthorized();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// The Coordinator charges the fee twice (consumer side and node side), so above 50% a
    /// payment could not cover it.
    function _setFee(uint16 fee) internal {
        if (fee > 5000) revert FeeTooHigh();
        FEE = fee;
        emit FeeUpdated(fee);
    }
}
