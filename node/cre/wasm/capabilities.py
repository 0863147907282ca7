"""The capabilities a workflow on this node can call, as one node of a one-node DON.

- `consensus@1.0.0-alpha` (`Simple`): with one node there is one observation, and consensus is
  the identity with the SDK's aggregation applied to it (median, identical, common prefix/suffix
  of one value are that value; a frequency list is that value counted once; a fields map applies
  per field). An error observation yields the default when the workflow gave one.
- `http-actions@1.0.0-alpha` (`SendRequest`): through the node's egress policy
  (`node/server/egress.py`): no loopback, private or metadata addresses unless the operator
  allowed their network, no redirects, answer size capped, time bounded.
- `evm:ChainSelector:<selector>@1.0.0`: reads on the configured chains by JSON-RPC
  (`CallContract`, `BalanceAt`, `EstimateGas`, `FilterLogs`, `HeaderByNumber`,
  `GetTransactionByHash`, `GetTransactionReceipt`); the SDK's block sentinels -2/-3 are
  latest/finalized. `FilterLogs` is bounded for one caller: its block range is resolved to numbers
  first and refused beyond `max_log_blocks`, its answer refused beyond `max_logs` logs, so a
  workflow cannot make the node (or its RPC provider) scan a chain's whole history. Every chain
  answer is read up to `max_rpc_bytes` and refused beyond.
- `consensus@1.0.0-alpha` `Report` and the EVM `WriteReport`: signed by the node's DON key and
  delivered through the chain's forwarder (reports.py).
- secrets: the workflow's configured secrets, by (namespace, id); namespace defaults to "main";
  those not configured are looked up in the node's sealed store (secrets.py), at each execution.

Requests arrive from the guest's worker thread; everything but consensus runs on the event loop
(`run_coroutine_threadsafe`) and the guest thread blocks on the returned future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from node.cre.wasm import messages as pb
from node.cre.wasm.reports import Reporter, ReportError, ReportWriter
from node.cre.wasm.runtime import EVM_PREFIX  # the EVM capability ids, triggers and calls alike
from node.server.egress import EgressDenied, EgressPolicy

CONSENSUS = "consensus@1.0.0-alpha"
HTTP_ACTIONS = "http-actions@1.0.0-alpha"
FREQUENCY_LIST = 5
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# name -> chain selector, for the chains a local node is likely to be pointed at
CHAIN_SELECTORS = {
    "anvil-devnet": 7759470850252068959,
    "ethereum-mainnet": 5009297550715157269,
    "ethereum-testnet-sepolia": 16015286601757825753,
}

Handler = Callable[[str, Any, int], Awaitable[Any]]  # (method, payload Any, mode) -> response message
SecretLookup = Callable[[str, str], Awaitable[str | None]]  # (namespace, id) -> value, from the sealed store

_EVM = "capabilities.blockchain.evm.v1alpha."
MAX_LOG_BLOCKS = 100  # FilterLogs: blocks in one query (to - from + 1)
MAX_LOGS = 1000  # FilterLogs: logs in one answer
MAX_RPC_BYTES = 8 << 20  # one JSON-RPC answer from a chain (a log's data can be megabytes)
EVM_METHODS = ("CallContract", "BalanceAt", "EstimateGas", "FilterLogs", "HeaderByNumber", "GetTransactionByHash",
               "GetTransactionReceipt", "WriteReport")


class CapabilityError(Exception):
    """A refusal the guest sees as the capability's error string."""


def _done(response: Any) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(response)
    return future


