"""Tamper-evident audit core: canonical JSON, the per-tenant hash chain, Ed25519 checkpoints,
verification and offline bundles (DESIGN.md section 7; reference/security.md section 1).

Pure: no database, no clock, no randomness. The one function that touches a file is
:func:`load_bundle`, kept apart at the end. ``moat_nb.sandbox.audit_log`` stores what this module
computes; the server's ``GET /admin/audit/verify`` and ``moat-nb audit verify BUNDLE`` both call
:func:`verify`.

Events are plain dicts in camelCase wire form::

    seq eventId tenantId occurredAt action actor{username, roles, permissions}
    source{ip, userAgent, requestId, client} target{replayId, sourceExchangeId, routeId, environment}
    detail outcome prevHash hash

Byte layouts. Every hash is SHA-256, written as 64 lowercase hex characters; ``||`` is byte
concatenation; JCS is RFC 8785 canonical JSON, which is UTF-8::

    genesis(tenantId)    = SHA-256( b"moat/genesis/v1" 0x00 || UTF-8(tenantId) )
    hash(event)          = SHA-256( b"moat/audit/v1" 0x00 || ASCII(prevHash) || JCS(body) )
                           body = the event without its "prevHash" and "hash" members;
                           ASCII(prevHash) = the 64 hex characters, not the 32 raw bytes
    prevHash of seq 1    = genesis(tenantId)
    checkpoint signature = Ed25519( b"moat/checkpoint/v1" 0x00 || JCS(checkpoint without "signature") )
                           written as standard base64 (with padding) of the 64 signature bytes
    keyId                = first 16 hex characters of SHA-256(raw 32-byte Ed25519 public key)
    public key on wire   = standard base64 of the DER SubjectPublicKeyInfo (as /agents/register)

The three tags keep the domains apart (security.md 1.2 lesson 5, after RFC 6962's 0x00/0x01
leaf/node prefixes): a row hash, a genesis value and a signed checkpoint can never be passed off
as one another, and the server key that also signs agent commands cannot be made to sign a
checkpoint by accident.

What verification proves (security.md 1.2 lesson 2): a hash chain alone shows that the events
link up; only a signed checkpoint held outside the attacker's reach shows that nothing was cut
from the tail or rewritten wholesale. Events after the newest checkpoint are linked but not yet
vouched for: deleting them cannot be detected (AUD-2's documented limitation), which is why an
export should carry a checkpoint at its head. A bundle carries its own public keys; a bundle
re-signed with an attacker's key verifies against those, so pass the keys you trust to
:func:`verify_bundle` (``public_keys=``) when the bundle came from someone else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import AuditVerificationError, RecordError
from .model import format_time

try:  # a dependency: ~2.5x faster verification, which P5 (DESIGN.md section 11) needs
    import orjson
except ImportError:  # pragma: no cover - the stdlib fast path below is exact too, only slower
    orjson = None

__all__ = [
    "BUNDLE_FORMAT",
    "EVENT_FIELDS",
    "REASONS",
    "REASON_HINTS",
    "VerifyResult",
    "append",
    "canonical_json",
    "chain",
    "event_hash",
    "genesis_hash",
    "key_id_for",
    "load_bundle",
    "load_public_key",
    "loads_strict",
    "make_bundle",
    "public_key_b64",
    "sign_checkpoint",
    "verify",
    "verify_bundle",
]

BUNDLE_FORMAT = "moat-audit-bundle/v1"

#: Members every event carries besides ``prevHash`` and ``hash`` (DESIGN.md section 7).
EVENT_FIELDS = (
    "seq", "eventId", "tenantId", "occurredAt", "action",
    "actor", "source", "target", "detail", "outcome",
)  # fmt: skip

#: Reason codes :func:`verify` reports, stable for machines, with what each one means.
REASONS: dict[str, str] = {
    "MALFORMED": "an event, checkpoint, key or bundle is not of the expected shape or type",
    "SEQ_GAP": "an expected seq is missing (deleted or reordered events)",
    "SEQ_DUPLICATE": "a seq appears a second time",
    "TENANT_MISMATCH": "an event or checkpoint belongs to another tenant's chain",
    "BROKEN_LINK": "prevHash is not the hash of the event before",
    "HASH_MISMATCH": "the stored hash is not the hash of the event's content",
    "UNKNOWN_KEY": "a checkpoint names a key id that no trusted public key has",
    "KEY_ID_MISMATCH": "a public key is filed under a key id that is not derived from it",
    "BAD_SIGNATURE": "a checkpoint's signature does not verify",
    "CHECKPOINT_MISMATCH": "a signed checkpoint disagrees with the chain (the events were rewritten)",
    "TRUNCATED": "the chain ends before a signed checkpoint (events were cut from the tail)",
    "UNANCHORED": "no checkpoint signed by a trusted key covers any event of the bundle",
    "SCHEMA_EDITED": "the database's append-only triggers were dropped or changed (server check only)",
    "UNSIGNED_TAIL": "the bundle's events after its newest signed checkpoint are vouched for by no one",
}

_TAMPERED = (
    "treat the log as changed from that seq on: compare it with a fresh export (p.audit_bundle()) "
    "and the platform's own check (GET /admin/audit/verify), and keep this copy as evidence"
)
_KEYS = (
    "pass the key the platform publishes (DATA/keys/audit-public-keys.txt) as public_keys; with "
    "that key, a checkpoint that does not verify was not signed by the platform"
)
#: What to do about each reason, the hint of :meth:`VerifyResult.raise_on_failure`'s error.
REASON_HINTS: dict[str, str] = {
    "MALFORMED": "this is not an audit export as the platform writes it: export it again "
    "with p.audit_bundle() and verify the file unedited",
    "SEQ_GAP": _TAMPERED,
    "SEQ_DUPLICATE": _TAMPERED,
    "TENANT_MISMATCH": "verify each tenant's chain on its own (the bundle's tenantId)",
    "BROKEN_LINK": _TAMPERED,
    "HASH_MISMATCH": _TAMPERED,
    "UNKNOWN_KEY": _KEYS,
    "KEY_ID_MISMATCH": _KEYS,
    "BAD_SIGNATURE": _KEYS,
    "CHECKPOINT_MISMATCH": _TAMPERED,
    "TRUNCATED": _TAMPERED,
    "UNANCHORED": _KEYS + "; or export again once a checkpoint covers these events",
    "SCHEMA_EDITED": "the server's audit tables lost their append-only triggers: restore them "
    "and treat events written meanwhile as unproven",
    "UNSIGNED_TAIL": "export again once the next checkpoint is signed, or accept events no key "
    "vouches for with verify_bundle(..., allow_unsigned_tail=True)",
}

_GENESIS_TAG = b"moat/genesis/v1\x00"
_AUDIT_TAG = b"moat/audit/v1\x00"
_CHECKPOINT_TAG = b"moat/checkpoint/v1\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHECKPOINT_FIELDS = ("tenantId", "seq", "hash", "at", "keyId", "signature")
_BUNDLE_FIELDS = frozenset({"format", "tenantId", "startSeq", "events", "checkpoints", "publicKeys"})

AnyKey = Ed25519PublicKey | Ed25519PrivateKey | str
PublicKeys = Mapping[str, AnyKey] | Iterable[AnyKey] | None


# --------------------------------------------------------------------------- canonical JSON

_INT_MAX = 2**53 - 1  # I-JSON (RFC 7493) safe integers; rfc8785 refuses anything beyond
_MAX_CONTAINERS = 100_000  # bounds the walk below, so a cyclic structure cannot loop it forever
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_SCALARS = frozenset({str, bool, type(None)})
_STRS = itertools.repeat("")  # pairs list items with a str "key", so one loop serves both
# The stdlib C encoder, set up to write exactly JCS's syntax: no whitespace, members sorted,
# UTF-8 text left as is, the same short escapes (\b \f \n \r \t \" \\) and lowercase \u00XX for
# the other control characters (RFC 8785 3.2.2.2). Circularity is bounded by _is_plain instead.
_fast_encode = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


def _is_plain(obj: Any) -> bool:
    """True when ``obj`` holds only values the C encoder writes exactly as RFC 8785 does.

    That is: dicts with ``str`` keys, lists, ``str``, ``bool``, ``None``, ``int`` within
    ±(2**53-1), and ``float`` whose ``repr`` has no exponent and no trailing ``.0``. Exact types
    only, so subclasses with their own ``__repr__`` or ``items`` take the reference path.
    """
    stack = [[obj]]
    budget = _MAX_CONTAINERS
    while stack:
        o = stack.pop()
        pairs = o.items() if type(o) is dict else zip(_STRS, o, strict=False)
        for k, v in pairs:
            if type(k) is not str:
                return False
            t = type(v)
            if t in _SCALARS:
                continue
            if t is dict or t is list:
                budget -= 1
                if budget < 0:
                    return False
                stack.append(v)
                continue
            if t is int:
                if -_INT_MAX <= v <= _INT_MAX:
                    continue
                return False
            if t is float and math.isfinite(v):
                # Python's repr and ECMAScript's Number::toString (RFC 8785 3.2.2.3) both give
                # the shortest digits that round-trip. They differ only in layout: Python writes
                # an exponent below 1e-4 and from 1e16 (ECMAScript: below 1e-6, from 1e21), as
                # "e-05"/"e+16" (ECMAScript: "e-7"/"e+21"), and keeps ".0" on integral values
                # and "-0.0". Without an exponent and a trailing ".0" the two texts are equal.
                r = repr(v)
                if "e" not in r and not r.endswith(".0"):
                    continue
            return False
    return True


# orjson writes compact, key-sorted UTF-8 with JCS's escapes; these options make it refuse
# (TypeError) what it would otherwise write in its own way: integers beyond ±(2**53-1),
# datetimes, dataclasses and subclasses of str/int/dict/list (rfc8785 writes those by value).
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_STRICT_INTEGER
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    if orjson is not None
    else 0
)
_EXPONENT = re.compile(rb"[0-9]e[+-]")  # orjson writes an exponent always with its sign
_INTEGRAL = re.compile(rb"\.0[,\]}]")  # inside a container a number ends at , ] or }
_ASTRAL_UTF8 = re.compile(rb"[\xf0-\xf4]")  # lead bytes of 4-byte UTF-8: code points past U+FFFF


def _exponent_in(out: bytes) -> bool:
    """``_EXPONENT.search(out)`` (a digit, "e", a sign), by finding each "e+" and "e-" and
    looking at the byte before it: 1 us instead of 27 on a 3 KB text whose only hits are words
    ("acme-eu", "Cache-Control")."""
    for pattern in (b"e+", b"e-"):
        i = out.find(pattern, 1)
        while i != -1:
            if 48 <= out[i - 1] <= 57:  # b"0" .. b"9"
                return True
            i = out.find(pattern, i + 1)
    return False


def _awkward_float(obj: Any) -> bool:
    """Whether ``obj`` holds a float that orjson writes otherwise than RFC 8785: an integral
    one (orjson keeps ".0", -0.0 included; JCS writes 59 and 0) or one orjson writes with an
    exponent (from 1e16 and below 1e-4; ECMAScript from 1e21 and below 1e-6). Each such float
    puts its token in orjson's text, so the text pre-checks never miss one; this walk tells a
    real token from one spelt inside a string."""
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            if node.is_integer() or b"e" in orjson.dumps(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


def _orjson_fast(obj: Any, exact: bool = True) -> bytes | None:
    """JCS bytes through orjson, or None where orjson's could differ from RFC 8785's.

    Where they can differ, and how each case is caught (tests/test_audit.py checks with
    Hypothesis that whatever this returns is rfc8785's bytes):

    * numbers: orjson writes an exponent from 1e16 (ECMAScript from 1e21) and keeps ".0" on
      integral floats and "-0.0" -- any exponent or integral float in the output gives None;
    * member order: orjson sorts code points, JCS UTF-16 code units; they differ only for text
      beyond U+FFFF, so any such character gives None (as in the stdlib path);
    * types: orjson writes tuples, UUIDs and enums natively, where rfc8785 refuses UUIDs and
      plain enums -- with ``exact`` the output must parse back equal to the input (a tuple, a
      UUID or an Enum member never equals its parsed JSON). :func:`verify` passes
      ``exact=False``: its events are parsed JSON, which holds none of these types, and the
      check costs a third of its time (P5); a caller who hands it such objects gets them read
      as orjson writes them (a UUID as its string), which no JSON form of the log can tell apart;
    * integers beyond ±(2**53-1), lone surrogates, non-string keys: orjson refuses them;
    * NaN and infinities: orjson writes null, and neither check above sees it. With ``exact``
      the round trip does; :func:`verify`'s events come from strict readers (:func:`load_bundle`,
      the client's :func:`loads_strict`), which refuse them, because a walk of every event
      to look for one would cost P5 a third.
    """
    try:
        out: bytes = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return None
    # The text tests are cheap pre-checks (C substring searches); a hit is confirmed on the
    # value itself (:func:`_awkward_float`): a body held as a string often spells "59.0}" or
    # "1e-5", and such a false hit sent every replay command to the pure-Python encoder.
    # (Confirming every event would cost P5 a third; emptying the text's strings with a regex
    # to confirm cost 40 us on a 3 KB replay command, twice per replay.)
    if (_exponent_in(out) or out.endswith(b".0") or (b".0" in out and _INTEGRAL.search(out))) and (
        _awkward_float(obj)
    ):
        return None
    if not out.isascii() and _ASTRAL_UTF8.search(out):
        return None
    if not exact:
        return out
    try:
        same = orjson.loads(out) == obj
    except (ValueError, RecursionError):
        return None
    return out if same else None


def _canonical_fast(obj: Any, exact: bool = True) -> bytes | None:
    """JCS bytes through orjson (when installed) or the C JSON encoder, or None when the input
    is outside the chosen path's safe domain.

    rfc8785 is pure Python and takes ~5x as long per event as the C encoder, which alone would
    miss P5 (DESIGN.md section 11). Where the two could disagree we return None and the caller
    uses rfc8785: values outside ``_is_plain``, and any text with characters beyond U+FFFF,
    because JCS orders member names by UTF-16 code units (RFC 8785 3.2.3) while Python orders
    code points, and the two orders differ only there. tests/test_audit.py checks with
    Hypothesis that this returns rfc8785's bytes whenever it returns anything.
    """
    if orjson is not None:
        return _orjson_fast(obj, exact)
    if not _is_plain(obj):
        return None
    try:
        text = _fast_encode(obj)
    except (TypeError, ValueError, RecursionError):
        return None
    if not text.isascii() and _ASTRAL.search(text):
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: let rfc8785 refuse them
        return None


def _jcs_fault(exc: BaseException) -> str:
    """What JCS refused, in words that quote no value."""
    if isinstance(exc, rfc8785.IntegerDomainError):
        return "an integer beyond ±(2**53-1)"
    if isinstance(exc, rfc8785.FloatDomainError):
        return "NaN or an infinity"
    if isinstance(exc, UnicodeError):
        return "text that is not valid Unicode (a lone surrogate)"
    if isinstance(exc, RecursionError):
        return "nesting too deep"
    if type(exc) is rfc8785.CanonicalizationError:
        return str(exc)  # its own words name a kind or a type, never a value
    return f"a value of a kind JCS does not hold ({type(exc).__name__})"


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JCS) canonical bytes of a JSON value, as ``rfc8785.dumps`` gives them.

    Raises :class:`RecordError` (code ``NOT_CANONICAL``) for what JCS cannot represent:
    integers beyond ±(2**53-1), NaN and infinities, non-string keys, lone surrogates, other
    types; security.md AUD-4 wants these refused at write time, never normalised.
    """
    fast = _canonical_fast(obj)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, UnicodeError, TypeError, ValueError, RecursionError) as exc:
        # The kind of fault, not rfc8785's text: that quotes the value (an integer out of range),
        # which may be a secret, and the server answers this error to the client (400).
        raise RecordError(
            f"value cannot be written as RFC 8785 canonical JSON: {_jcs_fault(exc)}",
            code="NOT_CANONICAL",
            hint="audit values must be I-JSON: string keys, integers within ±(2**53-1), "
            "finite numbers, valid Unicode text, only dict/list/str/int/float/bool/None",
        ) from exc


