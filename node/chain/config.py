"""The `chain:` section: the RPC, where the Infernet contracts are, the node's signing key and
its payment wallet, and how container output is encoded for consumers.
(No web3 here: the config loads without the chain stack.)

The contracts are found as the Infernet node finds them: from `registry_address` (the SDK's
Registry names the Coordinator, Inbox, Reader, Fee and WalletFactory). `coordinator_address`
and `reader_address` are still accepted for deployments without a Registry (no payments then).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from node.fields import Address, ConfigModel

_HTTP_URL = re.compile(r"^https?://[^/\s]+")


class WalletConfig(ConfigModel):
    private_key: SecretStr | None = None
    max_gas_limit: int = Field(5_000_000, gt=0)
    min_balance: int = Field(0, ge=0, description="Warn (log + metric) when the balance in wei falls below this")
    resend_after: int = Field(3, ge=1, description="Blocks a transaction may stay unmined before it is sent again "
                                                   "with the same nonce and fees raised by at least 12.5 %")
    max_fee_per_gas: int | None = Field(None, gt=0, description="The most the node pays per gas (wei), however "
                                                                "high a replacement would bid; unset: no cap")
    receipt_timeout: float = Field(300.0, gt=0, le=86_400, description="Seconds a delivery's transaction is "
                                   "watched (and replaced) before the delivery counts as failed and is retried")
    pending_alert_blocks: int = Field(10, ge=1, description="A transaction pending this many blocks is a problem "
                                                            "(watchdog tx_pending_long)")
    payment_address: Address | None = Field(
        None, description="The node's payment Wallet (made by the WalletFactory: `node-daemon wallet create`); "
                          "paid subscriptions pay into it. Unset: only free subscriptions are served")
    # As in the Infernet node: a delivery whose simulation reverts with a message containing one of
    # these (case-insensitive) is sent anyway, with max_gas_limit as its gas.
    allowed_sim_errors: list[str] = []


class RpcEndpointConfig(ConfigModel):
    """One RPC of `chain.rpc_urls` (docs/chain-rpcs.md)."""

    url: str = Field(pattern=r"^https?://[^/\s]+", description="The endpoint's HTTP(S) JSON-RPC URL")
    weight: int = Field(1, ge=1, le=1000, description="Preference among healthy endpoints: the highest serves reads")
    send_only: bool = Field(False, description="Only broadcast transactions here (no reads)")
    ws_url: str | None = Field(None, pattern=r"^wss?://", description="Its WebSocket URL for the head subscription "
                                                                      "(default: url as ws://)")


MAX_RPCS = 16


def rpc_endpoints(rpc_url: str | list[str] | None, rpc_urls: list[RpcEndpointConfig],
                  ws_url: str | None = None) -> list[RpcEndpointConfig]:
    """Every RPC of an `rpc_url` (one URL or a list, in order; `ws_url` the first one's) and an
    `rpc_urls` list (after them). Shared by `chain:` and each chain of `registry.chains`."""
    urls = [rpc_url] if isinstance(rpc_url, str) else (rpc_url or [])
    bad = next(((i, u) for i, u in enumerate(urls) if not _HTTP_URL.match(u)), None)
    if bad is not None:  # refused by check_rpcs with the field's name; no RpcEndpointConfig of it here
        return list(rpc_urls)
    first = [RpcEndpointConfig(url=u, ws_url=ws_url if i == 0 else None) for i, u in enumerate(urls)]
    return first + list(rpc_urls)


def check_rpcs(prefix: str, rpc_url: str | list[str] | None, endpoints: list[RpcEndpointConfig]) -> None:
    """Refuse, naming the field, an rpc_url that is not http(s), more than MAX_RPCS RPCs, only
    send-only ones, or one RPC listed twice."""
    urls = [rpc_url] if isinstance(rpc_url, str) else (rpc_url or [])
    for index, url in enumerate(urls):
        if not _HTTP_URL.match(url):
            where = "rpc_url" if isinstance(rpc_url, str) else f"rpc_url[{index}]"
            raise ValueError(f"{prefix}{where}: expected an http(s):// URL, got {url!r}")
    if len(endpoints) > MAX_RPCS:
        raise ValueError(f"{prefix}rpc_url/rpc_urls: {len(endpoints)} RPCs, at most {MAX_RPCS}")
    if endpoints and all(e.send_only for e in endpoints):
        raise ValueError(f"{prefix}rpc_urls: every RPC is send_only; at least one must serve reads")
    if len({e.url for e in endpoints}) != len(endpoints):
        raise ValueError(f"{prefix}rpc_urls: an RPC is listed twice")


class ChainConfig(ConfigModel):
    """The chain subsystem; disabled by default."""

    enabled: bool = False
    rpc_url: str | list[str] | None = Field(None, description="The chain's RPC, or a list of RPCs (failover in "
                                                               "order); see also rpc_urls")
    rpc_urls: list[RpcEndpointConfig] = Field([], max_length=16, description="RPCs with weights and send-only "
                                                                            "endpoints (after those of rpc_url)")
    rpc_max_lag_blocks: int = Field(5, ge=0, description="An RPC this many blocks behind the best is not read from")
    rpc_health_interval: float = Field(5.0, gt=0, description="Seconds between health checks of every RPC")
    rpc_timeout: float = Field(10.0, gt=0, le=120, description="Seconds one RPC request may take before the next "
                                                              "RPC is tried")
    registry_address: Address | None = None
    coordinator_address: Address | None = None
    reader_address: Address | None = None
    trail_head_blocks: int = Field(1, ge=0, description="Confirmations: work on head - trail")
    start_block: int = Field(0, ge=0, description="First block of the snapshot sync (without a saved cursor)")
    starting_sub_id: int = Field(0, ge=0, description="Subscriptions with this id or lower are never served "
                                 "(Infernet's snapshot_sync.starting_sub_id)")
    snapshot_batch_blocks: int = Field(2000, ge=1)
    reader_batch: int = Field(500, ge=1, le=5000)
    poll_interval: float = Field(0.5, gt=0, description="Seconds between head polls when there is no head subscription")
    head_subscription: bool = Field(True, description="Follow new heads with eth_subscribe over WebSocket where the "
                                                      "RPC offers it (polling otherwise)")
    ws_url: str | None = Field(None, pattern=r"^wss?://", description="The RPC's WebSocket URL for the head "
                                                                      "subscription (default: rpc_url as ws://)")
    processor_tick: float = Field(0.5, gt=0)
    max_attempts: int = Field(3, ge=1, description="Tries per (subscription, interval)")
    retry_backoff: float = Field(2.0, ge=0, description="Seconds before a retry, times the attempt number")
    # Container chains this node serves on chain (each configured container alone is always served).
    pipelines: list[list[str]] = []
    # How a container's output reaches the consumer (README "Output encoding"): `json` sends
    # abi.encode(string compact JSON); `infernet` sends the Infernet node's form, Python's str().
    output_encoding: Literal["json", "infernet"] = "json"
    wallet: WalletConfig = WalletConfig()

    @model_validator(mode="after")
    def _rpcs(self) -> ChainConfig:
        check_rpcs("chain.", self.rpc_url, self.endpoints())
        return self

    def endpoints(self) -> list[RpcEndpointConfig]:
        """Every RPC: those of rpc_url (in order, ws_url the first one's), then rpc_urls."""
        return rpc_endpoints(self.rpc_url, self.rpc_urls, self.ws_url)

    @model_validator(mode="after")
    def _required_when_enabled(self) -> ChainConfig:
        if not self.enabled:
            return self
        missing = [] if self.endpoints() else ["rpc_url"]
        if not self.registry_address:
            missing += [n for n in ("coordinator_address", "reader_address") if not getattr(self, n)]
        if self.wallet.private_key is None:
            missing.append("wallet.private_key")
        if missing:
            hint = " (or registry_address)" if not self.registry_address and any("_address" in m for m in missing) \
                else ""
            raise ValueError(f"chain is enabled but {', '.join(missing)} is not set{hint}")
        if self.wallet.payment_address and not self.registry_address:
            raise ValueError("chain.wallet.payment_address needs chain.registry_address: the WalletFactory that "
                             "vouches for wallets is found through the Registry")
        return self
