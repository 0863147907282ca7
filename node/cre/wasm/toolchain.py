"""Building a TypeScript CRE workflow offline: `node-daemon cre build`.

Chainlink's `cre-compile` bundles the workflow with bun (the SDK's `compile-to-js`) and then
downloads the javy CLI from GitHub to turn the bundle into a `.wasm`. The download is the only
step that needs more than npm, and it is not needed: the SDK's Javy plugin (on npm) exports
`compile-src`, which turns the bundle into QuickJS bytecode, and the host runs that bytecode with
the same plugin's `invoke`, which is what a javy-built module's `_start` does anyway.

LICENCE: `@chainlink/cre-sdk` and `@chainlink/cre-sdk-javy-plugin` are BUSL-1.1. They are
installed from npm into the toolchain folder (default `build/cre-toolchain/`, git-ignored) when the
operator builds, never vendored; nothing built from them is committed.

Every step is cached by content hash: the bundle by the hash of the workflow's sources and the
SDK version, the bytecode by the hash of the bundle and the plugin.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from node.cre.wasm.host import WasmEngine, WorkflowLoadError

SDK_VERSION = "1.21.1"
BUN_VERSION = "1.4.5"
REPO = Path(__file__).resolve().parents[3]
DEFAULT_DIR = REPO / "build" / "cre-toolchain"

# Our bun entry point: the SDK's own TypeScript -> single-file JS step (what cre-compile runs).
_BUNDLE_SCRIPT = """\
const sdk = process.argv[2]
const { main } = await import(sdk + '/scripts/src/compile-to-js.ts')
await main(process.argv[3], process.argv[4], { skipTypeChecks: process.argv[5] === 'skip' })
"""
_SOURCE_SUFFIXES = {".ts", ".mts", ".js", ".mjs", ".json"}


class BuildError(Exception):
    """The workflow could not be built; the message says why (one clear line or a compiler log)."""


@dataclass
class Built:
    bytecode: bytes
    digest: str  # sha256 of the bytecode
    cached: bool
    seconds: float


class Toolchain:
    """The npm toolchain folder: the SDK, its Javy plugin and bun, plus the build cache."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or os.environ.get("NODE_CRE_TOOLCHAIN") or DEFAULT_DIR).resolve()

    @property
    def sdk(self) -> Path:
        return self.root / "node_modules" / "@chainlink" / "cre-sdk"

    @property
    def plugin_path(self) -> Path:
        return self.root / "node_modules" / "@chainlink" / "cre-sdk-javy-plugin" / "dist" / \
            "javy-chainlink-sdk.plugin.wasm"

    @property
    def bun(self) -> Path:
        return self.root / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def installed(self) -> bool:
        return self.sdk.joinpath("package.json").exists() and self.plugin_path.exists() and self.bun.exists()

    def install(self, log=print) -> bool:
        """npm install the pinned SDK and bun, unless already there. Returns True if it installed."""
        if self.installed():
            return False
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError("npm is not installed (needed once, to fetch @chainlink/cre-sdk and bun)")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "package.json").write_text(json.dumps({
            "name": "node-daemon-cre-toolchain", "private": True,
            "dependencies": {"@chainlink/cre-sdk": SDK_VERSION, "@oven/bun-linux-x64": BUN_VERSION},
        }, indent=2) + "\n")
        log(f"installing @chainlink/cre-sdk@{SDK_VERSION} and bun {BUN_VERSION} into {self.root} (BUSL-1.1, from npm)")
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=self.root,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not self.installed():
            raise BuildError(f"npm install failed in {self.root}: {proc.stderr.strip()[-2000:]}")
        return True

    def require(self) -> None:
        if not self.installed():
            raise BuildError(f"the CRE toolchain is not installed in {self.root}: run `node-daemon cre setup` "
                             "(npm install of @chainlink/cre-sdk and bun)")

    # -- building ------------------------------------------------------------------------

    def _source_digest(self, workflow: Path) -> str:
        """Hash of every source file in the workflow's folder (not node_modules), and the SDK."""
        h = hashlib.sha256(f"sdk={SDK_VERSION}\nentry={workflow.name}\n".encode())
        folder = workflow.parent
        for path in sorted(folder.rglob("*")):
            if "node_modules" in path.parts or not path.is_file() or path.suffix not in _SOURCE_SUFFIXES:
                continue
            h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()

    def bundle(self, workflow: Path, *, type_check: bool = False) -> tuple[bytes, bool]:
        """TypeScript -> one JS file (the SDK's compile-to-js under bun). Returns (js, cached)."""
        self.require()
        workflow = workflow.resolve()
        if not workflow.is_file():
            raise BuildError(f"{workflow}: no such file")
        digest = self._source_digest(workflow)
        out = self.cache / "js" / f"{digest}.js"
        if out.exists():
            return out.read_bytes(), True
        # Resolve @chainlink/cre-sdk: from the workflow's own node_modules if it has them, else
        # from a staged copy of its folder inside the toolchain (so the import finds ours).
        source = workflow
        if not _has_sdk(workflow.parent):
            stage = self.root / "stage" / digest[:16]
            if stage.exists():
                shutil.rmtree(stage)
            shutil.copytree(workflow.parent, stage, ignore=shutil.ignore_patterns("node_modules", ".*"))
            source = stage / workflow.name
        script = self.root / "bundle-workflow.ts"
        script.write_text(_BUNDLE_SCRIPT)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp.js")
        proc = subprocess.run([str(self.bun), str(script), str(self.sdk), str(source), str(tmp),
                               "check" if type_check else "skip"],
                              cwd=source.parent, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "NO_COLOR": "1"})
        if proc.returncode != 0 or not tmp.exists():
            tmp.unlink(missing_ok=True)
            message = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
            raise BuildError(f"{workflow.name}: the TypeScript does not build:\n{message}")
        tmp.replace(out)
        return out.read_bytes(), False

    def bytecode(self, engine: WasmEngine, js: bytes) -> tuple[bytes, bool]:
        """JS -> QuickJS bytecode with the plugin's compile-src (cached). Returns (bytecode, cached)."""
        plugin = self.plugin_path.read_bytes()
        key = hashlib.sha256(hashlib.sha256(plugin).digest() + js).hexdigest()
        out = self.cache / "qjs" / f"{key}.qjs"
        if out.exists():
            return out.read_bytes(), True
        try:
            code = engine.compile_js(engine.plugin(self.plugin_path), js)
        except WorkflowLoadError as exc:
            raise BuildError(str(exc)) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(code)
        tmp.replace(out)
        return code, False

    def build(self, engine: WasmEngine, workflow: Path, *, type_check: bool = False) -> Built:
        started = time.perf_counter()
        if workflow.suffix == ".js":
            js, js_cached = workflow.read_bytes(), True
        else:
            js, js_cached = self.bundle(workflow, type_check=type_check)
        code, code_cached = self.bytecode(engine, js)
        return Built(code, hashlib.sha256(code).hexdigest(), js_cached and code_cached,
                     round(time.perf_counter() - started, 3))


def _has_sdk(folder: Path) -> bool:
    for parent in (folder, *folder.parents):
        if (parent / "node_modules" / "@chainlink" / "cre-sdk" / "package.json").exists():
            return True
    return False
