"""The WebSocket control plane: per-org ordered messages with sequence numbers, in the shape the
published nullrun SDK parses.

Server -> client `type`s: initial_state, state_change, policy_invalidated, key_rotated,
approval_resolved (approval_id, workflow_id, execution_id, outcome approved|denied, note,
resolved_at, message_id), resync_required, error, pong (the seed's InitialState, StateChange, ...: the SDK matches the
snake_case spelling). Every message is `{"type", "seq", "ts", "org_id", "organization_id",
"data"}` plus the flat fields the SDK reads (state_change: workflow_id, state
Normal|Paused|Killed, version, message_id, reason, updated_at; key_rotated: key_id,
new_version; policy_invalidated: policy_id, new_version). Client -> server: subscribed,
ack {seq | message_id}, ping (either spelling).

Sequence numbers are persisted before a message is sent, so a restart never reuses one: a
client reconnecting with `?last_seq=N` gets what it missed replayed from the in-memory buffer,
or resync_required when N is older than the buffer (always the case right after a restart).

Publishing never waits on a client: each client has a bounded send queue drained by its own
writer task. A client whose queue is full (it stopped reading) is dropped: its queue is replaced
by one resync_required and the connection is closed, so one stuck client cannot delay a kill
switch reaching the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from node.logs import get_logger
from node.server import safejson

log = get_logger(__name__)

STATES = {"active": "Normal", "paused": "Paused", "killed": "Killed"}
_CLOSE = object()


def wire_type(kind: str) -> str:
    """InitialState -> initial_state (the SDK's spelling of the seed's names)."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(kind))


def sdk_fields(kind: str, data: dict[str, Any], seq: int, ts: float) -> dict[str, Any]:
    """The flat fields the SDK reads for `kind`."""
    if kind == "StateChange":
        return {"workflow_id": data.get("workflow_id"), "state": STATES.get(data.get("status", ""), "Normal"),
                "version": seq, "message_id": str(seq), "reason": data.get("reason"), "updated_at": ts}
    if kind == "KeyRotated":
        return {"key_id": data.get("key_id"), "new_version": data.get("key_version", seq)}
    if kind == "PolicyInvalidated":
        return {"policy_id": data.get("policy_id"), "new_version": seq}
    if kind == "ApprovalResolved":
        return {k: data.get(k) for k in ("approval_id", "workflow_id", "execution_id", "outcome", "note",
                                         "resolved_at")} | {"message_id": str(seq)}
    if kind == "InitialState":
        return {"workflows": data.get("workflows", [])}
    if kind == "Error":
        return {"code": data.get("code", "bad_request"), "message": data.get("message")}
    if kind == "ResyncRequired":
        return {"reason": data.get("reason")}
    return {}


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    org_id: str
    queue: asyncio.Queue
    acked: int = 0
    workflow_id: str | None = None  # a workflow-bound key hears its workflow only
    key_id: str | None = None
    subscribed: bool = False
    dropped: bool = False
    writer: asyncio.Task | None = field(default=None, repr=False)