# --------------------------------------------------------------------------- hash chain


def genesis_hash(tenant_id: str) -> str:
    """The ``prevHash`` of a tenant's seq 1: hex SHA-256(b"moat/genesis/v1\\0" || UTF-8(tenantId))."""
    if not isinstance(tenant_id, str) or not tenant_id:
        raise RecordError(f"tenantId must be a non-empty string, not {tenant_id!r}", code="BAD_AUDIT_EVENT")
    return hashlib.sha256(_GENESIS_TAG + tenant_id.encode("utf-8")).hexdigest()


def event_hash(event: Mapping[str, Any], prev_hash: str) -> str:
    """Hex SHA-256(b"moat/audit/v1\\0" || ASCII(prev_hash) || JCS(event without prevHash, hash)).

    ``prev_hash`` is the previous event's hash (64 lowercase hex) or the tenant's genesis hash.
    Any ``prevHash``/``hash`` members already in ``event`` are ignored.
    """
    if not isinstance(prev_hash, str) or not _HEX64.fullmatch(prev_hash):
        raise RecordError(
            f"prev_hash must be 64 lowercase hex characters, not {prev_hash!r}", code="BAD_AUDIT_EVENT"
        )
    body = {k: v for k, v in event.items() if k != "prevHash" and k != "hash"}
    return hashlib.sha256(_AUDIT_TAG + prev_hash.encode("ascii") + canonical_json(body)).hexdigest()


