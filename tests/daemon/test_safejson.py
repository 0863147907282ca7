"""JSON from outside parsed by orjson where it reads exactly as the stdlib, by the stdlib elsewhere
(node/server/safejson.py): what a client or container sends must read the same either way."""

from __future__ import annotations

import json
import math

import pytest

from node.server import safejson

SAME_AS_STDLIB = [
    b'{"containers": ["echo"], "data": {"prompt": "hello", "n": 1}}',
    b'{"a": 1, "a": 2}',  # the last of duplicate keys
    b"[18446744073709551616, -9223372036854775809, 115792089237316195423570985008687907853269984665640564039457584007913129639935]",
    b"[123456789012345678, -123456789012345678, 0.1, -0.0, 1.5e300, 1e-320]",
    b'"\\ud800"',  # a lone surrogate
    b'\xef\xbb\xbf{"bom": true}',
    '{"text": "\u00e9\u4e2d\U0001f600"}'.encode(),
    '[1, 2]'.encode("utf-16"),
]


@pytest.mark.parametrize("raw", SAME_AS_STDLIB)
def test_a_document_reads_exactly_as_the_standard_library_reads_it(raw):
    ours, stdlib = safejson.loads(raw), json.loads(raw)
    assert ours == stdlib and repr(ours) == repr(stdlib)  # repr: an int stays an int, every digit kept


def test_a_256_bit_integer_keeps_every_digit_and_stays_an_integer():
    value = safejson.loads(b'{"amount": %d}' % (2**256 - 1))["amount"]
    assert isinstance(value, int) and value == 2**256 - 1


def test_nan_and_infinity_still_parse_leniently_and_are_refused_strictly():
    assert math.isnan(safejson.loads(b"[NaN]")[0]) and safejson.loads(b"1e999") == math.inf
    with pytest.raises(safejson.NonStandardJson):
        safejson.loads(b'{"x": -Infinity}', strict=True)


def test_depth_over_the_limit_is_refused_before_either_parser_runs():
    with pytest.raises(safejson.JsonTooDeep):
        safejson.loads(b"[" * 65 + b"]" * 65, 64)
