"""Oracle inputs: verify each response, check freshness and confirmations, aggregate.

Aggregation per (query, params): numbers -> the median of the distinct oracles' answers
(192.57 and 190.56 -> 191.565); lists -> the items reported by at least the required number
of oracles, in first-seen order (agreement); anything else -> the value the most oracles gave,
which must reach the required number. The output is keyed by the query name without its
`get` prefix, first letter lowered, pluralised with `s` when it does not end in one
(`getPrice` -> `prices`, `getRelevantTokens` -> `relevantTokens`), then by the params joined
with `,`."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from node.errors import Conflict, Unauthenticated
from node.registry.models import OracleQuery
from node.registry.signatures import recover_payload


@dataclass(frozen=True)
class Aggregated:
    inputs: dict[str, dict[str, Any]]
    proofs: dict[str, str]
    count: int


def output_name(query: str) -> str:
    name = query[3:] if query.startswith("get") and len(query) > 3 else query
    name = name[:1].lower() + name[1:]
    return name if name.endswith("s") else name + "s"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def aggregate_values(values: list[Any], required: int, query: str) -> Any:
    if all(_is_number(v) for v in values):
        return statistics.median(values)
    if all(isinstance(v, list) for v in values):
        counts: dict[str, int] = {}
        order: list[Any] = []
        for answer in values:
            for item in {json.dumps(x, sort_keys=True): x for x in answer}.values():
                key = json.dumps(item, sort_keys=True)
                if key not in counts:
                    order.append(item)
                counts[key] = counts.get(key, 0) + 1
        return [item for item in order if counts[json.dumps(item, sort_keys=True)] >= required]
    tally: dict[str, tuple[int, Any]] = {}
    for value in values:
        key = json.dumps(value, sort_keys=True)
        tally[key] = (tally.get(key, (0, value))[0] + 1, value)
    count, value = max(tally.values(), key=lambda item: item[0])
    if count < required:
        raise Conflict(f"Oracles disagree on {query}")
    return value


def aggregate(raw: dict[str, list[OracleQuery]], oracles: set[str], required: int, max_age: float,
              now: float | None = None, future_skew: float = 60.0) -> Aggregated:
    now = time.time() if now is None else now
    inputs: dict[str, dict[str, Any]] = {}
    proofs: dict[str, str] = {}
    count = 0
    for query, items in raw.items():
        out = inputs.setdefault(output_name(query), {})
        for item in items:
            by_oracle: dict[str, Any] = {}
            for response in item.responses:
                payload = {"query": query, "params": item.params, "data": response.data, "timestamp": response.timestamp}
                signer = recover_payload(payload, response.signature)
                if signer is None or signer.lower() not in oracles:
                    raise Unauthenticated(f"Invalid oracle signature for {query}")
                if response.timestamp > now + future_skew:
                    raise Conflict(f"Oracle response for {query} is timestamped in the future")
                if response.timestamp < now - max_age:
                    raise Conflict(f"Outdated oracle response for {query}")
                by_oracle.setdefault(signer.lower(), response.data)
                proofs[signer] = response.signature
                count += 1
            if len(by_oracle) < required:
                raise Conflict("Config required oracle confirmations not reached", {"error": "Unauthorized"})
            key = ",".join(str(p) for p in item.params)
            out[key] = aggregate_values(list(by_oracle.values()), required, query)
    return Aggregated(inputs, proofs, count)