def _check_event(event: Any) -> None:
    if not isinstance(event, Mapping):
        raise RecordError(
            f"an audit event must be an object, not {type(event).__name__}", code="BAD_AUDIT_EVENT"
        )
    missing = [f for f in EVENT_FIELDS if f not in event]
    if missing:
        raise RecordError(
            f"audit event is missing {', '.join(missing)}",
            code="BAD_AUDIT_EVENT",
            hint="every event carries " + " ".join(EVENT_FIELDS),
        )
    seq = event["seq"]
    if type(seq) is not int or seq < 1:
        raise RecordError(f"audit event seq must be an integer >= 1, not {seq!r}", code="BAD_AUDIT_EVENT")


def append(prev_event: Mapping[str, Any] | None, event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with ``prevHash`` and ``hash`` filled in, chained after ``prev_event``.

    ``prev_event`` is the tenant's newest event (with its ``hash``), or None for seq 1. The event
    must carry every member of :data:`EVENT_FIELDS`, the same tenant, and the next seq. Returns
    a new dict; the input is not changed.
    """
    _check_event(event)
    tenant = event["tenantId"]
    if prev_event is None:
        if event["seq"] != 1:
            raise RecordError(
                f"the first event of a chain has seq 1, not {event['seq']}",
                code="BAD_AUDIT_EVENT",
                hint="pass the tenant's newest event as prev_event to continue its chain",
            )
        prev = genesis_hash(tenant)
    else:
        _check_event(prev_event)
        prev = prev_event.get("hash")
        if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
            raise RecordError(f"prev_event has no valid hash: {prev!r}", code="BAD_AUDIT_EVENT")
        if prev_event["tenantId"] != tenant:
            raise RecordError(
                f"event of tenant {tenant!r} cannot follow an event of tenant {prev_event['tenantId']!r}",
                code="BAD_AUDIT_EVENT",
                hint="each tenant has its own chain",
            )
        if event["seq"] != prev_event["seq"] + 1:
            raise RecordError(
                f"seq {event['seq']} cannot follow seq {prev_event['seq']}: seqs are contiguous",
                code="BAD_AUDIT_EVENT",
            )
    out = {k: v for k, v in event.items() if k != "prevHash" and k != "hash"}
    out["prevHash"] = prev
    out["hash"] = event_hash(out, prev)
    return out


def chain(
    events: Iterable[Mapping[str, Any]], tenant_id: str, prev: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Chain ``events`` (seq already set, contiguous) of ``tenant_id`` after ``prev``.

    ``prev`` is the event the first one follows, or None when the first one is seq 1. Returns
    new dicts with ``prevHash`` and ``hash``; raises :class:`RecordError` on a seq gap, another
    tenant's event or a value JCS cannot write.
    """
    genesis_hash(tenant_id)  # validates the tenant id
    out: list[dict[str, Any]] = []
    last = prev
    for event in events:
        _check_event(event)
        if event["tenantId"] != tenant_id:
            raise RecordError(
                f"event seq {event['seq']} belongs to tenant {event['tenantId']!r}, not {tenant_id!r}",
                code="BAD_AUDIT_EVENT",
            )
        last = append(last, event)
        out.append(last)
    return out


# --------------------------------------------------------------------------- keys and checkpoints


def _public(key: AnyKey) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, str):
        return load_public_key(key)
    raise RecordError(f"not an Ed25519 key: {type(key).__name__}", code="BAD_KEY")


