"""Typed requests of every workflow action of seed 001 (§1). The local runtime executes these
models (their defaults are the runtime's: maxCostUsdc = tradeCostUsdc, bParameter "1", …); the
trigger dispatcher only validates a known action with them for an early, clear 400 and then
forwards the app's `input` exactly as sent. Fields the seed does not name are ignored here and
passed through by the dispatcher, as the JavaScript workflow would see them."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from node.fields import ADDRESS_PATTERN as ADDRESS
from node.fields import HEX32_PATTERN as HEX32

HEX = r"^0x[0-9a-fA-F]*$"
ENTROPY = r"^(0x)?[0-9a-fA-F]*$"  # hex with or without 0x
DECIMAL = r"^(0|[1-9][0-9]{0,77})$"
ZERO32 = "0x" + "00" * 32

Dec = Annotated[str, Field(pattern=DECIMAL)]
Hex32 = Annotated[str, Field(pattern=HEX32)]
Address = Annotated[str, Field(pattern=ADDRESS)]
# 65-byte r‖s‖v, or 64-byte compact r‖yParityAndS (EIP-2098); see `full_signature`.
Sig = Annotated[str, Field(pattern=r"^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$")]


def full_signature(signature: str) -> str:
    """A 65-byte r‖s‖v signature (v 27/28) from a 65-byte or 64-byte EIP-2098 one; the
    contracts take 65 bytes."""
    raw = bytes.fromhex(signature.removeprefix("0x"))
    if len(raw) != 64:
        return signature
    y_and_s = int.from_bytes(raw[32:], "big")
    s = y_and_s & ((1 << 255) - 1)
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([27 + (y_and_s >> 255)])).hex()


def max_cost(trade_cost: str, given: str | None) -> str:
    """maxCostUsdc defaults to tradeCostUsdc and must be >= it."""
    if given is None:
        return trade_cost
    if int(given) < int(trade_cost):
        raise ValueError("maxCostUsdc must be >= tradeCostUsdc")
    return given


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    apiKey: str | None = None


class _TradeTerms(BaseModel):
    """What a user signs in UserTrade besides the market: amounts, nonce, deadline."""

    model_config = ConfigDict(extra="ignore")
    quantity: Dec
    tradeCostUsdc: Dec
    maxCostUsdc: Dec | None = None
    nonce: Dec
    deadline: Dec

    @model_validator(mode="after")
    def _max_cost(self) -> _TradeTerms:
        self.maxCostUsdc = max_cost(self.tradeCostUsdc, self.maxCostUsdc)
        return self

    @property
    def cost_cap(self) -> str:
        """maxCostUsdc as validated (never None once validated: it defaults to tradeCostUsdc)."""
        return self.maxCostUsdc or self.tradeCostUsdc


TradeTerms = _TradeTerms  # one trade's terms: a TradeItem, QuoteAction.terms(), a ConfidentialTradeAction


class TradeItem(_TradeTerms):
    userSignature: Sig


class QuoteAction(_Action):
    """With `trades[]` only questionId, conditionId, outcomeIndex and buy are shared at the top
    level (seed 001 §1.1); without, the top level is one trade and its terms are required."""

    action: Literal["quote", "order", "buy", "sell"]
    questionId: Hex32
    conditionId: Hex32
    outcomeIndex: int = Field(ge=0, le=255)
    buy: bool | None = None
    quantity: Dec | None = None
    tradeCostUsdc: Dec | None = None
    maxCostUsdc: Dec | None = None
    nonce: Dec | None = None
    deadline: Dec | None = None
    userSignature: Sig | None = None
    trades: list[TradeItem] | None = None

    @model_validator(mode="after")
    def _rules(self) -> QuoteAction:
        if not self.trades:
            missing = [n for n in ("quantity", "tradeCostUsdc", "nonce", "deadline") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{missing[0]}: Field required (unless trades[] is given)")
            assert self.tradeCostUsdc is not None  # for mypy: `missing` above names it when absent
            self.maxCostUsdc = max_cost(self.tradeCostUsdc, self.maxCostUsdc)
        if self.action == "buy":
            self.buy = True  # forced by the action
        elif self.action == "sell":
            self.buy = False
        elif self.buy is None:
            raise ValueError("buy: Field required")
        return self

    @property
    def side(self) -> bool:
        """buy as validated (the action forces it, or the body must give it)."""
        return bool(self.buy)

    def terms(self) -> _TradeTerms:
        """The top level as one trade's terms (validated present when there is no trades[])."""
        return _TradeTerms.model_validate(self.model_dump(
            include={"quantity", "tradeCostUsdc", "maxCostUsdc", "nonce", "deadline"}))


