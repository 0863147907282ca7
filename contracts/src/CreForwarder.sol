// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// What a CRE report receiver implements (as Chainlink's Keystone receivers do).
interface ICreReceiver {
    function onReport(bytes calldata metadata, bytes calldata report) external;
}

/// The forwarder CRE workflows on a node-daemon write reports through (`evm` WriteReport, deployed by
/// `node-daemon deploy --what cre`, named in `cre.wasm.forwarders`).
///
/// It takes `report(receiver, rawReport, reportContext, signatures)` as Keystone-style forwarders
/// do and checks the one signer a one-node DON has (the node's `cre.wasm.don_key`): one 65-byte
/// signature (r || s || v) over keccak256(keccak256(rawReport) || reportContext). The raw report is
/// the 109-byte metadata header (version, workflow execution id, timestamp, DON id, config version,
/// workflow id, name, owner, report id) followed by the payload; the receiver gets the last 64 bytes
/// of the header (workflow id, name, owner, report id) and the payload.
///
/// Each (receiver, workflow execution id, report id) is delivered once: a workflow execution run
/// again after a node restart (at least once) carries the same execution id, and its report is
/// refused here instead of reaching the receiver twice. A receiver that reverts reverts the whole
/// transaction, so nothing is recorded and the report may be sent again.
contract CreForwarder {
    uint256 internal constant METADATA_LENGTH = 109;
    uint256 internal constant FORWARDER_METADATA_LENGTH = 45;
    // secp256k1n / 2: a larger s is the other, malleable form of the same signature
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public immutable signer;
    mapping(bytes32 => address) public transmitter; // transmission id -> who delivered it

    event ReportProcessed(address indexed receiver, bytes32 indexed workflowExecutionId, bytes2 indexed reportId);

    error InvalidReport();
    error InvalidSignature();
    error InvalidReceiver(address receiver);
    error AlreadyProcessed(bytes32 transmissionId);

    constructor(address donSigner) {
        signer = donSigner;
    }

    function getTransmissionId(address receiver, bytes32 workflowExecutionId, bytes2 reportId)
        public pure returns (bytes32)
    {
        return keccak256(abi.encode(receiver, workflowExecutionId, reportId));
    }

    function report(address receiver, bytes calldata rawReport, bytes calldata reportContext,
                    bytes[] calldata signatures) external {
        if (rawReport.length < METADATA_LENGTH) revert InvalidReport();
        if (receiver.code.length == 0) revert InvalidReceiver(receiver);
        if (signatures.length != 1 || signatures[0].length != 65) revert InvalidSignature();
        bytes32 digest = keccak256(abi.encodePacked(keccak256(rawReport), reportContext));
        bytes calldata sig = signatures[0];
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if (uint256(s) > HALF_N) revert InvalidSignature();
        address recovered = ecrecover(digest, v, r, s);
        if (recovered == address(0) || recovered != signer) revert InvalidSignature();

        bytes32 executionId = bytes32(rawReport[1:33]);
        bytes2 reportId = bytes2(rawReport[107:109]);
        bytes32 id = getTransmissionId(receiver, executionId, reportId);
        if (transmitter[id] != address(0)) revert AlreadyProcessed(id);
        transmitter[id] = msg.sender;
        ICreReceiver(receiver).onReport(rawReport[FORWARDER_METADATA_LENGTH:METADATA_LENGTH],
                                        rawReport[METADATA_LENGTH:]);
        emit ReportProcessed(receiver, executionId, reportId);
    }
}
