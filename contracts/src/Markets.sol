// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {TestToken} from "./TestToken.sol";

/// A USDC-like token: 6 decimals, open minting (a test asset).
contract MockUSDC is TestToken {
    function name() external pure override returns (string memory) {
        return "USD Coin (test)";
    }

    function symbol() external pure override returns (string memory) {
        return "USDC";
    }
}

interface IERC20 {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// Conditional tokens with the Gnosis CTF 1.0 id semantics:
/// conditionId = keccak256(oracle, questionId, outcomeSlotCount);
/// collectionId = parentCollectionId + keccak256(conditionId, indexSet) (mod 2^256);
/// positionId = keccak256(collateralToken, collectionId). Positions are ERC-1155-like balances.
/// Splits and merges are over full partitions of the outcome slots, from collateral.
contract ConditionalTokens {
    mapping(bytes32 => uint256[]) public payoutNumerators;
    mapping(bytes32 => uint256) public payoutDenominator;
    mapping(uint256 => mapping(address => uint256)) public balanceOf;
    mapping(address => mapping(address => bool)) public isApprovedForAll;

    event ConditionPreparation(bytes32 indexed conditionId, address indexed oracle, bytes32 indexed questionId, uint256 outcomeSlotCount);
    event ConditionResolution(bytes32 indexed conditionId, address indexed oracle, bytes32 indexed questionId, uint256[] payoutNumerators);
    event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);
    event ApprovalForAll(address indexed owner, address indexed operator, bool approved);

