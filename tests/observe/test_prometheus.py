"""Monitoring that plugs in: the shipped Prometheus rules and Grafana dashboard use the metric
names a running node really exports, promtool accepts the rules, and a real Prometheus (Debian's
package, on a free port) scraping a real node fires NodeChainRpcDown once the chain RPC stops."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.chain_helpers import KEYS, Anvil, chain_config, deploy
from tests.helpers import REPO, NodeProcess, free_port
from tests.observe_helpers import FakeContainer

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "node-dashboard.json"
# PromQL words that look like metric names but are not
NOT_METRICS = {"node_daemon"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/setup.sh installs Debian's prometheus package"
    return path


def metric_names(expr: str) -> set[str]:
    """The node's metric names an expression reads (histogram series by their family name)."""
    names = set(re.findall(r"\bnode_[a-z_]+", expr)) - NOT_METRICS
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def exported(port: int) -> set[str]:
    """Every family name on /metrics, with the names Prometheus sees (counters get `_total`)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = set()
    for family in text_string_to_metric_families(text):
        out.add(family.name)
        if family.type == "counter":
            out.add(family.name + "_total")
    return out


def test_promtool_accepts_the_alert_rules_and_the_scrape_config_and_each_rule_fires_on_its_cause():
    rules = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in rules.stdout
    config = subprocess.run([tool("promtool"), "check", "config", str(SCRAPE)], capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr
    # alerts_test.yml feeds every rule but NodeChainLagHigh the series of its cause
    unit = subprocess.run([tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert set(rule_exprs()) - tested == {"NodeChainLagHigh"}


def test_the_rules_cover_what_the_watchdog_knows():
    exprs = " ".join(rule_exprs().values())
    for watched in ("node_chain_rpc_up", 'problem="chain_cursor_stalled"', 'problem="subscription_failing"',
                    "node_chain_wallet_balance_wei", "node_container_restarts_total", 'outcome="failed"',
                    "node_sqlite_commit_duration_seconds_bucket"):
        assert watched in exprs, f"no alert rule reads {watched}"


@pytest.fixture(scope="module")
def chain_node(tmp_path_factory):
    """A real node process following a real anvil, with every subsystem on and a payment wallet
    (so every family the dashboard reads is exported)."""
    service = FakeContainer()
    chain = Anvil(block_time=1).start()
    node = None
    try:
        dep = deploy(chain.url)
        config = chain_config(chain.url, dep, KEYS[1])
        config["wallet"]["payment_address"] = dep.create_wallet(KEYS[1])
        config["wallet"]["min_balance"] = 1
        workdir = tmp_path_factory.mktemp("prom")
        node = NodeProcess(workdir, [{"id": "echo", "url": service.url}], extra={
            "manage_containers": False, "chain": config,
            "cre": {"enabled": True, "api_key": "k" * 32},
            "registry": {"enabled": True},
            "gateway": {"enabled": True}, "master_key_path": str(workdir / "node.key"),
            "observe": {"interval": 0.5}}).start(timeout=60)
        node.http().wait_job(node.http().submit(["echo"], {"n": 1}))  # the job families have samples
        yield node, chain
    finally:
        if node is not None:
            node.stop()
        chain.stop()
        service.close()


def test_every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_running_node(chain_node):
    node, _ = chain_node
    needed = set().union(*(metric_names(e) for e in rule_exprs().values()))
    deadline = time.monotonic() + 30
    # The chain's first samples: the lag needs both the head and the listener's cursor, which
    # may come a sample after the RPC answered; a name still missing at the deadline fails below.
    while not needed <= (names := exported(node.port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for alert, expr in rule_exprs().items():
        missing = metric_names(expr) - names
        assert not missing, f"alert {alert} reads metrics the node does not export: {sorted(missing)}"
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert len(used) >= 20, sorted(used)
    missing = used - names
    assert not missing, f"the dashboard reads metrics the node does not export: {sorted(missing)}"


def test_a_real_prometheus_fires_the_rpc_down_alert_when_the_chain_rpc_stops(chain_node, tmp_path):
    node, chain = chain_node
    # The shipped rules, made quick: evaluated every second, `for:` 1 s. Scrapes every 4 s with a
    # 4 s timeout: with its RPC down the node's scrape waits for the RPC's timeout (3 s).
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(groups))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "4s", "scrape_timeout": "4s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yml")],
        "scrape_configs": [{"job_name": "node-daemon", "static_configs": [{"targets": [f"127.0.0.1:{node.port}"]}]}],
    }))
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def api(path: str):
            import urllib.request
            try:
                return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5))["data"]
            except OSError:
                return None

        def alerts() -> dict[str, str]:
            data = api("alerts") or {"alerts": []}
            return {a["labels"]["alertname"]: a["state"] for a in data["alerts"]}

        def wait(check, what: str, timeout: float = 60):
            deadline = time.monotonic() + timeout
            while not (found := check()):
                assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
                assert time.monotonic() < deadline, f"timed out waiting for {what}; alerts: {alerts()}"
                time.sleep(0.5)
            return found

        def rpc_up() -> float | None:
            result = (api("query?query=node_chain_rpc_up") or {}).get("result") or []
            return float(result[0]["value"][1]) if result else None

        wait(lambda: rpc_up() == 1, "Prometheus to scrape the node with its chain RPC up")
        time.sleep(3)  # a few evaluations with everything healthy
        assert "NodeChainRpcDown" not in alerts()
        assert "NodeDown" not in alerts()

        chain.stop()  # the cause
        wait(lambda: alerts().get("NodeChainRpcDown") == "firing", "NodeChainRpcDown to fire")
        assert rpc_up() == 0
    finally:
        prom.terminate()
        prom.wait(20)
        log.close()
