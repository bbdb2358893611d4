"""Start payloads of replays (DESIGN.md sections 3 and 4): pure, no I/O.

* :func:`parse_modified_payload` reads the ``modifiedPayload`` of ``POST /replays`` strictly:
  no Camel control headers (checked first, :func:`refuse_control_headers`), shape, header names
  and values without CR/LF/NUL.
* :func:`effective_payload` applies it (a present part replaces the original's part whole,
  :meth:`moat_nb.model.ModifiedPayload.apply`).
* :func:`payload_diff` is the RFC 6902 JSON Patch from the original to the effective payload
  (``jsonpatch``), :func:`apply_patch` applies one.
* :func:`is_secret_name`, :func:`fingerprint`, :func:`redact_mapping`, :func:`redact_payload`,
  :func:`redact_patch`: secrets are replaced by ``[REDACTED:<first 16 hex of
  HMAC-SHA256(key, value)>]`` (section 4), so that an auditor still sees *that* a secret changed
  without a dictionary attack on low-entropy values (reference/security.md section 6). The
  redacting functions take a *mask* (value -> marker): :func:`masker` builds one from a key,
  and the server hands in its ``security.Redactor.value``; this module never reads a key.
* :func:`payload_sha256`: SHA-256 over the RFC 8785 (JCS) canonical JSON of a payload;
  :func:`effective_payload_sha256` over a replay's effective payload with its secrets as their
  fingerprints (the ``effectivePayloadSha256`` a replay publishes).

The wire form of a payload is ``{"headers": {...}, "body": "..." | null, "properties": {...}}``;
JSON Pointers in patches are over that object (``/headers/X-Trace``, ``/body``, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jsonpatch
import jsonpointer
import orjson
import rfc8785

from .audit import _canonical_fast, loads_strict
from .errors import ControlHeaderRejected, ValidationError
from .model import ModifiedPayload, Payload

__all__ = [
    "CONTROL_HEADER_PREFIXES",
    "SECRET_HEADER_NAMES",
    "SECRET_NAME_PARTS",
    "REDACTED_PATTERN",
    "is_control_header",
    "control_headers",
    "refuse_control_headers",
    "check_header_field",
    "parse_modified_payload",
    "effective_payload",
    "payload_diff",
    "apply_patch",
    "is_secret_name",
    "Mask",
    "fingerprint",
    "masker",
    "is_redacted",
    "redact_value",
    "redact_mapping",
    "redact_body",
    "redact_payload",
    "redact_patch",
    "secret_names",
    "redact_uri",
    "scrub_uri",
    "scrub_body",
    "canonical_json",
    "payload_sha256",
    "effective_payload_sha256",
    "EFFECTIVE_HASH_VERSION",
    "text_sha256",
    "map_sha256",
    "trace_digest",
    "trace_sha256",
]

# --------------------------------------------------------------------------- control headers

#: Camel treats headers with these (lower-cased) prefixes as instructions to its components
#: (``CamelHttpUri`` rewrites the HTTP producer's target, ``CamelBeanMethodName`` picks another
#: bean method, ...). CVE-2025-27636: Camel's own filter compared case-sensitively, so
#: ``cAmelHttpUri`` passed; we compare the lower-cased name, which covers every permutation.
#: ``org.apache.camel`` needs no entry of its own for the check (it does not start with
#: ``camel``) but is listed because Camel's DefaultHeaderFilterStrategy names both.
CONTROL_HEADER_PREFIXES: tuple[str, ...] = ("camel", "org.apache.camel")


def is_control_header(name: str) -> bool:
    """True when ``name`` is a Camel control header: lower-cased, it starts with ``camel`` or
    ``org.apache.camel`` (DESIGN.md section 4; CVE-2025-27636)."""
    # str.lower() folds every case permutation of the ASCII prefix; casefold() would also map
    # e.g. the Kelvin sign to "k", which no Camel filter does, so lower() is the faithful check.
    return name.lower().startswith(CONTROL_HEADER_PREFIXES)


def control_headers(headers: Mapping[str, Any] | None) -> list[str]:
    """The names in ``headers`` that are Camel control headers, in their order."""
    return [name for name in (headers or {}) if is_control_header(name)]


#: How many refused names, and how much of each, a ``CONTROL_HEADER`` refusal quotes (its
#: message and the audit event): a 1 MiB request could otherwise write a 1 MiB audit record.
_QUOTED_NAMES = 50
_QUOTED_NAME_CHARS = 200


def refuse_control_headers(headers: Any) -> None:
    """Raise :class:`ControlHeaderRejected` (``CONTROL_HEADER``, ``details.headers`` naming the
    refused headers) when ``headers`` is a mapping with a Camel control header name.

    Only the names count, so this runs before any other check of the request: section 4 says
    such an attempt is refused *and audited*, and an audit that a stray CR/LF, an empty
    ``reason`` or an unknown field could skip would let a prober leave no trace (security
    review finding 3)."""
    if not isinstance(headers, Mapping):
        return
    refused = [name for name in headers if isinstance(name, str) and is_control_header(name)]
    if refused:
        quoted = [name[:_QUOTED_NAME_CHARS] for name in refused[:_QUOTED_NAMES]]
        more = f" and {len(refused) - len(quoted)} more" if len(refused) > len(quoted) else ""
        raise ControlHeaderRejected(
            f"modifiedPayload sets Camel control header(s) {quoted}{more}: headers whose name "
            "starts with 'camel' or 'org.apache.camel' (any case) steer Camel components "
            "and cannot be set by a replay",
            hint="remove these headers from modifiedPayload.headers",
            details={"headers": quoted, "count": len(refused)},
        )


# --------------------------------------------------------------------------- reading modifiedPayload

_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")
#: RFC 9110 section 5.6.2: a field name is a token, 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARTS = ("headers", "body", "properties")


def check_header_field(name: Any, value: Any) -> None:
    """Raise ``ValidationError`` (``BAD_HEADER``) unless ``name`` is an RFC 9110 field name (a
    token: no space, colon, quote or non-ASCII letter) and no string in ``name`` or ``value``
    holds CR, LF or NUL (header injection, section 4). Why the token rule for a Camel header:
    a header that leaves the route as an HTTP header must be one, and a name such as
    ``" CamelHttpUri"`` (a leading space) is not the control header to Camel but may become it
    where a component trims it."""
    if not isinstance(name, str) or name == "":
        raise ValidationError(
            f"header name {name!r} must be a non-empty string",
            code="BAD_HEADER",
            details={"header": repr(name)[:200]},
        )
    if _BAD_HEADER_CHARS.search(name):
        raise ValidationError(
            f"header name {name!r:.80} contains CR, LF or NUL",
            code="BAD_HEADER",
            hint="remove line breaks and NUL characters from header names",
            details={"header": repr(name)[:200]},
        )
    if not _TOKEN.fullmatch(name):
        raise ValidationError(
            f"header name {name!r:.80} is not a valid field name: it may hold letters, digits and"
            " !#$%&'*+-.^_`|~ only (RFC 9110: no spaces, colons, quotes or accented letters)",
            code="BAD_HEADER",
            hint="rename the header, or leave it out of the modified payload",
            details={"header": repr(name)[:200]},
        )
    for text in _strings_in(value):
        if _BAD_HEADER_CHARS.search(text):
            raise ValidationError(
                f"the value of header {name!r:.80} contains CR, LF or NUL",
                code="BAD_HEADER",
                hint="remove line breaks and NUL characters from header values",
                details={"header": name[:200]},
            )


def _strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings_in(k)
            yield from _strings_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings_in(v)


def parse_modified_payload(data: Any) -> ModifiedPayload:
    """Read the ``modifiedPayload`` of a replay request strictly.

    ``None`` (absent) gives an empty modification. Otherwise an object with at most the keys
    ``headers`` (object), ``body`` (string or null) and ``properties`` (object); a ``null`` part
    counts as absent (the original part is kept). Raises :class:`ValidationError`
    (``VALIDATION`` for the shape, ``BAD_HEADER`` for CR/LF/NUL) and
    :class:`ControlHeaderRejected` (``CONTROL_HEADER``, with ``details.headers`` naming every
    refused header) — the caller audits the latter.
    """
    if data is None:
        return ModifiedPayload()
    if not isinstance(data, Mapping):
        raise ValidationError(
            f"modifiedPayload must be an object, not {type(data).__name__}",
            hint='send {"headers": {...}, "body": "...", "properties": {...}}, each key optional',
            details={"field": "modifiedPayload"},
        )
    refuse_control_headers(data.get("headers"))  # first: refused and audited whatever the rest
    unknown = sorted(set(data) - set(_PARTS))
    if unknown:
        raise ValidationError(
            f"modifiedPayload has unknown keys {unknown}",
            hint="modifiedPayload takes only headers, body and properties",
            details={"field": "modifiedPayload", "unknown": unknown},
        )
    headers, body, properties = data.get("headers"), data.get("body"), data.get("properties")
    for part, value in (("headers", headers), ("properties", properties)):
        if value is not None and not isinstance(value, Mapping):
            raise ValidationError(
                f"modifiedPayload.{part} must be an object, not {type(value).__name__}",
                details={"field": f"modifiedPayload.{part}"},
            )
    if body is not None and not isinstance(body, str):
        raise ValidationError(
            f"modifiedPayload.body must be a string (bodies travel as strings), not {type(body).__name__}",
            hint="send a JSON body as a string, e.g. json.dumps(order)",
            details={"field": "modifiedPayload.body"},
        )
    if headers is not None:
        for name, value in headers.items():
            check_header_field(name, value)
    return ModifiedPayload(
        headers=None if headers is None else dict(headers),
        body=body,
        properties=None if properties is None else dict(properties),
    )


# --------------------------------------------------------------------------- effective payload, patches


def effective_payload(original: Payload, modified: ModifiedPayload | None) -> Payload:
    """What a replay runs: ``modified`` applied to ``original`` (section 3)."""
    return original if modified is None else modified.apply(original)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical bytes of a JSON value, as ``rfc8785.dumps`` gives them (and
    raising what it raises for what JCS cannot represent).

    Through orjson where that provably gives the same bytes (:func:`moat_nb.audit`'s fast path,
    checked against rfc8785 with Hypothesis in tests/test_audit.py): rfc8785 is pure Python, and
    a replay request took ~1 ms of it (the payload's digest, the patch's check)."""
    fast = _canonical_fast(value)
    return fast if fast is not None else rfc8785.dumps(value)


