"""Sign-In with Ethereum (EIP-4361) messages: compose, parse, verify.

Why our own: the `siwe` package (4.4.0, the current release) pins eth-account < 0.14 and
web3 < 8, older than the node's; the format is small and fully specified, so it is implemented
here against the EIP's ABNF (fields in the fixed order, optional ones where the EIP allows).
The message binds a sign-in to this node: its domain and URI, the registry's chain id, a
single-use nonce the node issued, and issued-at / expiration times. Wallets display it as a
sign-in request rather than as an opaque string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

# eth_account and eth_utils are imported where a message is composed, parsed or verified: a
# node that never serves a sign-in never loads them (~10 MB, see node/registry/signatures.py).

STATEMENT = "Sign in to the task registry."

_MESSAGE = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+\-.]*)://)?(?P<domain>[^\s/?#]+) wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9a-fA-F]{40})\n\n"
    r"(?:(?P<statement>[^\n]+)\n)?\n"
    r"URI: (?P<uri>[^\s]+)\n"
    r"Version: (?P<version>1)\n"
    r"Chain ID: (?P<chain_id>[0-9]+)\n"
    r"Nonce: (?P<nonce>[a-zA-Z0-9]{8,})\n"
    r"Issued At: (?P<issued_at>[0-9T:\-.+Z]+)"
    r"(?:\nExpiration Time: (?P<expiration_time>[0-9T:\-.+Z]+))?"
    r"(?:\nNot Before: (?P<not_before>[0-9T:\-.+Z]+))?"
    r"(?:\nRequest ID: (?P<request_id>[^\n]*))?"
    r"(?:\nResources:(?P<resources>(?:\n- [^\s]+)+))?$"
)


class SiweError(ValueError):
    pass


def _time(text: str | None, field: str) -> float | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SiweError(f"{field}: not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise SiweError(f"{field}: needs a time zone")
    return parsed.timestamp()


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: float
    expiration_time: float | None = None
    not_before: float | None = None
    statement: str | None = STATEMENT

    def text(self) -> str:
        lines = [f"{self.domain} wants you to sign in with your Ethereum account:", self.address, ""]
        if self.statement:
            lines += [self.statement, ""]
        lines += [f"URI: {self.uri}", "Version: 1", f"Chain ID: {self.chain_id}", f"Nonce: {self.nonce}",
                  f"Issued At: {rfc3339(self.issued_at)}"]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {rfc3339(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {rfc3339(self.not_before)}")
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        match = _MESSAGE.match(text.replace("\r\n", "\n"))
        if match is None:
            raise SiweError("message: not an EIP-4361 sign-in message")
        address = match["address"]
        from eth_utils import is_checksum_address

        if not is_checksum_address(address):
            raise SiweError("message: the address must be EIP-55 checksummed")
        return cls(domain=match["domain"], address=address, uri=match["uri"], chain_id=int(match["chain_id"]),
                   nonce=match["nonce"], issued_at=_time(match["issued_at"], "Issued At") or 0.0,
                   expiration_time=_time(match["expiration_time"], "Expiration Time"),
                   not_before=_time(match["not_before"], "Not Before"), statement=match["statement"])


def compose(domain: str, address: str, uri: str, chain_id: int, nonce: str, issued_at: float,
            expires_at: float) -> str:
    from eth_utils import to_checksum_address

    return SiweMessage(domain, to_checksum_address(address), uri, chain_id, nonce, issued_at, expires_at).text()


def verify(text: str, signature: str, *, domain: str, uri: str, chain_id: int, nonce: str, now: float,
           skew: float) -> str:
    """The signer's address when `text` is a well-formed sign-in for this node, chain and
    nonce, within its validity window, signed by the address it names; else SiweError."""
    message = SiweMessage.parse(text)
    if message.domain != domain:
        raise SiweError(f"message: domain {message.domain!r} is not this node ({domain!r})")
    if message.uri != uri:
        raise SiweError(f"message: URI {message.uri!r} is not this node ({uri!r})")
    if message.chain_id != chain_id:
        raise SiweError(f"message: chain id {message.chain_id} is not the registry's ({chain_id})")
    if message.nonce != nonce:
        raise SiweError("message: its nonce is not the nonce given")
    if message.issued_at > now + skew:
        raise SiweError("message: issued in the future")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SiweError("message: expired")
    if message.not_before is not None and message.not_before > now + skew:
        raise SiweError("message: not valid yet")
    from eth_account import Account
    from eth_account.messages import encode_defunct

    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # noqa: BLE001 - a malformed signature recovers nobody
        signer = None
    if signer is None or signer != message.address:
        raise SiweError("Invalid signature")
    return signer