    function getConditionId(address oracle, bytes32 questionId, uint256 outcomeSlotCount) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(oracle, questionId, outcomeSlotCount));
    }

    function getCollectionId(bytes32 parentCollectionId, bytes32 conditionId, uint256 indexSet) public pure returns (bytes32) {
        unchecked {
            return bytes32(uint256(parentCollectionId) + uint256(keccak256(abi.encodePacked(conditionId, indexSet))));
        }
    }

    function getPositionId(address collateralToken, bytes32 collectionId) public pure returns (uint256) {
        return uint256(keccak256(abi.encodePacked(collateralToken, collectionId)));
    }

    function getOutcomeSlotCount(bytes32 conditionId) public view returns (uint256) {
        return payoutNumerators[conditionId].length;
    }

    function prepareCondition(address oracle, bytes32 questionId, uint256 outcomeSlotCount) external {
        require(outcomeSlotCount > 1 && outcomeSlotCount <= 256, "slots");
        bytes32 conditionId = getConditionId(oracle, questionId, outcomeSlotCount);
        require(payoutNumerators[conditionId].length == 0, "prepared");
        payoutNumerators[conditionId] = new uint256[](outcomeSlotCount);
        emit ConditionPreparation(conditionId, oracle, questionId, outcomeSlotCount);
    }

    function reportPayouts(bytes32 questionId, uint256[] calldata payouts) external {
        bytes32 conditionId = getConditionId(msg.sender, questionId, payouts.length);
        require(payoutNumerators[conditionId].length == payouts.length, "condition");
        require(payoutDenominator[conditionId] == 0, "resolved");
        uint256 den;
        for (uint256 i = 0; i < payouts.length; i++) {
            den += payouts[i];
            payoutNumerators[conditionId][i] = payouts[i];
        }
        require(den > 0, "payouts");
        payoutDenominator[conditionId] = den;
        emit ConditionResolution(conditionId, msg.sender, questionId, payouts);
    }

    function setApprovalForAll(address operator, bool approved) external {
        isApprovedForAll[msg.sender][operator] = approved;
        emit ApprovalForAll(msg.sender, operator, approved);
    }

    function safeTransferFrom(address from, address to, uint256 id, uint256 value, bytes calldata) external {
        require(from == msg.sender || isApprovedForAll[from][msg.sender], "not approved");
        _move(from, to, id, value);
    }

    function _move(address from, address to, uint256 id, uint256 value) internal {
        require(balanceOf[id][from] >= value, "position balance");
        balanceOf[id][from] -= value;
        balanceOf[id][to] += value;
        emit TransferSingle(msg.sender, from, to, id, value);
    }

    function _fullPartition(bytes32 conditionId, uint256[] calldata partition) internal view {
        uint256 slots = payoutNumerators[conditionId].length;
        require(slots > 0, "condition");
        uint256 full = (1 << slots) - 1;
        uint256 seen;
        for (uint256 i = 0; i < partition.length; i++) {
            require(partition[i] > 0 && partition[i] <= full && seen & partition[i] == 0, "partition");
            seen |= partition[i];
        }
        require(seen == full, "partition must be full");
    }

    /// Collateral -> one position per index set of a full partition (for `to`, paid by msg.sender).
    function splitPositionFor(address to, address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
                              uint256[] calldata partition, uint256 amount) public {
        require(parentCollectionId == bytes32(0), "nested splits not supported");
        _fullPartition(conditionId, partition);
        require(IERC20(collateralToken).transferFrom(msg.sender, address(this), amount), "collateral");
        for (uint256 i = 0; i < partition.length; i++) {
            uint256 id = getPositionId(collateralToken, getCollectionId(parentCollectionId, conditionId, partition[i]));
            balanceOf[id][to] += amount;
            emit TransferSingle(msg.sender, address(0), to, id, amount);
        }
    }

    function splitPosition(address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
                           uint256[] calldata partition, uint256 amount) external {
        splitPositionFor(msg.sender, collateralToken, parentCollectionId, conditionId, partition, amount);
    }

    /// One position of every index set of a full partition -> collateral (to msg.sender).
    function mergePositions(address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
                            uint256[] calldata partition, uint256 amount) external {
        require(parentCollectionId == bytes32(0), "nested merges not supported");
        _fullPartition(conditionId, partition);
        for (uint256 i = 0; i < partition.length; i++) {
            uint256 id = getPositionId(collateralToken, getCollectionId(parentCollectionId, conditionId, partition[i]));
            require(balanceOf[id][msg.sender] >= amount, "position balance");
            balanceOf[id][msg.sender] -= amount;
            emit TransferSingle(msg.sender, msg.sender, address(0), id, amount);
        }
        require(IERC20(collateralToken).transfer(msg.sender, amount), "collateral");
    }

    /// Redeem `owner`'s positions of a resolved condition; pays `to`. By the owner or an approved operator.
    function redeemPositionsFor(address owner, address to, address collateralToken, bytes32 parentCollectionId,
                                bytes32 conditionId, uint256[] calldata indexSets) public returns (uint256 payout) {
        require(owner == msg.sender || isApprovedForAll[owner][msg.sender], "not approved");
        require(parentCollectionId == bytes32(0), "nested positions not supported");
        uint256 den = payoutDenominator[conditionId];
        require(den > 0, "not resolved");
        uint256[] storage nums = payoutNumerators[conditionId];
        for (uint256 i = 0; i < indexSets.length; i++) {
            uint256 id = getPositionId(collateralToken, getCollectionId(parentCollectionId, conditionId, indexSets[i]));
            uint256 amount = balanceOf[id][owner];
            if (amount == 0) continue;
            uint256 num;
            for (uint256 j = 0; j < nums.length; j++) {
                if (indexSets[i] & (1 << j) != 0) num += nums[j];
            }
            payout += amount * num / den;
            balanceOf[id][owner] = 0;
            emit TransferSingle(msg.sender, owner, address(0), id, amount);
        }
        if (payout > 0) require(IERC20(collateralToken).transfer(to, payout), "payout");
    }

    function redeemPositions(address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
                             uint256[] calldata indexSets) external returns (uint256) {
        return redeemPositionsFor(msg.sender, msg.sender, collateralToken, parentCollectionId, conditionId, indexSets);
    }
}

interface IReceiver {
    function onReport(bytes calldata metadata, bytes calldata report) external;
}

/// Report forwarder: delivers a report to its receiver when it carries the DON's signature over
/// keccak256(abi.encode(receiver, metadata, report)) (EIP-191), once per report.
contract ReportForwarder {
    address public immutable DON;
    mapping(bytes32 => bool) public delivered;

    event ReportProcessed(address indexed receiver, bytes32 indexed reportId);
    error InvalidDonSignature();
    error AlreadyDelivered();

    constructor(address don) {
        DON = don;
    }

    function report(address receiver, bytes calldata metadata, bytes calldata rawReport, bytes calldata signature) external {
        bytes32 reportId = keccak256(abi.encode(receiver, metadata, rawReport));
        if (delivered[reportId]) revert AlreadyDelivered();
        bytes32 digest = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", reportId));
        if (Sigs.recover(digest, signature) != DON) revert InvalidDonSignature();
        delivered[reportId] = true;
        IReceiver(receiver).onReport(metadata, rawReport);
        emit ReportProcessed(receiver, reportId);
    }
}

library Sigs {
    function recover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
        if (v < 27) v += 27;
        return ecrecover(digest, v, r, s);
    }
}