def _same(a: Any, b: Any) -> bool:
    # Python's == says True == 1 == 1.0; JSON and JCS do not (1 and true differ on the wire).
    return canonical_json(a) == canonical_json(b)


def payload_diff(original: Payload, effective: Payload) -> list[dict[str, Any]]:
    """The RFC 6902 JSON Patch that turns ``original`` into ``effective`` (wire forms).

    ``jsonpatch.make_patch`` gives the fine-grained patch (one op per changed header or
    property). Its ``==`` comparison cannot tell ``1`` from ``true``, and list moves have had
    bugs in the past, so the patch is checked by applying it; a part it does not reproduce
    exactly (JCS bytes) is replaced whole instead — still a correct, if coarser, RFC 6902 patch.
    """
    src, dst = original.to_wire(), effective.to_wire()
    if _same(src, dst):
        return []  # a replay as recorded: nothing to diff, apply and check
    patch = jsonpatch.make_patch(src, dst).patch
    try:
        if _same(jsonpatch.apply_patch(src, patch), dst):
            return patch
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        pass
    return [
        {"op": "replace", "path": f"/{part}", "value": dst[part]}
        for part in _PARTS
        if not _same(src[part], dst[part])
    ]


def apply_patch(payload: Payload, patch: Sequence[Mapping[str, Any]]) -> Payload:
    """Apply an RFC 6902 patch to a payload's wire form; ``ValidationError`` if it does not apply."""
    try:
        out = jsonpatch.apply_patch(payload.to_wire(), [dict(op) for op in patch])
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise ValidationError(f"the JSON Patch does not apply to the payload: {exc}") from None
    if not isinstance(out, dict) or set(out) != set(_PARTS):
        raise ValidationError("the JSON Patch must keep the payload's headers, body and properties")
    for part in ("headers", "properties"):
        if not isinstance(out[part], dict):
            raise ValidationError(
                f"the JSON Patch makes the payload's {part} a {type(out[part]).__name__}, not an object",
                hint=f"patch members of /{part} (/{part}/name), or replace it with an object",
            )
    if out["body"] is not None and not isinstance(out["body"], str):
        raise ValidationError(
            f"the JSON Patch makes the body a {type(out['body']).__name__}: bodies are text (section 3)",
            hint="replace /body with a string (a JSON body as its JSON text)",
        )
    return Payload.from_wire(out)


