// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Registry} from "./Registry.sol";
import {Coordinator, IVerifier} from "./Coordinator.sol";

/// An ERC-20 with 6 decimals that anyone may mint: test and devnet payments only.
contract MockToken {
    string public constant name = "Mock Token";
    string public constant symbol = "MOCK";
    uint8 public constant decimals = 6;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= amount, "allowance");
        if (allowed != type(uint256).max) allowance[from][msg.sender] = allowed - amount;
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) internal {
        require(balanceOf[from] >= amount, "balance");
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}

/// A verifier that answers at once, with the validity set beforehand (default valid), or, when
/// deferred, only when told to (`answer`): test and devnet only. It is its own wallet and
/// remembers the last proof it was asked about.
contract MockVerifier is IVerifier {
    Coordinator public immutable COORDINATOR;
    mapping(address => uint256) public fee;
    mapping(address => bool) public isSupportedToken;
    bool public nextValidity = true;
    bytes public lastProof;
    bool public deferred;

    error NotCoordinator();

    constructor(Registry registry) {
        COORDINATOR = Coordinator(registry.COORDINATOR());
    }

    receive() external payable {}

    function getWallet() external view returns (address) {
        return address(this);
    }

    function updateFee(address token, uint256 amount) external {
        fee[token] = amount;
    }

    function updateSupportedToken(address token, bool supported) external {
        isSupportedToken[token] = supported;
    }

    function setNextValidity(bool valid) external {
        nextValidity = valid;
    }

    function setDeferred(bool value) external {
        deferred = value;
    }

    function answer(uint32 subscriptionId, uint32 interval, address node, bool valid) external {
        COORDINATOR.finalizeProofVerification(subscriptionId, interval, node, valid);
    }

    function requestProofVerification(uint32 subscriptionId, uint32 interval, address node, bytes calldata proof)
        external
    {
        if (msg.sender != address(COORDINATOR)) revert NotCoordinator();
        lastProof = proof;
        if (!deferred) COORDINATOR.finalizeProofVerification(subscriptionId, interval, node, nextValidity);
    }
}
