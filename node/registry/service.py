"""The registry's rules, shared by its HTTP API and by the node's own relayer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from node.canonical import stable_json
from node.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, Unavailable
from node.registry import signatures as sig
from node.registry import siwe
from node.registry.config import RegistryConfig
from node.registry.cron import Cron
from node.registry.inputs import aggregate
from node.registry.models import ConfigCreate, ExecutionSubmit, InputSubmit, ProposalSubmit
from node.registry.store import RegistryStore


def intent_id(task_id: str, input_id: str, intent: dict[str, Any]) -> str:
    """Content-derived: keccak256 of the canonical JSON of {taskId, inputId, type, data}."""
    return "0x" + sig.digest({"taskId": task_id, "inputId": input_id, "type": intent["type"],
                              "data": intent["data"]}).hex()


def _address_of(private_key: str) -> str:
    """A relayer key's address. eth_account is imported here, not at the top: only a relaying
    node needs it at start (see node/registry/signatures.py)."""
    from eth_account import Account

    return str(Account.from_key(private_key).address)


UNAUTHORIZED = {"error": "Unauthorized"}  # the seed's 409 for unmet confirmations says "Unauthorized"


class RegistryService:
    def __init__(self, store: RegistryStore, config: RegistryConfig, node_address: str = "127.0.0.1:4000") -> None:
        self.store = store
        self.config = config
        self.set_node_address(node_address)
        self.oracles = set(config.oracles)
        self.relayer_key = config.relayer_key.get_secret_value() if config.relayer_key else None
        self.relayer_address = _address_of(self.relayer_key) if self.relayer_key else None
        self.relayers = set(config.relayers) | ({self.relayer_address.lower()} if self.relayer_address else set())

    # -- auth -----------------------------------------------------------------------------------

    def set_node_address(self, host_port: str) -> None:
        """The domain and URI sign-in messages must name, unless configured."""
        self.auth_domain = self.config.auth_domain or host_port
        self.auth_uri = self.config.auth_uri or f"http://{self.auth_domain}"

    async def start(self) -> None:
        """Burn the digests of maintainers and configs stored before signatures were single use."""
        chain_id = self.config.chain_id

        def digests(roles: list[dict], configs: list[dict]) -> list[tuple[str, str, str]]:
            out = [(sig.typed_digest(sig.maintainer_typed_data(chain_id, r["project_id"], r["account"])), "maintainer",
                    r["project_id"]) for r in roles]
            out += [(sig.typed_digest(sig.config_typed_data(
                chain_id, c["projectId"], c["taskId"], c["name"], c["requriedOracleConfirmations"],
                c["requriedRelayerConfirmations"], c["trigger"], c["data"])), "config", c["projectId"]) for c in configs]
            return out

        await self.store.backfill_used_signatures(digests)

    async def issue_nonce(self, address: str | None) -> dict[str, Any]:
        nonce, expires = await self.store.new_nonce(self.config.nonce_ttl)
        body: dict[str, Any] = {"nonce": nonce, "expiresAt": int(expires), "domain": self.auth_domain,
                                "uri": self.auth_uri, "chainId": self.config.chain_id}
        if address is not None:
            body["message"] = siwe.compose(self.auth_domain, address, self.auth_uri, self.config.chain_id, nonce,
                                           time.time(), expires)
            await self.store.bind_nonce(nonce, address.lower(), body["message"])
        return body

    async def verify(self, nonce: str, signature: str, message: str | None) -> dict[str, Any]:
        """Check the EIP-4361 message and its signature first, then spend the nonce: a failed
        signature does not burn it (the nonce is single use only once it signed someone in)."""
        info = await self.store.nonce_info(nonce)
        if info is None:
            raise Unauthenticated("Unknown nonce")
        if info["used_at"] is not None:
            raise Unauthenticated("Nonce already used")
        now = time.time()
        if info["expires_at"] < now:
            raise Unauthenticated("Nonce expired")
        text = message if message is not None else info["message"]
        if text is None:
            raise Invalid("message: required (the EIP-4361 message you signed, or request the nonce with "
                                "your address to get one)")
        try:
            address = siwe.verify(text, signature, domain=self.auth_domain, uri=self.auth_uri,
                                  chain_id=self.config.chain_id, nonce=nonce, now=now, skew=self.config.auth_clock_skew)
        except siwe.SiweError as exc:
            raise Unauthenticated(str(exc)) from None
        if info["address"] is not None and info["address"] != address.lower():
            raise Unauthenticated("message: the nonce was issued to another address")
        state = await self.store.use_nonce(nonce)
        if state != "ok":
            raise Unauthenticated({"unknown": "Unknown nonce", "used": "Nonce already used",
                                 "expired": "Nonce expired"}[state])
        token, expires = await self.store.sign_in(address, self.config.token_ttl)
        return {"token": token, "address": address, "expiresAt": int(expires)}

    # -- projects ---------------------------------------------------------------------------------

    async def project_or_404(self, project_id: str) -> dict[str, Any]:
        project = await self.store.project(project_id)
        if project is None:
            raise NotFound(f"Project {project_id} not found")
        return project

    async def require_owner(self, project_id: str, account: str, message: str) -> dict[str, Any]:
        project = await self.project_or_404(project_id)
        if project["owner"].lower() != account.lower():
            raise Forbidden(message)
        return project

    def _check_replayable(self, nonce: int | None, deadline: int | None) -> None:
        if nonce is None and not self.config.legacy_signatures:
            raise Invalid("nonce, deadline: required (signatures without them are refused on this node)")
        if deadline is not None and deadline < time.time():
            raise Unauthenticated("Signature expired (deadline passed)")

    async def add_maintainer(self, project_id: str, maintainer: str, signature: str, nonce: int | None = None,
                             deadline: int | None = None) -> dict[str, Any]:
        project = await self.project_or_404(project_id)
        self._check_replayable(nonce, deadline)
        typed = sig.maintainer_typed_data(self.config.chain_id, project_id, maintainer, nonce, deadline)
        signer = sig.recover_typed(typed, signature)
        if signer is None or signer.lower() != project["owner"].lower():
            raise Forbidden("The maintainer must be authorised by the project owner's signature")
        role = await self.store.add_maintainer(project_id, maintainer, signature, sig.typed_digest(typed))
        if role == "exists":
            raise Conflict(f"{maintainer} already has a role in the project")
        if isinstance(role, str):  # "used", the one refusal left
            raise Unauthenticated("Signature already used: each signed change is accepted once (sign again with a "
                                "new nonce)")
        return {"projectId": project_id, "maintainer": maintainer, "signature": signature,
                "createdAt": role["createdAt"]}

    # -- configs ------------------------------------------------------------------------------------

    async def create_config(self, project_id: str, task_id: str, body: ConfigCreate) -> dict[str, Any]:
        await self.project_or_404(project_id)
        if await self.store.task(task_id) is None:
            raise NotFound(f"Task {task_id} not found")
        if not await self.store.linked(project_id, task_id):
            raise Invalid(f"Task {task_id} is not linked to the project")
        self._check_replayable(body.nonce, body.deadline)
        size = len(stable_json(body.data).encode())
        if size > self.config.max_config_bytes:  # the relayer and the watcher hand it to every run
            raise Invalid(f"data: {size} bytes as canonical JSON, more than this node keeps "
                          f"(registry.max_config_bytes: {self.config.max_config_bytes})", {"errors": [
                              {"field": "data", "message": f"larger than {self.config.max_config_bytes} bytes"}]})
        if body.trigger.cron is not None:
            gap = Cron.parse(body.trigger.cron).shortest_gap(int(time.time()))
            if gap < self.config.min_cron_period:
                raise Invalid(f"trigger.cron: fires {gap} s apart at the closest; this node's minimum is "
                              f"{self.config.min_cron_period:g} s", {"errors": [
                                  {"field": "trigger.cron", "message": "fires more often than the node allows"}]})
        trigger = body.trigger.model_dump(exclude_none=True)
        typed = sig.config_typed_data(self.config.chain_id, project_id, task_id, body.name, body.oracleConfirmations,
                                      body.relayerConfirmations, trigger, body.data, body.nonce, body.deadline)
        signer = sig.recover_typed(typed, body.signature)
        if signer is None or await self.store.role(project_id, signer) is None:
            raise Forbidden("The config must be signed by the project owner or a maintainer")
        config = await self.store.create_config(project_id, task_id, {
            "name": body.name, "oracleConfirmations": body.oracleConfirmations,
            "relayerConfirmations": body.relayerConfirmations, "trigger": trigger, "data": body.data,
            "signature": body.signature}, signer, sig.typed_digest(typed), self.config.max_configs_per_project)
        if config == "full":
            raise Conflict(f"Project {project_id} has {self.config.max_configs_per_project} live configs, the most "
                           "this node keeps: delete one first")
        if isinstance(config, str):  # "used", the one refusal left
            raise Unauthenticated("Invalid config signature: already used (a deleted config does not come back; "
                                "sign again with a new nonce)")
        return config

    async def config_usable(self, config: dict[str, Any]) -> bool:
        """A config counts while it is not deleted and its signer still has a role in the project
        (removing a maintainer deprecates the configs it signed)."""
        if config["deprecated"]:
            return False
        return await self.store.role(config["projectId"], config["signer"]) is not None

    def route_for(self, config: dict[str, Any]) -> list[str] | None:
        """The containers the node runs a live config on (a config of `cron_configs` or
        `event_configs`, which carry the task's CID and the project's owner), or None when the
        task is not relayed here or its route does not name the config's project or owner."""
        route = self.config.tasks.get(config["cid"])
        if route is None:
            return None
        if route.anyone or config["projectId"] in route.projects or config["owner"].lower() in route.owners:
            return list(route.containers)
        return None

    async def can_read(self, project_id: str, account: str | None) -> bool:
        """Reads of a project's configs, executions, proofs and intents need a role in it."""
        return account is not None and await self.store.role(project_id, account) is not None

    # -- inputs and executions ----------------------------------------------------------------------------

    async def submit_inputs(self, task_id: str, body: InputSubmit, account: str | None) -> dict[str, Any]:
        """Inputs come from someone entitled to give them: a relayer's signature of
        {taskId, configId, trigger, rawInputs} (rawInputs as sent), or the bearer of a member of
        the config's project (`account`). Checked before any oracle signature is."""
        answers = sum(len(item.responses) for items in body.rawInputs.values() for item in items)
        if answers > self.config.max_oracle_responses:
            raise Invalid(f"rawInputs: {answers} oracle responses; this node checks at most "
                          f"{self.config.max_oracle_responses} per request (registry.max_oracle_responses)")
        trigger = body.trigger.model_dump()
        if body.signature is not None:
            raw_sent = body.model_dump(exclude_unset=True)["rawInputs"]
            relayer = sig.recover_payload({"taskId": task_id, "configId": body.configId, "trigger": trigger,
                                           "rawInputs": raw_sent}, body.signature)
            if relayer is None or relayer.lower() not in self.relayers:
                raise Unauthenticated("Invalid relayer signature")
        elif account is None:
            raise Unauthenticated("Inputs need a relayer's signature (signature) or a project member's bearer token")
        config = await self.store.config(body.configId)
        if config is None or config["taskId"] != task_id:
            raise NotFound(f"Config {body.configId} does not belong to the task")
        if body.signature is None and not await self.can_read(config["projectId"], account):
            raise Forbidden("You must be the project owner or a maintainer to submit inputs without a relayer "
                            "signature")
        if not await self.config_usable(config):
            raise Unauthenticated("Invalid config signature")
        # Signature recovery is CPU work: off the event loop, bounded by max_oracle_responses.
        result = await asyncio.to_thread(aggregate, body.rawInputs, self.oracles,
                                         config["requriedOracleConfirmations"], self.config.oracle_max_age)
        raw = {q: [item.model_dump() for item in items] for q, items in body.rawInputs.items()}
        row = await self.store.add_input(task_id, body.configId, trigger, raw, result.inputs, result.proofs,
                                         result.count)
        if row is None:
            raise Conflict("Trigger already submitted")
        return {k: row[k] for k in ("inputId", "taskId", "configId", "trigger", "inputs")}

    async def submit_execution(self, task_id: str, body: ExecutionSubmit) -> dict[str, Any]:
        input_row = await self.store.input(body.inputId)
        if input_row is None or input_row["taskId"] != task_id:
            raise NotFound(f"Input {body.inputId} does not belong to the task")
        if input_row["reverted"]:
            raise Conflict("Trigger reverted: a chain reorganisation removed its event")
        config = await self.store.config(input_row["configId"])
        if config is None or not await self.config_usable(config):
            raise Unauthenticated("Invalid config signature")
        intents = [i.model_dump(by_alias=True) for i in body.intents]
        logs = [line.model_dump() for line in body.logs]
        payload = {"taskId": task_id, "inputId": body.inputId, "intents": intents, "logs": logs}
        relayer = sig.recover_payload(payload, body.signature)
        if relayer is None or relayer.lower() not in self.relayers:
            raise Unauthenticated("Invalid relayer signature")
        for intent in intents:
            intent["intentId"] = intent_id(task_id, body.inputId, intent)
        recorded = await self.store.add_execution(
            task_id, input_row, sig.digest({"intents": intents, "logs": logs}).hex(), logs, intents, relayer,
            body.signature, config["requriedRelayerConfirmations"])
        if recorded is None:
            raise Conflict("Trigger reverted: a chain reorganisation removed its event")
        execution_id, created = recorded
        return {"executionId": execution_id, "created": created,
                "intents": [{"intentId": i["intentId"], "type": i["type"]} for i in intents]}

    def sign_execution(self, task_id: str, input_id: str, intents: list[dict], logs: list[dict]) -> str:
        assert self.relayer_key is not None
        return sig.sign_payload({"taskId": task_id, "inputId": input_id, "intents": intents, "logs": logs},
                                self.relayer_key)

    # -- intents ------------------------------------------------------------------------------------------

    async def intent_or_404(self, intent_id_: str) -> dict[str, Any]:
        intent = await self.store.intent(intent_id_)
        if intent is None:
            raise NotFound(f"Intent {intent_id_} not found")
        return intent

    async def propose(self, intent_id_: str, body: ProposalSubmit) -> dict[str, Any]:
        intent = await self.intent_or_404(intent_id_)
        if intent["status"] == "pending":
            raise Conflict("Config required relayer confirmations not reached", UNAUTHORIZED)
        if intent["status"] not in ("submitted", "proposed"):
            raise Conflict(f"Intent is {intent['status']}")
        signer = sig.recover_payload({"intentId": intent_id_, "solver": body.solver, "data": body.data}, body.signature)
        if signer is None or signer.lower() != body.solver.lower():
            raise Unauthenticated("Invalid solver signature")
        if intent["type"] == "swap":
            amount_out = body.data.get("amountOut")
            # ASCII digits, at most a uint256's 78: str.isdigit() alone passes "²" and 5,000 digits,
            # which int() then refuses (an anonymous 500).
            if not (isinstance(amount_out, str) and amount_out.isascii() and amount_out.isdigit()
                    and len(amount_out) <= 78):
                raise Invalid("data.amountOut: a decimal string (at most 78 digits) is required for a swap proposal")
            if int(amount_out) < int(intent["data"]["minAmountOut"]):
                raise Invalid("data.amountOut: below the intent's minAmountOut")
        proposal_id = await self.store.add_proposal(intent_id_, body.solver, body.data, body.signature,
                                                    self.config.max_proposals_per_intent)
        if proposal_id == "full":
            raise Conflict(f"Intent {intent_id_} has {self.config.max_proposals_per_intent} proposals, the most this "
                           "node keeps (registry.max_proposals_per_intent)")
        if proposal_id is None:
            raise Conflict(f"Solver {body.solver} already proposed for this intent")
        return {"proposalId": proposal_id, "intentId": intent_id_, "status": "proposed"}

    async def sign_best(self, intent_id_: str, proposal_id: str | None = None) -> dict[str, Any]:
        """The node, as relayer, signs the winning proposal (the one named, or for a swap the
        highest amountOut, else the first)."""
        if self.relayer_key is None:
            raise Unavailable("This node has no relayer key (registry.relayer_key)")
        intent = await self.intent_or_404(intent_id_)
        if intent["status"] == "pending":
            raise Conflict("Config required relayer confirmations not reached", UNAUTHORIZED)
        if intent["status"] != "proposed":
            raise Conflict(f"Intent is {intent['status']}")
        proposals = intent["proposals"]
        if proposal_id is not None:
            chosen = next((p for p in proposals if p["proposalId"] == proposal_id), None)
            if chosen is None:
                raise NotFound(f"Proposal {proposal_id} not found")
        elif intent["type"] == "swap":
            chosen = max(proposals, key=lambda p: int(p["data"]["amountOut"]))
        else:
            chosen = proposals[0]
        signature = sig.sign_payload({"intentId": intent_id_, "proposalId": chosen["proposalId"],
                                      "solver": chosen["solver"], "data": chosen["data"]}, self.relayer_key)
        if not await self.store.sign_proposal(intent_id_, chosen["proposalId"], chosen["solver"], signature):
            raise Conflict("Intent changed meanwhile")
        return {"intentId": intent_id_, "proposalId": chosen["proposalId"], "solver": chosen["solver"],
                "signature": signature, "relayer": self.relayer_address, "status": "signed", "signedAt": int(time.time())}

