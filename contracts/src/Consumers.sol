// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Coordinator} from "./Coordinator.sol";
import {Registry} from "./Registry.sol";

/// Receives compute from the Coordinator only, and answers it the inputs of a subscription.
/// Takes the Registry (as the SDK's consumers do) and finds the Coordinator there.
abstract contract BaseConsumer {
    Coordinator internal immutable COORDINATOR;

    error NotCoordinator();

    constructor(address registry) {
        COORDINATOR = Coordinator(Registry(registry).COORDINATOR());
    }

    function _receiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) internal virtual;

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
    ) external {
        if (msg.sender != address(COORDINATOR)) revert NotCoordinator();
        _receiveCompute(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index);
    }

    function getContainerInputs(uint32 subscriptionId, uint32 interval, uint32 timestamp, address caller)
        external view virtual returns (bytes memory);
}

/// One-shot requests: inputs stored per subscription, delivered once.
abstract contract CallbackConsumer is BaseConsumer {
    mapping(uint32 => bytes) internal subscriptionInputs;

    function _requestCompute(string memory containerId, bytes memory inputs, uint16 redundancy)
        internal returns (uint32 subscriptionId)
    {
        subscriptionId = _requestCompute(containerId, inputs, redundancy, address(0), 0, address(0), address(0));
    }

    /// A one-shot request paid from `wallet` (which must allow this consumer to spend), optionally
    /// with its proof checked by `verifier`.
    function _requestCompute(
        string memory containerId,
        bytes memory inputs,
        uint16 redundancy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) internal returns (uint32 subscriptionId) {
        subscriptionId = COORDINATOR.createSubscription(
            containerId, 1, 0, redundancy, false, paymentToken, paymentAmount, wallet, verifier
        );
        subscriptionInputs[subscriptionId] = inputs;
    }
}

/// Recurring subscriptions: `frequency` deliveries, one per `period` seconds.
abstract contract SubscriptionConsumer is BaseConsumer {
    function _createComputeSubscription(
        string memory containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy
    ) internal returns (uint32) {
        return COORDINATOR.createSubscription(containerId, frequency, period, redundancy, lazy, address(0), 0, address(0), address(0));
    }

    function _createComputeSubscription(
        string memory containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) internal returns (uint32) {
        return COORDINATOR.createSubscription(
            containerId, frequency, period, redundancy, lazy, paymentToken, paymentAmount, wallet, verifier
        );
    }

    function _cancelComputeSubscription(uint32 subscriptionId) internal {
        COORDINATOR.cancelSubscription(subscriptionId);
    }
}

/// The example consumer: one-shot requests, recurring subscriptions, and delegated
/// subscriptions signed off-chain by `signer`. Every delivery is recorded.
contract ExampleConsumer is CallbackConsumer, SubscriptionConsumer {
    struct Delivery {
        uint32 subscriptionId;
        uint32 interval;
        uint16 redundancy;
        address node;
        bytes input;
        bytes output;
        bytes proof;
        bytes32 containerId; // lazy deliveries: where the result sits in the Inbox (with node and index)
        uint256 index;
    }

    address public signer;
    bytes public recurringInput;
    Delivery[] public deliveries;
    mapping(uint32 => uint256) public deliveryCount;

    event Received(uint32 indexed subscriptionId, uint32 interval, address node);

    constructor(address registry, address signer_) BaseConsumer(registry) {
        signer = signer_;
    }

    function getSigner() external view returns (address) {
        return signer;
    }

    function requestCompute(string calldata containerId, bytes calldata inputs, uint16 redundancy)
        external returns (uint32)
    {
        return _requestCompute(containerId, inputs, redundancy);
    }

    function subscribe(string calldata containerId, uint32 frequency, uint32 period, uint16 redundancy, bytes calldata input)
        external returns (uint32)
    {
        recurringInput = input;
        return _createComputeSubscription(containerId, frequency, period, redundancy, false);
    }

    /// A paid one-shot request (see _requestCompute).
    function requestPaidCompute(
        string calldata containerId,
        bytes calldata inputs,
        uint16 redundancy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        return _requestCompute(containerId, inputs, redundancy, paymentToken, paymentAmount, wallet, verifier);
    }

    /// A paid recurring subscription: each delivery is paid `paymentAmount` of `paymentToken` from
    /// `wallet`, which must allow this consumer to spend it.
    function createPaidSubscription(
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
        return _createComputeSubscription(
            containerId, frequency, period, redundancy, lazy, paymentToken, paymentAmount, wallet, verifier
        );
    }

    /// A lazy subscription: results stay in the Inbox, the consumer gets a pointer.
    function subscribeLazy(string calldata containerId, uint32 frequency, uint32 period, uint16 redundancy,
                           bytes calldata input) external returns (uint32) {
        recurringInput = input;
        return _createComputeSubscription(containerId, frequency, period, redundancy, true);
    }

    /// Many recurring subscriptions in one transaction (benchmarks and load tests).
    function subscribeMany(string calldata containerId, uint32 count, uint32 frequency, uint32 period) external {
        for (uint32 i = 0; i < count; i++) {
            _createComputeSubscription(containerId, frequency, period, 1, false);
        }
    }

    function cancel(uint32 subscriptionId) external {
        _cancelComputeSubscription(subscriptionId);
    }

    function getContainerInputs(uint32 subscriptionId, uint32 interval, uint32, address)
        external view override returns (bytes memory)
    {
        bytes memory stored = subscriptionInputs[subscriptionId];
        if (stored.length > 0) return stored;
        return abi.encodePacked(recurringInput, ":", _itoa(interval));
    }

    function deliveriesLength() external view returns (uint256) {
        return deliveries.length;
    }

    function _receiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) internal override {
        deliveries.push(Delivery(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index));
        deliveryCount[subscriptionId] += 1;
        emit Received(subscriptionId, interval, node);
    }

    function _itoa(uint256 value) internal pure returns (bytes memory) {
        if (value == 0) return "0";
        uint256 digits;
        for (uint256 v = value; v != 0; v /= 10) digits++;
        bytes memory out = new bytes(digits);
        for (; value != 0; value /= 10) out[--digits] = bytes1(uint8(48 + value % 10));
        return out;
    }
}
