"""The `chain:` section: the RPC, the coordinator and reader contracts, and the node's wallet.
(No web3 here: the config loads without the chain stack.)"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from node.fields import Address, ConfigModel


class WalletConfig(ConfigModel):
    private_key: SecretStr | None = None
    max_gas_limit: int = Field(5_000_000, gt=0)
    min_balance: int = Field(0, ge=0, description="Warn (log + metric) when the balance in wei falls below this")


class ChainConfig(ConfigModel):
    """The chain subsystem; disabled by default."""

    enabled: bool = False
    rpc_url: str | None = None
    # The SDK's Registry: the coordinator and reader are read from it at start unless given.
    registry_address: Address | None = None
    coordinator_address: Address | None = None
    reader_address: Address | None = None
    trail_head_blocks: int = Field(1, ge=0, description="Confirmations: work on head - trail")
    start_block: int = Field(0, ge=0, description="First block of the snapshot sync (without a saved cursor)")
    snapshot_batch_blocks: int = Field(2000, ge=1)
    reader_batch: int = Field(500, ge=1, le=5000)
    poll_interval: float = Field(0.5, gt=0)
    processor_tick: float = Field(0.5, gt=0)
    max_attempts: int = Field(3, ge=1, description="Tries per (subscription, interval)")
    retry_backoff: float = Field(2.0, ge=0, description="Seconds before a retry, times the attempt number")
    # Container chains this node serves on chain (each configured container alone is always served).
    pipelines: list[list[str]] = []
    wallet: WalletConfig = WalletConfig()

    @model_validator(mode="after")
    def _required_when_enabled(self) -> ChainConfig:
        if self.enabled:
            needed = ("rpc_url",) if self.registry_address else ("rpc_url", "coordinator_address", "reader_address")
            missing = [n for n in needed if not getattr(self, n)]
            if self.wallet.private_key is None:
                missing.append("wallet.private_key")
            if missing:
                raise ValueError(f"chain is enabled but {', '.join(missing)} is not set")
        return self
