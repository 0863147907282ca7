"""Password hashing off the event loop.

scrypt (node/gateway/crypto.py) costs tens of milliseconds of CPU by design; run on the loop,
every login stalls every other request of the node. Here it runs in a small thread pool of its
own (scrypt releases the GIL), sized to leave a core for the loop, so a burst of logins queues
behind itself instead of in front of everyone else.

A login for an unknown email (or an account without a password) checks against a dummy hash,
so the answer takes as long as a wrong password and does not reveal whether the email exists.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from node.gateway import crypto


class PasswordHasher:
    def __init__(self, workers: int | None = None) -> None:
        workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scrypt")
        self._dummy: str | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def hash(self, password: str) -> str:
        return await self._run(crypto.hash_password, password)

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if `password` matches `stored`; with no stored hash, the same work and False."""
        if not stored:
            if self._dummy is None:
                self._dummy = await self.hash(os.urandom(16).hex())
            await self._run(crypto.check_password, password, self._dummy)
            return False
        return await self._run(crypto.check_password, password, stored)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
