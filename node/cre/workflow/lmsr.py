"""LMSR pricing, numerically stable: C(q) = b · log Σ exp(q_i / b), computed with log-sum-exp.
Quantities are shares (1 share = 1e18 units on chain, pays 1 USDC = 1e6 units on a win)."""

from __future__ import annotations

import math

SHARE = 10**18
USDC = 10**6


def cost(q: list[float], b: float) -> float:
    m = max(x / b for x in q)
    return b * (m + math.log(sum(math.exp(x / b - m) for x in q)))


def trade_cost(q: list[float], b: float, outcome: int, delta: float) -> float:
    """Cost in shares' currency (USDC) of changing outcome `outcome` by `delta` shares
    (negative for a sale: the result is then negative, the proceeds)."""
    after = list(q)
    after[outcome] += delta
    return cost(after, b) - cost(q, b)


def trade_cost_usdc(q_units: list[int], b_shares: float, outcome: int, quantity_units: int, buy: bool) -> int:
    """On-chain units in and out: share balances and quantity in 1e18 units, result in USDC
    units (6 decimals), rounded in the market maker's favour."""
    q = [x / SHARE for x in q_units]
    delta = quantity_units / SHARE
    if buy:
        return math.ceil(trade_cost(q, b_shares, outcome, delta) * USDC - 1e-9)
    return math.floor(-trade_cost(q, b_shares, outcome, -delta) * USDC + 1e-9)


def prices(q_units: list[int], b_shares: float) -> list[float]:
    q = [x / SHARE for x in q_units]
    m = max(x / b_shares for x in q)
    weights = [math.exp(x / b_shares - m) for x in q]
    total = sum(weights)
    return [w / total for w in weights]
