"""Operators can ask the node what it is doing: Prometheus metrics at /metrics that move when
work happens, the operator status endpoint, `node-daemon status` / `jobs`, and who may ask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Http, REPO, sdk_signed
from tests.observe_helpers import FakeContainer, ThreadNode

WIDE = {**os.environ, "COLUMNS": "200"}  # tables wrap long cells at narrower widths


def scrape(http: Http, **kw) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    resp = http.get("/metrics", **kw)
    assert resp.status == 200, resp.body
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum over every label set that contains `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@pytest.fixture(scope="module")
def service():
    fake = FakeContainer()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, service):
    proc = ThreadNode(tmp_path_factory.mktemp("observe"), {
        "containers": [{"id": "echo", "url": service.url, "cost_usd": 2}, {"id": "upper", "url": service.url}],
        "gateway": {"enabled": True},
        "cre": {"api_key": "cre-key", "enforce_hmac": False},
    }).start()
    yield proc
    proc.stop()


def run_jobs(http: Http, containers: list[str], data, n: int) -> list[dict]:
    ids = [http.submit(containers, data) for _ in range(n)]
    return [http.wait_job(i) for i in ids]


def test_metrics_parse_and_move_when_jobs_run(node):
    http = node.http()
    before = scrape(http)
    assert value(before, "node_container_state", container="echo", state="external") == 1
    assert value(before, "node_subsystem_enabled", subsystem="gateway") == 1
    assert value(before, "node_subsystem_enabled", subsystem="chain") == 0

    assert all(j["status"] == "success" for j in run_jobs(http, ["echo", "upper"], {"n": 1}, 3))
    assert all(j["status"] == "failed" for j in run_jobs(http, ["echo"], {"fail": True}, 2))
    time.sleep(0.1)  # let the job store flush: commit latency is observed at COMMIT
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("node_jobs_total", source="offchain", containers="echo,upper", outcome="success") == 3
    assert delta("node_jobs_total", source="offchain", containers="echo", outcome="failed") == 2
    assert delta("node_job_duration_seconds_count", source="offchain", outcome="success") == 3
    assert delta("node_container_calls_total", container="echo", outcome="ok") == 3
    assert delta("node_container_calls_total", container="echo", outcome="error") == 2
    assert delta("node_container_calls_total", container="upper", outcome="ok") == 3
    assert delta("node_container_call_duration_seconds_count", container="upper") == 3
    assert delta("node_sqlite_commit_duration_seconds_count") >= 1
    assert value(after, "node_jobs_in_flight", source="offchain") == 0
    # labels stay bounded: no job ids anywhere
    job_id = http.submit(["echo"], {"x": 1})
    http.wait_job(job_id)
    assert job_id not in http.get("/metrics").body.decode()


def test_gateway_decisions_and_budget_show_in_metrics(node):
    http = node.http()
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    reg = http.post("/api/v1/auth/register", {"email": email, "password": "correct horse", "name": "Ada",
                                              "org_name": "Acme"})
    assert reg.status == 201, reg.body
    token = http.post("/api/v1/auth/login", {"email": email, "password": "correct horse"}).json["token"]
    wid = f"wf-{uuid.uuid4().hex[:6]}"
    made = http.post(f"/api/v1/orgs/{reg.json['org_id']}/workflows", {"id": wid, "name": wid, "budget_usd": 5},
                     headers={"Authorization": f"Bearer {token}"})
    assert made.status in (200, 201), made.body
    before = scrape(http)

    def job(n: int):
        """A job bound to the workflow: signed with the org's API key (seed 002's HMAC); bodies
        differ, as a signed request acts only once."""
        raw = json.dumps({"containers": ["echo"], "data": {"n": n}}).encode()
        return http.request("POST", "/api/jobs", raw=raw, headers={
            "X-Workflow-Id": wid, **sdk_signed(reg.json["api_key"], reg.json["secret_key"], raw)})

    for n in range(2):
        resp = job(n)
        assert resp.status == 200, resp.body
        http.wait_job(resp.json["id"])
    refused = job(2)
    assert refused.status == 403  # a third job (2 USD) does not fit the remaining 1 USD
    time.sleep(1.1)  # the sampler reads the tables at most once a second
    after = scrape(http)
    def moved(outcome: str) -> float:
        return (total(after, "node_gateway_decisions_total", outcome=outcome)
                - total(before, "node_gateway_decisions_total", outcome=outcome))

    assert moved("allowed") == 2 and moved("denied") == 1
    label = f"{reg.json['org_id']}/{wid}"  # workflow ids are per org
    assert value(after, "node_gateway_budget_usd", workflow=label) == 5
    assert value(after, "node_gateway_budget_spent_usd", workflow=label) == 4


def test_cre_ingests_move_the_cre_metrics(node):
    http = node.http()
    before = scrape(http)
    run = uuid.uuid4().hex[:6]
    for key in (f"{run}-1", f"{run}-2", f"{run}-1"):  # the repeated key is idempotent: stored once
        resp = http.post("/api/cre/runtime/ingest", {"workflow": "runtime-indexer-block", "kind": "block",
                                                     "idempotencyKey": key, "payload": {"blockNumber": 1},
                                                     "source": "test"},
                         headers={"Authorization": "Bearer cre-key"})
        assert resp.status == 200, resp.body
    time.sleep(1.1)
    after = scrape(http)
    assert (value(after, "node_cre_ingests_total", kind="block")
            - value(before, "node_cre_ingests_total", kind="block")) == 2


def test_status_endpoint_describes_containers_jobs_and_subsystems(node):
    http = node.http()
    run_jobs(http, ["echo"], {"fail": True}, 1)
    status = http.get("/api/node/status").json
    assert {c["id"]: c["status"] for c in status["containers"]} == {"echo": "external", "upper": "external"}
    assert status["subsystems"]["gateway"] is True and status["subsystems"]["chain"] is False
    assert status["jobs"]["recent"]["15m"]["failed"] >= 1
    assert status["jobs"]["failed_recently"][0]["error"].startswith("container answered HTTP 500")
    assert status["chain"] is None and status["problems"] == []
    jobs = http.get("/api/node/jobs?failed=true&limit=2").json["jobs"]
    assert 1 <= len(jobs) <= 2 and all(j["status"] == "failed" for j in jobs)
    assert http.get("/api/node/jobs?limit=abc").status == 400
    assert http.get("/api/node/jobs?failed=maybe").status == 400


def test_status_command_prints_the_containers_of_a_running_node(node):
    run_jobs(node.http(), ["upper"], {"n": 2}, 2)
    out = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(node.config_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for word in ("Containers", "echo", "upper", "external", "Jobs", "Subsystems", "gateway"):
        assert word in out.stdout, out.stdout
    jobs = subprocess.run([sys.executable, "-m", "node", "jobs", "--failed", "--limit", "3", "--config",
                           str(node.config_path)], cwd=REPO, capture_output=True, text=True, timeout=60, env=WIDE)
    assert jobs.returncode == 0, jobs.stderr
    assert "failed" in jobs.stdout and "HTTP 500" in jobs.stdout


def test_status_command_says_clearly_when_no_node_answers(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("server: {port: 1}\n")
    out = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(config)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot reach the node at http://127.0.0.1:1" in out.stderr


# -- who may ask ---------------------------------------------------------------------------------

def _request(remote: str, token: str | None = None):
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (remote, 4000) if name == "peername" else default
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return make_mocked_request("GET", "/api/node/status", headers=headers, transport=transport)


def test_operator_endpoints_refuse_remote_clients_without_the_admin_token():
    from node.observe.api import OperatorAccess
    from node.server.http import ApiError

    open_door = OperatorAccess(None)
    open_door.check(_request("127.0.0.1"))
    open_door.check(_request("::1"))
    with pytest.raises(ApiError) as refused:
        open_door.check(_request("10.1.2.3", token="anything"))
    assert refused.value.status_code == 403

    guarded = OperatorAccess("s3cret-token")
    guarded.check(_request("10.1.2.3", token="s3cret-token"))
    for token in (None, "wrong", "s3cret-token-but-longer"):
        with pytest.raises(ApiError) as refused:
            guarded.check(_request("10.1.2.3", token=token))
        assert refused.value.status_code == 401


def test_status_command_uses_the_admin_token_from_the_config(tmp_path, service):
    node = ThreadNode(tmp_path / "n", {"server": {"admin_token": "tok-123"},
                                       "containers": [{"id": "echo", "url": service.url}]}).start()
    try:
        metrics = node.http().get("/metrics", headers={"Authorization": "Bearer tok-123"})
        assert metrics.status == 200
        out = subprocess.run([sys.executable, "-m", "node", "status", "--json", "--url",
                              f"http://127.0.0.1:{node.port}", "--token", "tok-123"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"echo"' in out.stdout
        # The operator's shell need not hold the node's other secrets to ask it how it is.
        operator = tmp_path / "operator.yaml"
        operator.write_text(f"server: {{port: {node.port}, admin_token: tok-123}}\n"
                            "chain: {enabled: true, wallet: {private_key: '${UNSET_NODE_SECRET}'}}\n")
        out = subprocess.run([sys.executable, "-m", "node", "status", "--json", "--config", str(operator)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"echo"' in out.stdout
    finally:
        node.stop()


def test_clients_cannot_grow_the_container_chain_label_without_bound():
    from node.jobs.models import Job
    from node.observe.metrics import NodeMetrics

    metrics = NodeMetrics(max_chains=3)
    for n in range(1, 8):  # seven distinct chains a client could ask for
        metrics.job_finished(Job(id=f"j{n}", client="c", containers=["echo"] * n, status="success"), 0.01)
    chains = set()
    for family in metrics.registry.collect():
        chains |= {s.labels["containers"] for s in family.samples if s.name == "node_jobs_total"}
    assert chains == {"echo", "echo,echo", "echo,echo,echo", "other"}
