"""The WebSocket control plane: per-org ordered messages with sequence numbers.

Server -> client: InitialState, StateChange, PolicyInvalidated, KeyRotated, ResyncRequired,
Error, Pong. Client -> server: Subscribed, Ack {seq}, Ping. Every message is
`{"type", "seq", "ts", "org_id", "data"}`. The hub keeps the last `buffer` messages of each
org: a client reconnecting with `?last_seq=N` gets what it missed replayed, or
ResyncRequired when N is older than the buffer; a client that falls more than `max_unacked`
messages behind on acks also gets ResyncRequired (it should reload state over HTTP).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from node.logs import get_logger
from node.server import safejson

log = get_logger(__name__)


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    org_id: str
    acked: int = 0
    resync_sent: bool = False
    subscribed: bool = False


class ControlHub:
    def __init__(self, buffer: int = 1000, max_unacked: int = 500) -> None:
        self._clients: dict[str, set[_Client]] = {}
        self._seq: dict[str, int] = {}
        self._log: dict[str, deque[dict[str, Any]]] = {}
        self._buffer = buffer
        self._max_unacked = max_unacked

    def clients(self, org_id: str) -> int:
        return len(self._clients.get(org_id, ()))

    def _message(self, org_id: str, kind: str, data: dict[str, Any], sequenced: bool = True) -> dict[str, Any]:
        seq = self._seq.get(org_id, 0)
        if sequenced:
            seq += 1
            self._seq[org_id] = seq
        return {"type": kind, "seq": seq, "ts": time.time(), "org_id": org_id, "data": data}

    async def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        message = self._message(org_id, kind, data)
        self._log.setdefault(org_id, deque(maxlen=self._buffer)).append(message)
        text = json.dumps(message)
        clients = list(self._clients.get(org_id, ()))
        if clients:
            await asyncio.gather(*(self._deliver(c, message["seq"], text) for c in clients))
        return message

    async def _deliver(self, client: _Client, seq: int, text: str) -> None:
        try:
            if seq - client.acked > self._max_unacked and not client.resync_sent:
                client.resync_sent = True
                await client.ws.send_str(json.dumps(self._message(client.org_id, "ResyncRequired",
                                                                  {"reason": "too many unacknowledged messages"},
                                                                  sequenced=False)))
                return
            await client.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass  # the reader loop notices the close and unregisters

    async def serve(self, request: web.Request, org_id: str, initial: dict[str, Any],
                    last_seq: int | None) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        client = _Client(ws, org_id, acked=self._seq.get(org_id, 0))
        self._clients.setdefault(org_id, set()).add(client)
        log.info("control.connected", org_id=org_id, clients=self.clients(org_id))
        try:
            await ws.send_str(json.dumps(self._message(org_id, "InitialState", initial, sequenced=False)))
            if last_seq is not None:
                await self._replay(client, last_seq)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._on_client_message(client, msg.data)
        finally:
            self._clients.get(org_id, set()).discard(client)
            log.info("control.disconnected", org_id=org_id, clients=self.clients(org_id))
        return ws

    async def _replay(self, client: _Client, last_seq: int) -> None:
        history = self._log.get(client.org_id, deque())
        current = self._seq.get(client.org_id, 0)
        if last_seq >= current:
            return
        oldest = history[0]["seq"] if history else current + 1
        if last_seq + 1 < oldest:
            await client.ws.send_str(json.dumps(self._message(client.org_id, "ResyncRequired",
                                                              {"reason": "missed messages are no longer buffered",
                                                               "last_seq": last_seq, "oldest_seq": oldest},
                                                              sequenced=False)))
            return
        client.acked = last_seq
        for message in history:
            if message["seq"] > last_seq:
                await client.ws.send_str(json.dumps(message))

    async def _on_client_message(self, client: _Client, raw: str) -> None:
        try:
            message = safejson.loads(raw)
            kind = message.get("type")
        except (ValueError, AttributeError):
            await client.ws.send_str(json.dumps(self._message(client.org_id, "Error",
                                                              {"message": "messages must be JSON objects"},
                                                              sequenced=False)))
            return
        if kind == "Ack":
            seq = message.get("seq")
            if isinstance(seq, int) and seq > client.acked:
                client.acked = seq
                client.resync_sent = False
        elif kind == "Subscribed":
            client.subscribed = True
        elif kind == "Ping":
            await client.ws.send_str(json.dumps(self._message(client.org_id, "Pong", {}, sequenced=False)))
        else:
            await client.ws.send_str(json.dumps(self._message(client.org_id, "Error",
                                                              {"message": f"unknown message type {kind!r}"},
                                                              sequenced=False)))

    async def close(self) -> None:
        for clients in self._clients.values():
            for client in list(clients):
                await client.ws.close()