def key_id_for(key: AnyKey) -> str:
    """The key id: first 16 hex characters of SHA-256 of the raw 32-byte public key."""
    raw = _public(key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(key: AnyKey) -> str:
    """Standard base64 of the DER SubjectPublicKeyInfo of ``key`` (or of a private key's public half)."""
    der = _public(key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def _b64decode_strict(text: Any) -> bytes | None:
    """Bytes of canonical standard base64, else None.

    Canonical matters: base64 text whose unused low bits are set decodes to the same bytes, so a
    flipped final character would go unnoticed (AUD-10: one changed byte must make a bundle fail).
    """
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its DER SubjectPublicKeyInfo; :class:`RecordError` otherwise."""
    der = _b64decode_strict(text)
    key: Any = None
    if der is not None:
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError):
            key = None
    if not isinstance(key, Ed25519PublicKey) or public_key_b64(key) != text:
        raise RecordError(
            "not an Ed25519 public key in base64 DER SubjectPublicKeyInfo form",
            code="BAD_KEY",
            hint="use moat_nb.audit.public_key_b64(key) to write one",
        )
    return key


def _signed_bytes(checkpoint: Mapping[str, Any]) -> bytes:
    return _CHECKPOINT_TAG + canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    key_id: str | None,
    tenant_id: str,
    seq: int,
    hash: str,  # the wire name, though it shadows the builtin
    at: str | datetime,
) -> dict[str, Any]:
    """A signed checkpoint ``{tenantId, seq, hash, at, keyId, signature}``.

    ``hash`` is the chain's hash at ``seq``; ``at`` is the time handed in (RFC 3339, or an aware
    datetime written with milliseconds and ``Z``). ``key_id`` may be None; if given it must be
    :func:`key_id_for` the key, since verifiers derive it from the public key.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise RecordError("checkpoints are signed with an Ed25519 private key", code="BAD_KEY")
    derived = key_id_for(private_key)
    if key_id is not None and key_id != derived:
        raise RecordError(f"key id {key_id!r} is not this key's id {derived!r}", code="BAD_KEY")
    genesis_hash(tenant_id)
    if type(seq) is not int or seq < 1:
        raise RecordError(f"checkpoint seq must be an integer >= 1, not {seq!r}", code="BAD_AUDIT_EVENT")
    if not isinstance(hash, str) or not _HEX64.fullmatch(hash):
        raise RecordError(
            f"checkpoint hash must be 64 lowercase hex characters, not {hash!r}", code="BAD_AUDIT_EVENT"
        )
    at_text = format_time(at) if isinstance(at, datetime) else at
    if not isinstance(at_text, str):
        raise RecordError(f"checkpoint time must be an RFC 3339 string, not {at!r}", code="BAD_TIME")
    cp: dict[str, Any] = {"tenantId": tenant_id, "seq": seq, "hash": hash, "at": at_text, "keyId": derived}
    cp["signature"] = base64.b64encode(private_key.sign(_signed_bytes(cp))).decode("ascii")
    return cp


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :func:`verify` found. ``reason`` is a code of :data:`REASONS`; ``message`` says it in words.

    ``head_seq``/``head_hash`` are the newest event that verified (``start_seq - 1`` and the
    start's prevHash before any); ``anchored_seq`` the newest seq a valid checkpoint vouches for.
    """

    ok: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_bad_seq: int | None
    reason: str | None
    checkpoints_checked: int
    message: str = ""
    tenant_id: str | None = None
    start_seq: int = 1
    anchored_seq: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The body of ``GET /admin/audit/verify`` (DESIGN.md section 4)."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "headSeq": self.head_seq,
            "headHash": self.head_hash,
            "firstBadSeq": self.first_bad_seq,
            "reason": self.reason,
            "checkpoints": self.checkpoints_checked,
        }

    def raise_on_failure(self) -> None:
        """Raise :class:`AuditVerificationError` unless the log verified."""
        if not self.ok:
            raise AuditVerificationError(
                f"audit log does not verify: {self.reason} at seq {self.first_bad_seq}: {self.message}",
                first_bad_seq=self.first_bad_seq,
                reason=self.reason or "MALFORMED",
                hint=REASON_HINTS.get(self.reason or "MALFORMED", REASON_HINTS["MALFORMED"]),
            )


class _Failure(Exception):
    """Stops verification: the first problem found, in seq order."""

    def __init__(self, reason: str, seq: int | None, message: str) -> None:
        super().__init__(message)
        self.reason, self.seq, self.message = reason, seq, message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _trusted_keys(public_keys: Any) -> dict[str, Ed25519PublicKey]:
    if public_keys is None:
        return {}
    if isinstance(public_keys, (str, bytes)) or not isinstance(public_keys, Iterable):
        raise _Failure("MALFORMED", None, "public keys must be a mapping keyId -> key or a list of keys")
    pairs = public_keys.items() if isinstance(public_keys, Mapping) else ((None, k) for k in public_keys)
    keys: dict[str, Ed25519PublicKey] = {}
    for declared, value in pairs:
        try:
            key = _public(value)
        except RecordError:
            # Keys given as a list have no id: name the value ("public key None" named nothing).
            named = _short(value) if declared is None else f"{_short(declared)}"
            raise _Failure("MALFORMED", None, f"public key {named} is not Ed25519") from None
        kid = key_id_for(key)
        if declared is not None and declared != kid:
            raise _Failure("KEY_ID_MISMATCH", None, f"key filed as {_short(declared)} has key id {kid}")
        keys[kid] = key
    return keys


def _checkpoint_of(cp: Any, tenant: str | None) -> tuple[int, str, dict[str, Any]]:
    """Checks a checkpoint's shape; returns (seq, hash, checkpoint)."""
    if type(cp) is not dict:
        raise _Failure("MALFORMED", None, f"a checkpoint is not an object: {_short(cp)}")
    seq = cp.get("seq")
    if type(seq) is not int or seq < 1:
        raise _Failure("MALFORMED", None, f"checkpoint seq {_short(seq)} is not an integer >= 1")
    where = f"checkpoint at seq {seq}"
    for name in _CHECKPOINT_FIELDS:
        if name != "seq" and not isinstance(cp.get(name), str):
            raise _Failure("MALFORMED", seq, f"{where}: {name} is not a string")
    if not _HEX64.fullmatch(cp["hash"]):
        raise _Failure("MALFORMED", seq, f"{where}: hash is not 64 lowercase hex characters")
    if tenant is not None and cp["tenantId"] != tenant:
        raise _Failure("TENANT_MISMATCH", seq, f"{where} is of tenant {_short(cp['tenantId'])}")
    return seq, cp["hash"], cp


def _check_signature(cp: dict[str, Any], seq: int, keys: Mapping[str, Ed25519PublicKey]) -> None:
    where = f"checkpoint at seq {seq}"
    key = keys.get(cp["keyId"])
    if key is None:
        raise _Failure("UNKNOWN_KEY", seq, f"{where} names key {_short(cp['keyId'])}, which is not trusted")
    signature = _b64decode_strict(cp["signature"])
    if signature is None or len(signature) != 64:
        raise _Failure("BAD_SIGNATURE", seq, f"{where}: signature is not base64 of 64 bytes")
    try:
        message = _signed_bytes(cp)
    except RecordError as exc:
        raise _Failure("MALFORMED", seq, f"{where}: {exc.message}") from None
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise _Failure("BAD_SIGNATURE", seq, f"{where}: signature by {cp['keyId']} does not verify") from None


def _seq_failure(seq: Any, expected: int, start: int) -> _Failure:
    if type(seq) is not int:
        return _Failure("MALFORMED", expected, f"at seq {expected}: seq {_short(seq)} is not an integer")
    if start <= seq < expected:
        return _Failure("SEQ_DUPLICATE", seq, f"seq {seq} appears again where {expected} was expected")
    return _Failure("SEQ_GAP", expected, f"expected seq {expected}, found {seq}: events missing or moved")


def _hash_failure(seq: int, name: str, stored: Any, computed: str, reason: str) -> _Failure:
    if not isinstance(stored, str) or not _HEX64.fullmatch(stored):
        return _Failure("MALFORMED", seq, f"seq {seq}: {name} {_short(stored)} is not 64 lowercase hex")
    return _Failure(reason, seq, f"seq {seq}: {name} is {stored[:12]}..., recomputed {computed[:12]}...")


class _Verification:
    """The state of one :func:`verify` run, so that a failure can report how far it got."""

    def __init__(self, tenant: str | None, start_seq: int) -> None:
        self.tenant = tenant
        self.start_seq = start_seq
        self.head_seq = start_seq - 1
        self.head_hash: str | None = None
        self.checked = 0
        self.cps_checked = 0
        self.anchored: int | None = None  # newest seq a valid checkpoint (or genesis) vouches for

    def result(self, failure: _Failure | None) -> VerifyResult:
        tenant = self.tenant if isinstance(self.tenant, str) else None
        if failure is None:
            text = f"{self.checked} events and {self.cps_checked} checkpoints verify"
        else:
            text = failure.message
        return VerifyResult(
            ok=failure is None, checked=self.checked, head_seq=self.head_seq, head_hash=self.head_hash,
            first_bad_seq=failure.seq if failure else None, reason=failure.reason if failure else None,
            checkpoints_checked=self.cps_checked, message=text, tenant_id=tenant,
            start_seq=self.start_seq, anchored_seq=self.anchored,
        )  # fmt: skip

    def run(self, events: list[Any], checkpoints: list[Any], keys: Any, start_prev_hash: Any) -> None:
        start = self.start_seq
        trusted = _trusted_keys(keys)
        if self.tenant is None:
            first = events[0] if events else (checkpoints[0] if checkpoints else None)
            if type(first) is dict and isinstance(first.get("tenantId"), str):
                self.tenant = first["tenantId"]
        tenant = self.tenant
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise _Failure("MALFORMED", None, f"tenant id {_short(tenant)} is not a non-empty string")
        if tenant is None and events:
            raise _Failure("MALFORMED", start, f"the event at seq {start} has no tenantId string")
        # A checkpoint's shape is checked here, but a problem with one that has a seq is
        # reported only when the chain reaches that seq: an earlier bad event is named first
        # (DESIGN.md section 7: "it names the first bad seq"). The lowest such problem wins.
        checked: list[tuple[int, str, dict[str, Any]]] = []
        deferred: _Failure | None = None
        stop = 0
        for cp in checkpoints:
            try:
                checked.append(_checkpoint_of(cp, tenant))
            except _Failure as failure:
                if failure.seq is None:
                    raise
                if deferred is None or failure.seq < stop:
                    deferred, stop = failure, failure.seq
        if deferred is not None:
            # Nothing at or after the bad checkpoint's seq is checked: events up to it are.
            checked = [c for c in checked if c[0] < stop]
            events = events[: max(stop - start, 0)]
        cps = sorted(checked, key=lambda c: c[0])

        # Where the chain starts (see verify's docstring for ranges).
        prev: str | None = start_prev_hash
        if start == 1:
            prev = genesis_hash(tenant) if tenant is not None else None
            if start_prev_hash is not None and start_prev_hash != prev:
                raise _Failure("BROKEN_LINK", 1, "start_prev_hash is not the tenant's genesis hash")
            self.anchored = 0
        elif prev is not None:
            if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
                raise _Failure("MALFORMED", None, "start_prev_hash is not 64 lowercase hex characters")
            self.anchored = start - 1
        ci = 0
        while ci < len(cps) and cps[ci][0] < start:  # checkpoints before a range
            seq, cp_hash, cp = cps[ci]
            _check_signature(cp, seq, trusted)
            if seq == start - 1:
                if prev is None:
                    prev, self.anchored = cp_hash, seq
                elif cp_hash != prev:
                    text = f"checkpoint at seq {seq} does not match the range's start"
                    raise _Failure("CHECKPOINT_MISMATCH", start, text)
            self.cps_checked += 1
            ci += 1
        self.head_hash = prev
        next_cp = cps[ci][0] if ci < len(cps) else -1

        # The hot loop: flat, with local names, for P5 (DESIGN.md section 11: >= 100k events/s).
        sha256, tag, expected = hashlib.sha256, _AUDIT_TAG, start
        for ev in events:
            if type(ev) is not dict:
                raise _Failure("MALFORMED", expected, f"at seq {expected}: {_short(ev)} is not an object")
            seq = ev.get("seq")
            if seq != expected or type(seq) is not int:
                raise _seq_failure(seq, expected, start)
            if ev.get("tenantId") != tenant:
                raise _Failure("TENANT_MISMATCH", seq, f"seq {seq} is of tenant {_short(ev.get('tenantId'))}")
            p = ev.get("prevHash")
            if p != prev:
                if prev is None and isinstance(p, str) and _HEX64.fullmatch(p):
                    prev = p  # an unanchored range: a later checkpoint vouches for it
                else:
                    raise _hash_failure(seq, "prevHash", p, prev or "", "BROKEN_LINK")
            body = ev.copy()
            del body["prevHash"]
            body.pop("hash", None)
            jcs = _canonical_fast(body, exact=False)
            if jcs is None:
                try:
                    jcs = canonical_json(body)
                except RecordError as exc:
                    raise _Failure("MALFORMED", seq, f"seq {seq}: {exc.message}") from None
            h = sha256(tag + prev.encode("ascii") + jcs).hexdigest()
            stored = ev.get("hash")
            if stored != h:
                raise _hash_failure(seq, "hash", stored, h, "HASH_MISMATCH")
            while seq == next_cp:
                _, cp_hash, cp = cps[ci]
                _check_signature(cp, seq, trusted)
                if cp_hash != h:
                    # The previous checkpoint still matched, so the rewrite starts after it.
                    bad = (self.anchored if self.anchored is not None else start - 1) + 1
                    text = f"checkpoint at seq {seq} signs {cp_hash[:12]}..., the chain has {h[:12]}..."
                    raise _Failure("CHECKPOINT_MISMATCH", bad, f"{text}: seqs {bad}..{seq} were rewritten")
                self.anchored = seq
                self.cps_checked += 1
                ci += 1
                next_cp = cps[ci][0] if ci < len(cps) else -1
            prev = h
            self.head_seq, self.head_hash = seq, h
            self.checked += 1
            expected += 1

        if deferred is not None:
            raise deferred
        # Checkpoints beyond the head: genuine ones prove that the tail was cut.
        for seq, _, cp in cps[ci:]:
            _check_signature(cp, seq, trusted)
        if ci < len(cps):
            head, last = self.head_seq, cps[-1][0]
            text = f"the chain ends at seq {head}, but a checkpoint of {cps[-1][2]['at']} covers {last}"
            raise _Failure("TRUNCATED", head + 1, f"{text}: seqs {head + 1}..{last} are missing")


def verify(
    events: Iterable[Any],
    checkpoints: Iterable[Any] = (),
    public_keys: PublicKeys = None,
    *,
    tenant_id: str | None = None,
    start_seq: int = 1,
    start_prev_hash: str | None = None,
) -> VerifyResult:
    """Verify one tenant's chain and its checkpoints; never raises on bad data.

    Checks that seqs run contiguously from ``start_seq``, that every ``prevHash`` is the hash
    before it (genesis for seq 1), that every hash recomputes, that every event and checkpoint is
    of the one tenant (``tenant_id``, else the first event's), that every checkpoint is signed by
    a key of ``public_keys`` (mapping keyId -> key, or a list of keys; keys are Ed25519 objects or
    base64 DER) and matches the chain at its seq, and that the chain reaches the newest
    checkpoint. Stops at the first problem in seq order and names it (:data:`REASONS`); a
    ``CHECKPOINT_MISMATCH`` names the first seq after the last checkpoint that still matched.

    A range (``start_seq`` > 1, e.g. an export ``?from=``) starts from ``start_prev_hash`` if
    given, else from a checkpoint at ``start_seq - 1``, else from the first event's own
    ``prevHash``, which a later checkpoint in the range then vouches for (its hash covers all of
    history). Mixed tenants are not merged: verify each tenant's events separately.
    """
    run = _Verification(tenant_id, start_seq if type(start_seq) is int and start_seq >= 1 else 1)
    try:
        if run.start_seq != start_seq:
            raise _Failure("MALFORMED", None, f"start_seq {_short(start_seq)} is not an integer >= 1")
        for name, value in (("events", events), ("checkpoints", checkpoints)):
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                raise _Failure("MALFORMED", None, f"{name} must be a list of objects")
        run.run(list(events), list(checkpoints), public_keys, start_prev_hash)
    except _Failure as failure:
        return run.result(failure)
    except Exception as exc:  # noqa: BLE001 - the verifier is attack surface (security.md 1.2
        # lesson 6, the immudb CVE): whatever hostile input trips, the answer is "does not verify".
        text = f"input could not be read: {type(exc).__name__}: {exc}"
        return run.result(_Failure("MALFORMED", run.head_seq + 1, text))
    return run.result(None)


# --------------------------------------------------------------------------- bundles


def make_bundle(
    events: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Mapping[str, Any]],
    public_keys: PublicKeys,
    *,
    tenant_id: str | None = None,
    start_seq: int | None = None,
) -> dict[str, Any]:
    """An offline bundle ``{format, tenantId, startSeq, events, checkpoints, publicKeys}``.

    ``publicKeys`` maps each key id to its base64 DER; ``startSeq`` is the first event's seq (1
    for a whole log), so that a bundle missing its first events does not pass for a range.
    Export with a checkpoint at the last event, or a cut tail cannot be detected.
    """
    events = [dict(e) for e in events]
    checkpoints = [dict(c) for c in checkpoints]
    keys = public_keys.values() if isinstance(public_keys, Mapping) else (public_keys or ())
    if tenant_id is None:
        first = events[0] if events else (checkpoints[0] if checkpoints else {})
        tenant_id = first.get("tenantId")
    if start_seq is None:
        start_seq = events[0].get("seq", 1) if events else 1
    return {
        "format": BUNDLE_FORMAT,
        "tenantId": tenant_id,
        "startSeq": start_seq,
        "events": events,
        "checkpoints": checkpoints,
        "publicKeys": {key_id_for(k): public_key_b64(k) for k in keys},
    }


def verify_bundle(
    bundle: Any, public_keys: PublicKeys = None, *, allow_unsigned_tail: bool = False
) -> VerifyResult:
    """Verify a bundle of :func:`make_bundle` offline; never raises on bad data.

    With ``public_keys`` (the keys you trust, e.g. the server's published key) the bundle's own
    ``publicKeys`` are ignored, and a bundle none of whose events a checkpoint signed by one of
    them covers fails (``UNANCHORED``): anyone can chain events, only the key holder can vouch
    for them. Without, the bundle's keys are used as they stand, which proves the bundle
    consistent but not who signed it.

    A bundle ends on a signed checkpoint (the server's export signs one at its last event), so
    events after the newest valid checkpoint fail as ``UNSIGNED_TAIL``, with ``first_bad_seq``
    the first of them: whoever drops that checkpoint can rewrite them and re-chain them at will
    (security.md AUD-10). ``anchored_seq`` still says how far the bundle is vouched for.
    ``allow_unsigned_tail=True`` accepts such a tail (the result is then ok with
    ``anchored_seq < head_seq``), for a caller that checks ``anchored_seq`` itself.
    """

    def malformed(message: str) -> VerifyResult:
        return VerifyResult(
            ok=False, checked=0, head_seq=None, head_hash=None, first_bad_seq=None,
            reason="MALFORMED", checkpoints_checked=0, message=message,
        )  # fmt: skip

    if type(bundle) is not dict:
        return malformed("a bundle is a JSON object")
    if bundle.get("format") != BUNDLE_FORMAT:
        return malformed(f"bundle format is {_short(bundle.get('format'))}, expected {BUNDLE_FORMAT!r}")
    extra = set(bundle) - _BUNDLE_FIELDS
    if extra:
        return malformed(f"bundle has unknown members {sorted(map(str, extra))}")
    for name, kind in (("events", list), ("checkpoints", list), ("publicKeys", dict)):
        if type(bundle.get(name)) is not kind:
            return malformed(f"bundle {name} must be a JSON {'array' if kind is list else 'object'}")
    start = bundle.get("startSeq", 1)
    tenant = bundle.get("tenantId")
    if type(start) is not int or start < 1:
        return malformed(f"bundle startSeq must be an integer >= 1, not {_short(start)}")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        return malformed(f"bundle tenantId must be a non-empty string, not {_short(tenant)}")
    keys = bundle["publicKeys"] if public_keys is None else public_keys
    result = verify(bundle["events"], bundle["checkpoints"], keys, tenant_id=tenant, start_seq=start)
    if public_keys is not None and result.ok and (result.anchored_seq or 0) < start:
        return replace(
            result,
            ok=False,
            reason="UNANCHORED",
            first_bad_seq=start,
            message=f"no checkpoint signed by a trusted key covers seq {start} or later: the "
            f"{result.checked} events chain, but nothing vouches for them (a bundle of a range after "
            "the newest checkpoint verifies once the next checkpoint is signed)",
        )
    head, anchored = result.head_seq, result.anchored_seq
    if (
        result.ok
        and not allow_unsigned_tail
        and head is not None
        and head >= start
        and (anchored or 0) < head
    ):
        first = max(anchored or 0, start - 1) + 1
        return replace(
            result,
            ok=False,
            reason="UNSIGNED_TAIL",
            first_bad_seq=first,
            message=f"seqs {first}..{head} come after the newest signed checkpoint"
            + (f" (seq {anchored})" if anchored else "")
            + ": they chain, but no signature vouches for them, so they may have been rewritten; "
            "an export ends on a checkpoint at its last event",
        )
    return result


# --------------------------------------------------------------------------- the one I/O helper


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one name let two readers see two documents (RFC 8259 section 4 leaves the
    # choice open); evidence must have one reading, so such a bundle is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(names) if k in names[:i])
        raise ValueError(f"duplicate member name {dup!r}")
    return obj


class NonFiniteNumber(ValueError):
    """JSON text with NaN, Infinity or a number beyond the doubles (:func:`loads_strict`)."""


def _no_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # json.loads reads 1e999 as infinity, which the canonical form cannot hold: orjson would
    # write it as null, so null -> 1e999 in a signed event would verify (a review found it).
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"number {text[:40]} is beyond the range of JSON's doubles")
    return value


def loads_strict(text: str | bytes, *, unique_names: bool = False) -> Any:
    """JSON text as a verifier must read it: no NaN or Infinity tokens, no number that
    overflows to infinity (RFC 8259 section 6; I-JSON, RFC 7493 section 2.2), and with
    ``unique_names`` no member name twice in an object (two readers could see two documents).
    ValueError otherwise. The events :func:`verify` hashes must come from such a reader: a
    non-finite float has no canonical form, and the fast path cannot see one (orjson writes it
    as null)."""
    return json.loads(
        text,
        object_pairs_hook=_object_without_duplicates if unique_names else None,
        parse_constant=_no_constant,
        parse_float=_finite_float,
    )


def load_bundle(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a bundle file (UTF-8 JSON) for :func:`verify_bundle`.

    Raises :class:`RecordError` (code ``BAD_BUNDLE``) for text that is not strict JSON: invalid
    UTF-8, duplicate member names, NaN or Infinity, a number beyond the doubles (``1e999``).
    File errors propagate as ``OSError``.
    """
    with open(Path(path).expanduser(), "rb") as f:  # "~/bundle.json": where save() wrote it
        raw = f.read()
    try:
        data = loads_strict(raw.decode("utf-8"), unique_names=True)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordError(
            f"{path}: not a readable audit bundle: {exc}",
            code="BAD_BUNDLE",
            hint="a bundle is the JSON body of GET /admin/audit/export, unchanged",
        ) from exc
    if type(data) is not dict:
        raise RecordError(f"{path}: an audit bundle is a JSON object", code="BAD_BUNDLE")
    return data
