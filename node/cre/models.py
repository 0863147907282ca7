"""Request bodies of the CRE bridge (seed 000) and of the backend callbacks (seed 001 §3)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.fields import ADDRESS_PATTERN as ADDRESS
from node.fields import HEX32_PATTERN as HEX32
from node.fields import HEX_BYTES_PATTERN as HEX

DECIMAL = r"^(0|[1-9][0-9]{0,77})$"  # a uint256 as a decimal string


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestRequest(_Body):
    workflow: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=100)
    idempotencyKey: str = Field(min_length=1, max_length=512)
    payload: Any
    source: str | None = Field(None, max_length=200)

    @field_validator("payload")
    @classmethod
    def _present(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("payload is required")
        return value


class EnqueueAction(_Body):
    vaultAddress: str | None = Field(None, pattern=ADDRESS)
    groupId: str | None = Field(None, max_length=200)
    actionType: str = Field(min_length=1, max_length=100)
    action: dict[str, Any] = Field(default_factory=dict)
    dedupeKey: str | None = Field(None, min_length=1, max_length=512)


class DecisionRequest(_Body):
    workflow: str = Field(min_length=1, max_length=200)
    idempotencyKey: str = Field(min_length=1, max_length=512)
    decision: Any
    enqueueAction: EnqueueAction | None = None

    @field_validator("decision")
    @classmethod
    def _present(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("decision is required")
        return value


class TriggerRequest(_Body):
    workflowId: str
    requestId: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^/]+$")  # gateway: no "/"
    input: Any = Field(default_factory=dict)

    @field_validator("workflowId")
    @classmethod
    def _workflow_id(cls, value: str) -> str:
        value = value.lower().removeprefix("0x")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be a 64-character hex workflow id")
        return value


class ClaimRequest(_Body):
    workerId: str = Field(min_length=1, max_length=200)
    limit: int = Field(1, ge=1, le=100)
    leaseSeconds: float | None = Field(None, gt=0, le=3600)
    actionTypes: list[str] | None = None


class AckRequest(_Body):
    workerId: str = Field(min_length=1, max_length=200)
    status: Literal["succeeded", "failed"]
    result: Any = None
    error: str | None = Field(None, max_length=4000)


# -- backend callbacks (seed 001 §3): BigInt values are decimal strings ---------------------


class _Callback(BaseModel):
    model_config = ConfigDict(extra="allow")  # stored as received; later CRE fields are kept


class QuoteCallback(_Callback):
    questionId: str = Field(pattern=HEX32)
    outcomeIndex: int = Field(ge=0)
    buy: bool
    quantity: str = Field(pattern=DECIMAL)
    tradeCostUsdc: str = Field(pattern=DECIMAL)
    nonce: str = Field(pattern=DECIMAL)
    deadline: str = Field(pattern=DECIMAL)
    signature: str = Field(pattern=HEX)


class BuyCallback(QuoteCallback):
    @model_validator(mode="after")
    def _buy(self) -> BuyCallback:
        if self.buy is not True:
            raise ValueError("buy: must be true for /api/cre/buy")
        return self


class SellCallback(QuoteCallback):
    @model_validator(mode="after")
    def _sell(self) -> SellCallback:
        if self.buy is not False:
            raise ValueError("buy: must be false for /api/cre/sell")
        return self


class LmsrPricingCallback(_Callback):
    tradeCostUsdc: str = Field(pattern=DECIMAL)
    donSignature: str = Field(pattern=HEX)
    deadline: str = Field(pattern=DECIMAL)
    nonce: str = Field(pattern=DECIMAL)


class TxCallback(_Callback):
    status: str = Field(min_length=1)
    result: str = Field(min_length=1)
    txHash: str = Field(pattern=HEX32)


class StakeCallback(TxCallback):
    result: Literal["stake"]


class RedeemCallback(TxCallback):
    result: Literal["redeem"]


class ConfidentialTradeCallback(_Callback):
    txHash: str = Field(pattern=HEX32)


class AgentKeyCallback(_Callback):
    agentId: str = Field(min_length=1, max_length=200)
    address: str = Field(pattern=ADDRESS)
    encryptedKeyBlob: str
    signedEthTransfer: str | None = Field(None, pattern=HEX)
    signedErc20: str | None = Field(None, pattern=HEX)
    signedCT: str | None = Field(None, pattern=HEX)

    def __repr__(self) -> str:  # the blob is never logged
        return f"AgentKeyCallback(agentId={self.agentId!r}, address={self.address!r})"


CALLBACKS: dict[str, type[_Callback]] = {
    "quote": QuoteCallback,
    "buy": BuyCallback,
    "sell": SellCallback,
    "lmsr-pricing": LmsrPricingCallback,
    "stake": StakeCallback,
    "redeem": RedeemCallback,
    "execute-confidential-trade": ConfidentialTradeCallback,
    "agent-keys": AgentKeyCallback,
}