def aggregate(value: Any, descriptor: Any) -> Any:
    """One observation through a ConsensusDescriptor."""
    which = descriptor.WhichOneof("descriptor")
    if which == "fields_map":
        if value.WhichOneof("value") != "map_value":
            raise CapabilityError("a fields-map aggregation needs a map observation")
        rules = {entry.key: entry.value for entry in descriptor.fields_map.fields}
        out = pb.Value()
        out.map_value.SetInParent()
        for entry in value.map_value.fields:
            item = out.map_value.fields.add(key=entry.key)
            item.value.CopyFrom(aggregate(entry.value, rules[entry.key]) if entry.key in rules else entry.value)
        return out
    if which == "aggregation" and descriptor.aggregation == FREQUENCY_LIST:
        out = pb.Value()
        item = out.list_value.fields.add()
        value_entry = item.map_value.fields.add(key="value")
        value_entry.value.CopyFrom(value)
        item.map_value.fields.add(key="count").value.int64_value = 1
        return out
    return value


def consensus(inputs: Any) -> Any:
    """SimpleConsensusInputs -> the agreed Value on a one-node DON."""
    if inputs.WhichOneof("observation") == "value":
        return aggregate(inputs.value, inputs.descriptors)
    if inputs.HasField("default"):
        return inputs.default
    raise CapabilityError(inputs.error or "no observation")


