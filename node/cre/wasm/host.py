"""The CRE v2 WASM host: runs one workflow execution the way Chainlink's host does.

A workflow built with `@chainlink/cre-sdk` is QuickJS bytecode run by the SDK's Javy plugin
(`javy-chainlink-sdk.plugin.wasm`), or a `.wasm` that `cre workflow compile` built from the same
plugin (its `_start` evaluates embedded bytecode). Either way the guest reads an `ExecuteRequest`
from its WASI argv, calls the host through the `env` imports below, and answers with an
`ExecutionResult` through `send_response`.

Every execution gets a fresh store and instance (no state leaks from one trigger to the next,
as in Chainlink's `runWasm`), and is bounded:
- time: epoch interruption (a ticker thread bumps the engine's epoch) plus a deadline on every
  blocking host call; a guest spinning in JS traps, a host call waiting for a slow capability
  gives up when the execution's time is up;
- memory: the store's linear-memory limit;
- output: the response size (also told to the guest as `max_response_size`), log lines per
  mode, per line and in total, capability calls per execution, guest stdout/stderr kept.

Host calls are synchronous (the guest blocks in `await_capabilities`), so an execution runs in a
worker thread; `call_capability` hands the request to `HostServices`, which returns a
`concurrent.futures.Future` (capabilities run on the event loop), and `await_*` block on it.
wasmtime releases the GIL while wasm runs, so the event loop keeps serving meanwhile.

Callback ids are the guest's: int32, non-negative in DON mode and negative in node mode; an id
used twice, or with the wrong sign for the mode, is refused. Randomness: in DON mode the seed is
FNV-1a-64 of the execution id (the same on every node of a DON), in node mode it is random.
`now` and the WASI realtime clock give DON time (never going back within an execution); WASI
`poll_oneoff` is a clock-only sleep bounded by the deadline.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import secrets as pysecrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import wasmtime as W

from node.cre.wasm import messages as pb

if TYPE_CHECKING:  # the type Instance.exports() returns; wasmtime does not re-export it
    from wasmtime._instance import InstanceExports

MODE_DON, MODE_NODE = 1, 2
EPOCH_TICK = 0.01  # seconds between epoch increments
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_WASI = "wasi_snapshot_preview1"
_ENOTSUP = 58


class WorkflowLoadError(Exception):
    """A workflow file or bytecode cannot be loaded by this host (the message says why)."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 60.0  # seconds of wall time per execution, host calls included
    memory_bytes: int = 256 << 20
    max_response_bytes: int = 5 << 20
    max_logs_per_mode: int = 1000
    max_log_bytes: int = 4096
    max_log_total_bytes: int = 256 << 10  # all log lines of one execution (they are stored)
    max_capability_calls: int = 200
    max_output_bytes: int = 64 << 10  # guest stdout + stderr kept per execution


class HostServices(Protocol):
    """What an execution asks of the node. Both return futures so the guest thread can block."""

    def call_capability(self, request: Any, mode: int, execution_id: str) -> concurrent.futures.Future:
        """-> Future[pb.CapabilityResponse]"""

    def get_secrets(self, request: Any) -> concurrent.futures.Future:
        """-> Future[pb.SecretResponses]"""


@dataclass
class Program:
    """A loaded workflow: bytecode for the plugin's `invoke`, or a javy-built module (`_start`)."""

    digest: str
    bytecode: bytes | None = None
    module: W.Module | None = None


@dataclass
class CapabilityCall:
    id: str
    method: str
    callback_id: int
    mode: int
    started: float
    ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"capability": self.id, "method": self.method, "callbackId": self.callback_id,
                "mode": "node" if self.mode == MODE_NODE else "don", "ms": self.ms, "error": self.error}