def payload_sha256(payload: Payload) -> str:
    """Hex SHA-256 of the JCS canonical JSON of the payload's wire form."""
    return hashlib.sha256(canonical_json(payload.to_wire())).hexdigest()


#: The version of :func:`effective_payload_sha256` the platform writes beside its hash in the
#: ``REPLAY_REQUESTED`` audit event (``effectivePayloadHashVersion``): 1 (no version written)
#: hashed the real secret values; 2 hashes their fingerprints.
EFFECTIVE_HASH_VERSION = 2


def effective_payload_sha256(payload: Payload, mask: Mask) -> str:
    """Hex SHA-256 of the JCS canonical JSON of a replay's effective payload with every secret
    replaced by ``mask`` (the server's keyed fingerprint, :func:`redact_payload`): the
    ``effectivePayloadSha256`` of the Replay and its ``REPLAY_REQUESTED`` event.

    Why not over the real values: the hash is published beside the redacted payload diff, and
    the original payload is readable by every ``executions:read`` user, so the only unknowns of
    the hashed document would be the secrets, and a short one (a PIN, a word) falls to a
    dictionary search (security review finding 2; reference/security.md section 6). Through
    the keyed fingerprint the hash still changes when a secret changes, but reveals nothing
    without the server key. A stored payload holds fingerprints already (they are left as they
    are), so a replay as recorded hashes as its source's stored payload does."""
    return payload_sha256(redact_payload(payload, mask))


#: What a secret value is replaced by in :func:`request_sha256` (a constant: the hash must be
#: recomputable offline, without the server's fingerprint key).
HIDDEN = "[REDACTED]"


#: :func:`_hidden` writes JSON text as ``{"json": <its value>}``. An object of the payload that
#: could read as such a text (its only member is ``json``), or as one of these wrappers (a
#: member name starting with NUL), is wrapped as ``{"\u0000": <its members>}``: so an object
#: never hashes like a text, and two payloads hash alike only when they differ in secrets.
_ESCAPE = "\0"

#: The version of :func:`request_sha256` the platform writes beside its hash
#: (``modifiedPayloadHashVersion``), so that a record made before a change still verifies:
#: 1 (no version written) read ``{"json": X}`` objects and JSON text alike, and JSON text with a
#: member twice as one of its readings; 2 tells them apart.
REQUEST_HASH_VERSION = 2


def _hidden_v1(value: Any, depth: int = 0) -> Any:
    """Version 1 of :func:`_hidden`, for records made before version 2 (kept as it was)."""
    if isinstance(value, Mapping):
        return {
            k: HIDDEN if isinstance(k, str) and is_secret_name(k) else _hidden_v1(v, depth)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_hidden_v1(v, depth) for v in value]
    if isinstance(value, str) and depth < _MAX_JSON_IN_TEXT and value.lstrip().startswith(("{", "[")):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return value
        return {"json": _hidden_v1(parsed, depth + 1)}
    return value


def _hidden(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Mapping):
        out = {
            k: HIDDEN if isinstance(k, str) and is_secret_name(k) else _hidden(v, depth)
            for k, v in value.items()
        }
        if list(out) == ["json"] or any(isinstance(k, str) and k.startswith(_ESCAPE) for k in out):
            return {_ESCAPE: out}
        return out
    if isinstance(value, list | tuple):
        return [_hidden(v, depth) for v in value]
    if isinstance(value, str) and depth < _MAX_JSON_IN_TEXT and value.lstrip().startswith(("{", "[")):
        try:
            # Strict: text with a member name twice (which a reader may take either way) or
            # NaN is hashed as the text it is, not as one of its readings.
            parsed = loads_strict(value, unique_names=True)
        except (ValueError, RecursionError):
            return value
        return {"json": _hidden(parsed, depth + 1)}  # JSON text as its value: spacing does not count
    if _long_int(value):
        # JCS holds no integer beyond I-JSON's range (RFC 7493 2.2), so a payload with a Java
        # long id had no hash and a genuine proof of it could not verify (found by review).
        # Written as its digits in a wrapper no object of the payload can spell (an object with
        # a NUL-led member is wrapped whole above); every other payload hashes as before.
        return {_ESCAPE + "int": str(value)}
    return value


