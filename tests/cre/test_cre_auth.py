"""The CRE bridge's and callbacks' authentication refuse by kind (node/errors.py): the HTTP edge
turns Unavailable into 503, Unauthenticated into 401 and Conflict into 409 in the CRE shape
(tests/cre/test_cre_wire.py pins those answers). In-process, on a mocked request."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from node.cre.auth import CallbackAuth, RuntimeAuth
from node.cre.config import CreConfig
from node.errors import Unauthenticated, Unavailable


class NoNonces:
    async def use_nonce(self, nonce: str, until: float) -> bool:
        raise AssertionError("no nonce is stored for a refused request")


def request(**headers: str):
    return make_mocked_request("POST", "/api/cre/runtime/ingest", headers=headers)


async def test_the_runtime_bridge_without_its_key_configured_is_unavailable():
    with pytest.raises(Unavailable, match="KEEPR_API_KEY is not set"):
        await RuntimeAuth(CreConfig(), NoNonces()).check(request(Authorization="Bearer x"), {})


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "Missing or invalid bearer token"),
    ({"Authorization": "Bearer wrong"}, "Missing or invalid bearer token"),
    ({"Authorization": "Bearer key", "x-cre-nonce": "n"}, "missing x-cre-timestamp, x-cre-signature"),
    ({"Authorization": "Bearer key", "x-cre-nonce": "n", "x-cre-timestamp": "soon", "x-cre-signature": "s"},
     "Unix epoch milliseconds"),
], ids=["no bearer", "wrong bearer", "incomplete signature", "bad timestamp"])
async def test_a_runtime_request_with_a_missing_or_wrong_credential_is_unauthenticated(headers, message):
    with pytest.raises(Unauthenticated, match=message):
        await RuntimeAuth(CreConfig(api_key="key"), NoNonces()).check(request(**headers), {})


def test_a_callback_without_the_backend_key_is_unauthenticated_and_without_one_configured_unavailable():
    with pytest.raises(Unauthenticated, match="Missing or invalid API key"):
        CallbackAuth("backend", None).check(request(**{"x-api-key": "nope"}))
    with pytest.raises(Unavailable, match="CRE_BACKEND_API_KEY is not set"):
        CallbackAuth(None, None).check(request(**{"x-api-key": "nope"}))
