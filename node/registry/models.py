"""Request bodies of the registry API (seed 004)."""

from __future__ import annotations

import base64
import re
import time
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from node.canonical import stable_json
from node.fields import ADDRESS_PATTERN as ADDRESS
from node.fields import HEX32_PATTERN
from node.fields import HEX_BYTES_PATTERN as HEX
from node.registry.cron import Cron, CronError

SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
DECIMAL = r"^(0|[1-9][0-9]{0,77})$"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
                    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$")
_B58 = re.compile(r"^Qm[1-9A-HJ-NP-Za-km-z]{44}$")


def valid_cid(cid: str) -> bool:
    """CIDv0 (base58btc `Qm…`, 46 chars) or CIDv1 in base32 (`b…`, version byte 1)."""
    if _B58.match(cid):
        return True
    if not re.fullmatch(r"b[a-z2-7]{20,}", cid):
        return False
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        return False
    return len(raw) > 4 and raw[0] == 0x01


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NonceRequest(_Body):
    # Optional: with it the node composes the EIP-4361 message to sign (returned as `message`).
    address: str | None = Field(None, pattern=ADDRESS)


class VerifyRequest(_Body):
    nonce: str = Field(min_length=8, max_length=128)
    signature: str = Field(pattern=SIGNATURE)
    # The EIP-4361 message that was signed; optional when the nonce was requested with an address.
    message: str | None = Field(None, max_length=4000)


class _Replayable(_Body):
    """Optional replay protection of a signed registry change: both or neither. Either way a
    signature is accepted once; with them it can expire and be re-issued (a new nonce)."""

    nonce: int | None = Field(None, ge=0, lt=2**256)
    deadline: int | None = Field(None, ge=0, lt=2**256, description="Unix seconds")

    @model_validator(mode="after")
    def _both(self):
        if (self.nonce is None) != (self.deadline is None):
            raise ValueError("give both nonce and deadline, or neither")
        return self


class TaskCreate(_Body):
    cid: str
    version: str
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)

    @field_validator("cid")
    @classmethod
    def _cid(cls, value: str) -> str:
        if not valid_cid(value):
            raise ValueError("not a valid CID (v0 base58 'Qm…' or v1 base32 'b…')")
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError("not a semantic version (MAJOR.MINOR.PATCH)")
        return value


class ProjectCreate(_Body):
    name: str = Field(min_length=1, max_length=200)


class LinkTask(_Body):
    taskId: str = Field(min_length=1)


class MaintainerAdd(_Replayable):
    maintainer: str = Field(pattern=ADDRESS)
    signature: str = Field(pattern=SIGNATURE)


TOPIC = HEX32_PATTERN


class EventTrigger(_Body):
    chainId: int = Field(ge=1)
    address: str = Field(pattern=ADDRESS)
    topic: str | None = Field(None, pattern=TOPIC, description="topic0 (the event signature hash)")
    # Positional topic filters as eth_getLogs takes them; null matches anything.
    topics: list[str | None] | None = Field(None, max_length=4)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str | None] | None) -> list[str | None] | None:
        for topic in value or []:
            if topic is not None and not re.fullmatch(TOPIC, topic):
                raise ValueError(f"{topic!r} is not a 32-byte hex topic")
        return value

    def matches(self, log: dict[str, Any]) -> bool:
        if log["address"].lower() != self.address.lower():
            return False
        wanted = list(self.topics or [])
        if self.topic is not None:
            wanted = [self.topic, *wanted[1:]] if wanted else [self.topic]
        topics = [t.lower() for t in log["topics"]]
        for index, topic in enumerate(wanted):
            if topic is not None and (index >= len(topics) or topics[index] != topic.lower()):
                return False
        return True


class Trigger(_Body):
    cron: str | None = None
    event: EventTrigger | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                cron = Cron.parse(value)
            except CronError as exc:
                raise ValueError(f"invalid cron: {exc}") from None
            if not cron.fires_within(int(time.time()), 366):
                raise ValueError(f"{value!r} matches no time in the next year")
        return value

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if (self.cron is None) == (self.event is None):
            raise ValueError("give exactly one of cron or event")
        return self


