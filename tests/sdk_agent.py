"""An agent program using the published nullrun SDK, run as its own process by
tests/gateway/test_gateway_sdk.py: `python -m tests.sdk_agent <scenario>`. It talks only to the node
named by NR_URL and prints one JSON line per outcome, for the test to read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sys
import time

_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address) -> None:
    """Tests reach 127.0.0.1 only: an SDK call to anywhere else fails loudly here."""
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
        raise OSError(f"the agent tried to reach {address!r}; only the node on 127.0.0.1 is allowed")
    _connect(sock, address)


socket.socket.connect = _loopback_only  # before the SDK is imported

import nullrun  # noqa: E402
from nullrun.breaker.exceptions import NullRunAuthenticationError, NullRunError  # noqa: E402


def out(**fields) -> None:
    print(json.dumps({"t": time.time(), **fields}), flush=True)


def outcome(exc: BaseException) -> dict:
    return {"error": type(exc).__name__, "code": getattr(exc, "error_code", None),
            "agent_message": getattr(exc, "agent_message", None), "message": str(exc)[:300]}


runs: dict[str, int] = {"work": 0, "awork": 0, "spend": 0, "send_money": 0, "crash": 0}


@nullrun.protect
def work(x: int) -> int:
    runs["work"] += 1
    return x * 2


@nullrun.protect
async def awork(x: int) -> int:
    runs["awork"] += 1
    await asyncio.sleep(0)
    return x + 1


@nullrun.protect
def spend(input_tokens: int, output_tokens: int) -> str:
    runs["spend"] += 1
    nullrun.get_runtime().track_llm(input_tokens, output_tokens, model="gpt-x")
    return "spent"


@nullrun.protect
def crash(input_tokens: int, output_tokens: int) -> str:
    runs["crash"] += 1
    raise ValueError("the tool failed")


@nullrun.protect
def send_money(amount: int) -> str:
    runs["send_money"] += 1
    return f"sent {amount}"


def call(fn, *args) -> None:
    try:
        result = asyncio.run(fn(*args)) if asyncio.iscoroutinefunction(fn) else fn(*args)
        out(fn=fn.__name__, ok=True, result=result, runs=runs[fn.__name__])
    except (NullRunError, ValueError) as exc:
        out(fn=fn.__name__, ok=False, runs=runs[fn.__name__], **outcome(exc))


def secret_digest(runtime) -> str:
    return hashlib.sha256((runtime._transport.secret_key or "").encode()).hexdigest()[:12]


def audit_list(runtime, **filters) -> None:
    from nullrun.audit import AuditQuery

    try:
        page = runtime.audit.list(AuditQuery(**filters))
    except NullRunError as exc:
        out(event="audit_list", ok=False, **outcome(exc))
        return
    rows = [{"id": e.id, "event_type": e.event_type, "action": e.action, "decision": e.decision,
             "tool_name": e.tool_name, "execution_id": e.execution_id, "policy_id": e.policy_id,
             "actor": e.actor, "outcome": e.outcome, "current_event_hash": e.current_event_hash,
             "previous_event_hash": e.previous_event_hash} for e in page.entries]
    out(event="audit_list", ok=True, filters=filters, rows=rows, meta=vars(page.meta))


def audit_verify(runtime) -> None:
    try:
        result = runtime.audit.verify()
    except NullRunError as exc:
        out(event="audit_verify", ok=False, **outcome(exc))
        return
    out(event="audit_verify", ok=True, **{k: v for k, v in vars(result).items() if k != "timestamp"})


def main(scenario: str) -> None:
    runtime = nullrun.init(api_key=os.environ["NR_KEY"], api_url=os.environ["NR_URL"],
                           on_denied=os.environ.get("NR_ON_DENIED", "raise"))
    out(event="ready", org=runtime.organization_id, workflow=runtime.workflow_id, secret=secret_digest(runtime))
    if scenario == "basic":
        call(work, 21)
        call(awork, 1)
    elif scenario == "spend":
        for _ in range(int(os.environ.get("NR_CALLS", "1"))):
            call(spend, int(os.environ["NR_IN"]), int(os.environ["NR_OUT"]))
    elif scenario == "priced":  # the pre-flight names the model and the output cap
        nullrun.set_call_context(model="gpt-x", max_output_tokens=1000)
        call(crash, 0, 0)
        call(spend, int(os.environ["NR_IN"]), int(os.environ["NR_OUT"]))
        call(spend, int(os.environ["NR_IN"]), int(os.environ["NR_OUT"]))
    elif scenario == "approximate":  # tracked spend, then the SDK's own budget estimate
        call(spend, int(os.environ["NR_IN"]), int(os.environ["NR_OUT"]))
        out(event="approximate", budget=runtime.approximate_budget())
    elif scenario == "audit":  # the SDK's runtime.audit.*: list, verify, export
        call(work, 1)
        call(send_money, 5)
        audit_list(runtime, event_type="authorization_decision", limit=50)
        audit_list(runtime, decision="deny")
        audit_verify(runtime)
        job = runtime.audit.create_export()
        out(event="export_created", job=job)
        deadline = time.monotonic() + 30
        status = runtime.audit.export_status(job["job_id"])
        while status.status not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            status = runtime.audit.export_status(job["job_id"])
        out(event="export_status", status=status.status, file_url=status.file_url, record_count=status.record_count,
            jobs=[j.id for j in runtime.audit.list_exports()])
    elif scenario == "approval":  # a call a policy holds for a person; then an ordinary one
        call(send_money, 100)
        call(work, 1)
    elif scenario == "audit_verify":
        audit_verify(runtime)
    elif scenario == "deny":
        call(send_money, 100)
        call(work, 1)
    elif scenario == "loop":
        deadline = time.monotonic() + float(os.environ.get("NR_SECONDS", "20"))
        errors = 0
        while time.monotonic() < deadline:
            try:
                work(1)
                out(fn="work", ok=True, secret=secret_digest(runtime), runs=runs["work"])
            except NullRunError as exc:
                out(fn="work", ok=False, secret=secret_digest(runtime), runs=runs["work"], **outcome(exc))
                errors += 1
                if errors >= int(os.environ.get("NR_STOP_AFTER_ERRORS", "1000000")):
                    break
                if isinstance(exc, NullRunAuthenticationError) and os.environ.get("NR_REINIT_ON_AUTH") == "1":
                    # What an application does when its key was rotated: init again (same process).
                    runtime = nullrun.init(api_key=os.environ["NR_KEY"], api_url=os.environ["NR_URL"])
                    out(event="reinit", secret=secret_digest(runtime))
            time.sleep(float(os.environ.get("NR_INTERVAL", "0.05")))
    nullrun.shutdown()
    out(event="done")


if __name__ == "__main__":
    main(sys.argv[1])
