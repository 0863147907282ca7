"""One anvil per test module (blocks every second unless the module sets ANVIL_BLOCK_TIME = None:
mined on demand), with the contracts deployed on it by the product's deployer."""

from __future__ import annotations

import pytest

from tests.chain_helpers import Anvil, deploy


@pytest.fixture(scope="module")
def anvil(request):
    chain = Anvil(block_time=getattr(request.module, "ANVIL_BLOCK_TIME", 1)).start()
    yield chain
    chain.stop()


@pytest.fixture(scope="module")
def dep(anvil):
    return deploy(anvil.url)