_SAFE_INT = 2**53 - 1


def _long_int(value: Any) -> bool:
    """An integer beyond I-JSON's range (RFC 7493 2.2), which JCS cannot write."""
    return isinstance(value, int) and not isinstance(value, bool) and not -_SAFE_INT <= value <= _SAFE_INT


def request_sha256(modified: Mapping[str, Any] | None, version: int = REQUEST_HASH_VERSION) -> str | None:
    """Hex SHA-256 of the JCS canonical JSON of a ``modifiedPayload`` as requested, with every
    secret hidden (secret-named headers, properties and JSON fields, at any depth and inside
    JSON text, become :data:`HIDDEN`), or None when JCS cannot hold it.

    The ``REPLAY_REQUESTED`` audit event carries it, so that an offline check can tell whether
    a report's claimed payload P is the one requested: a forger cannot add, drop or change a
    non-secret part of it. (The effective payload's own hash covers the real values, but needs
    the original payload to recompute.) ``version``: :data:`REQUEST_HASH_VERSION`'s history;
    None for a version this code does not know."""
    parts = {
        k: v for k, v in (modified or {}).items() if k in ("headers", "body", "properties") and v is not None
    }
    hide = {1: _hidden_v1, 2: _hidden}.get(version)
    return None if hide is None else _jcs_sha256(hide(parts))


def map_sha256(values: Mapping[str, Any] | None) -> str | None:
    """Hex SHA-256 of the JCS canonical JSON of a header or property map (secrets as their
    fingerprints, as stored), or None for no map or one that is not JSON data. The terminal
    audit event of a replay carries it for the output's maps, so that an offline check can
    vouch for what a report says they held, as ``outputBodySha256`` does for the body.

    A map holding an integer JCS cannot write (a Java long id beyond 2**53) is hashed as
    ``longInts:`` followed by the JCS of its :func:`_jcs_form`: before, it had no hash, and two
    such maps compared equal by their missing hashes whatever they held (found by review). The
    prefix keeps those preimages apart from every JCS text (which starts with ``{``), and
    :func:`_jcs_form` is one-to-one, so no two maps share a hash; maps JCS can hold hash as
    before, so audit records written earlier still verify."""
    if values is None:
        return None
    plain = _jcs_sha256(dict(values))
    if plain is not None:
        return plain
    try:
        return hashlib.sha256(b"longInts:" + canonical_json(_jcs_form(dict(values)))).hexdigest()
    except (rfc8785.CanonicalizationError, ValueError, TypeError, RecursionError):
        return None


def text_sha256(text: str | None) -> str | None:
    """Hex SHA-256 of a body's UTF-8 bytes, as the platform hashes bodies (section 4
    ``outputBodySha256``), or None for no body."""
    return None if text is None else hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def trace_digest(processors: Iterable[Any]) -> dict[str, Any]:
    """What a replay's trace put out, in a form small enough to audit by hash:
    ``{"entries": [...], "maps": [...]}``. One entry per processor record, in ``seq`` order:
    ``seq``, ``processorId``, ``iteration``, ``status``, ``errorType``, ``errorMessage``,
    ``outputBodySha256`` (:func:`text_sha256`), and ``outputHeaders`` / ``properties`` as the
    index of that map in ``maps`` (or null): each distinct map once, in order of first use
    (headers before properties within an entry). Values as stored: secrets as their fingerprints.

    Why: the terminal audit event of a replay carries :func:`trace_sha256` of it
    (``traceSha256``), so that an offline check can vouch for what a report says a *processor*
    put out, as ``outputBodySha256`` does for the result. Bodies by hash (they can be large),
    maps by value, shared: a trace repeats a few maps across its processors, and one canonical
    encoding of them all costs ~0.1 ms where a hash per map cost ~0.5 ms a replay (P2)."""
    maps: list[Any] = []
    index: dict[Any, int] = {}
    by_id: dict[int, int] = {}  # the engine and the server share equal maps: one object each
    bodies: dict[str, str | None] = {}

    def at(values: Mapping[str, Any] | None) -> int | None:
        if values is None:
            return None
        known = by_id.get(id(values))
        if known is None:
            try:
                key: Any = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
            except (TypeError, orjson.JSONEncodeError):  # an integer beyond 64 bits, say
                key = json.dumps(values, sort_keys=True)
            known = index.get(key)
            if known is None:
                known = index[key] = len(maps)
                maps.append(dict(values))
            by_id[id(values)] = known
        return known

    def body(text: str | None) -> str | None:
        if text is None:
            return None
        if text not in bodies:
            bodies[text] = text_sha256(text)
        return bodies[text]

    entries = [
        {
            "seq": p.seq,
            "processorId": p.processor_id,
            "iteration": p.iteration,
            "status": p.status,
            "errorType": p.error_type,
            "errorMessage": p.error_message,
            "outputBodySha256": body(p.output_body),
            "outputHeaders": at(p.output_headers),
            "properties": at(p.properties),
        }
        for p in sorted(processors, key=lambda p: p.seq)
    ]
    return {"entries": entries, "maps": maps}


