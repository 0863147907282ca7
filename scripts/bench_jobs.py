#!/usr/bin/env python3
"""Benchmark the job path: node vs. calling the container directly.

Starts a node (its own temp config: one managed echo container from containers/echo) and, for
each concurrency C, runs N jobs from C concurrent clients: POST /api/jobs, then poll
GET /api/jobs?id= until the job is done. Prints jobs/s, p50/p99 submit-to-result latency, the
node's peak RSS, and the same load sent straight to the container's /service_output, with the
ratio node/direct (the honest measure of the node's overhead).

    .venv/bin/python scripts/bench_jobs.py [--jobs 3000] [--concurrency 1,8,32,128]

`--cpu` runs the CPU-bound case instead: the numeric container spinning BURN_MS of CPU per call
(`--burn-ms`, default 5), once in local mode and once per `--replicas` count in swarm mode
(`docker.mode: swarm`, tasks reached on their own published ports), each with a fresh node and
the same load. A swarm is made for the run (and left again) when the engine is in none.

    .venv/bin/python scripts/bench_jobs.py --cpu [--jobs 600] [--burn-ms 5] [--replicas 1,2,3]

`--compare` runs checkouts of the node side by side: one node per checkout (a directory, or a
commit checked out into a temporary git worktree; each started from its own directory with this
interpreter, so one venv serves all), all up at once, and at each --concurrency level rounds
that alternate between them, each node's round followed by the direct rate of its own
container; so load from elsewhere on the machine hits them alike. It prints, per checkout and
level, the node's CPU ms per job, p50/p99, jobs/s and the node's peak RSS. At C=1 the client
polls every 1 ms (the latency one client alone sees); at other levels it backs off to 10 ms.
`--client wait` or `--client stream` measures the other two ways to get a result instead.
`--host-containers` runs each node's echo container as a plain process on the host (the same
stdlib server, `manage_containers: false`), for when the Docker engine is busy or absent.

    .venv/bin/python scripts/bench_jobs.py --compare old=<commit or path>,new=. [--concurrency 1,8,32,128]
        [--jobs 3000] [--rounds 3]

`--target` points the same load at nodes that are already running (any Infernet-compatible
node: ours, or Ritual's Infernet node started by hand), in alternating rounds at each level,
with the `--client poll` clients above. Each target is LABEL=URL, or LABEL=URL@PID to also
report that process's CPU ms per job and peak RSS. Nothing is started or stopped.

    .venv/bin/python scripts/bench_jobs.py --target ours=http://127.0.0.1:4712@PID,ritual=http://127.0.0.1:4711
        [--container echo] [--concurrency 1,8,32] [--jobs 1000] [--rounds 3]

The echo container is the stdlib server of containers/_lib/service.py with a listen backlog
of 1,024, so a burst of connections is queued, not refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import NodeProcess, container_entry, workload_process  # noqa: E402


def rss_mb(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU a process has used, all its threads (nanoseconds from each thread's schedstat, where
    utime + stime count in 10 ms ticks): per job, a measure other load on the machine disturbs
    far less than jobs/s."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            pass
    return total / 1e9


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def run_load(n: int, concurrency: int, one) -> tuple[float, list[float], int]:
    """Run `one()` n times from `concurrency` workers; returns (seconds, latencies_ms, errors)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in counter:
            start = time.perf_counter()
            ok = await one()
            latencies.append((time.perf_counter() - start) * 1000)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    extra: dict = {"log": {"level": "WARNING"}, "observe": {"enabled": not args.no_observe}}
    if args.synchronous:
        extra["storage"] = {"synchronous": args.synchronous}
    node = NodeProcess(workdir, [container_entry("echo", "echo", concurrency=256, timeout=30)], extra)
    node.prefix = f"bench{uuid.uuid4().hex[:4]}-"
    node.write_config()
    print(f"starting node (config {node.config_path}) ...", flush=True)
    node.start()
    try:
        base = f"http://127.0.0.1:{node.port}"
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"{base}/api/containers") as r:
                container_url = (await r.json())[0]["url"]
            payload = {"containers": ["echo"], "data": {"prompt": "hello", "n": 1}}
            body = json.dumps(payload).encode()
            direct_body = json.dumps({"source": 1, "destination": 1, "data": payload["data"],
                                      "requires_proof": False}).encode()
            headers = {"Content-Type": "application/json"}

            polls = 0

            async def node_job() -> bool:
                """Submit, then poll as a plain Infernet client does (1 ms, growing to 10 ms)."""
                nonlocal polls
                async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                    job_id = (await r.json())["id"]
                delay = 0.001
                while True:
                    await asyncio.sleep(delay)
                    polls += 1
                    async with session.get(f"{base}/api/jobs", params={"id": job_id}) as r:
                        job = (await r.json())[0]
                    if job["status"] != "running":
                        return job["status"] == "success"
                    delay = min(delay * 1.5, 0.01)

            async def node_job_wait() -> bool:
                """Submit, then one long poll (`wait=`, this node's extension)."""
                async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                    job_id = (await r.json())["id"]
                while True:
                    async with session.get(f"{base}/api/jobs", params={"id": job_id, "wait": "10"}) as r:
                        job = (await r.json())[0]
                    if job["status"] != "running":
                        return job["status"] == "success"

            async def direct_call() -> bool:
                async with session.post(f"{container_url}/service_output", data=direct_body, headers=headers) as r:
                    await r.read()
                    return r.status == 200

            await run_load(200, 8, node_job)  # warm up connections and caches
            await run_load(200, 8, direct_call)
            rows = []
            for c in args.concurrency:
                n = max(args.jobs, c * 10)
                row = [c, n]
                for mode in (node_job, node_job_wait, direct_call):
                    polls = 0
                    elapsed, lat, errors = await run_load(n, c, mode)
                    row.append((n / elapsed, pct(lat, 50), pct(lat, 99), errors, polls / n))
                rows.append(row)
                print(f"  C={c:<4} node(poll) {row[2][0]:7.0f} jobs/s ({row[2][4]:.1f} polls/job)  "
                      f"node(wait) {row[3][0]:7.0f} jobs/s  direct {row[4][0]:7.0f} req/s", flush=True)
            peak = rss_mb(node.proc.pid)
    finally:
        node.stop()
        node.remove_containers()

    print()
    print(f"node peak RSS: {peak:.1f} MB   (N jobs per level >= {args.jobs}; cores: {os.cpu_count()};"
          " load generator, node and container share them)")
    print("node(poll): POST /api/jobs then GET /api/jobs?id= every 1-10 ms until done;"
          " node(wait): one GET with wait=10; direct: POST the container's /service_output")
    head = f"{'jobs/s':>7} {'p50ms':>6} {'p99ms':>7} {'err':>3}"
    print(f"{'C':>4} {'N':>6} | node(poll) {head} | node(wait) {head} | direct {head} | poll/direct wait/direct")
    for c, n, poll, wait, direct in rows:
        cell = lambda r: f"{r[0]:>7.0f} {r[1]:>6.2f} {r[2]:>7.2f} {r[3]:>3}"  # noqa: E731
        print(f"{c:>4} {n:>6} |            {cell(poll)} |            {cell(wait)} |        {cell(direct)} |"
              f" {poll[0] / direct[0]:>11.2f} {wait[0] / direct[0]:>10.2f}")


