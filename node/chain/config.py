"""The `chain:` section: the RPC, where the Infernet contracts are, the node's signing key and
its payment wallet, and how container output is encoded for consumers.
(No web3 here: the config loads without the chain stack.)

The contracts are found as the Infernet node finds them: from `registry_address` (the SDK's
Registry names the Coordinator, Inbox, Reader, Fee and WalletFactory). `coordinator_address`
and `reader_address` are still accepted for deployments without a Registry (no payments then).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from node.fields import Address, ConfigModel


class WalletConfig(ConfigModel):
    private_key: SecretStr | None = None
    max_gas_limit: int = Field(5_000_000, gt=0)
    min_balance: int = Field(0, ge=0, description="Warn (log + metric) when the balance in wei falls below this")
    payment_address: Address | None = Field(
        None, description="The node's payment Wallet (made by the WalletFactory: `node-daemon wallet create`); "
                          "paid subscriptions pay into it. Unset: only free subscriptions are served")
    # As in the Infernet node: a delivery whose simulation reverts with a message containing one of
    # these (case-insensitive) is sent anyway, with max_gas_limit as its gas.
    allowed_sim_errors: list[str] = []


class ChainConfig(ConfigModel):
    """The chain subsystem; disabled by default."""

    enabled: bool = False
    rpc_url: str | None = None
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
    def _required_when_enabled(self) -> ChainConfig:
        if not self.enabled:
            return self
        missing = [] if self.rpc_url else ["rpc_url"]
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