class Capabilities:
    """Routes capability requests of one workflow to the node's implementations."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, egress: EgressPolicy | None = None,
                 session: aiohttp.ClientSession | None = None, http_timeout: float = 10.0,
                 chains: Mapping[int, str] | None = None, secrets: Mapping[tuple[str, str], str] | None = None,
                 extra: Mapping[str, Handler] | None = None, reporter: Reporter | None = None,
                 forwarders: Mapping[int, tuple[str, str]] | None = None,
                 sealed: SecretLookup | None = None, max_log_blocks: int = MAX_LOG_BLOCKS,
                 max_logs: int = MAX_LOGS, max_rpc_bytes: int = MAX_RPC_BYTES) -> None:
        self._loop = loop
        self._max_rpc_bytes = max_rpc_bytes
        self._max_log_blocks = max_log_blocks
        self._max_logs = max_logs
        self._sealed = sealed
        self._egress = egress
        self._session = session  # from egress.session(): every connection goes through the policy
        self._http_timeout = http_timeout
        self._chains = dict(chains or {})
        self._rpc_session: aiohttp.ClientSession | None = None
        self._secrets = dict(secrets or {})
        self._extra = dict(extra or {})
        self._reporter = reporter
        self._writers = {selector: ReportWriter(self._rpc, self._chains[selector], forwarder, key)
                         for selector, (forwarder, key) in (forwarders or {}).items() if selector in self._chains}

    def set_reporter(self, reporter: Reporter) -> None:
        """The workflow's report signer (it needs the workflow id, known once the workflow loaded)."""
        self._reporter = reporter

    # -- HostServices --------------------------------------------------------------------

    def call_capability(self, request: Any, mode: int, execution_id: str) -> concurrent.futures.Future:
        if request.id == CONSENSUS:
            try:
                if request.method == "Simple":
                    inputs = pb.unpack(request.payload, pb.SimpleConsensusInputs)
                    return _done(pb.CapabilityResponse(payload=pb.pack(consensus(inputs))))
                if request.method == "Report":
                    if self._reporter is None:
                        raise CapabilityError("reports are not enabled on this node (set cre.wasm.don_key)")
                    report = pb.unpack(request.payload, pb.message("sdk.v1alpha.ReportRequest"))
                    return _done(pb.CapabilityResponse(payload=pb.pack(self._reporter.report(report, execution_id))))
                raise CapabilityError(f"consensus method {request.method!r} is not supported on this node")
            except (CapabilityError, ReportError, ValueError) as exc:
                return _done(pb.CapabilityResponse(error=str(exc)))
        return asyncio.run_coroutine_threadsafe(self._dispatch(request, mode), self._loop)

    def get_secrets(self, request: Any) -> concurrent.futures.Future:
        wanted = [(w.namespace or "main", w.id) for w in request.requests]
        if self._sealed is None or all(key in self._secrets for key in wanted):
            return _done(self._secret_responses(wanted, {}))
        return asyncio.run_coroutine_threadsafe(self._from_store(wanted), self._loop)

    async def _from_store(self, wanted: list[tuple[str, str]]) -> Any:
        assert self._sealed is not None
        found: dict[tuple[str, str], str | Exception] = {}
        for key in wanted:
            if key not in self._secrets and key not in found:
                value: str | Exception | None
                try:
                    value = await self._sealed(*key)
                except ValueError:  # a value sealed under another master key, or damaged
                    value = CapabilityError(f"secret {key[0]}/{key[1]} cannot be opened with this node's master key")
                if value is not None:
                    found[key] = value
        return self._secret_responses(wanted, found)

    def _secret_responses(self, wanted: list[tuple[str, str]], stored: Mapping[tuple[str, str], str | Exception]) -> Any:
        out = pb.SecretResponses()
        for namespace, secret_id in wanted:
            item = out.responses.add()
            value = self._secrets.get((namespace, secret_id), stored.get((namespace, secret_id)))
            if value is None or isinstance(value, Exception):
                item.error.id, item.error.namespace = secret_id, namespace
                item.error.error = str(value) if value is not None else (
                    f"secret {namespace}/{secret_id} is not configured for this workflow (its secrets in "
                    "cre.workflows, or node-daemon cre secrets set)")
            else:
                item.secret.id, item.secret.namespace, item.secret.value = secret_id, namespace, value
        return out

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch(self, request: Any, mode: int) -> Any:
        try:
            if request.id in self._extra:
                message = await self._extra[request.id](request.method, request.payload, mode)
            elif request.id == HTTP_ACTIONS and request.method == "SendRequest":
                message = await self._http(pb.unpack(request.payload, pb.HttpRequest))
            elif request.id.startswith(EVM_PREFIX):
                message = await self._evm(request.id, request.method, request.payload)
            else:
                raise CapabilityError(f"capability {request.id} ({request.method}) is not available on this node")
        except (CapabilityError, EgressDenied, ReportError, ValueError) as exc:
            return pb.CapabilityResponse(error=str(exc))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return pb.CapabilityResponse(error=f"{request.id}: {type(exc).__name__}: {exc}"[:500])
        return pb.CapabilityResponse(payload=pb.pack(message))

    async def _http(self, req: Any) -> Any:
        if self._egress is None or self._session is None:
            raise CapabilityError("http-actions are not enabled on this node")
        method = (req.method or "GET").upper()
        if method not in HTTP_METHODS:
            raise CapabilityError(f"HTTP method {req.method[:20]!r} is not allowed ({', '.join(sorted(HTTP_METHODS))})")
        url = self._egress.parse(req.url)
        literal = self._egress._literal(url.raw_host or url.host or "")
        if literal is not None:  # aiohttp connects to IP literals without asking the resolver
            self._egress.check_address(url.host or "", str(literal))
        timeout = self._http_timeout
        if req.HasField("timeout"):
            timeout = min(timeout, max(req.timeout.ToTimedelta().total_seconds(), 0.001))
        headers: list[tuple[str, str]] = [(h.key, h.value) for h in req.headers]
        headers += [(h.key, v) for h in req.multi_headers for v in h.value.values]
        limit = self._egress.max_response_bytes
        try:
            async with self._session.request(method, url, headers=headers, data=req.body or None,
                                             allow_redirects=False,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                body = bytearray()
                while True:
                    chunk = await resp.content.read(limit + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limit:
                        raise CapabilityError(f"the answer from {url.host} is over {limit} bytes")
                out = pb.HttpResponse(status_code=resp.status, body=bytes(body))
                for key in resp.headers.keys():
                    values = resp.headers.getall(key)
                    out.headers.add(key=key, value=values[0])
                    out.multi_headers.add(key=key).value.values.extend(values)
                return out
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, EgressDenied):
                raise exc.os_error from None
            raise

    # -- evm -----------------------------------------------------------------------------

    async def _rpc(self, url: str, method: str, params: list[Any]) -> Any:
        if self._rpc_session is None:
            self._rpc_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._http_timeout))
        async with self._rpc_session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                     "params": params}) as resp:
            body = bytearray()
            while chunk := await resp.content.read(self._max_rpc_bytes + 1 - len(body)):
                body += chunk
                if len(body) > self._max_rpc_bytes:
                    raise CapabilityError(f"{method}: the chain's answer is over {self._max_rpc_bytes} bytes "
                                          "(this node's limit for one call)")
        try:
            answer = json.loads(body)
        except ValueError:
            raise CapabilityError(f"{method}: the chain's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise CapabilityError(f"{method}: malformed JSON-RPC answer")
        if answer.get("error"):
            error = answer["error"]
            raise CapabilityError(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")
        return answer.get("result")

    @staticmethod
    def _block(value: Any | None) -> str:
        if value is None or (not value.abs_val and not value.sign):
            return "latest"
        n = pb.bigint_to_int(value)
        if n >= 0:
            return hex(n)
        tags = {-1: "pending", -2: "latest", -3: "finalized"}
        if n not in tags:
            raise CapabilityError(f"block number {n} is not a known tag")
        return tags[n]

    async def _evm(self, capability: str, method: str, payload: Any) -> Any:
        selector_text = capability[len(EVM_PREFIX):].partition("@")[0]
        try:
            selector = int(selector_text)
        except ValueError:
            raise CapabilityError(f"{capability}: not a chain selector") from None
        url = self._chains.get(selector)
        if url is None:
            raise CapabilityError(f"chain selector {selector} is not configured on this node")
        if method == "WriteReport":
            writer = self._writers.get(selector)
            if writer is None:
                raise CapabilityError(f"no forwarder is configured for chain selector {selector} "
                                      "(cre.wasm.forwarders and cre.wasm.don_key)")
            return await writer.write(payload)
        if method == "CallContract":
            req = pb.unpack(payload, pb.message(_EVM + "CallContractRequest"))
            call: dict[str, str] = {"to": "0x" + req.call.to.hex(), "data": "0x" + req.call.data.hex()}
            sender = getattr(req.call, "from")  # a Python keyword, so never an attribute
            if sender:
                call["from"] = "0x" + sender.hex()
            result = await self._rpc(url, "eth_call", [call, self._block(req.block_number)])
            return pb.message(_EVM + "CallContractReply")(data=bytes.fromhex((result or "0x")[2:]))
        if method == "BalanceAt":
            req = pb.unpack(payload, pb.message(_EVM + "BalanceAtRequest"))
            result = await self._rpc(url, "eth_getBalance", ["0x" + req.account.hex(), self._block(req.block_number)])
            reply = pb.message(_EVM + "BalanceAtReply")()
            reply.balance.CopyFrom(pb.int_to_bigint(int(result, 16)))
            return reply
        if method == "HeaderByNumber":
            req = pb.unpack(payload, pb.message(_EVM + "HeaderByNumberRequest"))
            block = await self._rpc(url, "eth_getBlockByNumber", [self._block(req.block_number), False])
            if not block:
                raise CapabilityError("no such block")
            reply = pb.message(_EVM + "HeaderByNumberReply")()
            reply.header.timestamp = int(block["timestamp"], 16)
            reply.header.block_number.CopyFrom(pb.int_to_bigint(int(block["number"], 16)))
            reply.header.hash = bytes.fromhex(block["hash"][2:])
            reply.header.parent_hash = bytes.fromhex(block["parentHash"][2:])
            return reply
        if method == "EstimateGas":
            req = pb.unpack(payload, pb.message(_EVM + "EstimateGasRequest"))
            result = await self._rpc(url, "eth_estimateGas", [self._call_msg(req.msg)])
            return pb.message(_EVM + "EstimateGasReply")(gas=_quantity(result, "eth_estimateGas"))
        if method == "FilterLogs":
            req = pb.unpack(payload, pb.message(_EVM + "FilterLogsRequest"))
            return await self._filter_logs(url, req.filter_query)
        if method == "GetTransactionByHash":
            req = pb.unpack(payload, pb.message(_EVM + "GetTransactionByHashRequest"))
            tx = await self._rpc(url, "eth_getTransactionByHash", [_hash(req.hash, "hash")])
            if not isinstance(tx, dict):
                raise CapabilityError(f"transaction 0x{req.hash.hex()} is not known to chain selector {selector}")
            return pb.message(_EVM + "GetTransactionByHashReply")(transaction=_transaction(tx))
        if method == "GetTransactionReceipt":
            req = pb.unpack(payload, pb.message(_EVM + "GetTransactionReceiptRequest"))
            receipt = await self._rpc(url, "eth_getTransactionReceipt", [_hash(req.hash, "hash")])
            if not isinstance(receipt, dict):
                raise CapabilityError(f"transaction 0x{req.hash.hex()} has no receipt on chain selector {selector} "
                                      "(unknown, or not mined yet)")
            return pb.message(_EVM + "GetTransactionReceiptReply")(receipt=_receipt(receipt))
        raise CapabilityError(f"evm method {method} is not supported on this node ({', '.join(EVM_METHODS)})")

    @staticmethod
    def _call_msg(msg: Any) -> dict[str, str]:
        call: dict[str, str] = {"data": "0x" + msg.data.hex()}
        if msg.to:  # none: a contract creation
            call["to"] = _address(msg.to, "msg.to")
        sender = getattr(msg, "from")
        if sender:
            call["from"] = _address(sender, "msg.from")
        return call

    async def _block_number(self, url: str, value: Any, field: str) -> int:
        """A FilterQuery bound as a number (tags resolved on the chain), so the range can be checked
        and the query asks for exactly the range that was checked."""
        n = pb.bigint_to_int(value)
        if n >= 0:
            return n
        tags = {-1: "pending", -2: "latest", -3: "finalized"}
        if n not in tags:
            raise CapabilityError(f"filterQuery.{field}: block number {n} is not a known tag")
        block = await self._rpc(url, "eth_getBlockByNumber", [tags[n], False])
        if not isinstance(block, dict):
            raise CapabilityError(f"filterQuery.{field}: the chain has no {tags[n]} block")
        return _quantity(block.get("number"), "eth_getBlockByNumber")

    async def _filter_logs(self, url: str, query: Any) -> Any:
        if len(query.topics) > 4:
            raise CapabilityError(f"filterQuery.topics: at most 4 positions, got {len(query.topics)}")
        criteria: dict[str, Any] = {
            "address": [_address(a, "filterQuery.addresses") for a in query.addresses],
            "topics": [[_hash(t, "filterQuery.topics") for t in position.topic] or None for position in query.topics],
        }
        if query.block_hash:
            if query.HasField("from_block") or query.HasField("to_block"):
                raise CapabilityError("filterQuery: give a blockHash or a fromBlock/toBlock range, not both")
            criteria["blockHash"] = _hash(query.block_hash, "filterQuery.blockHash")
        else:
            first = await self._block_number(url, query.from_block, "fromBlock") if query.HasField("from_block") else 0
            last = (await self._block_number(url, query.to_block, "toBlock") if query.HasField("to_block")
                    else await self._block_number(url, pb.int_to_bigint(-2), "toBlock"))
            if last < first:
                raise CapabilityError(f"filterQuery: toBlock {last} is before fromBlock {first}")
            if last - first + 1 > self._max_log_blocks:
                raise CapabilityError(f"filterQuery: blocks {first}..{last} are {last - first + 1} blocks, over this "
                                      f"node's limit of {self._max_log_blocks} for one FilterLogs (narrow the range)")
            criteria["fromBlock"], criteria["toBlock"] = hex(first), hex(last)
        logs = await self._rpc(url, "eth_getLogs", [criteria])
        if not isinstance(logs, list):
            raise CapabilityError("eth_getLogs: malformed answer")
        if len(logs) > self._max_logs:
            raise CapabilityError(f"filterQuery: {len(logs)} logs match, over this node's limit of {self._max_logs} "
                                  "for one FilterLogs (narrow the range, addresses or topics)")
        reply = pb.message(_EVM + "FilterLogsReply")()
        for item in logs:
            reply.logs.append(_log(item))
        return reply

    async def close(self) -> None:
        if self._rpc_session is not None:
            await self._rpc_session.close()


# -- JSON-RPC objects -> the SDK's messages ---------------------------------------------------------

def _address(value: bytes, field: str) -> str:
    if len(value) != 20:
        raise CapabilityError(f"{field}: an address is 20 bytes, got {len(value)}")
    return "0x" + value.hex()


def _hash(value: bytes, field: str) -> str:
    if len(value) != 32:
        raise CapabilityError(f"{field}: a hash is 32 bytes, got {len(value)}")
    return "0x" + value.hex()


def _quantity(value: Any, where: str) -> int:
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise CapabilityError(f"{where}: malformed number in the chain's answer") from None


def _data(value: Any) -> bytes:
    if not value:
        return b""
    try:
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    except (AttributeError, ValueError):
        raise CapabilityError("malformed bytes in the chain's answer") from None


def _log(item: Any) -> Any:
    if not isinstance(item, dict):
        raise CapabilityError("malformed log in the chain's answer")
    topics = [_data(t) for t in item.get("topics") or []]
    out = pb.message(_EVM + "Log")(
        address=_data(item.get("address")), topics=topics, tx_hash=_data(item.get("transactionHash")),
        block_hash=_data(item.get("blockHash")), data=_data(item.get("data")),
        event_sig=topics[0] if topics else b"", removed=bool(item.get("removed")),
        tx_index=_quantity(item.get("transactionIndex") or "0x0", "log"),
        index=_quantity(item.get("logIndex") or "0x0", "log"))
    if item.get("blockNumber"):
        out.block_number.CopyFrom(pb.int_to_bigint(_quantity(item["blockNumber"], "log")))
    return out


def _transaction(tx: dict[str, Any]) -> Any:
    """As go-ethereum's Transaction reads it: an EIP-1559 transaction's gas price is its fee cap."""
    out = pb.message(_EVM + "Transaction")(
        nonce=_quantity(tx.get("nonce"), "transaction"), gas=_quantity(tx.get("gas"), "transaction"),
        to=_data(tx.get("to")), data=_data(tx.get("input")), hash=_data(tx.get("hash")))
    out.value.CopyFrom(pb.int_to_bigint(_quantity(tx.get("value"), "transaction")))
    price = tx.get("maxFeePerGas") or tx.get("gasPrice")
    if price:
        out.gas_price.CopyFrom(pb.int_to_bigint(_quantity(price, "transaction")))
    return out


def _receipt(receipt: dict[str, Any]) -> Any:
    out = pb.message(_EVM + "Receipt")(
        status=_quantity(receipt.get("status") or "0x0", "receipt"), gas_used=_quantity(receipt.get("gasUsed"), "receipt"),
        tx_index=_quantity(receipt.get("transactionIndex"), "receipt"), block_hash=_data(receipt.get("blockHash")),
        tx_hash=_data(receipt.get("transactionHash")), contract_address=_data(receipt.get("contractAddress")))
    for item in receipt.get("logs") or []:
        out.logs.append(_log(item))
    if receipt.get("effectiveGasPrice"):
        out.effective_gas_price.CopyFrom(pb.int_to_bigint(_quantity(receipt["effectiveGasPrice"], "receipt")))
    out.block_number.CopyFrom(pb.int_to_bigint(_quantity(receipt.get("blockNumber"), "receipt")))
    return out