@dataclass
class Outcome:
    """What one execution did. `error` is the host's or the workflow's failure; `result` the
    guest's ExecutionResult (which may itself carry the workflow's error)."""

    result: Any | None
    error: str | None
    logs: list[str]
    calls: list[CapabilityCall]
    output: str
    duration_ms: float
    logs_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None and self.result.WhichOneof("result") != "error"

    @property
    def failure(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.result is not None and self.result.WhichOneof("result") == "error":
            return self.result.error
        return None


def don_seed(execution_id: str) -> int:
    """FNV-1a 64 of the execution id, as the int64 the guest receives."""
    h = 0xCBF29CE484222325
    for byte in execution_id.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


class _Run:
    """The state of one execution, touched only from its worker thread."""

    def __init__(self, execution_id: str, services: HostServices, limits: Limits) -> None:
        self.execution_id = execution_id
        self.services = services
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = self.started + limits.timeout
        self.mode = 0  # unspecified until the guest switches (the SDK's runner does so first)
        self.logs: list[str] = []
        self.log_counts = {MODE_DON: 0, MODE_NODE: 0}
        self.logs_dropped = 0
        self.log_bytes = 0
        self.response: bytes | None = None
        self.response_error: str | None = None
        self.pending: dict[int, tuple[concurrent.futures.Future, CapabilityCall]] = {}
        self.pending_secrets: dict[int, concurrent.futures.Future] = {}
        self.used_ids: set[int] = set()
        self.used_secret_ids: set[int] = set()
        self.calls: list[CapabilityCall] = []
        self.output = bytearray()
        self.don_time = 0
        self.node_seed = pysecrets.randbits(63)
        self.timed_out = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def now_ns(self) -> int:
        current = time.time_ns()
        if self.mode == MODE_DON:  # DON time never goes back within an execution
            self.don_time = max(self.don_time, current)
            return self.don_time
        return current

    def keep_output(self, data: bytes) -> None:
        room = self.limits.max_output_bytes - len(self.output)
        if room > 0:
            self.output += data[:room]


def _memory(caller: W.Caller) -> W.Memory:
    memory = caller["memory"]
    assert isinstance(memory, W.Memory)
    return memory


def _func(exports: InstanceExports, name: str) -> W.Func:
    """An exported function; the same TypeError as calling the export would raise if it is not one."""
    export = exports[name]
    if not isinstance(export, W.Func):
        raise TypeError(f"the module's export {name} is a {type(export).__name__}, not a function")
    return export


def _read(caller: W.Caller, ptr: int, length: int) -> bytes:
    if length < 0:
        raise ValueError("negative length")
    return bytes(_memory(caller).read(caller, ptr, ptr + length))


def _write(caller: W.Caller, ptr: int, data: bytes) -> None:
    _memory(caller).write(caller, data, ptr)


def _answer(caller: W.Caller, ptr: int, limit: int, data: bytes) -> int:
    """Write `data` to the guest's out buffer and return its length, or an error if too big."""
    if len(data) > limit:
        return _fail(caller, ptr, limit, f"response of {len(data)} bytes does not fit the guest's {limit}-byte buffer")
    _write(caller, ptr, data)
    return len(data)


def _fail(caller: W.Caller, ptr: int, limit: int, message: str) -> int:
    """The host's error convention: the message in the buffer, its length negated."""
    data = message.encode()[:max(limit, 0)]
    _write(caller, ptr, data)
    return -len(data)


def _ids(raw: bytes, cls: Any) -> list[int]:
    return list(cls.FromString(raw).ids)


class WasmEngine:
    """One wasmtime engine per process: the compiled plugin and workflow modules, the epoch
    ticker, and `run()`, which executes one request to completion in the calling thread."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        config = W.Config()
        config.epoch_interruption = True
        self.engine = W.Engine(config)
        self.cache_dir = cache_dir
        self._plugins: dict[str, W.Module] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="cre-wasm-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()

    # -- loading -------------------------------------------------------------------------

    def _compile(self, wasm: bytes) -> W.Module:
        """A module from wasm bytes, through the serialized cache when there is one."""
        digest = hashlib.sha256(wasm).hexdigest()
        cached = self.cache_dir / f"{digest[:32]}.cwasm" if self.cache_dir else None
        if cached is not None and cached.exists():
            try:
                return W.Module.deserialize_file(self.engine, str(cached))
            except W.WasmtimeError:
                cached.unlink(missing_ok=True)  # another wasmtime version wrote it: compile again
        try:
            module = W.Module(self.engine, wasm)
        except W.WasmtimeError as exc:
            raise WorkflowLoadError(f"not a valid WebAssembly module: {str(exc).splitlines()[0]}") from None
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(module.serialize())
            tmp.replace(cached)
        return module

    def plugin(self, path: Path) -> W.Module:
        """The SDK's Javy plugin, compiled once per process (about 1 s, or 1 ms from the cache)."""
        key = str(path)
        with self._lock:
            if key not in self._plugins:
                if not path.exists():
                    raise WorkflowLoadError(f"the CRE Javy plugin is not installed at {path} "
                                            "(run `node-daemon cre setup` or scripts/setup.sh)")
                module = self._compile(path.read_bytes())
                exports = {e.name for e in module.exports}
                if not {"compile-src", "invoke", "cabi_realloc", "memory"} <= exports:
                    raise WorkflowLoadError(f"{path} is not a Javy plugin (exports: {sorted(exports)})")
                self._plugins[key] = module
            return self._plugins[key]

    def program_from_bytecode(self, bytecode: bytes) -> Program:
        return Program(digest=hashlib.sha256(bytecode).hexdigest(), bytecode=bytecode)

    def program_from_wasm(self, wasm: bytes) -> Program:
        """A compiled workflow (`cre workflow compile` output): a module with `_start`."""
        module = self._compile(wasm)
        names = {e.name for e in module.exports}
        if "_start" not in names or "memory" not in names:
            raise WorkflowLoadError("the module has no _start/memory exports: not a compiled CRE workflow")
        for imp in module.imports:
            if imp.module not in ("env", _WASI):
                raise WorkflowLoadError(f"the module imports {imp.module}.{imp.name}: only statically linked "
                                        "Javy workflows are supported")
            if imp.module == "env" and imp.name not in _ENV_IMPORTS:
                raise WorkflowLoadError(f"the module imports env.{imp.name}, which this host does not provide "
                                        "(TypeScript/Javy workflows are supported, Go ones are not)")
        return Program(digest=hashlib.sha256(wasm).hexdigest(), module=module)

    def compile_js(self, plugin: W.Module, source: bytes, limits: Limits | None = None) -> bytes:
        """QuickJS bytecode of a bundled workflow, through the plugin's `compile-src`."""
        limits = limits or Limits()
        store, instance = self._instantiate(plugin, _Run("compile", _NoServices(), limits), ["wasi"])
        exports = instance.exports(store)
        memory = exports["memory"]
        assert isinstance(memory, W.Memory)
        realloc, compile_src = _func(exports, "cabi_realloc"), _func(exports, "compile-src")
        ptr = realloc(store, 0, 0, 1, len(source))
        memory.write(store, source, ptr)
        ret = compile_src(store, ptr, len(source))
        status = memory.read(store, ret, ret + 1)[0]
        out_ptr, out_len = struct.unpack("<II", bytes(memory.read(store, ret + 4, ret + 12)))
        payload = bytes(memory.read(store, out_ptr, out_ptr + out_len))
        if status != 0:
            raise WorkflowLoadError("the JavaScript does not compile: " + payload.decode("utf-8", "replace")[:2000])
        return payload

    # -- running -------------------------------------------------------------------------

    def run(self, program: Program, request: Any, services: HostServices, limits: Limits,
            execution_id: str, plugin: W.Module | None = None) -> Outcome:
        """Execute one `ExecuteRequest` to completion in this thread."""
        run = _Run(execution_id, services, limits)
        request.max_response_size = limits.max_response_bytes
        argv = ["wasi", base64.b64encode(request.SerializeToString()).decode()]
        error: str | None = None
        try:
            if program.module is not None:
                store, instance = self._instantiate(program.module, run, argv)
                start = _func(instance.exports(store), "_start")
                self._guard(run, lambda: start(store))
            else:
                assert plugin is not None and program.bytecode is not None
                store, instance = self._instantiate(plugin, run, argv)
                exports = instance.exports(store)
                memory = exports["memory"]
                assert isinstance(memory, W.Memory)
                realloc, invoke = _func(exports, "cabi_realloc"), _func(exports, "invoke")
                code = program.bytecode
                ptr = realloc(store, 0, 0, 1, len(code))
                memory.write(store, code, ptr)
                self._guard(run, lambda: invoke(store, ptr, len(code), 0, 0, 0))
        except _Ended as ended:
            error = ended.error
        except W.WasmtimeError as exc:  # instantiation: a memory limit below the module's minimum, …
            error = f"the workflow could not start: {str(exc).splitlines()[0]}"
        result = None
        if run.response_error is not None:
            error = error or run.response_error
        elif run.response is not None:
            try:
                result = pb.ExecutionResult.FromString(run.response)
            except Exception:  # noqa: BLE001 - a guest's bytes; any decode failure is its fault
                error = error or "the workflow's response is not an ExecutionResult"
        if result is None and error is None:
            error = "the workflow ended without a response"
        for pending, call in run.pending.values():  # never awaited: not ours to wait for
            pending.cancel()
            call.error = call.error or "never awaited"
        return Outcome(result=result, error=error, logs=run.logs, calls=run.calls,
                       output=run.output.decode("utf-8", "replace"),
                       duration_ms=round((time.monotonic() - run.started) * 1000, 2),
                       logs_dropped=run.logs_dropped)

    def _guard(self, run: _Run, call: Callable[[], Any]) -> None:
        try:
            call()
        except W.ExitTrap as exc:
            if exc.code != 0:
                raise _Ended(f"the workflow exited with code {exc.code}") from None
        except W.Trap as exc:
            if run.timed_out or exc.trap_code == W.TrapCode.INTERRUPT:
                raise _Ended(f"the workflow ran longer than {run.limits.timeout:g}s and was stopped") from None
            code = exc.trap_code.name.lower().replace("_", " ") if exc.trap_code is not None else "trap"
            said = [line.strip() for line in run.output.decode("utf-8", "replace").splitlines() if line.strip()]
            said = [line for line in said if "Error" in line] or said
            raise _Ended(f"the workflow trapped ({code})" + (f": {said[-1][:300]}" if said else "")) from None
        except W.WasmtimeError as exc:
            text = str(exc)
            if "interrupt" in text:
                raise _Ended(f"the workflow ran longer than {run.limits.timeout:g}s and was stopped") from None
            raise _Ended(f"the workflow failed: {text.splitlines()[0]}") from None

    def _instantiate(self, module: W.Module, run: _Run, argv: list[str]) -> tuple[W.Store, W.Instance]:
        store = W.Store(self.engine)
        store.set_limits(memory_size=run.limits.memory_bytes)
        store.set_epoch_deadline(max(1, int(run.limits.timeout / EPOCH_TICK)))
        wasi = W.WasiConfig()
        wasi.argv = argv
        wasi.stdout_custom = run.keep_output
        wasi.stderr_custom = run.keep_output
        store.set_wasi(wasi)
        linker = W.Linker(self.engine)
        linker.define_wasi()
        linker.allow_shadowing = True
        types = {(i.module, i.name): i.type for i in module.imports}
        for (mod, name), fn in _imports(run).items():
            ty = types.get((mod, name))
            if ty is not None:
                if not isinstance(ty, W.FuncType):  # wasmtime's own check, where mypy sees it
                    raise TypeError(f"the module imports {mod}.{name} as a {type(ty).__name__}, not a function")
                linker.define_func(mod, name, ty, fn, access_caller=True)
        instance = linker.instantiate(store, module)
        return store, instance


class _Ended(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class _NoServices:
    def call_capability(self, request: Any, mode: int, execution_id: str) -> concurrent.futures.Future:
        raise RuntimeError("no capabilities while compiling")

    def get_secrets(self, request: Any) -> concurrent.futures.Future:
        raise RuntimeError("no secrets while compiling")


_ENV_IMPORTS = frozenset({
    "version_v2_typescript", "send_response", "log", "switch_modes", "random_seed", "now", "call_capability",
    "await_capabilities", "get_secrets", "await_secrets",
})


def _imports(run: _Run) -> dict[tuple[str, str], Callable[..., Any]]:
    """The host functions of one execution, closed over its state."""
    limits = run.limits

    def version(caller: W.Caller) -> None:
        return None

    def send_response(caller: W.Caller, ptr: int, length: int) -> int:
        if length > limits.max_response_bytes:
            run.response_error = (f"the workflow's response of {length} bytes is over the "
                                  f"{limits.max_response_bytes}-byte limit")
            return -1
        run.response = _read(caller, ptr, length)
        return 0

    def log(caller: W.Caller, ptr: int, length: int) -> None:
        mode = run.mode if run.mode in run.log_counts else MODE_DON
        if run.log_counts[mode] >= limits.max_logs_per_mode:
            run.logs_dropped += 1
            return
        text = _read(caller, ptr, min(length, limits.max_log_bytes)).decode("utf-8", "replace")
        if length > limits.max_log_bytes:
            text += "…"
        if run.log_bytes + len(text) > limits.max_log_total_bytes:
            run.logs_dropped += 1
            return
        run.log_counts[mode] += 1
        run.log_bytes += len(text)
        run.logs.append(text)

    def switch_modes(caller: W.Caller, mode: int) -> None:
        run.mode = mode

    def random_seed(caller: W.Caller, mode: int) -> int:
        if mode == MODE_DON:
            return don_seed(run.execution_id)
        if mode == MODE_NODE:
            return run.node_seed
        return -1

    def now(caller: W.Caller, out: int) -> int:
        _write(caller, out, struct.pack("<Q", run.now_ns()))
        return 0

    def call_capability(caller: W.Caller, ptr: int, length: int) -> int:
        try:
            request = pb.CapabilityRequest.FromString(_read(caller, ptr, length))
        except Exception:  # noqa: BLE001 - malformed guest bytes
            return _fail(caller, ptr, length, "malformed CapabilityRequest")
        cid = request.callback_id
        problem = None
        if cid in run.used_ids:
            problem = f"callback id {cid} was already used in this execution"
        elif run.mode == MODE_NODE and cid >= 0:
            problem = f"callback id {cid} must be negative in node mode"
        elif run.mode == MODE_DON and cid < 0:
            problem = f"callback id {cid} must not be negative in DON mode"
        elif len(run.calls) >= limits.max_capability_calls:
            problem = f"more than {limits.max_capability_calls} capability calls in one execution"
        if problem is not None:
            return _fail(caller, ptr, length, problem)
        run.used_ids.add(cid)
        call = CapabilityCall(request.id, request.method, cid, run.mode, time.monotonic())
        run.calls.append(call)
        try:
            future = run.services.call_capability(request, run.mode, run.execution_id)
        except Exception as exc:  # noqa: BLE001 - refused before dispatch: tell the guest
            call.error = str(exc)
            return _fail(caller, ptr, length, str(exc))
        run.pending[cid] = (future, call)
        return 0

    def await_capabilities(caller: W.Caller, ptr: int, length: int, out: int, out_max: int) -> int:
        try:
            ids = _ids(_read(caller, ptr, length), pb.AwaitCapabilitiesRequest)
        except Exception:  # noqa: BLE001 - guest bytes: any decode failure is the guest's malformed request
            return _fail(caller, out, out_max, "malformed AwaitCapabilitiesRequest")
        reply = pb.AwaitCapabilitiesResponse()
        for cid in ids:
            if cid not in run.pending:
                return _fail(caller, out, out_max, f"no pending capability call with callback id {cid}")
        for cid in ids:
            future, call = run.pending.pop(cid)
            response = _wait(run, future, f"capability {call.id}")
            call.ms = round((time.monotonic() - call.started) * 1000, 2)
            if response.WhichOneof("response") == "error":
                call.error = response.error[:500]
            entry = reply.responses.add()
            entry.key = cid
            entry.value.CopyFrom(response)
        return _answer(caller, out, out_max, reply.SerializeToString())

    def get_secrets(caller: W.Caller, ptr: int, length: int, out: int, out_max: int) -> int:
        try:
            request = pb.GetSecretsRequest.FromString(_read(caller, ptr, length))
        except Exception:  # noqa: BLE001 - guest bytes: any decode failure is the guest's malformed request
            return _fail(caller, out, out_max, "malformed GetSecretsRequest")
        cid = request.callback_id
        if cid in run.used_secret_ids:
            return _fail(caller, out, out_max, f"secrets callback id {cid} was already used in this execution")
        if run.mode == MODE_NODE:
            return _fail(caller, out, out_max, "secrets cannot be read in node mode")
        run.used_secret_ids.add(cid)
        run.pending_secrets[cid] = run.services.get_secrets(request)
        return 0

    def await_secrets(caller: W.Caller, ptr: int, length: int, out: int, out_max: int) -> int:
        try:
            ids = _ids(_read(caller, ptr, length), pb.AwaitSecretsRequest)
        except Exception:  # noqa: BLE001 - guest bytes: any decode failure is the guest's malformed request
            return _fail(caller, out, out_max, "malformed AwaitSecretsRequest")
        reply = pb.AwaitSecretsResponse()
        for cid in ids:
            if cid not in run.pending_secrets:
                return _fail(caller, out, out_max, f"no pending secrets request with callback id {cid}")
        for cid in ids:
            try:
                responses = run.pending_secrets.pop(cid).result(timeout=max(run.remaining(), 0))
            except Exception as exc:  # noqa: BLE001 - reported to the guest, never raised
                return _fail(caller, out, out_max, f"secrets: {exc}")
            entry = reply.responses.add()
            entry.key = cid
            entry.value.CopyFrom(responses)
        return _answer(caller, out, out_max, reply.SerializeToString())

    def clock_time_get(caller: W.Caller, clock_id: int, precision: int, out: int) -> int:
        value = run.now_ns() if clock_id == 0 else time.monotonic_ns()
        _write(caller, out, struct.pack("<Q", value))
        return 0

    def poll_oneoff(caller: W.Caller, subs: int, events: int, count: int, nevents: int) -> int:
        """Clock subscriptions only: sleep until the earliest, never past the deadline."""
        if count <= 0 or count > 64:
            return 28  # EINVAL
        raw = _read(caller, subs, 48 * count)
        best: tuple[float, int] | None = None
        for i in range(count):
            userdata, tag = struct.unpack_from("<QB", raw, 48 * i)
            if tag != 0:
                return _ENOTSUP
            clock_id, timeout, _precision, flags = struct.unpack_from("<IQQH", raw, 48 * i + 16)
            wait_ns = timeout
            if flags & 1:  # absolute time on that clock
                wait_ns = timeout - (run.now_ns() if clock_id == 0 else time.monotonic_ns())
            seconds = max(wait_ns, 0) / 1e9
            if best is None or seconds < best[0]:
                best = (seconds, userdata)
        assert best is not None
        time.sleep(max(0.0, min(best[0], run.remaining())))
        _write(caller, events, struct.pack("<QHB", best[1], 0, 0) + b"\0" * 21)
        _write(caller, nevents, struct.pack("<I", 1))
        return 0

    return {
        ("env", "version_v2_typescript"): version,
        ("env", "send_response"): send_response,
        ("env", "log"): log,
        ("env", "switch_modes"): switch_modes,
        ("env", "random_seed"): random_seed,
        ("env", "now"): now,
        ("env", "call_capability"): call_capability,
        ("env", "await_capabilities"): await_capabilities,
        ("env", "get_secrets"): get_secrets,
        ("env", "await_secrets"): await_secrets,
        (_WASI, "clock_time_get"): clock_time_get,
        (_WASI, "poll_oneoff"): poll_oneoff,
    }


def _wait(run: _Run, future: concurrent.futures.Future, what: str) -> Any:
    """A capability's response, or an error response when it fails or the time is up."""
    try:
        return future.result(timeout=max(run.remaining(), 0))
    except concurrent.futures.TimeoutError:
        run.timed_out = True
        future.cancel()
        return pb.CapabilityResponse(error=f"{what}: no answer before the execution's deadline")
    except concurrent.futures.CancelledError:
        return pb.CapabilityResponse(error=f"{what}: cancelled")
    except Exception as exc:  # noqa: BLE001 - the capability failed: the guest sees why
        return pb.CapabilityResponse(error=f"{what}: {exc}"[:2000])


def new_execution_id(workflow: str, trigger: str) -> str:
    """A 64-hex execution id, as Chainlink's (unique per execution; the DON seed derives from it)."""
    return hashlib.sha256(f"{workflow}|{trigger}|{time.time_ns()}|{pysecrets.token_hex(8)}".encode()).hexdigest()