class ControlHub:
    def __init__(self, buffer: int = 1000, queue_size: int = 256, send_timeout: float = 5.0,
                 load_seqs: Callable[[], Awaitable[dict[str, int]]] | None = None,
                 save_seq: Callable[[str, int], Awaitable[None]] | None = None) -> None:
        self._clients: dict[str, set[_Client]] = {}
        self._seq: dict[str, int] = {}
        self._log: dict[str, deque[dict[str, Any]]] = {}
        self._buffer = buffer
        self._queue_size = queue_size
        self._send_timeout = send_timeout
        self._load_seqs = load_seqs
        self._save_seq = save_seq

    async def start(self) -> None:
        if self._load_seqs is not None:
            self._seq.update(await self._load_seqs())

    def clients(self, org_id: str) -> int:
        return len(self._clients.get(org_id, ()))

    def current_seq(self, org_id: str) -> int:
        return self._seq.get(org_id, 0)

    def _message(self, org_id: str, kind: str, data: dict[str, Any], seq: int) -> dict[str, Any]:
        ts = time.time()
        return {"type": wire_type(kind), "seq": seq, "ts": ts, "org_id": org_id, "organization_id": org_id,
                "data": data, **sdk_fields(kind, data, seq, ts)}

    def _unsequenced(self, org_id: str, kind: str, data: dict[str, Any]) -> str:
        return json.dumps(self._message(org_id, kind, data, self._seq.get(org_id, 0)))

    async def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Sequence, persist, buffer and queue a message for every client of the org; returns at
        once (never waits for a client to read)."""
        seq = self._seq.get(org_id, 0) + 1
        self._seq[org_id] = seq
        if self._save_seq is not None:
            await self._save_seq(org_id, seq)
        message = self._message(org_id, kind, data, seq)
        self._log.setdefault(org_id, deque(maxlen=self._buffer)).append(message)
        text = json.dumps(message)
        for client in list(self._clients.get(org_id, ())):
            if self._hears(client, message):
                self._enqueue(client, text)
        return message

    @staticmethod
    def _hears(client: _Client, message: dict[str, Any]) -> bool:
        """A workflow-bound client gets its workflow's state changes and its own key's rotation,
        not the rest of the org's (its sequence numbers then have gaps, which the SDK ignores)."""
        if client.workflow_id is None:
            return True
        if message["type"] in ("state_change", "approval_resolved"):
            return message["data"].get("workflow_id") == client.workflow_id
        if message["type"] == "key_rotated":
            return message["data"].get("key_id") == client.key_id
        return True

    def _enqueue(self, client: _Client, text: str) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        """A client that stopped reading: its backlog is replaced by resync_required, then closed."""
        client.dropped = True
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(self._unsequenced(client.org_id, "ResyncRequired",
                                                  {"reason": "client fell behind; reload state"}))
        client.queue.put_nowait(_CLOSE)
        log.warning("control.client_dropped", org_id=client.org_id, queue_size=self._queue_size)

    async def _write(self, client: _Client) -> None:
        try:
            while True:
                item = await client.queue.get()
                if item is _CLOSE:
                    break
                await asyncio.wait_for(client.ws.send_str(item), self._send_timeout)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), self._send_timeout)

    async def serve(self, request: web.Request, org_id: str, initial: dict[str, Any],
                    last_seq: int | None, *, workflow_id: str | None = None,
                    key_id: str | None = None) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        client = _Client(ws, org_id, asyncio.Queue(self._queue_size + 2), acked=self._seq.get(org_id, 0),
                         workflow_id=workflow_id, key_id=key_id)
        self._clients.setdefault(org_id, set()).add(client)
        client.writer = asyncio.create_task(self._write(client))
        log.info("control.connected", org_id=org_id, clients=self.clients(org_id))
        try:
            self._enqueue(client, self._unsequenced(org_id, "InitialState", initial))
            if last_seq is not None:
                self._replay(client, last_seq)
            async for msg in ws:
                if client.dropped:
                    break  # stop reading a client we gave up on: its input costs the loop too
                if msg.type != WSMsgType.TEXT:
                    continue
                self._on_client_message(client, msg.data)
        finally:
            self._clients.get(org_id, set()).discard(client)
            if not client.dropped:
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(_CLOSE)
            if client.writer is not None:
                if client.dropped:  # let it try to say resync_required, briefly
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(client.writer), self._send_timeout)
                client.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await client.writer
            if client.dropped and request.transport is not None:
                request.transport.abort()  # no closing handshake with a client that does not read
            log.info("control.disconnected", org_id=org_id, clients=self.clients(org_id))
        return ws

    def _replay(self, client: _Client, last_seq: int) -> None:
        history = self._log.get(client.org_id, deque())
        current = self._seq.get(client.org_id, 0)
        if last_seq == current:
            return
        oldest = history[0]["seq"] if history else current + 1
        if last_seq > current or last_seq + 1 < oldest:
            reason = ("last_seq is ahead of this server's sequence" if last_seq > current
                      else "missed messages are no longer buffered")
            self._enqueue(client, self._unsequenced(client.org_id, "ResyncRequired",
                                                    {"reason": reason, "last_seq": last_seq, "oldest_seq": oldest,
                                                     "current_seq": current}))
            return
        client.acked = last_seq
        for message in history:
            if message["seq"] > last_seq and self._hears(client, message):
                self._enqueue(client, json.dumps(message))

    def _on_client_message(self, client: _Client, raw: str) -> None:
        try:
            message = safejson.loads(raw)
            kind = str(message.get("type", "")).lower()
        except (ValueError, AttributeError):
            error = {"code": "bad_request", "message": "messages must be JSON objects"}
            self._enqueue(client, self._unsequenced(client.org_id, "Error", error))
            return
        if kind == "ack":
            seq = message.get("seq")
            message_id = message.get("message_id")
            if (seq is None and isinstance(message_id, str) and message_id.isascii() and message_id.isdigit()
                    and len(message_id) <= 20):  # "²" passes isdigit() and int() refuses it
                seq = int(message_id)
            if isinstance(seq, int) and seq > client.acked:
                client.acked = seq
        elif kind == "subscribed":
            client.subscribed = True
        elif kind == "ping":
            self._enqueue(client, self._unsequenced(client.org_id, "Pong", {}))
        else:
            self._enqueue(client, self._unsequenced(client.org_id, "Error",
                                                    {"code": "bad_request",
                                                     "message": f"unknown message type {message.get('type')!r}"}))

    async def close(self) -> None:
        for clients in self._clients.values():
            for client in list(clients):
                await client.ws.close()