class LmsrPricingAction(_Action):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    action: Literal["lmsrPricing"]
    marketId: Hex32
    outcomeIndex: int = Field(ge=0, le=255)
    quantity: Dec
    bParameter: str = Field("1", pattern=r"^[0-9]+(\.[0-9]+)?$")
    b: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?$")
    buy: bool = True

    @model_validator(mode="after")
    def _b(self) -> LmsrPricingAction:
        if self.b is not None:
            self.bParameter = self.b
        if float(self.bParameter) <= 0:
            raise ValueError("bParameter must be > 0")
        return self


class CreateAgentKeyAction(_Action):
    action: Literal["createAgentKey"]
    agentId: str = Field(min_length=1, max_length=200)
    funderNonce: int | None = Field(None, ge=0)
    entropy: str | None = Field(None, pattern=ENTROPY)


class StakeAction(_Action):
    action: Literal["stake"]
    questionId: Hex32
    parentCollectionId: Hex32 = ZERO32
    partition: list[Dec] = Field(min_length=2)
    token: Address
    amount: Dec
    owner: Address


class RedeemAction(_Action):
    action: Literal["redeem"]
    parentCollectionId: Hex32
    conditionId: Hex32
    indexSets: list[int | Dec] = Field(min_length=1)
    token: Address
    owner: Address
    deadline: Dec
    nonce: Dec
    signature: Sig

    @field_validator("indexSets")
    @classmethod
    def _ints(cls, value: list) -> list[int]:
        out = [int(v) for v in value]
        if any(v <= 0 for v in out):
            raise ValueError("index sets are positive")
        return out


class ConfidentialTradeAction(_Action, _TradeTerms):
    action: Literal["executeConfidentialTrade", "execute-confidential-trade"]
    agentId: str = Field(min_length=1)
    marketId: Hex32 | None = None
    questionId: Hex32 | None = None
    outcomeIndex: int = Field(ge=0, le=255)
    buy: bool

    @model_validator(mode="after")
    def _market(self) -> ConfidentialTradeAction:
        self.marketId = self.marketId or self.questionId
        if self.marketId is None:
            raise ValueError("marketId: Field required (or questionId)")
        return self


class CreateMarketAction(_Action):
    action: Literal["createMarket"]
    question: str = Field(min_length=1, max_length=2000)
    oracle: Address
    duration: int = Field(gt=0)
    outcomeSlotCount: int = Field(ge=2, le=256)
    oracleType: Literal[1, 2, 3]
    marketType: Literal[0, 1, 2]
    creatorAddress: Address
    amountUsdc: Dec | None = None


class GetMarketAction(_Action):
    action: Literal["getMarket"]
    questionId: Hex32


class SeedAction(_Action):
    action: Literal["seed"]
    questionId: Hex32
    amountUsdc: Dec
    bParameter: str = Field("1", pattern=r"^[0-9]+(\.[0-9]+)?$")


class ResolveMarketAction(_Action):
    action: Literal["resolveMarket"]
    questionId: Hex32
    payouts: list[Dec] = Field(min_length=2)
    oracle: Address


class _SignedBy(_Action):
    """Actions signed by an agent key (by agentId) or the backend signer."""

    signer: Literal["agent", "backend"]
    agentId: str | None = None

    @model_validator(mode="after")
    def _agent(self) -> _SignedBy:
        if self.signer == "agent" and not self.agentId:
            raise ValueError("agentId: required when signer is 'agent'")
        return self


class ApproveErc20Action(_SignedBy):
    action: Literal["approveErc20"]
    token: Address | None = None
    spender: Address
    amount: Dec
    nonce: Dec | None = None
    userInvoke: bool


class ApproveConditionalTokenAction(_SignedBy):
    action: Literal["approveConditionalToken"]
    conditionalTokens: Address | None = None
    operator: Address
    approved: bool
    nonce: Dec | None = None
    userInvoke: bool = False


# The backend's market id (seed 001 §1.14: a string) becomes one segment of the backend URL
# (GET /api/cre/markets/{marketId}/resolution, POST .../resolved, with the backend API key):
# letters, digits and `_ . : -` only, so it can never be `..`, a `/`, an escape or a query.
BACKEND_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class RunSettlementAction(_Action):
    action: Literal["runSettlement"]
    marketId: str = Field(pattern=BACKEND_ID)
    questionId: Hex32