class CheckoutNode(NodeProcess):
    """A node run from another checkout of this repository (its own directory first on sys.path)."""

    def __init__(self, repo: Path, *args, **kwargs) -> None:
        self.repo = repo
        super().__init__(*args, **kwargs)

    def start_background(self) -> NodeProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(self.config_path)],
            cwd=self.repo, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self


def checkout_path(label: str, spec: str) -> tuple[Path, Path | None]:
    """A checkout to run: a directory as given, or a commit (anything `git rev-parse` knows)
    checked out into a temporary worktree, removed after the run (the second value)."""
    path = Path(spec or label)
    if path.is_dir():
        return path.resolve(), None
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{spec}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--compare {label}={spec}: neither a directory nor a commit")
    tree = Path(tempfile.mkdtemp(prefix=f"bench-{label}-tree-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit.stdout.strip()],
                   check=True, capture_output=True)
    return tree, tree


async def compare(args: argparse.Namespace) -> None:
    """Checkouts side by side: at each concurrency level, rounds that alternate between them,
    each node's round followed by the direct rate of its own container. Per job: the node's CPU
    (utime + stime of its process, which load elsewhere on the machine disturbs far less than
    latency), p50/p99 submit-to-result latency, jobs/s; per node its peak RSS."""
    checkouts, trees = [], []
    for item in args.compare.split(","):
        label, _, spec = item.partition("=")
        path, tree = checkout_path(label, spec)
        checkouts.append((label, path))
        if tree is not None:
            trees.append(tree)
    extra: dict = {"log": {"level": "WARNING"}}  # only keys every checkout knows
    if args.no_observe:
        extra["observe"] = {"enabled": False}
    if args.client == "stream":  # every client shares one address: no cap on its open streams
        extra["jobs"] = {"max_streams_per_client": 0}
    nodes: list[tuple[str, CheckoutNode]] = []
    services: list[subprocess.Popen] = []  # --host-containers: each node's echo as a host process
    # results[label][c]: one (jobs/s, p50, p99, errors, direct/s, cpu ms/job, requests/job, direct p99)
    # per round
    results: dict[str, dict[int, list[tuple[float, float, float, int, float, float, float, float]]]] = {
        label: {c: [] for c in args.concurrency} for label, _ in checkouts}
    body = json.dumps({"containers": ["echo"], "data": {"prompt": "hello", "n": 1}}).encode()
    direct_body = json.dumps({"source": 1, "destination": 1, "data": {"prompt": "hello", "n": 1},
                              "requires_proof": False}).encode()
    headers = {"Content-Type": "application/json"}
    peaks: dict[str, float] = {}
    requests = {"count": 0}  # the client's requests to the node (submissions, polls, streams)
    try:
        for label, repo in checkouts:
            if args.host_containers:
                service, url = workload_process("echo")
                services.append(service)
                entry, node_extra = {"id": "echo", "url": url, "concurrency": 256, "timeout": 30}, {
                    **extra, "manage_containers": False}
            else:
                entry, node_extra = container_entry("echo", "echo", concurrency=256, timeout=30), extra
            node = CheckoutNode(repo, Path(tempfile.mkdtemp(prefix=f"bench-{label}-")), [entry], node_extra)
            node.prefix = f"bench{uuid.uuid4().hex[:4]}-"
            node.write_config()
            nodes.append((label, node))
            node.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            targets = []
            for label, node in nodes:
                base = f"http://127.0.0.1:{node.port}"
                async with session.get(f"{base}/api/containers") as r:
                    container_url = (await r.json())[0]["url"]

                def poll_job(base: str = base, backoff: bool = True):
                    async def job() -> bool:
                        """Submit, then poll as a plain Infernet client does: every 1 ms, or
                        (`backoff`) from 1 ms growing by half each poll to 10 ms."""
                        async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                            job_id = (await r.json())["id"]
                        requests["count"] += 1
                        delay = 0.001
                        while True:
                            await asyncio.sleep(delay)
                            requests["count"] += 1
                            async with session.get(f"{base}/api/jobs", params={"id": job_id}) as r:
                                found = (await r.json())[0]
                            if found["status"] != "running":
                                return found["status"] == "success"
                            if backoff:
                                delay = min(delay * 1.5, 0.01)

                    async def wait_job() -> bool:
                        """Submit, then one long poll (`wait=`, this node's extension)."""
                        async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                            job_id = (await r.json())["id"]
                        requests["count"] += 1
                        while True:
                            requests["count"] += 1
                            async with session.get(f"{base}/api/jobs", params={"id": job_id, "wait": "10"}) as r:
                                found = (await r.json())[0]
                            if found["status"] != "running":
                                return found["status"] == "success"

                    async def stream_job() -> bool:
                        """One request: the job's id, then its output as it arrives."""
                        requests["count"] += 1
                        async with session.post(f"{base}/api/jobs/stream", data=body, headers=headers) as r:
                            out = await r.read()
                            return r.status == 200 and b"hello" in out

                    return {"poll": job, "wait": wait_job, "stream": stream_job}[args.client]

                def direct(url: str = container_url):
                    async def call() -> bool:
                        async with session.post(f"{url}/service_output", data=direct_body, headers=headers) as r:
                            await r.read()
                            return r.status == 200
                    return call

                targets.append((label, node, poll_job(), poll_job(backoff=False), direct()))
            for _, _, job, _, call in targets:  # warm up
                await run_load(200, 8, job)
                await run_load(200, 8, call)
            for round_no in range(args.rounds):
                for c in args.concurrency:
                    n = max(args.jobs, c * 10)
                    order = targets if (round_no + c) % 2 == 0 else targets[::-1]
                    for label, node, job, alone, call in order:
                        cpu = cpu_seconds(node.proc.pid)
                        requests["count"] = 0
                        elapsed, lat, errors = await run_load(n, c, alone if c == 1 and args.client == "poll" else job)
                        cpu = cpu_seconds(node.proc.pid) - cpu
                        asked = requests["count"] / n
                        d_elapsed, d_lat, _ = await run_load(n, c, call)
                        results[label][c].append((n / elapsed, pct(lat, 50), pct(lat, 99), errors, n / d_elapsed,
                                                  cpu / n * 1000, asked, pct(d_lat, 99)))
                    print(f"  round {round_no + 1} C={c}: " + "  ".join(
                        f"{label} {results[label][c][-1][0]:.0f} jobs/s {results[label][c][-1][5]:.3f} cpu ms/job"
                        for label, _ in checkouts), flush=True)
            for label, node in nodes:
                peaks[label] = rss_mb(node.proc.pid)
    finally:
        for _, node in nodes:
            node.stop()
            if not args.host_containers:
                node.remove_containers()
        for service in services:
            service.kill()
            service.wait()
        for tree in trees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    print()
    how = {"poll": "C=1 polls every 1 ms, other levels poll from 1 ms backing off to 10 ms",
           "wait": "each client submits, then GET /api/jobs?id=&wait=10",
           "stream": "each client POSTs /api/jobs/stream and reads it to its end"}[args.client]
    print(f"{args.jobs} jobs per round and level (at least 10 per client), {args.rounds} alternating rounds; "
          f"{how}; cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} (the load generator, the nodes and their containers share them)")
    print("medians over the rounds; cpu ms/job also as min-max; d.p99ms: p99 of the same load sent straight to the "
          "container (its own tail, under the node's figures)")
    print(f"{'checkout':<10} {'C':>4} {'jobs/s':>7} {'p50ms':>7} {'p99ms':>7} {'cpu ms/job':>10} {'(min-max)':>13}"
          f" {'req/job':>7} {'direct/s':>8} {'d.p99ms':>7} {'err':>4} {'peakMB':>7}")
    med = statistics.median
    for label, levels in results.items():
        for c, runs in levels.items():
            if not runs:
                continue
            cpus = [r[5] for r in runs]
            print(f"{label:<10} {c:>4} {med([r[0] for r in runs]):>7.0f} {med([r[1] for r in runs]):>7.2f} "
                  f"{med([r[2] for r in runs]):>7.1f} {med(cpus):>10.3f} {f'{min(cpus):.3f}-{max(cpus):.3f}':>13} "
                  f"{med([r[6] for r in runs]):>7.2f} {med([r[4] for r in runs]):>8.0f} {med([r[7] for r in runs]):>7.1f} "
                  f"{sum(r[3] for r in runs):>4} "
                  f"{peaks.get(label, 0):>7.1f}")


def parse_targets(spec: str) -> list[tuple[str, str, int | None]]:
    """LABEL=URL[@PID],... -> [(label, base url, pid or None)]."""
    targets = []
    for item in spec.split(","):
        label, sep, rest = item.partition("=")
        url, _, pid = rest.partition("@")
        if not sep or not label or not url.startswith("http"):
            raise SystemExit(f"--target: {item!r} is not LABEL=URL[@PID]")
        targets.append((label, url.rstrip("/"), int(pid) if pid else None))
    return targets


async def against_targets(args: argparse.Namespace) -> None:
    """Already-running nodes side by side: at each level, rounds alternating between them, each
    client submitting POST /api/jobs and polling GET /api/jobs?id= as a plain Infernet client does
    (C=1 every 1 ms; other levels from 1 ms backing off to 10 ms). Only the Infernet REST surface
    is used, so the target can be any Infernet-compatible node."""
    targets = parse_targets(args.target)
    body = json.dumps({"containers": [args.container], "data": {"prompt": "hello", "n": 1}}).encode()
    headers = {"Content-Type": "application/json"}
    results: dict[str, dict[int, list[tuple[float, float, float, int, float]]]] = {
        label: {c: [] for c in args.concurrency} for label, _, _ in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        def poll_job(base: str, backoff: bool):
            async def job() -> bool:
                try:
                    async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                        if r.status != 200:
                            await r.read()
                            return False
                        job_id = (await r.json())["id"]
                    delay = 0.001
                    while True:
                        await asyncio.sleep(delay)
                        async with session.get(f"{base}/api/jobs", params={"id": job_id}) as r:
                            found = (await r.json())[0] if r.status == 200 else {"status": "failed"}
                        if found["status"] != "running":
                            return found["status"] == "success"
                        if backoff:
                            delay = min(delay * 1.5, 0.01)
                except (aiohttp.ClientError, ValueError, KeyError, IndexError):
                    return False
            return job

        for label, base, _ in targets:  # warm up, and fail early on a target that does not answer
            _, _, errors = await run_load(100, 8, poll_job(base, True))
            if errors:
                raise SystemExit(f"{label} ({base}): {errors} of 100 warm-up jobs failed")
        for round_no in range(args.rounds):
            for c in args.concurrency:
                n = max(args.jobs, c * 10)
                order = targets if (round_no + c) % 2 == 0 else targets[::-1]
                for label, base, pid in order:
                    cpu = cpu_seconds(pid) if pid else 0.0
                    elapsed, lat, errors = await run_load(n, c, poll_job(base, backoff=c != 1))
                    cpu_ms = (cpu_seconds(pid) - cpu) / n * 1000 if pid else float("nan")
                    results[label][c].append((n / elapsed, pct(lat, 50), pct(lat, 99), errors, cpu_ms))
                print(f"  round {round_no + 1} C={c}: " + "  ".join(
                    f"{label} {results[label][c][-1][0]:.0f} jobs/s p50 {results[label][c][-1][1]:.1f} ms"
                    for label, _, _ in targets), flush=True)
    print()
    print(f"{args.jobs} jobs per round and level (at least 10 per client), {args.rounds} alternating rounds; "
          f"C=1 polls every 1 ms, other levels poll from 1 ms backing off to 10 ms; cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("medians over the rounds")
    print(f"{'target':<10} {'C':>4} {'jobs/s':>7} {'p50ms':>7} {'p99ms':>7} {'cpu ms/job':>10} {'err':>4} {'peakMB':>7}")
    med = statistics.median
    for label, base, pid in targets:
        peak = f"{rss_mb(pid):>7.1f}" if pid else f"{'-':>7}"
        for c, runs in results[label].items():
            cpu = f"{med([r[4] for r in runs]):>10.3f}" if pid else f"{'-':>10}"
            print(f"{label:<10} {c:>4} {med([r[0] for r in runs]):>7.0f} {med([r[1] for r in runs]):>7.2f} "
                  f"{med([r[2] for r in runs]):>7.1f} {cpu} {sum(r[3] for r in runs):>4} {peak}")


def swarm_state() -> str:
    out = subprocess.run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], capture_output=True, text=True)
    return out.stdout.strip()


async def cpu_case(args: argparse.Namespace) -> None:
    """jobs/s of a CPU-bound container: local mode beside swarm mode with 1..N replicas."""
    made_swarm = swarm_state() == "inactive"
    had_gwbridge = bool(subprocess.run(["docker", "network", "ls", "-q", "--filter", "name=^docker_gwbridge$"],
                                       capture_output=True, text=True).stdout.strip())
    if made_swarm:
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
    entry = {
        "id": "burn",
        "image": "node-bench/numeric:latest",  # our own tag: nobody else's build replaces it mid-run
        "build": {"context": str(REPO / "containers"), "dockerfile": "numeric/Dockerfile"},
        "env": {"BURN_MS": str(args.burn_ms)},
        "concurrency": 64,
        "timeout": 60,
    }
    setups = [("local", {}, {})] + [
        (f"swarm x{r}", {"mode": "swarm", "swarm": {"connect_via": "tasks"}}, {"replicas": r}) for r in args.replicas
    ]
    nodes: list[tuple[str, NodeProcess]] = []
    rates: dict[str, list[tuple[float, float, float, int]]] = {label: [] for label, _, _ in setups}
    try:
        for label, docker_extra, entry_extra in setups:  # all up at once; idle ones cost no CPU
            workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
            node = NodeProcess(workdir, [{**entry, **entry_extra}],
                               {"log": {"level": "WARNING"}, "docker": docker_extra, "startup_wait": 120})
            node.prefix = f"benchcpu{uuid.uuid4().hex[:4]}-"
            node.write_config()
            nodes.append((label, node))
            node.start(timeout=180)
        body = json.dumps({"containers": ["burn"], "data": [1, 2, 3]}).encode()
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            def job_at(base: str):
                async def job() -> bool:
                    async with session.post(f"{base}/api/jobs", data=body, headers=headers) as r:
                        job_id = (await r.json())["id"]
                    while True:
                        async with session.get(f"{base}/api/jobs", params={"id": job_id, "wait": "30"}) as r:
                            found = (await r.json())[0]
                        if found["status"] != "running":
                            return found["status"] == "success"
                return job

            for label, node in nodes:  # warm up
                await run_load(max(20, args.jobs // 10), args.cpu_concurrency, job_at(f"http://127.0.0.1:{node.port}"))
            # Rounds interleave the setups, so load from elsewhere on the machine hits them alike.
            for round_no in range(args.rounds):
                for label, node in nodes:
                    job = job_at(f"http://127.0.0.1:{node.port}")
                    elapsed, lat, errors = await run_load(args.jobs, args.cpu_concurrency, job)
                    rates[label].append((args.jobs / elapsed, pct(lat, 50), pct(lat, 99), errors))
                print(f"  round {round_no + 1}: " + "  ".join(f"{label} {rates[label][-1][0]:.1f}"
                                                          for label, _ in nodes), flush=True)
    finally:
        for _, node in nodes:
            node.stop()
            node.remove_containers()
        if made_swarm:  # as found: no swarm, and no bridge the swarm made for its tasks
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
            if not had_gwbridge:
                subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True)
    rows = []
    for label, runs in rates.items():
        if runs:
            best = sorted(runs)[len(runs) // 2]  # the median round by rate
            rows.append((label, best[0], best[1], best[2], sum(r[3] for r in runs)))
    print()
    print(f"CPU-bound: numeric with BURN_MS={args.burn_ms} per call, {args.jobs} jobs from "
          f"{args.cpu_concurrency} clients (POST + GET wait=30) per round, median of {args.rounds} "
          f"interleaved rounds; cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'setup':<10} {'jobs/s':>7} {'p50ms':>7} {'p99ms':>7} {'err':>3}  vs local")
    for label, rate, p50, p99, errors in rows:
        print(f"{label:<10} {rate:>7.1f} {p50:>7.1f} {p99:>7.1f} {errors:>3}  {rate / rows[0][1]:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per concurrency level (default 3000)")
    parser.add_argument("--host-containers", action="store_true",
                        help="--compare: run each node's echo container as a plain host process (no Docker)")
    parser.add_argument("--no-observe", action="store_true", help="turn metrics off (observe.enabled: false)")
    parser.add_argument("--concurrency", default="1,8,32,128",
                        type=lambda s: [int(x) for x in s.split(",")], help="comma-separated C values")
    parser.add_argument("--cpu", action="store_true", help="the CPU-bound case: local vs swarm replicas")
    parser.add_argument("--burn-ms", type=float, default=5.0, help="CPU ms per call in --cpu (default 5)")
    parser.add_argument("--replicas", default="1,2,3", type=lambda s: [int(x) for x in s.split(",")],
                        help="swarm replica counts in --cpu (default 1,2,3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds in --cpu and --compare (default 3)")
    parser.add_argument("--compare", default=None, metavar="LABEL=PATH,...",
                        help="checkouts of the node to run side by side (alternating rounds)")
    parser.add_argument("--target", default=None, metavar="LABEL=URL[@PID],...",
                        help="already-running nodes to load side by side (alternating rounds, --client poll)")
    parser.add_argument("--container", default="echo", help="the container id jobs name in --target (default echo)")
    parser.add_argument("--client", choices=["poll", "wait", "stream"], default="poll",
                        help="how clients get results in --compare: poll (default), wait= long poll, or stream")
    parser.add_argument("--cpu-concurrency", type=int, default=16, help="clients in --cpu (default 16)")
    parser.add_argument("--synchronous", choices=["normal", "full"], default=None,
                        help="the node's storage.synchronous (default: the node's default, normal)")
    args = parser.parse_args()
    if args.cpu:
        args.jobs = args.jobs if "--jobs" in sys.argv else 400
    if args.target and args.client != "poll":
        parser.error("--target measures --client poll only (the other ways are this node's extensions)")
    case = cpu_case if args.cpu else against_targets if args.target else compare if args.compare else bench
    try:
        import uvloop

        uvloop.run(case(args))
    except ImportError:
        asyncio.run(case(args))


if __name__ == "__main__":
    main()
