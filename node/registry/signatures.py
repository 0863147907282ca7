"""Every signature the registry checks, in one place (the README documents the same schemes).

- Sign-in: an EIP-4361 (Sign-In with Ethereum) message, see `node.registry.siwe`.
- EIP-712, domain {name: "TaskRegistry", version: "1", chainId: registry.chain_id}:
  - AddMaintainer(string projectId,address maintainer[,uint256 nonce,uint256 deadline]), signed
    by the project owner;
  - Config(string projectId,string taskId,string name,uint32 oracleConfirmations,
    uint32 relayerConfirmations,string trigger,bytes32 dataHash[,uint256 nonce,uint256 deadline]),
    signed by the submitter, where trigger = canonical JSON of the trigger and
    dataHash = keccak256(canonical JSON of data).
  The bracketed fields are present when the request carries them (the seed's format has
  neither). The registry burns each accepted struct's EIP-712 hash (`typed_digest`): the same
  signed change is never accepted twice, and a deprecated one never comes back.
- EIP-191 over the 32-byte keccak256 of canonical JSON:
  - an oracle response: {"query", "params", "data", "timestamp"};
  - an execution: {"taskId", "inputId", "intents", "logs"} (by a relayer);
  - a solver proposal: {"intentId", "solver", "data"};
  - a relayer's signature of the winning proposal: {"intentId", "proposalId", "solver", "data"}.
"""

from __future__ import annotations

from typing import Any

from node.canonical import stable_json

# eth_account and eth_utils are imported inside the functions that use them: with them (and
# py_ecc's BLS tables that eth_account brings) a node is ~10 MB larger, and a node whose registry
# never checks a signature never needs them (tests/daemon/test_import_weight.py).


def digest(payload: Any) -> bytes:
    from eth_utils import keccak

    return keccak(text=stable_json(payload))


def sign_payload(payload: Any, private_key: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return "0x" + bytes(Account.sign_message(encode_defunct(primitive=digest(payload)), private_key).signature).hex()


def recover_payload(payload: Any, signature: str) -> str | None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    try:
        return Account.recover_message(encode_defunct(primitive=digest(payload)), signature=signature)
    except Exception:  # noqa: BLE001 - eth_account raises many unrelated types for a malformed signature
        return None


def _domain(chain_id: int) -> dict[str, Any]:
    return {"name": "TaskRegistry", "version": "1", "chainId": chain_id}


_DOMAIN_TYPE = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}]


_REPLAY_FIELDS = [{"name": "nonce", "type": "uint256"}, {"name": "deadline", "type": "uint256"}]


def _with_replay(fields: list, message: dict, nonce: int | None, deadline: int | None) -> tuple[list, dict]:
    if nonce is None:
        return fields, message
    return fields + _REPLAY_FIELDS, {**message, "nonce": nonce, "deadline": deadline}


def maintainer_typed_data(chain_id: int, project_id: str, maintainer: str, nonce: int | None = None,
                          deadline: int | None = None) -> dict[str, Any]:
    fields, message = _with_replay([{"name": "projectId", "type": "string"}, {"name": "maintainer", "type": "address"}],
                                   {"projectId": project_id, "maintainer": maintainer}, nonce, deadline)
    return {"types": {"EIP712Domain": _DOMAIN_TYPE, "AddMaintainer": fields}, "primaryType": "AddMaintainer",
            "domain": _domain(chain_id), "message": message}


def config_typed_data(chain_id: int, project_id: str, task_id: str, name: str, oracle_confirmations: int,
                      relayer_confirmations: int, trigger: Any, data: Any, nonce: int | None = None,
                      deadline: int | None = None) -> dict[str, Any]:
    fields, message = _with_replay(
        [{"name": "projectId", "type": "string"}, {"name": "taskId", "type": "string"},
         {"name": "name", "type": "string"}, {"name": "oracleConfirmations", "type": "uint32"},
         {"name": "relayerConfirmations", "type": "uint32"}, {"name": "trigger", "type": "string"},
         {"name": "dataHash", "type": "bytes32"}],
        {"projectId": project_id, "taskId": task_id, "name": name, "oracleConfirmations": oracle_confirmations,
         "relayerConfirmations": relayer_confirmations, "trigger": stable_json(trigger), "dataHash": digest(data)},
        nonce, deadline)
    return {"types": {"EIP712Domain": _DOMAIN_TYPE, "Config": fields}, "primaryType": "Config",
            "domain": _domain(chain_id), "message": message}


def typed_digest(typed: dict[str, Any]) -> str:
    """The EIP-712 hash a signature of `typed` signs: what makes a signed change single use
    (not the signature bytes, which ECDSA malleability could vary)."""
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    signable = encode_typed_data(full_message=typed)
    return "0x" + keccak(b"\x19" + signable.version + signable.header + signable.body).hex()


def recover_typed(typed: dict[str, Any], signature: str) -> str | None:
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    try:
        return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except Exception:  # noqa: BLE001 - eth_account raises many unrelated types for a malformed signature
        return None


def sign_typed(typed: dict[str, Any], private_key: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    return "0x" + bytes(Account.sign_message(encode_typed_data(full_message=typed), private_key).signature).hex()