class BackendMarket(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    question: str = Field(min_length=1)
    oracle: Address
    duration: int = Field(gt=0)
    outcomeSlotCount: int = Field(2, ge=2, le=256)
    oracleType: Literal[1, 2, 3] = 1
    marketType: Literal[0, 1, 2] = 0
    creatorAddress: Address


class CreateMarketsFromBackendAction(_Action):
    action: Literal["createMarketsFromBackend"]
    markets: list[BackendMarket] | None = None


WorkflowAction = Annotated[
    QuoteAction | LmsrPricingAction | CreateAgentKeyAction | StakeAction | RedeemAction | ConfidentialTradeAction
    | CreateMarketAction | GetMarketAction | SeedAction | ResolveMarketAction | ApproveErc20Action
    | ApproveConditionalTokenAction | RunSettlementAction | CreateMarketsFromBackendAction,
    Field(discriminator="action"),
]
ACTION = TypeAdapter(WorkflowAction)

# After each action, the backend path the workflow POSTs its result to (seed 001 §4).
CALLBACK_PATHS = {
    "quote": "/api/cre/quote", "order": "/api/cre/quote", "buy": "/api/cre/buy", "sell": "/api/cre/sell",
    "lmsrPricing": "/api/cre/lmsr-pricing", "stake": "/api/cre/stake", "redeem": "/api/cre/redeem",
    "executeConfidentialTrade": "/api/cre/execute-confidential-trade",
    "execute-confidential-trade": "/api/cre/execute-confidential-trade", "createAgentKey": "/api/cre/agent-keys",
}


KNOWN_ACTIONS = frozenset(
    name for model in get_args(get_args(WorkflowAction)[0])  # Annotated[union, ...] -> the union -> its models
    for name in get_args(model.model_fields["action"].annotation))


def parse_action(payload: Any) -> WorkflowAction:
    return ACTION.validate_python(payload)


# -- responses (seed 001 §2) ---------------------------------------------------------------------
# The runtime's answers are validated against these before they leave the node, so their shape
# is the seed's; BigInt values are decimal strings.


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class QuoteResponse(_Response):
    questionId: Hex32
    outcomeIndex: int
    buy: bool
    quantity: Dec
    tradeCostUsdc: Dec
    nonce: Dec
    deadline: Dec
    signature: str = Field(pattern=HEX)


class TxResponse(_Response):
    txHash: Hex32


class BatchResponse(_Response):
    txHashes: list[Hex32]
    errors: list[str] | None = None


class LmsrPricingResponse(_Response):
    tradeCostUsdc: Dec
    donSignature: str = Field(pattern=HEX)
    deadline: Dec
    nonce: Dec


class AgentKeyResponse(_Response):
    address: Address
    encryptedKeyBlob: str
    signedEthTransfer: str | None = Field(None, pattern=HEX)
    signedErc20: str | None = Field(None, pattern=HEX)
    signedCT: str | None = Field(None, pattern=HEX)


class StatusResponse(_Response):
    status: str
    result: str
    txHash: Hex32


class ApproveResponse(_Response):
    status: Literal["ok"]
    result: Literal["approveErc20", "approveConditionalToken"]
    signedTx: str = Field(pattern=HEX)
    signerAddress: Address
    broadcastRequired: bool
    txHash: Hex32 | None = None


class CreateMarketResponse(_Response):
    questionId: Hex32
    conditionId: Hex32
    createMarketTxHash: Hex32
    seedTxHash: Hex32 | None = None


class MarketResponse(_Response):
    questionId: Hex32
    conditionId: Hex32
    outcomeSlotCount: int
    supplies: list[str]


class CreatedMarketsResponse(_Response):
    status: str
    created: int
    errors: list[str] | None = None


def response_model(action: Any, response: dict[str, Any]) -> type[BaseModel]:
    """The seed's response shape for an action's answer."""
    name = action.action
    if name in ("quote", "order", "buy", "sell"):
        if "txHashes" in response:
            return BatchResponse
        return TxResponse if "txHash" in response else QuoteResponse
    shapes: dict[str, type[BaseModel]] = {
        "lmsrPricing": LmsrPricingResponse, "createAgentKey": AgentKeyResponse, "stake": StatusResponse,
        "redeem": StatusResponse, "resolveMarket": StatusResponse, "runSettlement": StatusResponse,
        "seed": StatusResponse, "executeConfidentialTrade": TxResponse, "execute-confidential-trade": TxResponse,
        "approveErc20": ApproveResponse, "approveConditionalToken": ApproveResponse,
        "createMarket": CreateMarketResponse, "getMarket": MarketResponse,
        "createMarketsFromBackend": CreatedMarketsResponse,
    }
    return shapes[name]
