"""Building the SDK's own standard test workflows (`dist/workflows/standard_tests/**/test.ts` in
the npm package) for our host.

They import `@cre/...` source paths of the SDK repository. The package ships most of them under
`dist/`, but not the clients of the internal test capabilities (`@cre/generated-sdk/
capabilities/internal/{basictrigger,basicaction,nodeaction,actionandtrigger}/…_sdk_gen`) nor
`basic_trigger_pb`. So each test is built in a folder of its own with a tsconfig mapping `@cre/*`
to the package's `dist/*`, and small clients of ours for those four capabilities, whose protobuf
schemas come from our own definitions (node/cre/wasm/messages.py), serialized into the shim.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from node.cre.wasm import messages as pb
from node.cre.wasm.toolchain import Toolchain


def _schema_module(package: str, names: list[str]) -> str:
    b64 = base64.b64encode(pb.file_descriptor(package)).decode()
    lines = ["import { fileDesc, messageDesc } from '@bufbuild/protobuf/codegenv1'",
             f"const file = fileDesc('{b64}')"]
    lines += [f"export const {name}Schema = messageDesc(file, {i})" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


_TRIGGER = """\
import {{ fromJson }} from '@bufbuild/protobuf'
import {{ anyPack }} from '@bufbuild/protobuf/wkt'
import {{ ConfigSchema, {output}Schema }} from './{schema}'

export class BasicCapability {{
	static CAPABILITY_ID = '{capability}'
	trigger(config: any) {{
		return new Trigger(config)
	}}
}}

class Trigger {{
	config: any
	constructor(config: any) {{
		this.config = config.$typeName ? config : fromJson(ConfigSchema, config)
	}}
	capabilityId() {{ return BasicCapability.CAPABILITY_ID }}
	method() {{ return 'Trigger' }}
	outputSchema() {{ return {output}Schema }}
	configAsAny() {{ return anyPack(ConfigSchema, this.config) }}
	adapt(raw: any) {{ return raw }}
}}
"""

_ACTION = """\
import {{ fromJson }} from '@bufbuild/protobuf'
import {{ {input}Schema, {output}Schema }} from './{schema}'

export class BasicActionCapability {{
	static CAPABILITY_ID = '{capability}'
	performAction(runtime: any, input: any) {{
		const payload = input.$typeName ? input : fromJson({input}Schema, input)
		const response = runtime.callCapability({{
			capabilityId: BasicActionCapability.CAPABILITY_ID, method: 'PerformAction', payload,
			inputSchema: {input}Schema, outputSchema: {output}Schema,
		}})
		return {{ result: () => response.result() }}
	}}
}}
"""

# shim path under @cre/generated-sdk/capabilities/internal/ -> its source
def _shims() -> dict[str, str]:
    return {
        "basictrigger/v1/basic_trigger_schema.ts": _schema_module("capabilities.internal.basictrigger.v1",
                                                                  ["Config", "Outputs"]),
        "basictrigger/v1/basic_sdk_gen.ts": _TRIGGER.format(output="Outputs", schema="basic_trigger_schema",
                                                            capability="basic-test-trigger@1.0.0"),
        "actionandtrigger/v1/action_and_trigger_schema.ts": _schema_module(
            "capabilities.internal.actionandtrigger.v1", ["Config", "TriggerEvent", "Input", "Output"]),
        "actionandtrigger/v1/basic_sdk_gen.ts": _TRIGGER.format(
            output="TriggerEvent", schema="action_and_trigger_schema", capability="basic-test-action-trigger@1.0.0"),
        "basicaction/v1/basic_action_schema.ts": _schema_module("capabilities.internal.basicaction.v1",
                                                                ["Inputs", "Outputs"]),
        "basicaction/v1/basicaction_sdk_gen.ts": _ACTION.format(
            input="Inputs", output="Outputs", schema="basic_action_schema", capability="basic-test-action@1.0.0"),
        "nodeaction/v1/node_action_schema.ts": _schema_module("capabilities.internal.nodeaction.v1",
                                                              ["NodeInputs", "NodeOutputs"]),
        "nodeaction/v1/basicaction_sdk_gen.ts": _ACTION.format(
            input="NodeInputs", output="NodeOutputs", schema="node_action_schema",
            capability="basic-test-node-action@1.0.0"),
    }


def standard_tests(chain: Toolchain) -> list[str]:
    root = chain.sdk / "dist" / "workflows" / "standard_tests"
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("test.ts"))


def prepare(chain: Toolchain, name: str, into: Path) -> Path:
    """A build folder for one standard test; returns its entry file."""
    folder = into / name.replace("/", "__")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(chain.sdk / "dist" / "workflows" / "standard_tests" / name / "test.ts", folder / "test.ts")
    for path, source in _shims().items():
        target = folder / "shims" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    dist = chain.sdk / "dist"
    (folder / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "baseUrl": ".",
        "paths": {
            "@cre/generated-sdk/capabilities/internal/*": ["./shims/*"],
            "@cre/generated/capabilities/internal/basictrigger/v1/basic_trigger_pb":
                ["./shims/basictrigger/v1/basic_trigger_schema.ts"],
            "@cre/*": [f"{dist}/*"],
        },
    }}, indent=2))
    return folder / "test.ts"
