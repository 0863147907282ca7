// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A subscription, laid out as the Infernet SDK's Coordinator lays it out.
struct Subscription {
    address owner;
    uint32 activeAt;
    uint32 period;
    uint32 frequency;
    uint16 redundancy;
    bytes32 containerId;
    bool lazy;
    address verifier;
    uint256 paymentAmount;
    address paymentToken;
    address wallet;
}

interface IComputeConsumer {
    function rawReceiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) external;
}

interface IDelegator {
    function getSigner() external view returns (address);
}

/// Coordinator with the external interface of the Infernet SDK's (EIP712)Coordinator: create and
/// cancel subscriptions, deliver compute per interval up to `redundancy` nodes, and delegated
/// (EIP-712 signed) subscriptions created atomically with their first delivery. Payments and
/// proof verification are not implemented: `paymentAmount` must be 0 and `verifier` unset.
contract Coordinator {
    struct InboxItem {
        uint32 timestamp;
        uint32 subscriptionId;
        uint32 interval;
        bytes input;
        bytes output;
        bytes proof;
    }

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 public constant EIP712_SUBSCRIPTION_TYPEHASH = keccak256(
        "Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)"
    );
    bytes32 public constant EIP712_DELEGATE_SUBSCRIPTION_TYPEHASH = keccak256(
        "DelegateSubscription(uint32 nonce,uint32 expiry,Subscription sub)Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)"
    );

    uint32 public id = 1;
    mapping(uint32 => Subscription) internal subscriptions;
    mapping(bytes32 => uint16) public redundancyCount;
    mapping(bytes32 => bool) public nodeResponded;
    mapping(bytes32 => uint32) public delegateCreatedIds;
    mapping(address => uint32) public maxSubscriberNonce;
    mapping(bytes32 => InboxItem[]) internal inbox;

    event SubscriptionCreated(uint32 indexed id);
    event SubscriptionCancelled(uint32 indexed id);
    event SubscriptionFulfilled(uint32 indexed id, address indexed node);

    error InvalidWallet();
    error IntervalMismatch();
    error IntervalCompleted();
    error NodeRespondedAlready();
    error SubscriptionNotFound();
    error NotSubscriptionOwner();
    error SubscriptionCompleted();
    error SubscriptionNotActive();
    error SignerMismatch();
    error SignatureExpired();
    error UnsupportedPayment();

    // -- subscriptions -------------------------------------------------------------------

    function createSubscription(
        string calldata containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        return _create(Subscription({
            owner: msg.sender,
            activeAt: uint32(block.timestamp) + period,
            period: period,
            frequency: frequency,
            redundancy: redundancy,
            containerId: keccak256(abi.encode(containerId)),
            lazy: lazy,
            verifier: verifier,
            paymentAmount: paymentAmount,
            paymentToken: paymentToken,
            wallet: wallet
        }));
    }

    function _create(Subscription memory sub) internal returns (uint32 subscriptionId) {
        if (sub.paymentAmount != 0 || sub.verifier != address(0)) revert UnsupportedPayment();
        subscriptionId = id;
        id = subscriptionId + 1;
        subscriptions[subscriptionId] = sub;
        emit SubscriptionCreated(subscriptionId);
    }

    function cancelSubscription(uint32 subscriptionId) external {
        Subscription storage sub = subscriptions[subscriptionId];
        if (sub.owner == address(0)) revert SubscriptionNotFound();
        if (sub.owner != msg.sender) revert NotSubscriptionOwner();
        sub.activeAt = type(uint32).max;
        emit SubscriptionCancelled(subscriptionId);
    }

    function getSubscription(uint32 subscriptionId) external view returns (Subscription memory) {
        return subscriptions[subscriptionId];
    }

    function getSubscriptionInterval(uint32 activeAt, uint32 period) public view returns (uint32) {
        if (period == 0) return 1;
        return uint32((block.timestamp - activeAt) / period) + 1;
    }

    // -- delivery ------------------------------------------------------------------------

    function deliverCompute(
        uint32 subscriptionId,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) public {
        Subscription memory sub = subscriptions[subscriptionId];
        if (sub.owner == address(0)) revert SubscriptionNotFound();
        if (block.timestamp < sub.activeAt) revert SubscriptionNotActive();
        uint32 interval = getSubscriptionInterval(sub.activeAt, sub.period);
        if (interval != deliveryInterval) revert IntervalMismatch();
        if (interval > sub.frequency) revert SubscriptionCompleted();
        bytes32 key = keccak256(abi.encode(subscriptionId, interval));
        uint16 count = redundancyCount[key];
        if (count == sub.redundancy) revert IntervalCompleted();
        bytes32 nodeKey = keccak256(abi.encode(subscriptionId, interval, msg.sender));
        if (nodeResponded[nodeKey]) revert NodeRespondedAlready();
        redundancyCount[key] = count + 1;
        nodeResponded[nodeKey] = true;

        if (sub.lazy) {
            InboxItem[] storage items = inbox[sub.containerId];
            items.push(InboxItem(uint32(block.timestamp), subscriptionId, interval, input, output, proof));
            IComputeConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, count + 1, msg.sender, "", "", "", sub.containerId, items.length - 1
            );
        } else {
            IComputeConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, count + 1, msg.sender, input, output, proof, bytes32(0), 0
            );
        }
        emit SubscriptionFulfilled(subscriptionId, msg.sender);
    }

    function readInbox(bytes32 containerId, uint256 index) external view returns (InboxItem memory) {
        return inbox[containerId][index];
    }

    // -- delegated subscriptions (EIP-712) ---------------------------------------------------

    function domainSeparator() public view returns (bytes32) {
        return keccak256(abi.encode(
            DOMAIN_TYPEHASH, keccak256("InfernetCoordinator"), keccak256("1"), block.chainid, address(this)
        ));
    }

    function _subHash(Subscription memory sub) internal pure returns (bytes32) {
        return keccak256(abi.encode(
            EIP712_SUBSCRIPTION_TYPEHASH, sub.owner, sub.activeAt, sub.period, sub.frequency, sub.redundancy,
            sub.containerId, sub.lazy, sub.verifier, sub.paymentAmount, sub.paymentToken, sub.wallet
        ));
    }

    function delegateDigest(uint32 nonce, uint32 expiry, Subscription memory sub) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(EIP712_DELEGATE_SUBSCRIPTION_TYPEHASH, nonce, expiry, _subHash(sub)));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function createSubscriptionDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) public returns (uint32) {
        bytes32 key = keccak256(abi.encode(sub.owner, nonce));
        uint32 existing = delegateCreatedIds[key];
        if (existing != 0) return existing;
        if (block.timestamp >= expiry) revert SignatureExpired();
        address signer = ecrecover(delegateDigest(nonce, expiry, sub), v, r, s);
        if (signer == address(0) || signer != IDelegator(sub.owner).getSigner()) revert SignerMismatch();
        uint32 subscriptionId = _create(sub);
        delegateCreatedIds[key] = subscriptionId;
        if (nonce > maxSubscriberNonce[sub.owner]) maxSubscriberNonce[sub.owner] = nonce;
        return subscriptionId;
    }

    function deliverComputeDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) external {
        uint32 subscriptionId = createSubscriptionDelegatee(nonce, expiry, sub, v, r, s);
        deliverCompute(subscriptionId, deliveryInterval, input, output, proof, nodeWallet);
    }
}

/// Batch reads for snapshot sync (the Infernet SDK's Reader).
contract Reader {
    Coordinator public immutable COORDINATOR;

    constructor(address coordinator) {
        COORDINATOR = Coordinator(coordinator);
    }

    /// Subscriptions with ids in [startId, endId).
    function readSubscriptionBatch(uint32 startId, uint32 endId) external view returns (Subscription[] memory subs) {
        subs = new Subscription[](endId - startId);
        for (uint32 i = startId; i < endId; i++) {
            subs[i - startId] = COORDINATOR.getSubscription(i);
        }
    }

    function readRedundancyCountBatch(uint32[] calldata ids, uint32[] calldata intervals)
        external view returns (uint16[] memory counts)
    {
        counts = new uint16[](ids.length);
        for (uint256 i = 0; i < ids.length; i++) {
            counts[i] = COORDINATOR.redundancyCount(keccak256(abi.encode(ids[i], intervals[i])));
        }
    }
}
