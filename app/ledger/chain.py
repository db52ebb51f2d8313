"""Tamper evidence that anyone can re-run with Python's own ``json`` and ``hashlib``: the entry hash chain and the
daily Merkle tree. (``canonical_json`` writes the canonical JSON with a faster encoder where it gives the same bytes
as ``reference_canonical_json``, and with the reference otherwise.)

Entry hash::

    canonical = JSON of {"seq", "business_key", "kind", "memo", "refs", "day", "created_at",
                         "postings": [{"account", "amount_fen"}, ... in line order]}
                with sorted keys, no spaces, UTF-8 (ensure_ascii off), created_at as UTC ISO-8601 with microseconds
    hash      = SHA-256( prev_hash (64 lowercase hex chars, ASCII) || canonical ), as lowercase hex
    the first entry's prev_hash is 64 zeros.

Daily Merkle root (RFC 6962 / 9162 tree hashing) over the entry hashes of one Asia/Shanghai day in ``seq`` order::

    leaf = SHA-256(0x00 || entry_hash bytes)      node = SHA-256(0x01 || left || right)
    the tree splits n leaves at the largest power of two below n; an empty day's root is SHA-256("").

A proof path is a list of ``{"side": "left"|"right", "hash": hex}`` from the leaf up: the sibling is on that
side of the running hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
ALGORITHM = (
    "sangyu-ledger-v1: sha256(prev_hash||canonical entry); RFC 6962 Merkle tree of a day's entry hashes"
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"seq", "business_key", "kind", "memo", "refs", "day", "created_at", "postings"}


# The reference: ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, built once
# (``json.dumps`` with options builds a new encoder on every call, about a quarter of the cost of a document).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# orjson writes the same bytes as the reference for JSON's strings, integers (to 64 bits), booleans, null, lists
# and objects with string keys: the same escapes, the same key order. Not always for floats (the reference's
# ``1e-05`` is ``0.00001`` there, ``1e-08`` is ``1e-8``, NaN is ``null``), and it writes some types the reference
# refuses (a UUID, an Enum, a date). So a document goes to orjson only if it holds nothing else.
_SCALARS = frozenset({str, int, bool, type(None)})


def _only_json_scalars(value: Any) -> bool:
    """Whether ``value`` is made only of dicts with string keys, lists, tuples, strings, ints, bools and None."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        else:
            return False
    return True


def reference_canonical_json(value: Any) -> bytes:
    """The canonical JSON as the published algorithm defines it, with Python's own ``json``."""
    return _CANONICAL.encode(value).encode("utf-8")


def canonical_json(value: Any) -> bytes:
    """``reference_canonical_json(value)``, byte for byte, in about half the time for an entry's document: written
    by orjson when ``value`` holds only what orjson writes exactly as the reference does, by the reference
    otherwise (a float, an integer beyond 64 bits, any other type)."""
    if _only_json_scalars(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError: an integer beyond 64 bits
            pass
    return reference_canonical_json(value)


def entry_document(
    *,
    seq: int,
    business_key: str,
    kind: str,
    memo: str,
    refs: dict[str, Any],
    day: date,
    created_at: datetime,
    postings: Sequence[tuple[str, int]],
) -> dict[str, Any]:
    """The exact object that is hashed for an entry (also what a proof shows)."""
    return {
        "seq": seq,
        "business_key": business_key,
        "kind": kind,
        "memo": memo,
        "refs": refs,
        "day": day.isoformat(),
        "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "postings": [{"account": account, "amount_fen": amount} for account, amount in postings],
    }


def entry_hash(prev_hash: str, document: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(document)).hexdigest()


def content_hash(kind: str, postings: Sequence[tuple[str, int]]) -> str:
    """What makes two posts under one business key "the same": kind and the multiset of postings."""
    return hashlib.sha256(canonical_json({"kind": kind, "postings": sorted(postings)})).hexdigest()


# ---------------------------------------------------------------- Merkle tree


def _leaf(entry_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_root(leaves[:k]), _root(leaves[k:]))


def merkle_root(entry_hashes: Sequence[str]) -> str:
    if not entry_hashes:
        return hashlib.sha256(b"").hexdigest()
    return _root([_leaf(h) for h in entry_hashes]).hex()


def _path(leaves: Sequence[bytes], index: int) -> list[dict[str, str]]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_path(leaves[:k], index), {"side": "right", "hash": _root(leaves[k:]).hex()}]
    return [*_path(leaves[k:], index - k), {"side": "left", "hash": _root(leaves[:k]).hex()}]


def merkle_path(entry_hashes: Sequence[str], index: int) -> list[dict[str, str]]:
    """Siblings from the leaf at ``index`` up to the root."""
    if not 0 <= index < len(entry_hashes):
        raise IndexError(index)
    return _path([_leaf(h) for h in entry_hashes], index)


def root_from_path(entry_hash_hex: str, path: Sequence[dict[str, str]]) -> str:
    running = _leaf(entry_hash_hex)
    for step in path:
        if set(step) != {"side", "hash"} or not _HEX64.match(step["hash"]):
            raise ValueError("malformed path step")
        sibling = bytes.fromhex(step["hash"])
        if step["side"] == "left":
            running = _node(sibling, running)
        elif step["side"] == "right":
            running = _node(running, sibling)
        else:
            raise ValueError("malformed path side")
    return running.hex()


# ---------------------------------------------------------------- proofs


def verify_entry_proof(item: dict[str, Any]) -> bool:
    """One proven entry: ``{"entry": <document>, "prev_hash", "hash", "path", "root"}``. True when the document
    hashes (after ``prev_hash``) to ``hash`` and ``hash`` reaches ``root`` through ``path``."""
    try:
        if set(item) != {"entry", "prev_hash", "hash", "path", "root"}:
            return False
        document = item["entry"]
        if not isinstance(document, dict) or set(document) != _ENTRY_KEYS:
            return False
        for key in ("prev_hash", "hash", "root"):
            if not isinstance(item[key], str) or not _HEX64.match(item[key]):
                return False
        if not isinstance(item["path"], list):
            return False
        postings = document["postings"]
        if not isinstance(postings, list) or len(postings) < 2:
            return False
        total = 0
        for posting in postings:
            if set(posting) != {"account", "amount_fen"} or type(posting["amount_fen"]) is not int:
                return False
            total += posting["amount_fen"]
        if total != 0:
            return False
        if entry_hash(item["prev_hash"], document) != item["hash"]:
            return False
        return root_from_path(item["hash"], item["path"]) == item["root"]
    except (ValueError, TypeError, KeyError, AttributeError):
        return False


def verify_proof(proof: dict[str, Any]) -> bool:
    """A whole proof as built by ``ledger_service.proof_for_entries``: every entry verifies, and every entry's
    root is the root given for its day in ``roots`` (compare those with ``GET /api/v1/ledger/digests/{day}``;
    ``published[day]`` false means the day is not over yet and its root will still grow)."""
    try:
        if set(proof) != {"algorithm", "entries", "roots", "published"}:
            return False
        published = proof["published"]
        if not isinstance(published, dict) or set(published) != set(proof["roots"]):
            return False
        if not all(isinstance(v, bool) for v in published.values()):
            return False
        if proof["algorithm"] != ALGORITHM:
            return False
        roots = proof["roots"]
        entries = proof["entries"]
        if not isinstance(roots, dict) or not isinstance(entries, list) or not entries:
            return False
        for item in entries:
            if not verify_entry_proof(item):
                return False
            if roots.get(item["entry"]["day"]) != item["root"]:
                return False
        return True
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
