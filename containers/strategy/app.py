"""strategy: a registry task: the "balance monitoring" strategy of the seed, as a container.

Input (from the node's relayer): {"taskId", "configId", "tick", "trigger", "config", "inputs"}.
`config` carries from, to, chainId, tokenIn, tokenOut, amountIn, slippageBps (default 100) and
optionally threshold; `inputs.prices` maps token addresses to prices. When there is no threshold,
or the tokenIn price is at or below it, the answer is one swap intent with
minAmountOut = amountIn * price(tokenIn) / price(tokenOut) * (1 - slippage) (amounts in base
units; prices default to 1); otherwise no intent. Answers {"intents": [...], "logs": [...]}.
"""

import time

from service import serve


def handle(body):
    data = body.get("data") or {}
    config = data.get("config") or {}
    prices = (data.get("inputs") or {}).get("prices") or {}
    now = int(time.time())
    logs = [{"timestamp": now, "level": "info", "message": f"tick {data.get('tick')}"}]
    token_in, token_out = config.get("tokenIn"), config.get("tokenOut")
    price_in = float(prices.get(token_in, 1.0))
    price_out = float(prices.get(token_out, 1.0))
    threshold = config.get("threshold")
    if threshold is not None and price_in > float(threshold):
        logs.append({"timestamp": now, "level": "info", "message": f"price {price_in} above threshold {threshold}"})
        return {"intents": [], "logs": logs}
    amount_in = int(config.get("amountIn", "0"))
    slippage = int(config.get("slippageBps", 100))
    min_out = int(amount_in * price_in / price_out * (10_000 - slippage) / 10_000)
    intent = {"type": "swap", "data": {
        "from": config["from"], "to": config.get("to", config["from"]), "chainId": int(config.get("chainId", 1)),
        "tokenIn": token_in, "tokenOut": token_out, "amountIn": str(amount_in), "minAmountOut": str(min_out),
        "deadline": now + int(config.get("ttl", 3600))}}
    logs.append({"timestamp": now, "level": "success", "message": "Intent created"})
    return {"intents": [intent], "logs": logs}


if __name__ == "__main__":
    serve(handle)
