"""The Infernet-compatible job API against a real node and real Docker containers."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.docker]


def test_info_lists_containers_and_pending(node):
    info = node.http().get("/info").json
    ids = [c["id"] for c in info["containers"]]
    assert ids == ["echo", "upper", "stats", "faulty", "inner", "private"]
    assert info["containers"][0] == {"id": "echo", "description": "identity", "external": True,
                                     "image": "node-local/echo:latest"}
    assert info["pending"] == {"offchain": 0, "onchain": 0}
    assert info["chain"]["enabled"] is False and "version" in info


def test_health(node):
    resp = node.http().get("/health")
    assert resp.status == 200 and resp.json == {"status": "healthy"}


def test_three_container_chain_passes_each_output_on(node):
    http = node.http()
    job_id = http.submit(["upper", "echo", "stats"], {"text": "hello", "n": [1, 2, 3.5]})
    job = http.wait_job(job_id, intermediate=True)
    assert job["status"] == "success"
    assert job["intermediate_results"] == [
        {"container": "upper", "output": {"text": "HELLO", "n": [1, 2, 3.5]}},
        {"container": "echo", "output": {"text": "HELLO", "n": [1, 2, 3.5]}},
    ]
    assert job["intermediate"] == job["intermediate_results"]
    assert job["result"]["container"] == "stats"
    assert job["result"]["output"]["sum"] == 6.5 and job["result"]["output"]["count"] == 3
    plain = http.get(f"/api/jobs?id={job_id}").json[0]
    assert "intermediate_results" not in plain and plain["result"] == job["result"]


def test_repeatable_id_and_unknown_ids_dropped(node):
    http = node.http()
    a = http.submit(["echo"], {"a": 1})
    b = http.submit(["echo"], {"b": 2})
    http.wait_job(a), http.wait_job(b)
    jobs = http.get(f"/api/jobs?id={b}&id=does-not-exist&id={a}").json
    assert [j["id"] for j in jobs] == [b, a]
    assert [j["result"]["output"] for j in jobs] == [{"b": 2}, {"a": 1}]


def test_batch_mixes_good_and_bad_requests(node):
    http = node.http()
    resp = http.post("/api/jobs/batch", [
        {"containers": ["echo"], "data": {"i": 0}},
        {"containers": ["nope"], "data": {}},
        {"containers": "echo"},
        {"containers": ["inner"], "data": {}},
        42,
        {"containers": ["upper"], "data": {"t": "x"}},
    ])
    assert resp.status == 200
    answers = resp.json
    assert len(answers) == 6
    assert set(answers[0]) == {"id"} and set(answers[5]) == {"id"}
    assert answers[1] == {"error": "Container not supported", "params": {"containers": ["nope"]}}
    assert answers[2]["error"].startswith("containers:")
    assert answers[3]["error"] == "Container is not external"
    assert "error" in answers[4]
    assert http.wait_job(answers[5]["id"])["result"]["output"] == {"t": "X"}


def test_batch_body_must_be_a_list(node):
    resp = node.http().post("/api/jobs/batch", {"containers": ["echo"]})
    assert resp.status == 400 and resp.json == {"error": "Expected a list"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"containers": ["nope"], "data": {}}, 400, "Container not supported"),
        ({"containers": [], "data": {}}, 400, "containers:"),
        ({"data": {}}, 400, "containers: Field required"),
        ({"containers": ["inner"], "data": {}}, 400, "Container is not external"),
        ({"containers": ["echo"], "data": {}, "requires_proof": True}, 400, "does not generate proofs"),
        ({"subscription": {}, "signature": {}}, 400, "Chain is not enabled"),
        ([1, 2], 400, "(body)"),
    ],
)
def test_bad_job_requests_are_4xx_with_a_clear_message(node, body, status, fragment):
    resp = node.http().post("/api/jobs", body)
    assert resp.status == status
    assert fragment in resp.json["error"]


def test_non_json_body_is_400(node):
    resp = node.http().request("POST", "/api/jobs", raw=b"{not json")
    assert resp.status == 400 and resp.json == {"error": "Request body is not valid JSON"}


def test_allowed_ips_are_enforced_per_client_address(node):
    denied = node.http("127.0.0.1").post("/api/jobs", {"containers": ["private"], "data": {}})
    assert denied.status == 403
    assert denied.json == {"error": "Container not allowed for address",
                           "params": {"container": "private", "address": "127.0.0.1"}}
    allowed = node.http("127.0.0.2")
    job_id = allowed.submit(["private"], {"ok": 1})
    assert allowed.wait_job(job_id)["status"] == "success"


def test_clients_see_only_their_own_jobs(node):
    mine = node.http("127.0.0.3")
    theirs = node.http("127.0.0.4")
    job_id = mine.submit(["echo"], {"secret": 1})
    mine.wait_job(job_id)
    assert mine.get("/api/jobs").json == [job_id]
    assert job_id not in theirs.get("/api/jobs").json
    assert theirs.get(f"/api/jobs?id={job_id}").json == []


def test_pending_filter_lists_running_and_finished(node):
    http = node.http("127.0.0.5")
    slow = http.submit(["faulty"], {"mode": "sleep", "seconds": 1.0})
    fast = http.submit(["echo"], {})
    http.wait_job(fast)
    assert http.get("/api/jobs?pending=true").json == [slow]
    assert http.get("/api/jobs?pending=false").json == [fast]
    assert node.http().get("/info").json["pending"]["offchain"] >= 1
    http.wait_job(slow)
    assert sorted(http.get("/api/jobs").json) == sorted([slow, fast])
    assert http.get("/api/jobs?pending=maybe").status == 400


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"mode": "http500"}, "HTTP 500"),
        ({"mode": "nonjson"}, "non-JSON"),
        ({"mode": "sleep", "seconds": 5}, "timed out after 2s"),
    ],
)
def test_failing_container_fails_the_job_naming_it(node, data, fragment):
    http = node.http()
    job = http.wait_job(http.submit(["echo", "faulty", "upper"], data), intermediate=True)
    assert job["status"] == "failed"
    assert job["result"]["container"] == "faulty"
    assert fragment in job["result"]["error"]
    assert job["intermediate_results"] == [{"container": "echo", "output": data}]


def test_container_answering_400_fails_the_job(node):
    http = node.http()
    job = http.wait_job(http.submit(["stats"], {"no": "numbers"}))
    assert job["status"] == "failed" and "HTTP 400" in job["result"]["error"]


def test_stream_relays_output_and_stores_it(node):
    http = node.http()
    resp = http.post("/api/jobs/stream", {"containers": ["upper"], "data": {"text": "one two three"}})
    assert resp.status == 200
    job_id, _, text = resp.body.decode().partition("\n")
    assert text == "ONE TWO THREE"
    job = http.wait_job(job_id)
    assert job == {"id": job_id, "status": "success",
                   "result": {"container": "upper", "output": {"output": "ONE TWO THREE"}}}


def test_stream_refuses_chains_and_unknown_containers(node):
    http = node.http()
    assert http.post("/api/jobs/stream", {"containers": ["upper", "echo"], "data": {}}).status == 400
    assert http.post("/api/jobs/stream", {"containers": ["nope"], "data": {}}).status == 400


def test_put_status_records_an_out_of_band_job(node):
    http = node.http()
    assert http.put("/api/status", {"id": "oob-1", "status": "running", "containers": ["echo"]}).json is None
    assert http.get("/api/jobs?id=oob-1").json[0]["status"] == "running"
    resp = http.put("/api/status", {"id": "oob-1", "status": "success", "containers": ["echo"], "data": {"v": 1}})
    assert resp.status == 200
    assert http.get("/api/jobs?id=oob-1").json[0] == {
        "id": "oob-1", "status": "success", "result": {"container": "echo", "output": {"v": 1}}}
    bad = http.put("/api/status", {"id": "oob-2", "status": "done", "containers": ["echo"]})
    assert bad.status == 400 and bad.json["error"].startswith("status:")


def test_unknown_route_is_json_404(node):
    resp = node.http().get("/api/nothing")
    assert resp.status == 404 and "error" in resp.json


def test_containers_report_their_state(node):
    states = {s["id"]: s for s in node.http().get("/api/containers").json}
    assert states["echo"]["status"] == "running" and states["echo"]["managed"] is True
    assert states["echo"]["published_url"].startswith("http://127.0.0.1:")
    assert states["echo"]["url"] in (states["echo"]["published_url"], states["echo"]["network_url"])


def test_many_concurrent_jobs_all_complete(node):
    http = node.http("127.0.0.6")
    ids = [http.submit(["echo", "upper"], {"i": i, "s": "x"}) for i in range(200)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not http.get("/api/jobs?pending=true").json:
            break
        time.sleep(0.1)
    jobs = http.get("/api/jobs?" + "&".join(f"id={i}" for i in ids)).json
    assert len(jobs) == 200 and all(j["status"] == "success" for j in jobs)
    assert sorted(j["result"]["output"]["i"] for j in jobs) == list(range(200))


def test_a_finished_job_cannot_be_rewritten_through_put_status(node):
    """The attack: any address in status_allowed_ips (by default 127/8 and every container on
    the host, 172.16/12) rewrote a finished job's output from 100 to 999999."""
    http = node.http()
    job_id = http.submit(["echo"], {"value": 100})
    assert http.wait_job(job_id)["result"] == {"container": "echo", "output": {"value": 100}}
    for source in ("127.0.0.3", "127.0.0.1"):
        resp = node.http(source).put("/api/status", {"id": job_id, "status": "success", "containers": ["echo"],
                                                     "data": {"value": 999999}})
        assert resp.status == 409 and "finished" in resp.json["error"]
    assert http.get(f"/api/jobs?id={job_id}").json[0]["result"] == {"container": "echo", "output": {"value": 100}}


def test_only_the_jobs_containers_may_report_on_a_running_job(node):
    http = node.http()
    job_id = http.submit(["faulty"], {"mode": "sleep", "seconds": 1})
    other = node.http("127.0.0.3")  # allowed to call /api/status, but not one of this job's containers
    resp = other.put("/api/status", {"id": job_id, "status": "success", "containers": ["faulty"], "data": 999999})
    assert resp.status == 403 and "containers" in resp.json["error"]
    job = http.wait_job(job_id)
    assert job["status"] == "success" and job["result"]["output"]["ok"] is True
