"""A dashboard user with an org on a real node, as the gateway tests and the SDK tests use it:
registered, signed in, and able to call the org's admin routes and the SDK with its API key."""

from __future__ import annotations

import json
import uuid

from tests.helpers import NodeProcess, sdk_signed


class Account:
    def __init__(self, node: NodeProcess, email: str | None = None) -> None:
        self.node = node
        email = email or f"{uuid.uuid4().hex[:8]}@example.com"
        reg = node.http().post("/api/v1/auth/register", {"email": email, "password": "correct horse",
                                                         "name": "Ada", "org_name": "Acme"})
        assert reg.status == 201, reg.body
        self.user_id, self.org_id = reg.json["user_id"], reg.json["org_id"]
        self.api_key, self.secret = reg.json["api_key"], reg.json["secret_key"]
        login = node.http().post("/api/v1/auth/login", {"email": email, "password": "correct horse"})
        assert login.status == 200
        self.token = login.json["token"]

    @property
    def session(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def admin(self, method: str, path: str, body=None):
        return self.node.http().request(method, f"/api/v1/orgs/{self.org_id}{path}", body, headers=self.session)

    def sdk(self, path: str, body, secret: str | None = None, ts: int | None = None, key: str | None = None):
        # Each call is a new request, as the SDK's own are (it sends an operation id): the same
        # signed bytes twice within the signature's max age are a replay and get the first answer.
        if isinstance(body, dict):
            body = {"operation_id": uuid.uuid4().hex, **body}
        raw = json.dumps(body).encode()
        headers = sdk_signed(key or self.api_key, secret or self.secret, raw, ts)
        return self.node.http().request("POST", f"/api/v1{path}", raw=raw, headers=headers)

    def job(self, workflow_id: str, containers: list[str], data, path: str = "/api/jobs"):
        """A job bound to one of this org's workflows: signed with its API key."""
        raw = json.dumps({"containers": containers, "data": data}).encode()
        headers = {"X-Workflow-Id": workflow_id, **sdk_signed(self.api_key, self.secret, raw)}
        return self.node.http().request("POST", path, raw=raw, headers=headers)

    def workflow(self, budget: float | None = None, wid: str | None = None) -> str:
        wid = wid or f"wf-{uuid.uuid4().hex[:8]}"
        resp = self.admin("POST", "/workflows", {"id": wid, "name": wid, "budget_usd": budget})
        assert resp.status == 201, resp.body
        return wid
