// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Registry} from "./Registry.sol";
import {Inbox} from "./Inbox.sol";
import {Fee} from "./Fee.sol";
import {Wallet, WalletFactory} from "./Wallet.sol";

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

/// A proof verifier a subscription names: paid `fee(token)` per proof, it answers by calling
/// the Coordinator's finalizeProofVerification (the SDK's IVerifier).
interface IVerifier {
    function getWallet() external view returns (address);
    function isSupportedToken(address token) external view returns (bool);
    function fee(address token) external view returns (uint256);
    function requestProofVerification(uint32 subscriptionId, uint32 interval, address node, bytes calldata proof)
        external;
}

interface IDelegator {
    function getSigner() external view returns (address);
}

/// Coordinator with the external interface of the Infernet SDK's (EIP712)Coordinator: create and
/// cancel subscriptions, deliver compute per interval up to `redundancy` nodes, and delegated
/// (EIP-712 signed) subscriptions created atomically with their first delivery, payment of
/// each delivery from the consumer's Wallet to the node's (less the protocol fee), and
/// optional proof verification with the node's collateral in escrow until the verifier answers.
/// Lazy subscriptions' results go to the Inbox.
contract Coordinator {
    struct ProofRequest {
        uint32 expiry;
        Wallet nodeWallet;
        uint256 consumerEscrowed;
    }

    uint32 private constant PROOF_WINDOW = 1 weeks;

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
    mapping(bytes32 => ProofRequest) public proofRequests;

    Fee public immutable FEE;
    Inbox public immutable INBOX;
    WalletFactory public immutable WALLET_FACTORY;
    uint256 private locked = 1;

    event SubscriptionCreated(uint32 indexed id);
    event SubscriptionCancelled(uint32 indexed id);
    event SubscriptionFulfilled(uint32 indexed id, address indexed node);
    event ProofVerified(
        uint32 indexed id, uint32 indexed interval, address indexed node, bool active, address verifier, bool valid
    );

    error InvalidWallet();
    error IntervalMismatch();
    error IntervalCompleted();
    error UnauthorizedVerifier();
    error NodeRespondedAlready();
    error SubscriptionNotFound();
    error ProofRequestNotFound();
    error NotSubscriptionOwner();
    error SubscriptionCompleted();
    error SubscriptionNotActive();
    error SignerMismatch();
    error SignatureExpired();
    error UnsupportedVerifierToken();
    error Reentrancy();

    modifier nonReentrant() {
        if (locked != 1) revert Reentrancy();
        locked = 2;
        _;
        locked = 1;
    }

    constructor(Registry registry) {
        FEE = Fee(registry.FEE());
        INBOX = Inbox(registry.INBOX());
        WALLET_FACTORY = WalletFactory(registry.WALLET_FACTORY());
    }

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
    ) public nonReentrant {
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

        if (sub.paymentAmount > 0) _pay(sub, subscriptionId, interval, nodeWallet, proof);

        if (sub.lazy) {
            uint256 index = INBOX.writeViaCoordinator(
                sub.containerId, msg.sender, subscriptionId, interval, input, output, proof
            );
            IComputeConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, count + 1, msg.sender, "", "", "", sub.containerId, index
            );
        } else {
            IComputeConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, count + 1, msg.sender, input, output, proof, bytes32(0), 0
            );
        }
        emit SubscriptionFulfilled(subscriptionId, msg.sender);
    }

    // -- payments and proof verification --------------------------------------------------

    /// Pays one delivery: the protocol fee (charged on both sides) to the fee recipient, then
    /// either the rest to the node's wallet, or, with a verifier, the verifier's fee and an
    /// escrow of the rest against the node's collateral until the verifier answers.
    function _pay(Subscription memory sub, uint32 subscriptionId, uint32 interval, address nodeWallet,
                  bytes calldata proof) internal {
        if (!WALLET_FACTORY.isValidWallet(nodeWallet) || !WALLET_FACTORY.isValidWallet(sub.wallet)) {
            revert InvalidWallet();
        }
        Wallet consumerWallet = Wallet(payable(sub.wallet));
        address token = sub.paymentToken;
        uint256 feeBps = FEE.FEE();
        address feeRecipient = FEE.FEE_RECIPIENT();
        uint256 protocolFee = sub.paymentAmount * feeBps * 2 / 10000;
        consumerWallet.cTransfer(sub.owner, token, feeRecipient, protocolFee);
        uint256 rest = sub.paymentAmount - protocolFee;
        if (sub.verifier == address(0)) {
            consumerWallet.cTransfer(sub.owner, token, nodeWallet, rest);
            return;
        }
        IVerifier verifier = IVerifier(sub.verifier);
        if (!verifier.isSupportedToken(token)) revert UnsupportedVerifierToken();
        uint256 verifierFee = verifier.fee(token);
        rest -= verifierFee;
        uint256 verifierProtocolFee = verifierFee * feeBps / 10000;
        consumerWallet.cTransfer(sub.owner, token, feeRecipient, verifierProtocolFee);
        consumerWallet.cTransfer(sub.owner, token, verifier.getWallet(), verifierFee - verifierProtocolFee);
        Wallet(payable(nodeWallet)).cLock(msg.sender, token, sub.paymentAmount);
        consumerWallet.cLock(sub.owner, token, rest);
        proofRequests[keccak256(abi.encode(subscriptionId, interval, msg.sender))] =
            ProofRequest(uint32(block.timestamp) + PROOF_WINDOW, Wallet(payable(nodeWallet)), rest);
        verifier.requestProofVerification(subscriptionId, interval, msg.sender, proof);
    }

    /// The verifier's answer for (subscription, interval, node): a valid proof pays the node the
    /// escrow, an invalid one gives the node's collateral to the consumer's wallet. After the
    /// window anyone may settle it, and the node is paid.
    function finalizeProofVerification(uint32 subscriptionId, uint32 interval, address node, bool valid) external {
        bytes32 key = keccak256(abi.encode(subscriptionId, interval, node));
        ProofRequest memory request = proofRequests[key];
        if (request.expiry == 0) revert ProofRequestNotFound();
        delete proofRequests[key];
        Subscription memory sub = subscriptions[subscriptionId];
        Wallet consumerWallet = Wallet(payable(sub.wallet));
        bool active = block.timestamp < request.expiry;
        if (active && msg.sender != sub.verifier) revert UnauthorizedVerifier();
        request.nodeWallet.cUnlock(node, sub.paymentToken, sub.paymentAmount);
        consumerWallet.cUnlock(sub.owner, sub.paymentToken, request.consumerEscrowed);
        if (!active || valid) {
            consumerWallet.cTransfer(sub.owner, sub.paymentToken, address(request.nodeWallet), request.consumerEscrowed);
        } else {
            request.nodeWallet.cTransfer(node, sub.paymentToken, sub.wallet, sub.paymentAmount);
        }
        emit ProofVerified(subscriptionId, interval, node, active, msg.sender, valid);
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

    constructor(Registry registry) {
        COORDINATOR = Coordinator(registry.COORDINATOR());
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