class ConfigCreate(_Replayable):
    name: str = Field(min_length=1, max_length=200)
    # The seed spells these "requried…"; both spellings are accepted.
    oracleConfirmations: int = Field(1, ge=1, le=100, validation_alias=AliasChoices(
        "requriedOracleConfirmations", "requiredOracleConfirmations", "oracleConfirmations"))
    relayerConfirmations: int = Field(1, ge=1, le=100, validation_alias=AliasChoices(
        "requriedRelayerConfirmations", "requiredRelayerConfirmations", "relayerConfirmations"))
    signature: str = Field(pattern=SIGNATURE)
    trigger: Trigger
    data: dict[str, Any] = Field(default_factory=dict)


class OracleResponse(_Body):
    data: Any
    signature: str = Field(pattern=SIGNATURE)
    timestamp: int = Field(ge=0)


class OracleQuery(_Body):
    params: list[Any] = Field(default_factory=list, max_length=32)
    responses: list[OracleResponse] = Field(min_length=1, max_length=64)


class TriggerRef(_Body):
    chainId: int = Field(ge=0)
    transactionHash: str = Field(pattern=HEX32_PATTERN)
    logIndex: int = Field(ge=0)


class SubmittedTrigger(TriggerRef):
    """A chain event named by whoever submits inputs (chain id 0 is no chain: the node's cron)."""

    chainId: int = Field(ge=1)


class InputSubmit(_Body):
    configId: str = Field(min_length=1, max_length=100)
    trigger: SubmittedTrigger
    # At least one query, each with at least one (params, responses) item: the oracle answers
    # are what the config's confirmations are counted on.
    rawInputs: dict[Annotated[str, Field(min_length=1, max_length=200)],
                    Annotated[list[OracleQuery], Field(min_length=1, max_length=256)]] = Field(min_length=1,
                                                                                                max_length=64)
    # A relayer's EIP-191 signature of {taskId, configId, trigger, rawInputs}; without it the
    # request needs the bearer token of a member of the config's project.
    signature: str | None = Field(None, pattern=SIGNATURE)


class SwapIntent(_Body):
    from_: str = Field(pattern=ADDRESS, alias="from")
    to: str = Field(pattern=ADDRESS)
    chainId: int = Field(ge=1)
    tokenIn: str = Field(pattern=ADDRESS)
    tokenOut: str = Field(pattern=ADDRESS)
    amountIn: str = Field(pattern=DECIMAL)
    minAmountOut: str = Field(pattern=DECIMAL)
    deadline: int = Field(ge=0)


class TransferIntent(_Body):
    from_: str = Field(pattern=ADDRESS, alias="from")
    to: str = Field(pattern=ADDRESS)
    chainId: int = Field(ge=1)
    token: str = Field(pattern=ADDRESS)
    amount: str = Field(pattern=DECIMAL)
    deadline: int | None = Field(None, ge=0)


class CallIntent(_Body):
    chainId: int = Field(ge=1)
    to: str = Field(pattern=ADDRESS)
    data: str = Field(pattern=HEX)
    value: str = Field("0", pattern=DECIMAL)
    deadline: int | None = Field(None, ge=0)


INTENT_MODELS: dict[str, type[BaseModel]] = {"swap": SwapIntent, "transfer": TransferIntent, "call": CallIntent}


class Intent(_Body):
    type: Literal["swap", "transfer", "call"]
    data: dict[str, Any]

    @model_validator(mode="after")
    def _data(self) -> Intent:
        INTENT_MODELS[self.type].model_validate(self.data)
        return self


class LogLine(_Body):
    timestamp: int = Field(ge=0)
    level: Literal["debug", "info", "success", "warning", "error"]
    message: str = Field(max_length=2000)


class ExecutionSubmit(_Body):
    inputId: str
    signature: str = Field(pattern=SIGNATURE)
    intents: list[Intent] = Field(default_factory=list, max_length=100)
    logs: list[LogLine] = Field(default_factory=list, max_length=1000)


PROPOSAL_DATA_BYTES = 4096


class ProposalSubmit(_Body):
    solver: str = Field(pattern=ADDRESS)
    # Anyone with a fresh key may propose: what one proposal stores is bounded.
    data: dict[str, Any]
    signature: str = Field(pattern=SIGNATURE)

    @field_validator("data")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(stable_json(value).encode()) > PROPOSAL_DATA_BYTES:
            raise ValueError(f"larger than {PROPOSAL_DATA_BYTES} bytes as canonical JSON")
        return value


class SignRequest(_Body):
    proposalId: str | None = None