def trace_sha256(digest: Mapping[str, Any]) -> str | None:
    """Hex SHA-256 of the JCS canonical JSON of a :func:`trace_digest`: the ``traceSha256`` of a
    replay's terminal audit event; None when JCS cannot hold it."""
    if set(digest) != {"entries", "maps"}:
        return _jcs_sha256(dict(digest))
    # JCS of {"entries": E, "maps": M} is these bytes (RFC 8785 3.2.3: members sorted, and
    # "entries" < "maps"); encoded apart, the float check of the fast path walks only the maps
    # (the entries hold none): 0.25 instead of 0.39 ms a replay.
    try:
        entries = canonical_json(digest["entries"])
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return None
    try:
        maps = canonical_json(digest["maps"])
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        # A map JCS cannot hold: an integer beyond I-JSON's range (a Java long id in a header or
        # property). Then the maps are written with such integers as their digits
        # (:func:`_jcs_form`) under a member that says so, which no trace without one has: a
        # genuine trace of a long id still has a hash, and no other trace shares it.
        try:
            maps = canonical_json(_jcs_form(digest["maps"]))
        except (rfc8785.CanonicalizationError, ValueError, TypeError, RecursionError):
            return None
        return hashlib.sha256(
            b'{"entries":' + entries + b',"longInts":true,"maps":' + maps + b"}"
        ).hexdigest()
    return hashlib.sha256(b'{"entries":' + entries + b',"maps":' + maps + b"}").hexdigest()


def _jcs_form(value: Any) -> Any:
    """``value`` with every integer beyond I-JSON's range as ``{"\0int": digits}``, and every
    object with a NUL-led member name wrapped as ``{"\0": object}`` (so that no object of the
    value spells such an integer): a one-to-one form that JCS can hold."""
    if isinstance(value, Mapping):
        out = {k: _jcs_form(v) for k, v in value.items()}
        return {_ESCAPE: out} if any(isinstance(k, str) and k.startswith(_ESCAPE) for k in out) else out
    if isinstance(value, list | tuple):
        return [_jcs_form(v) for v in value]
    if _long_int(value):
        return {_ESCAPE + "int": str(value)}
    return value


def _jcs_sha256(value: Any) -> str | None:
    """Hex SHA-256 of the JCS canonical JSON of ``value``, or None when JCS cannot hold it."""
    try:
        return hashlib.sha256(canonical_json(value)).hexdigest()
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- redaction

#: Header names redacted wherever they appear (section 4), compared after :func:`_normalise`.
SECRET_HEADER_NAMES: frozenset[str] = frozenset(
    {"authorization", "cookie", "setcookie", "proxyauthorization", "xapikey"}
)
#: A name containing one of these (after :func:`_normalise`) is secret too; the list follows
#: section 4 and Camel's masking keys (password, passphrase, secretKey, accessKey, token, ...).
SECRET_NAME_PARTS: tuple[str, ...] = ("password", "secret", "token", "apikey", "passphrase", "accesskey")
#: What a redacted value looks like; redaction leaves a value already in this form alone, so that
#: redacting twice (agent trace, then store, then stream) changes nothing.
# \Z, not $: a marker plus a newline is a value, not a marker (it would not be redacted).
REDACTED_PATTERN = re.compile(r"^\[REDACTED:[0-9a-f]{16}\]\Z")

_SEPARATORS = re.compile(r"[-_.\s]")


def _normalise(name: str) -> str:
    # "X-API-Key", "x_api_key" and "xApiKey" are one name; "access_key" is "accesskey".
    return _SEPARATORS.sub("", name.lower())


def is_secret_name(name: str) -> bool:
    """True for a header, property or JSON field name whose value must not be stored or shown."""
    norm = _normalise(name)
    return norm in SECRET_HEADER_NAMES or any(part in norm for part in SECRET_NAME_PARTS)


def is_redacted(value: Any) -> bool:
    """True for a value that is already a redaction marker."""
    return isinstance(value, str) and REDACTED_PATTERN.match(value) is not None


def fingerprint(key: bytes, value: Any) -> str:
    """``[REDACTED:<first 16 hex of HMAC-SHA256(key, value)>]``.

    A string is hashed as its UTF-8 bytes (what the agent sends in a header), anything else as
    its JCS canonical JSON, so equal values always give equal markers.
    """
    data = value.encode("utf-8") if isinstance(value, str) else canonical_json(value)
    return f"[REDACTED:{hmac.new(key, data, hashlib.sha256).hexdigest()[:16]}]"


#: Turns a secret value into its marker.
Mask = Callable[[Any], Any]


def redact_value(key: bytes, value: Any) -> Any:
    """The marker for a secret value; ``None`` (nothing to hide) and markers stay as they are,
    so that redacting twice (agent trace, store, stream) changes nothing."""
    return value if value is None or is_redacted(value) else fingerprint(key, value)


def masker(key: bytes) -> Mask:
    """A mask that fingerprints with ``key`` (:func:`redact_value`)."""
    return lambda value: redact_value(key, value)


#: Secret values shorter than this are not searched for in free text (:func:`scrub_text`): a
#: two-letter value would blank out half an error message. They stay masked where they are.
MIN_SCRUBBED = 4
#: Secret values shorter than this are replaced in free text only where they stand alone.
ALONE_BELOW = 12


def collecting(mask: Mask, found: set[str]) -> Mask:
    """``mask``, also adding to ``found`` the text of each value it hides that is a string or a
    number (as printed), for :func:`scrub_text`. A map or list under a secret name is hidden
    whole but not searched for word by word (``tokenInfo: {"issuer": "customer"}`` would
    otherwise blank out every "customer" of an error message); markers hide nothing."""

    def collect(value: Any) -> Any:
        if isinstance(value, str | int | float) and not isinstance(value, bool) and not is_redacted(value):
            text = value if isinstance(value, str) else str(value)
            if len(text) >= MIN_SCRUBBED:
                found.add(text)
        return mask(value)

    return collect


