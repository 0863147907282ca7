// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ConditionalTokens, IReceiver, Sigs} from "./Markets.sol";
import {Sub0} from "./Sub0.sol";

interface IUSDC {
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function transfer(address to, uint256 amount) external returns (bool);
    function approve(address spender, uint256 amount) external returns (bool);
}

/// LMSR market maker of seed 001. Prices are computed off chain by the DON and signed as a
/// DONQuote; a trade executes only with the user's UserTrade signature and the DON's quote, with
/// the user's nonce for that market and before both deadlines. Shares have 18 decimals; one
/// share pays 1 USDC (6 decimals) when its outcome wins, so 1e12 share units = 1 position unit.
/// Reports (from the forwarder): 0x01 seed(questionId, amountUsdc, b), 0x05 executeTrade(...).
contract PredictionVault is IReceiver {
    struct Trade {
        bytes32 marketId;
        uint256 outcomeIndex;
        bool buy;
        uint256 quantity;
        uint256 tradeCostUsdc;
        uint256 maxCostUsdc;
        address user;
        uint256 nonce;
        uint256 deadline;
        bytes userSignature;
        bytes donSignature;
    }

    bytes32 public constant USER_TRADE_TYPEHASH = keccak256(
        "UserTrade(bytes32 marketId,uint256 outcomeIndex,bool buy,uint256 quantity,uint256 maxCostUsdc,uint256 nonce,uint256 deadline)"
    );
    bytes32 public constant DON_QUOTE_TYPEHASH = keccak256(
        "DONQuote(bytes32 marketId,uint256 outcomeIndex,bool buy,uint256 quantity,uint256 tradeCostUsdc,address user,uint256 nonce,uint256 deadline)"
    );
    uint256 public constant SHARE_TO_POSITION = 1e12;

    address public immutable FORWARDER;
    address public immutable DON;
    ConditionalTokens public immutable CT;
    Sub0 public immutable SUB0;
    IUSDC public immutable USDC;

    mapping(bytes32 => int256[]) internal shares; // outstanding shares per outcome (18 decimals)
    mapping(bytes32 => uint256) public liquidity; // b, in share units (18 decimals)
    mapping(bytes32 => uint256) public seeded; // USDC put in by seeding
    mapping(address => mapping(bytes32 => uint256)) public nonces;

    event Seeded(bytes32 indexed marketId, uint256 amountUsdc, uint256 b);
    event TradeExecuted(bytes32 indexed marketId, address indexed user, uint256 outcomeIndex, bool buy, uint256 quantity,
                        uint256 costUsdc, uint256 nonce);

    error NotForwarder();
    error UnknownMarket();
    error Expired();
    error BadNonce();
    error BadUserSignature();
    error BadDonSignature();
    error CostAboveMax();
    error NotSeeded();
    error UnknownReport();

    constructor(address forwarder, address don, address ct, address sub0, address usdc) {
        FORWARDER = forwarder;
        DON = don;
        CT = ConditionalTokens(ct);
        SUB0 = Sub0(sub0);
        USDC = IUSDC(usdc);
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("PredictionVault"), keccak256("1"), block.chainid, address(this)));
    }

    function getShares(bytes32 marketId) external view returns (int256[] memory) {
        return shares[marketId];
    }

    function onReport(bytes calldata, bytes calldata report) external {
        if (msg.sender != FORWARDER) revert NotForwarder();
        (uint8 kind, bytes memory body) = abi.decode(report, (uint8, bytes));
        if (kind == 0x01) {
            (bytes32 marketId, uint256 amount, uint256 b) = abi.decode(body, (bytes32, uint256, uint256));
            _seed(marketId, amount, b);
        } else if (kind == 0x05) {
            _execute(abi.decode(body, (Trade)));
        } else {
            revert UnknownReport();
        }
    }

    function _partition(uint256 slots) internal pure returns (uint256[] memory p) {
        p = new uint256[](slots);
        for (uint256 i = 0; i < slots; i++) p[i] = 1 << i;
    }

    function _market(bytes32 marketId) internal view returns (bytes32 conditionId, uint256 slots) {
        Sub0.Market memory m = SUB0.getMarket(marketId);
        if (m.creator == address(0)) revert UnknownMarket();
        return (m.conditionId, m.outcomeSlotCount);
    }

    /// Put `amount` USDC the vault holds into full sets of the market's outcome positions.
    function _seed(bytes32 marketId, uint256 amount, uint256 b) internal {
        (bytes32 conditionId, uint256 slots) = _market(marketId);
        USDC.approve(address(CT), amount);
        this.split(conditionId, _partition(slots), amount);
        if (shares[marketId].length == 0) shares[marketId] = new int256[](slots);
        if (b != 0) liquidity[marketId] = b;
        seeded[marketId] += amount;
        emit Seeded(marketId, amount, b);
    }

    function split(bytes32 conditionId, uint256[] calldata partition, uint256 amount) external {
        require(msg.sender == address(this), "internal");
        CT.splitPositionFor(address(this), address(USDC), bytes32(0), conditionId, partition, amount);
    }

    function merge(bytes32 conditionId, uint256[] calldata partition, uint256 amount) external {
        require(msg.sender == address(this), "internal");
        CT.mergePositions(address(USDC), bytes32(0), conditionId, partition, amount);
    }

    function _digest(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function executeTrade(Trade calldata t) external {
        _execute(t);
    }

    function _execute(Trade memory t) internal {
        (bytes32 conditionId, uint256 slots) = _market(t.marketId);
        if (shares[t.marketId].length == 0) revert NotSeeded();
        if (block.timestamp > t.deadline) revert Expired();
        if (t.nonce != nonces[t.user][t.marketId]) revert BadNonce();
        if (t.tradeCostUsdc > t.maxCostUsdc) revert CostAboveMax();
        bytes32 userHash = keccak256(abi.encode(USER_TRADE_TYPEHASH, t.marketId, t.outcomeIndex, t.buy, t.quantity,
                                                t.maxCostUsdc, t.nonce, t.deadline));
        if (Sigs.recover(_digest(userHash), t.userSignature) != t.user) revert BadUserSignature();
        bytes32 donHash = keccak256(abi.encode(DON_QUOTE_TYPEHASH, t.marketId, t.outcomeIndex, t.buy, t.quantity,
                                               t.tradeCostUsdc, t.user, t.nonce, t.deadline));
        if (Sigs.recover(_digest(donHash), t.donSignature) != DON) revert BadDonSignature();
        nonces[t.user][t.marketId] = t.nonce + 1;

        uint256 position = CT.getPositionId(address(USDC), CT.getCollectionId(bytes32(0), conditionId, 1 << t.outcomeIndex));
        uint256 units = t.quantity / SHARE_TO_POSITION;
        uint256[] memory partition = _partition(slots);
        if (t.buy) {
            require(USDC.transferFrom(t.user, address(this), t.tradeCostUsdc), "payment");
            USDC.approve(address(CT), t.tradeCostUsdc);
            this.split(conditionId, partition, t.tradeCostUsdc);
            CT.safeTransferFrom(address(this), t.user, position, units, "");
            shares[t.marketId][t.outcomeIndex] += int256(t.quantity);
        } else {
            CT.safeTransferFrom(t.user, address(this), position, units, "");
            this.merge(conditionId, partition, t.tradeCostUsdc);
            require(USDC.transfer(t.user, t.tradeCostUsdc), "payout");
            shares[t.marketId][t.outcomeIndex] -= int256(t.quantity);
        }
        emit TradeExecuted(t.marketId, t.user, t.outcomeIndex, t.buy, t.quantity, t.tradeCostUsdc, t.nonce);
    }
}
