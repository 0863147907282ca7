"""The local workflow runtime: executes the seed-001 actions itself, the way the CRE workflow
would, against our contracts on a chain (reports signed by the node's DON key and delivered
through the ReportForwarder), then POSTs each result to `backend_url` per the seed's table
(failures logged, never failing the action).

The runtime is assembled from parts, one per responsibility: `runtime_plumbing` (report
delivery, signatures, backend calls), `runtime_trading`, `runtime_agents` (agent keys and
approvals) and `runtime_markets` (market lifecycle and settlement); this module builds it and
dispatches actions to the parts' `_do_<action>` handlers."""

from __future__ import annotations

import hmac
from typing import Any

import aiohttp
from eth_account import Account
from eth_utils import to_checksum_address
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider

from node.chain import codec
from node.chain.wallet import Wallet
from node.cre.config import CreRuntimeConfig
from node.cre.workflow.models import response_model
from node.cre.workflow.runtime_agents import AgentActions
from node.cre.workflow.runtime_markets import MarketActions
from node.cre.workflow.runtime_plumbing import (  # noqa: F401 - names importable from here, as before the split
    DOMAIN,
    DON_QUOTE,
    REDEEM,
    USER_TRADE,
    ZERO,
    _hex,
    log,
    typed,
)
from node.cre.workflow.runtime_trading import TradeActions
from node.secrets import SecretBox
from node.storage import Database, Migration

MIGRATIONS = [Migration("cre_workflow.0001", """
    CREATE TABLE cre_agent_keys (agent_id TEXT PRIMARY KEY, address TEXT NOT NULL, key_sealed TEXT NOT NULL,
                                 created_at REAL NOT NULL)
""")]


class WorkflowRuntime(TradeActions, AgentActions, MarketActions):
    def __init__(self, config: CreRuntimeConfig, db: Database, box: SecretBox, session: aiohttp.ClientSession,
                 backend_api_key: str | None) -> None:
        self.config = config
        self._db = db
        self._box = box
        self._session = session
        self._backend_key = backend_api_key
        key = config.api_key.get_secret_value() if config.api_key is not None else ""
        self._api_key = key.encode() if key else None
        self.w3 = AsyncWeb3(AsyncHTTPProvider(config.rpc_url, request_kwargs={"timeout": 15}))
        self._don = Account.from_key(config.don_key.get_secret_value())
        self._transmitter_key = (config.transmitter_key or config.don_key).get_secret_value()
        self._backend_signer = (Account.from_key(config.backend_signer_key.get_secret_value())
                                if config.backend_signer_key else None)

        def c(name: str, address: str) -> Any:
            return self.w3.eth.contract(address=to_checksum_address(address), abi=codec.abi(name))

        self.forwarder = c("ReportForwarder", config.forwarder_address)
        self.sub0 = c("Sub0", config.sub0_address)
        self.vault = c("PredictionVault", config.vault_address)
        self.ct = c("ConditionalTokens", config.conditional_tokens_address)
        self.usdc = c("MockUSDC", config.usdc_address)
        self.chain_id: int | None = None
        self.wallet: Wallet | None = None

    async def start(self) -> None:
        if self._api_key is None:
            log.warning("cre.runtime_unauthenticated",
                        detail="cre.runtime.allow_unauthenticated is true: anyone who reaches /api/cre/workflow can "
                               "have the DON key sign trades and reports, resolve markets and use backend and "
                               "agent keys")
        await self._db.migrate(MIGRATIONS)
        self.chain_id = await self.w3.eth.chain_id
        self.wallet = Wallet(self.w3, self._transmitter_key, 8_000_000, self.chain_id)
        log.info("cre.runtime_ready", don=self._don.address, transmitter=self.wallet.address, chain_id=self.chain_id)

    # -- dispatch -----------------------------------------------------------------------------------

    def authorize(self, *given: Any) -> None:
        """Passes if any of the caller's keys (bearer token, payload apiKey) is ours; each is
        compared in constant time."""
        if self._api_key is None:  # allow_unauthenticated, warned at start
            return
        matches = [hmac.compare_digest(g.encode(), self._api_key) for g in given if isinstance(g, str)]
        if not any(matches):
            raise PermissionError("missing or invalid apiKey")

    async def execute(self, action: Any) -> dict[str, Any]:
        """Run an action; the caller has been authorised (`authorize`)."""
        handler = getattr(self, "_do_" + action.action.replace("-", "_"))
        result = await handler(action)
        if isinstance(result, tuple):  # (response, callback bodies)
            result, callbacks = result
        elif action.action == "createAgentKey":
            callbacks = [{"agentId": action.agentId, **result}]
        else:
            callbacks = [result]
        response_model(action, result).model_validate(result)  # the seed's shape, or a bug here
        for body in callbacks:
            await self._callback(action.action, body)
        return result
