// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ConditionalTokens, IReceiver, Sigs} from "./Markets.sol";

interface IToken {
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function approve(address spender, uint256 amount) external returns (bool);
}

/// The market factory of seed 001 ("Sub0"): markets are created, staked on, redeemed and
/// resolved through DON reports delivered by the forwarder. Report = abi.encode(uint8 kind, bytes body):
/// 0x00 createMarket, 0x02 stake, 0x03 redeem, 0x04 resolve.
contract Sub0 is IReceiver {
    struct Market {
        string question;
        address creator;
        address oracle;
        bytes32 conditionId;
        uint256 outcomeSlotCount;
        uint64 createdAt;
        uint64 closesAt;
        uint8 oracleType;
        uint8 marketType;
        bool resolved;
    }

    bytes32 public constant REDEEM_TYPEHASH = keccak256(
        "Redeem(address owner,bytes32 conditionId,uint256[] indexSets,address token,uint256 deadline,uint256 nonce)"
    );

    address public immutable FORWARDER;
    ConditionalTokens public immutable CT;
    mapping(bytes32 => Market) internal markets;
    mapping(address => uint256) public marketNonce;
    mapping(address => uint256) public redeemNonces;

    event MarketCreated(bytes32 indexed questionId, bytes32 indexed conditionId, address indexed creator, string question);
    event Staked(bytes32 indexed questionId, address indexed owner, uint256 amount);
    event Redeemed(bytes32 indexed conditionId, address indexed owner, uint256 payout);
    event Resolved(bytes32 indexed questionId, uint256[] payouts);

    error NotForwarder();
    error UnknownMarket();
    error Expired();
    error BadNonce();
    error BadSignature();
    error UnknownReport();

    constructor(address forwarder, address ct) {
        FORWARDER = forwarder;
        CT = ConditionalTokens(ct);
    }

    function questionIdFor(address creator, string memory question, uint256 outcomeSlotCount, uint256 nonce)
        public pure returns (bytes32)
    {
        return keccak256(abi.encode(creator, question, outcomeSlotCount, nonce));
    }

    function getMarket(bytes32 questionId) external view returns (Market memory) {
        return markets[questionId];
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("Sub0"), keccak256("1"), block.chainid, address(this)));
    }

    function onReport(bytes calldata, bytes calldata report) external {
        if (msg.sender != FORWARDER) revert NotForwarder();
        (uint8 kind, bytes memory body) = abi.decode(report, (uint8, bytes));
        if (kind == 0x00) _create(body);
        else if (kind == 0x02) _stake(body);
        else if (kind == 0x03) _redeem(body);
        else if (kind == 0x04) _resolve(body);
        else revert UnknownReport();
    }

    function _create(bytes memory body) internal {
        (string memory question, address oracle, uint64 duration, uint256 slots, uint8 oracleType, uint8 marketType,
         address creator) = abi.decode(body, (string, address, uint64, uint256, uint8, uint8, address));
        bytes32 questionId = questionIdFor(creator, question, slots, marketNonce[creator]++);
        CT.prepareCondition(address(this), questionId, slots);
        bytes32 conditionId = CT.getConditionId(address(this), questionId, slots);
        markets[questionId] = Market(question, creator, oracle, conditionId, slots, uint64(block.timestamp),
                                     uint64(block.timestamp) + duration, oracleType, marketType, false);
        emit MarketCreated(questionId, conditionId, creator, question);
    }

    function _stake(bytes memory body) internal {
        (bytes32 questionId, bytes32 parent, uint256[] memory partition, address token, uint256 amount, address owner) =
            abi.decode(body, (bytes32, bytes32, uint256[], address, uint256, address));
        Market storage m = markets[questionId];
        if (m.creator == address(0)) revert UnknownMarket();
        require(IToken(token).transferFrom(owner, address(this), amount), "stake transfer");
        IToken(token).approve(address(CT), amount);
        this.splitFor(owner, token, parent, m.conditionId, partition, amount);
        emit Staked(questionId, owner, amount);
    }

    /// External so memory arrays become calldata for the CT call (only callable by itself).
    function splitFor(address owner, address token, bytes32 parent, bytes32 conditionId, uint256[] calldata partition,
                      uint256 amount) external {
        require(msg.sender == address(this), "internal");
        CT.splitPositionFor(owner, token, parent, conditionId, partition, amount);
    }

    function _redeem(bytes memory body) internal {
        (bytes32 parent, bytes32 conditionId, uint256[] memory indexSets, address token, address owner,
         uint256 deadline, uint256 nonce, bytes memory signature) =
            abi.decode(body, (bytes32, bytes32, uint256[], address, address, uint256, uint256, bytes));
        if (block.timestamp > deadline) revert Expired();
        if (nonce != redeemNonces[owner]) revert BadNonce();
        bytes32 structHash = keccak256(abi.encode(REDEEM_TYPEHASH, owner, conditionId,
            keccak256(abi.encodePacked(indexSets)), token, deadline, nonce));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
        if (Sigs.recover(digest, signature) != owner) revert BadSignature();
        redeemNonces[owner] = nonce + 1;
        uint256 payout = this.redeemFor(owner, token, parent, conditionId, indexSets);
        emit Redeemed(conditionId, owner, payout);
    }

    function redeemFor(address owner, address token, bytes32 parent, bytes32 conditionId, uint256[] calldata indexSets)
        external returns (uint256)
    {
        require(msg.sender == address(this), "internal");
        return CT.redeemPositionsFor(owner, owner, token, parent, conditionId, indexSets);
    }

    function _resolve(bytes memory body) internal {
        (bytes32 questionId, uint256[] memory payouts) = abi.decode(body, (bytes32, uint256[]));
        Market storage m = markets[questionId];
        if (m.creator == address(0)) revert UnknownMarket();
        m.resolved = true;
        this.report(questionId, payouts);
        emit Resolved(questionId, payouts);
    }

    function report(bytes32 questionId, uint256[] calldata payouts) external {
        require(msg.sender == address(this), "internal");
        CT.reportPayouts(questionId, payouts);
    }
}
