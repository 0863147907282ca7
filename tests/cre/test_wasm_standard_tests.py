"""The SDK's own standard test workflows (the npm package's `dist/workflows/standard_tests`),
built with our toolchain and run on our host, each against what its source says it checks.

The internal test capabilities they call are served here: `basic-test-action` answers
`adapted_thing` = the input flag as text ("true"/"false"), `basic-test-node-action` answers
`output_thing` = 555; consensus, secrets and time are the node's own."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from node.cre.wasm import messages as pb
from node.cre.wasm.capabilities import Capabilities
from node.cre.wasm.host import Limits
from node.cre.wasm.runtime import WasmRuntime, result_json
from tests.cre.workflows.harness import toolchain
from tests.cre.workflows.standard import prepare, standard_tests

pytestmark = pytest.mark.slow

NODE_OUTPUT = 555
CONFIG = b"standard-test-config"

Inputs = pb.message("capabilities.internal.basicaction.v1.Inputs")
Outputs = pb.message("capabilities.internal.basicaction.v1.Outputs")
NodeOutputs = pb.message("capabilities.internal.nodeaction.v1.NodeOutputs")
TriggerOutputs = pb.message("capabilities.internal.basictrigger.v1.Outputs")
TriggerEvent = pb.message("capabilities.internal.actionandtrigger.v1.TriggerEvent")


@pytest.fixture(scope="module")
def chain():
    return toolchain()


@pytest.fixture(scope="module")
def built(chain, tmp_path_factory):
    """Every standard test's entry file, prepared once (building is cached by content hash)."""
    folder = tmp_path_factory.mktemp("standard")
    return {name: prepare(chain, name, folder) for name in standard_tests(chain)}


@pytest.fixture
async def runtime(chain):
    rt = WasmRuntime(chain, workers=2, limits=Limits(timeout=20))
    yield rt
    rt.close()


class Action:
    """basic-test-action: fails with a coded capability error `failures` times, then answers."""

    def __init__(self, failures: int = 0, answer: str | None = None) -> None:
        self.failures = failures
        self.answer = answer
        self.seen: list[bool] = []

    async def __call__(self, method, payload, mode):
        flag = pb.unpack(payload, Inputs).input_thing
        self.seen.append(flag)
        if self.failures:
            self.failures -= 1
            raise_coded()
        return Outputs(adapted_thing=self.answer if self.answer is not None else str(flag).lower())


def raise_coded():
    from node.cre.wasm.capabilities import CapabilityError

    raise CapabilityError("Public:System:Unavailable:try again")  # the SDK's capability error wire form


async def node_action(method, payload, mode):
    return NodeOutputs(output_thing=NODE_OUTPUT)


def services(action: Action | None = None) -> Capabilities:
    return Capabilities(asyncio.get_running_loop(), secrets={("main", "Foo"): "Bar"},
                        extra={"basic-test-action@1.0.0": action or Action(),
                               "basic-test-node-action@1.0.0": node_action})


async def run(runtime, built, name, *, action=None, index=0, payload=None, execution_id="ab" * 32):
    caps = services(action)
    loaded = await runtime.load(name, built[name], CONFIG, caps)
    outcome = await runtime.run(loaded, index, payload or TriggerOutputs(cool_output="cool"), caps, execution_id)
    return loaded, outcome


async def test_standard_capability_calls_are_async(runtime, built):
    action = Action()
    _, outcome = await run(runtime, built, "capability_calls_are_async", action=action)
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "truefalse"
    assert action.seen == [True, False]  # both dispatched before either was awaited
    assert [c.callback_id for c in outcome.calls] == [0, 1]


async def test_standard_capability_errors_are_seen_with_their_code_and_retried(runtime, built):
    action = Action(failures=2, answer="Done")
    _, outcome = await run(runtime, built, "capability_errors", action=action)
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "Done"
    assert len(action.seen) == 3


async def test_standard_config_is_handed_to_the_workflow_as_bytes(runtime, built):
    _, outcome = await run(runtime, built, "config")
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "0x" + CONFIG.hex()


async def test_standard_errors_thrown_by_the_workflow_are_its_result(runtime, built):
    _, outcome = await run(runtime, built, "errors")
    assert not outcome.ok and "workflow execution failure" in outcome.failure
    assert outcome.error is None  # the workflow's own error, not the host's


async def test_standard_frequency_list_on_one_node_counts_the_observation_once(runtime, built):
    _, outcome = await run(runtime, built, "frequency_list")
    assert outcome.ok, outcome.failure
    payload, sig = (f"payload-{NODE_OUTPUT}".encode().hex(), f"sig-{NODE_OUTPUT}".encode().hex())
    assert result_json(outcome) == f"{payload}|{sig}x1"


