// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Registry} from "./Registry.sol";

/// Results kept on chain instead of being pushed to a consumer: lazy subscriptions' deliveries
/// (written by the Coordinator) and anything a node chooses to publish (the SDK's Inbox).
contract Inbox {
    struct InboxItem {
        uint32 timestamp;
        uint32 subscriptionId;
        uint32 interval;
        bytes input;
        bytes output;
        bytes proof;
    }

    address public immutable COORDINATOR;
    /// containerId => node => items, in the order written.
    mapping(bytes32 => mapping(address => InboxItem[])) public items;

    event NewInboxItem(bytes32 indexed containerId, address indexed node, uint256 index);

    error NotCoordinator();

    constructor(Registry registry) {
        COORDINATOR = registry.COORDINATOR();
    }

    function write(bytes32 containerId, bytes calldata input, bytes calldata output, bytes calldata proof)
        external returns (uint256)
    {
        return _write(containerId, msg.sender, 0, 0, input, output, proof);
    }

    function writeViaCoordinator(
        bytes32 containerId,
        address node,
        uint32 subscriptionId,
        uint32 interval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof
    ) external returns (uint256) {
        if (msg.sender != COORDINATOR) revert NotCoordinator();
        return _write(containerId, node, subscriptionId, interval, input, output, proof);
    }

    function read(bytes32 containerId, address node, uint256 index) external view returns (InboxItem memory) {
        return items[containerId][node][index];
    }

    function _write(
        bytes32 containerId,
        address node,
        uint32 subscriptionId,
        uint32 interval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof
    ) internal returns (uint256 index) {
        InboxItem[] storage list = items[containerId][node];
        index = list.length;
        list.push(InboxItem(uint32(block.timestamp), subscriptionId, interval, input, output, proof));
        emit NewInboxItem(containerId, node, index);
    }
}
