"""Signed reports on a one-node DON: `consensus@1.0.0-alpha` `Report`, and the EVM `WriteReport`
that delivers one through a forwarder contract.

The layout is the one the SDK reads (`Report` in @chainlink/cre-sdk) and Keystone-style
forwarders verify:
- raw report = a 109-byte metadata header + the workflow's encoded payload. The header: version
  (1 byte, 1), execution id (32), timestamp (uint32, seconds), DON id (uint32), DON config
  version (uint32), workflow id (32), workflow name (10 bytes: the first 10 of sha256(name)),
  workflow owner (20-byte address), report id (2 bytes, 0), all big-endian;
- report context = config digest (32) ‖ sequence number (uint64, big-endian) ‖ 56 zero bytes;
- the signature: ECDSA secp256k1 by the node's DON key over
  keccak256(keccak256(raw report) ‖ report context), 65 bytes r ‖ s ‖ v with v in {0, 1};
  one signature, signer id 0 (one node, one signer; a receiver that wants f+1 signers of a
  real DON will refuse it).

`WriteReport` sends `report(receiver, rawReport, reportContext, signatures)` to the chain's
forwarder from the transmitter key, waits for the receipt, and answers with the transaction's
status, hash and fee. Transactions of one writer are serialised (one nonce sequence).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from node.cre.wasm import messages as pb

HEADER_LENGTH = 109
_REPORT_SELECTOR = keccak(text="report(address,bytes,bytes,bytes[])")[:4]
_EVM = "capabilities.blockchain.evm.v1alpha."
TX_REVERTED, TX_SUCCESS = 1, 2

Rpc = Callable[[str, str, list[Any]], Awaitable[Any]]


class ReportError(Exception):
    """The report cannot be made or written (the guest sees the message)."""


def report_hash(raw_report: bytes, context: bytes) -> bytes:
    return keccak(keccak(raw_report) + context)


class Reporter:
    """Builds and signs the reports of one workflow."""

    def __init__(self, don_key: str, workflow_id: str, workflow_name: str, owner: str | None = None,
                 don_id: int = 1, config_version: int = 1) -> None:
        self._account = Account.from_key(don_key)
        self.signer = self._account.address
        self._workflow_id = bytes.fromhex(workflow_id)
        self._name = hashlib.sha256(workflow_name.encode()).digest()[:10]
        self._owner = bytes.fromhex((owner or self.signer)[2:])
        self._don_id = don_id
        self._config_version = config_version
        self.config_digest = keccak(b"node-daemon one-node DON\0" + bytes.fromhex(self.signer[2:]))
        self._seq = itertools.count(time.time_ns() // 1000)  # increasing across restarts too

    def report(self, request: Any, execution_id: str) -> Any:
        if request.encoder_name and request.encoder_name.lower() not in ("evm", ""):
            raise ReportError(f"report encoder {request.encoder_name!r} is not supported on this node (evm)")
        if request.signing_algo and request.signing_algo.lower() not in ("ecdsa", ""):
            raise ReportError(f"signing algorithm {request.signing_algo!r} is not supported (ecdsa)")
        if request.hashing_algo and request.hashing_algo.lower() not in ("keccak256", ""):
            raise ReportError(f"hashing algorithm {request.hashing_algo!r} is not supported (keccak256)")
        header = (bytes([1]) + bytes.fromhex(execution_id)[:32].rjust(32, b"\0")
                  + int(time.time()).to_bytes(4, "big") + self._don_id.to_bytes(4, "big")
                  + self._config_version.to_bytes(4, "big") + self._workflow_id + self._name + self._owner
                  + b"\0\0")
        assert len(header) == HEADER_LENGTH
        raw = header + request.encoded_payload
        seq = next(self._seq)
        context = self.config_digest + seq.to_bytes(8, "big") + b"\0" * 56
        signed = self._account.unsafe_sign_hash(report_hash(raw, context))
        signature = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])
        response = pb.message("sdk.v1alpha.ReportResponse")(config_digest=self.config_digest, seq_nr=seq,
                                                           report_context=context, raw_report=raw)
        response.sigs.add(signature=signature, signer_id=0)
        return response


class ReportWriter:
    """Delivers reports on one chain through its forwarder."""

    def __init__(self, rpc: Rpc, url: str, forwarder: str, transmitter_key: str, receipt_timeout: float = 30.0) -> None:
        self._rpc = rpc
        self._url = url
        self._forwarder = to_checksum_address(forwarder)
        self._account = Account.from_key(transmitter_key)
        self._timeout = receipt_timeout
        self._lock = asyncio.Lock()

    async def write(self, payload: Any) -> Any:
        req = pb.unpack(payload, pb.message(_EVM + "WriteReportRequest"))
        if len(req.receiver) != 20:
            raise ReportError("receiver: expected a 20-byte address")
        report = req.report
        if len(report.raw_report) < HEADER_LENGTH or not report.sigs:
            raise ReportError("report: not a signed report (use runtime.report first)")
        data = _REPORT_SELECTOR + abi_encode(
            ["address", "bytes", "bytes", "bytes[]"],
            [to_checksum_address(req.receiver), report.raw_report, report.report_context,
             [s.signature for s in report.sigs]])
        call = {"from": self._account.address, "to": self._forwarder, "data": "0x" + data.hex()}
        async with self._lock:
            chain_id = int(await self._rpc(self._url, "eth_chainId", []), 16)
            nonce = int(await self._rpc(self._url, "eth_getTransactionCount", [self._account.address, "pending"]), 16)
            gas_price = int(await self._rpc(self._url, "eth_gasPrice", []), 16)
            gas = req.gas_config.gas_limit if req.HasField("gas_config") and req.gas_config.gas_limit else None
            if gas is None:
                gas = int(int(await self._rpc(self._url, "eth_estimateGas", [call]), 16) * 1.2) + 10_000
            tx = {"to": self._forwarder, "data": data, "gas": gas, "gasPrice": gas_price, "nonce": nonce,
                  "chainId": chain_id, "value": 0}
            signed = self._account.sign_transaction(tx)
            tx_hash = await self._rpc(self._url, "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
        deadline = time.monotonic() + self._timeout
        receipt = None
        while receipt is None and time.monotonic() < deadline:
            receipt = await self._rpc(self._url, "eth_getTransactionReceipt", [tx_hash])
            if receipt is None:
                await asyncio.sleep(0.2)
        reply = pb.message(_EVM + "WriteReportReply")(tx_hash=bytes.fromhex(tx_hash[2:]))
        if receipt is None:
            raise ReportError(f"no receipt for {tx_hash} within {self._timeout:g}s")
        ok = int(receipt["status"], 16) == 1
        reply.tx_status = TX_SUCCESS if ok else TX_REVERTED
        reply.receiver_contract_execution_status = 0 if ok else 1
        fee = int(receipt["gasUsed"], 16) * int(receipt.get("effectiveGasPrice") or hex(gas_price), 16)
        reply.transaction_fee.CopyFrom(pb.int_to_bigint(fee))
        if not ok:
            reply.error_message = "the forwarder transaction reverted"
        return reply