async def test_standard_host_wasm_write_errors_are_respected(runtime, built):
    action = Action(answer="x" * (6 << 20))  # larger than the buffer the guest offers
    _, outcome = await run(runtime, built, "host_wasm_write_errors_are_respected", action=action)
    assert not outcome.ok
    assert "does not fit" in outcome.failure


async def test_standard_logging_reaches_the_host(runtime, built):
    _, outcome = await run(runtime, built, "logging")
    assert outcome.ok, outcome.failure
    assert outcome.logs == ["log from wasm!"]
    assert result_json(outcome) == CONFIG.decode()


async def test_standard_don_runtime_used_in_node_mode_fails(runtime, built):
    _, outcome = await run(runtime, built, "mode_switch/don_runtime_in_node_mode")
    assert not outcome.ok
    assert "cannot use Runtime inside RunInNodeMode" in outcome.failure


async def test_standard_node_runtime_used_in_don_mode_fails(runtime, built):
    _, outcome = await run(runtime, built, "mode_switch/node_runtime_in_don_mode")
    assert not outcome.ok
    assert "cannot use NodeRuntime outside RunInNodeMode" in outcome.failure


async def test_standard_successful_mode_switch(runtime, built):
    _, outcome = await run(runtime, built, "mode_switch/successful_mode_switch")
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == f"true{NODE_OUTPUT}"


async def test_standard_multiple_triggers_route_by_handler_index(runtime, built):
    loaded, first = await run(runtime, built, "multiple_triggers", payload=TriggerOutputs(cool_output="a"))
    assert [s.capability for s in loaded.subscriptions] == [
        "basic-test-trigger@1.0.0", "basic-test-action-trigger@1.0.0", "basic-test-trigger@1.0.0"]
    caps = services()
    second = await runtime.run(loaded, 1, TriggerEvent(cool_output="b"), caps, "cd" * 32)
    third = await runtime.run(loaded, 2, TriggerOutputs(cool_output="c"), caps, "ef" * 32)
    assert [result_json(o) for o in (first, second, third)] == ["called 0 with a", "called 1 with b", "called 2 with c"]


async def test_standard_random_is_deterministic_per_execution_id(runtime, built):
    _, first = await run(runtime, built, "random", execution_id="01" * 32)
    _, again = await run(runtime, built, "random", execution_id="01" * 32)
    _, other = await run(runtime, built, "random", execution_id="02" * 32)
    assert first.ok and again.ok and other.ok, (first.failure, again.failure, other.failure)
    assert result_json(first) == result_json(again) != result_json(other)


async def test_standard_restrictions_pre_hook_is_refused_at_subscribe(runtime, built):
    loaded, _ = await run(runtime, built, "restrictions")
    assert loaded.subscriptions[0].kind == "unsupported"
    assert "pre-hook" in loaded.subscriptions[0].reason


async def test_standard_secrets_are_read_from_the_node(runtime, built):
    _, outcome = await run(runtime, built, "secrets")
    assert outcome.ok, outcome.failure
    assert result_json(outcome) == "Bar"


async def test_standard_secrets_fail_in_node_mode(runtime, built):
    _, outcome = await run(runtime, built, "secrets_fail_in_node_mode")
    assert not outcome.ok
    assert "cannot use Runtime inside RunInNodeMode" in outcome.failure


async def test_standard_tee_handler_is_refused_and_the_regular_one_runs(runtime, built):
    loaded, _ = await run(runtime, built, "tee_runtime")
    assert [s.kind for s in loaded.subscriptions] == ["unsupported", "other"]
    assert loaded.subscriptions[0].reason == "requires a TEE"
    outcome = await runtime.run(loaded, 1, TriggerOutputs(cool_output="x"), services(), "aa" * 32)
    assert outcome.ok, outcome.failure
    assert result_json(outcome) in (0, "0")


async def test_standard_time_interpretation_is_don_time(runtime, built):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    _, outcome = await run(runtime, built, "time_interpretation")
    assert outcome.ok, outcome.failure
    when = datetime.fromisoformat(result_json(outcome).replace("Z", "+00:00"))
    assert before <= when <= datetime.now(timezone.utc)


def test_every_standard_test_in_the_package_has_a_test_here(chain):
    covered = {"capability_calls_are_async", "capability_errors", "config", "errors", "frequency_list",
               "host_wasm_write_errors_are_respected", "logging", "mode_switch/don_runtime_in_node_mode",
               "mode_switch/node_runtime_in_don_mode", "mode_switch/successful_mode_switch", "multiple_triggers",
               "random", "restrictions", "secrets", "secrets_fail_in_node_mode", "tee_runtime", "time_interpretation"}
    assert set(standard_tests(chain)) == covered
