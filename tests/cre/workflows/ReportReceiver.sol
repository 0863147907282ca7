// SPDX-License-Identifier: MIT
// Test contracts for the node's CRE WriteReport: a forwarder that checks the one-node DON's
// signature the way Keystone-style forwarders do (keccak256(keccak256(rawReport) || reportContext),
// 65-byte r||s||v) and hands the receiver the metadata and the payload; and a receiver that keeps
// what it was given. Compiled at test time with solc-js; not deployed anywhere else.
pragma solidity ^0.8.20;

interface IReceiver {
    function onReport(bytes calldata metadata, bytes calldata report) external;
}

contract TestReportForwarder {
    address public immutable signer;

    constructor(address donSigner) {
        signer = donSigner;
    }

    function report(address receiver, bytes calldata rawReport, bytes calldata reportContext,
                    bytes[] calldata signatures) external {
        require(rawReport.length >= 109, "report too short");
        require(signatures.length == 1 && signatures[0].length == 65, "one 65-byte signature");
        bytes32 digest = keccak256(abi.encodePacked(keccak256(rawReport), reportContext));
        bytes calldata sig = signatures[0];
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        require(ecrecover(digest, v, bytes32(sig[0:32]), bytes32(sig[32:64])) == signer, "not the DON's signature");
        IReceiver(receiver).onReport(rawReport[45:109], rawReport[109:]);
    }
}

contract TestReportReceiver is IReceiver {
    bytes public lastMetadata;
    bytes public lastReport;
    uint256 public reports;

    function onReport(bytes calldata metadata, bytes calldata report) external {
        lastMetadata = metadata;
        lastReport = report;
        reports += 1;
    }
}