def payload_secrets(payload: Payload, mask: Mask) -> frozenset[str]:
    """The secret values of a payload (what :func:`redact_payload` would hide), as texts."""
    found: set[str] = set()
    redact_payload(payload, collecting(mask, found))
    return frozenset(found)


def scrub_text(
    text: str | None,
    secrets: Iterable[str],
    mask: Mask,
    *,
    spelled: Mapping[str, tuple[str, ...]] | None = None,
) -> str | None:
    """``text`` with every secret value in it replaced by its marker (section 4 "Secrets").

    Redaction finds secrets by name, in headers, properties and JSON bodies; free text has no
    names. An error message or a stack trace may quote the payload (``order {'password':
    'hunter2'}: missing orderId``), so the values that redaction hid elsewhere are looked for
    here too, as written, JSON-escaped, as Python's repr quotes them and percent-encoded (an
    endpoint URI, or an error quoting one, holds a header's value so); longest first, so a
    secret inside another is not half replaced. A short secret (under :data:`ALONE_BELOW`
    characters) only where it stands alone, not inside a longer word or number (a PIN "1234"
    leaves "order 12345" as it is); a longer one wherever it occurs."""
    if not text or not secrets:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        marker = None
        for form in spelled[secret] if spelled is not None else _spellings(secret):
            if form not in text:
                continue
            marker = marker or mask(secret)
            if len(secret) >= ALONE_BELOW:
                text = text.replace(form, marker)
            else:  # not preceded or followed by a letter or digit
                alone = re.compile(rf"(?<![^\W_]){re.escape(form)}(?![^\W_])")
                text = alone.sub(lambda _, m=marker: m, text)
    return text


