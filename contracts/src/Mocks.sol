// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Registry} from "./Registry.sol";
import {TestToken} from "./TestToken.sol";
import {Coordinator, IVerifier} from "./Coordinator.sol";

/// An ERC-20 with 6 decimals that anyone may mint: test and devnet payments only.
contract MockToken is TestToken {
    function name() external pure override returns (string memory) {
        return "Mock Token";
    }

    function symbol() external pure override returns (string memory) {
        return "MOCK";
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