def spellings(secrets: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each secret's spellings (:func:`_spellings`), for a caller that scrubs many texts for the
    same secrets (``spelled=`` of :func:`scrub_text` and :func:`scrub_body`): made once, not
    once per text (~0.25 ms of an orders replay's redaction)."""
    return {secret: _spellings(secret) for secret in secrets}


def _spellings(secret: str) -> tuple[str, ...]:
    """The ways a text may spell ``secret`` (:func:`scrub_text`), each once. (Not cached: a
    process-wide cache would keep real secret values in memory after their replay.)"""
    quoted = (
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        urllib.parse.quote(secret, safe="", errors="surrogatepass"),
        urllib.parse.quote_plus(secret, safe="", errors="surrogatepass"),
    )
    return tuple(dict.fromkeys((secret, *quoted)))


def scrub_body(
    body: str | None,
    secrets: Iterable[str],
    mask: Mask,
    *,
    spelled: Mapping[str, tuple[str, ...]] | None = None,
) -> str | None:
    """``body`` with every secret value in it replaced by its marker, as :func:`scrub_text`
    finds them: a route may copy a secret header into its body (``setBody: simple: "key
    ${header.X-Api-Key}"``), where no name says it is one (security.md VAL-6: a secret appears
    nowhere in the stored trace or the stream; found by review).

    A JSON object or array stays JSON where it can: a secret inside its strings is replaced in
    the text as it is; where that would break the JSON (a number spelling a secret) or could
    miss a secret (an escape such as Gson's ``\\u003d`` for ``=``), the value is walked instead:
    its strings, member names and numbers scrubbed (a number becomes a string with the marker)
    and the result re-serialised compactly, as :func:`redact_body` does. Text that is not JSON,
    and JSON whose own structure spells a secret (a secret value that is JSON text, copied
    whole; a secret ``"true"``), are scrubbed as text: perhaps no longer JSON, but never holding
    the secret. A body with no secret in it is returned as it is, byte for byte."""
    if not body or not secrets:
        return body
    found = tuple(secrets)
    spelled = spelled if spelled is not None else spellings(found)
    text = scrub_text(body, found, mask, spelled=spelled)
    # The escapes that can spell a secret's plain characters otherwise than json.dumps does
    # (its spellings cover \" \\ \n and the \u of non-ASCII): \u003d for "=", \/ and the like.
    escaped = "\\u" in body or "\\/" in body
    if text == body and not escaped:
        return body  # the common case: one search per spelling of each secret
    if not body.lstrip().startswith(("{", "[")):
        return text  # not JSON (as _json_in_text decides)
    if not escaped:
        try:
            orjson.loads(text)  # 10x json's speed: a 1 MB body is parsed in ms, not tens of ms
            return text  # replaced inside strings: still JSON, and the same text otherwise
        except orjson.JSONDecodeError:
            pass  # a number or a literal spelt a secret, or the body was no JSON to begin with
    parsed = _json_in_text(body)
    if parsed is _NOT_JSON:
        return text
    try:
        walked = _scrub_tree(parsed, found, mask, spelled)
        if walked == parsed:
            # No string, name or number holds a secret: the JSON's structure spells it (or
            # there is none, behind escapes).
            return text
        out = json.dumps(walked, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape: kept an escape (the store refuses it raw)
            out = json.dumps(walked, separators=(",", ":"), allow_nan=False)
    except (RecursionError, ValueError):  # deeper than Python recurses; 1e400 read as infinity
        return text
    # Scrubbed as text once more: an occurrence that spans members is hidden too.
    return scrub_text(out, found, mask, spelled=spelled)


class _Collision(ValueError):
    """Two member names of one object scrub to the same marker: walking would drop one."""


def _scrub_tree(
    value: Any, found: tuple[str, ...], mask: Mask, spelled: Mapping[str, tuple[str, ...]]
) -> Any:
    """:func:`scrub_body`'s walk of a parsed JSON body (raises ValueError where the walk would
    lose a member)."""
    forms = tuple(form for secret in found for form in spelled[secret])
    numeric = any(secret.lstrip("-").replace(".", "", 1).isdigit() for secret in found)

    def text(t: str) -> str:
        return scrub_text(t, found, mask, spelled=spelled) if any(f in t for f in forms) else t

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return text(v)
        if isinstance(v, dict):
            out = {text(k): walk(x) for k, x in v.items()}
            if len(out) != len(v):
                raise _Collision("two member names scrub to one marker")
            return out
        if isinstance(v, list):
            return [walk(x) for x in v]
        if numeric and isinstance(v, int | float) and not isinstance(v, bool):
            number = json.dumps(v)
            scrubbed = text(number)
            return v if scrubbed == number else scrubbed
        return v

    return walk(value)


#: ``scheme://`` and the authority after it (RFC 3986 3.2): up to the first ``/``, ``?`` or ``#``.
# Every authority, not only a leading one: Camel wraps URIs (``ahc:http://u:p@h``,
# ``jdbc:postgresql://u:p@db``), and its sanitizeUri looks behind any "://" (found by review).
_URI_AUTHORITY = re.compile(r"://([^/?#]*)")
#: A Camel ``RAW(...)`` / ``RAW{...}`` option value, which may hold ``&`` (Camel's
#: ``URISupport`` reads it with the same pattern).
_RAW_VALUE = re.compile(r"RAW(?:\(([^)]*)\)|\{([^}]*)\})")


def redact_uri(uri: str | None, mask: Mask) -> str | None:
    """``uri`` with its secrets masked (section 4 "Secrets"), as Camel's
    ``URISupport.sanitizeUri`` masks them in its logs but with the same name rule and marker as
    headers: the value of every query option whose name :func:`is_secret_name` matches
    (``?apiKey=``, ``&access_token=``, ``password=RAW(...)``), and the password of a
    ``user:password@`` userinfo (RFC 3986 3.2.1: what follows its first colon must not be shown).

    A ``toD`` step resolves its URI from headers, so a secret header's value reaches the
    processor's ``endpointUri`` (review finding 1). Values are percent-decoded before they are
    masked, so a value gets the marker its header has. Markers are left as they are (redacting
    twice changes nothing), and a URI with nothing to mask is returned as the same object."""
    if not uri or ("?" not in uri and "@" not in uri):
        return uri
    out = uri
    for authority in reversed(list(_URI_AUTHORITY.finditer(uri))):  # from the end: spans hold
        if "@" not in authority.group(1):
            continue
        userinfo, _, host = authority.group(1).rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon:
            hidden = mask(urllib.parse.unquote(password))
            if hidden != password:
                start, end = authority.span(1)
                out = f"{out[:start]}{user}:{hidden}@{host}{out[end:]}"
    base, question, query = out.partition("?")
    if not question:
        return out
    fragment = ""
    if "#" in query and "RAW(" not in query and "RAW{" not in query:
        # RFC 3986 3.5: the fragment is not part of the query (a RAW value may hold a "#").
        query, hashmark, rest = query.partition("#")
        fragment = hashmark + rest
    parts: list[str] = []
    at = 0
    while at <= len(query):
        amp = query.find("&", at)
        name, equals, _ = query[at : len(query) if amp < 0 else amp].partition("=")
        end = len(query) if amp < 0 else amp
        if equals:
            value_at = at + len(name) + 1
            raw = _RAW_VALUE.match(query, value_at)
            if raw is not None and (raw.end() == len(query) or query[raw.end()] == "&"):
                end, value = raw.end(), raw.group(1) if raw.group(1) is not None else raw.group(2)
            else:
                value = urllib.parse.unquote(query[value_at:end])
            if is_secret_name(urllib.parse.unquote(name)):
                hidden = mask(value)
                parts.append(f"{name}={hidden}" if isinstance(hidden, str) else query[at:end])
            else:
                parts.append(query[at:end])
        else:
            parts.append(query[at:end])
        if end >= len(query):
            break
        at = end + 1
    redacted = "&".join(parts)
    return out if redacted == query else f"{base}?{redacted}{fragment}"


_URI_HEAD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z][A-Za-z0-9+.\-]*:)*(?://[^/?#]*)?")


def scrub_uri(uri: str | None, secrets: Iterable[str], mask: Mask) -> str | None:
    """:func:`scrub_text` over a URI's path, query and fragment, never its scheme(s) and
    authority: a short secret value that happens to spell a scheme or a port ("http", "8080")
    must not turn the URI into one that names no endpoint (found by review). The authority's
    password is :func:`redact_uri`'s."""
    if not uri or not secrets:
        return uri
    head = _URI_HEAD.match(uri)
    cut = head.end() if head is not None else 0
    rest = scrub_text(uri[cut:], secrets, mask)
    return uri if rest == uri[cut:] else uri[:cut] + (rest or "")


def redact_mapping(mapping: Mapping[str, Any] | None, mask: Mask) -> dict[str, Any] | None:
    """A copy of ``mapping`` with the value of every secret-named key (at any depth, and inside
    string values that are JSON text) masked."""
    if mapping is None:
        return None
    return _redact_tree(mapping, mask)


#: How deep JSON text inside a value is looked into (a body whose field holds JSON text that
#: holds JSON text ...); beyond that a string is left as it is.
_MAX_JSON_IN_TEXT = 4


def _redact_tree(value: Any, mask: Mask, depth: int = 0) -> Any:
    if isinstance(value, Mapping):
        return {
            k: mask(v) if isinstance(k, str) and is_secret_name(k) else _redact_tree(v, mask, depth)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_tree(v, mask, depth) for v in value]
    if isinstance(value, str) and depth < _MAX_JSON_IN_TEXT:
        # A value may be JSON text itself: Camel routes keep the body in an exchange property
        # (``setProperty: {name: order, simple: "${body}"}``) or wrap it in an envelope, and a
        # secret-named field inside must not pass because its container is a string.
        return _redact_json_text(value, mask, depth + 1)
    return value


_NOT_JSON = object()


def _json_in_text(text: str) -> Any:
    """The JSON object or array ``text`` holds, or ``_NOT_JSON``: what redaction looks into."""
    if not text.lstrip().startswith(("{", "[")):
        return _NOT_JSON
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _redact_json_text(text: str, mask: Mask, depth: int) -> str:
    parsed = _json_in_text(text)
    if parsed is _NOT_JSON:
        return text
    redacted = _redact_tree(parsed, mask, depth)
    if redacted == parsed:
        return text  # nothing secret: the text stays byte for byte as it was
    return json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))


def secret_names(value: Any) -> list[str]:
    """The secret names (:func:`is_secret_name`) in a header or property map, or in a body, in
    order: every key whose value :func:`redact_mapping` or :func:`redact_body` would mask, at
    any depth and inside string values that are JSON text (up to 4 levels), walked as those
    walk. A string is read as a body (JSON text; any other text has no names).

    For callers that must refuse a secret rather than hide it (the compliance proof's
    parameters are written into a notebook in clear)."""
    if isinstance(value, str):  # a body: redact_body parses it at depth 0, as here
        parsed = _json_in_text(value)
        return [] if parsed is _NOT_JSON else _secret_names(parsed, 0)
    return _secret_names(value, 0)


def _secret_names(value: Any, depth: int) -> list[str]:
    # The walk of _redact_tree, collecting names where it would mask.
    found: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and is_secret_name(k):
                found.append(k)  # its value is masked whole: nothing below it counts apart
            else:
                found.extend(_secret_names(v, depth))
    elif isinstance(value, list | tuple):
        for v in value:
            found.extend(_secret_names(v, depth))
    elif isinstance(value, str) and depth < _MAX_JSON_IN_TEXT:
        parsed = _json_in_text(value)
        if parsed is not _NOT_JSON:
            found.extend(_secret_names(parsed, depth + 1))
    return found


def redact_body(body: str | None, mask: Mask) -> str | None:
    """A body with the values of secret-named JSON fields redacted, at any depth, including
    inside string values that are JSON text themselves (up to 4 levels).

    Only a body that parses as a JSON object or array and has such a field changes (it is then
    re-serialised compactly); any other body is returned as it is.
    """
    if body is None:
        return None
    return _redact_json_text(body, mask, 0)


def redact_payload(payload: Payload, mask: Mask) -> Payload:
    """A payload with secret headers, properties and JSON body fields masked."""
    return Payload(
        headers=redact_mapping(payload.headers, mask) or {},
        body=redact_body(payload.body, mask),
        properties=redact_mapping(payload.properties, mask) or {},
    )


def redact_patch(
    patch: Sequence[Mapping[str, Any]], mask: Mask, secrets: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """A copy of a payload patch that shows no secret.

    An op's ``value`` is redacted whole when any token of its ``path`` is a secret name
    (``/headers/Authorization``, ``/properties/db/password/0``); otherwise secret-named keys
    inside an object value are redacted, and a ``/body`` value is redacted as a body
    (:func:`redact_body`). ``remove``, ``move`` and ``copy`` carry no value and stay as they are.

    ``secrets`` (the payload's secret values, :func:`payload_secrets`) are also replaced where
    any other string of a value repeats them (:func:`scrub_body`: a body stays JSON), as the
    stored trace has them replaced: a body, or a header named ``X-Copy``, has no name that says
    a value in it is the ``X-Api-Key`` header's (section 4: secrets are hidden in payload diffs
    and audit events as in traces).
    """
    found = tuple(secrets)
    spelled = spellings(found) if found else None

    def scrubbed(value: Any) -> Any:
        if isinstance(value, str):
            return scrub_body(value, found, mask, spelled=spelled)
        if isinstance(value, Mapping):
            return {k: scrubbed(v) for k, v in value.items()}
        return [scrubbed(v) for v in value] if isinstance(value, list) else value

    out: list[dict[str, Any]] = []
    for op in patch:
        new = dict(op)
        if "value" in new:
            path = str(new.get("path", ""))
            tokens = _pointer_tokens(path)
            if any(is_secret_name(t) for t in tokens):
                new["value"] = mask(new["value"])
            elif tokens == ["body"]:
                value = new["value"]
                new["value"] = redact_body(value, mask) if isinstance(value, str) else value
            elif tokens == []:
                whole = new["value"]
                if isinstance(whole, Mapping):
                    new["value"] = redact_payload(Payload.from_wire(whole), mask).to_wire()
            else:
                new["value"] = _redact_tree(new["value"], mask)
            if found:
                new["value"] = scrubbed(new["value"])
        out.append(new)
    return out


def _pointer_tokens(path: str) -> list[str]:
    try:
        return list(jsonpointer.JsonPointer(path).parts)
    except jsonpointer.JsonPointerException:
        # Not a pointer: treat it as one opaque token, so a secret-looking path still redacts.
        return [path]
