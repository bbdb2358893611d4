"""moat_nb.audit: canonical JSON, the hash chain, checkpoints, verify() and bundles.

Modelled on security.md 1.4-1.5: AUD-1 (every mutation detected, first bad seq named), AUD-2
(truncation and rewrite need the signed checkpoint), AUD-3 (signature bit flips, unknown and
rotated keys), AUD-4 (RFC 8785 vectors, canonical bytes invariant under re-parsing), AUD-10
(offline bundles), and the immudb lesson: the verifier is fed hostile input and must not raise.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb import audit
from moat_nb.audit import (
    BUNDLE_FORMAT,
    REASON_HINTS,
    REASONS,
    VerifyResult,
    append,
    canonical_json,
    chain,
    event_hash,
    genesis_hash,
    key_id_for,
    load_bundle,
    load_public_key,
    loads_strict,
    make_bundle,
    public_key_b64,
    sign_checkpoint,
    verify,
    verify_bundle,
)
from moat_nb.errors import AuditVerificationError, RecordError

KEY_A = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_B = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))  # the rotated-to key
KEY_EVIL = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
AT = "2026-11-26T13:09:44.123Z"
TENANT = "acme"


def raw_event(seq: int, tenant: str = TENANT, detail: Any = None, action: str = "REPLAY_STARTED") -> dict:
    return {
        "seq": seq,
        "eventId": f"ev-{tenant}-{seq}",
        "tenantId": tenant,
        "occurredAt": AT,
        "action": action,
        "actor": {"username": "alice", "roles": ["OPERATOR"], "permissions": ["replay:run"]},
        "source": {"ip": "127.0.0.1", "userAgent": "moat-nb/0.1", "requestId": f"r-{seq}", "client": None},
        "target": {
            "replayId": f"rp-{seq // 3}",
            "sourceExchangeId": "ex-1",
            "routeId": "orders",
            "environment": "dev",
        },
        "detail": {} if detail is None else detail,
        "outcome": "SUCCESS",
    }


def detail_for(rnd: random.Random, seq: int) -> dict:
    """Varied details: floats (plain and integral), unicode, astral text, nesting, patches."""
    return rnd.choice(
        [
            {"durationMs": round(rnd.uniform(0.01, 90), 3), "processorCount": rnd.randint(1, 40)},
            {"durationMs": float(rnd.randint(1, 9)), "resultStatus": "COMPLETED"},  # takes rfc8785
            {"reason": "prüfen – café 😀", "payloadDiff": [{"op": "replace", "path": "/qty", "value": seq}]},
            {"filter": {"action": None, "limit": 100, "deep": [[{"x": True}], []]}, "rows": seq * 7},
            {"😀key": 1, "\ufb33": 2, "plain": "ascii only"},  # astral member name: UTF-16 order
            {},
        ]
    )


def signer_for(seq: int, n: int) -> Ed25519PrivateKey:
    return KEY_A if seq <= n // 2 else KEY_B  # rotation half-way through


def make_log(n: int, every: int = 10, head: bool = True, seed: int = 0, tenant: str = TENANT):
    rnd = random.Random(seed)
    events = chain([raw_event(i, tenant, detail_for(rnd, i)) for i in range(1, n + 1)], tenant)
    seqs = sorted({e["seq"] for e in events if e["seq"] % every == 0} | ({n} if head and n else set()))
    cps = [sign_checkpoint(signer_for(s, n), None, tenant, s, events[s - 1]["hash"], AT) for s in seqs]
    return events, cps


# --------------------------------------------------------------------------- known vectors


GENESIS_ACME = "cd9fc0f0f0c093ee76e3c5f2a46104aebbff6623b2dc28241bb2716555bfcacc"


def test_genesis_hash_is_the_documented_sha256() -> None:
    by_hand = hashlib.sha256(b"moat/genesis/v1" + b"\x00" + b"acme").hexdigest()
    assert genesis_hash("acme") == by_hand == GENESIS_ACME
    assert genesis_hash("acmé") == hashlib.sha256(b"moat/genesis/v1\x00acm\xc3\xa9").hexdigest()
    assert genesis_hash("acme") != genesis_hash("acme2")
    with pytest.raises(RecordError):
        genesis_hash("")


def test_event_hash_and_link_match_a_vector_computed_by_hand() -> None:
    event = raw_event(1, detail={"reason": "why", "durationMs": 12.5})
    # The JCS bytes written out by hand: members sorted, no whitespace, 12.5 as ECMAScript writes it.
    jcs = (
        b'{"action":"REPLAY_STARTED","actor":{"permissions":["replay:run"],"roles":["OPERATOR"],'
        b'"username":"alice"},"detail":{"durationMs":12.5,"reason":"why"},"eventId":"ev-acme-1",'
        b'"occurredAt":"2026-11-26T13:09:44.123Z","outcome":"SUCCESS","seq":1,"source":{"client":null,'
        b'"ip":"127.0.0.1","requestId":"r-1","userAgent":"moat-nb/0.1"},"target":{"environment":"dev",'
        b'"replayId":"rp-0","routeId":"orders","sourceExchangeId":"ex-1"},"tenantId":"acme"}'
    )
    assert canonical_json(event) == jcs
    first = append(None, event)
    expected = hashlib.sha256(b"moat/audit/v1\x00" + GENESIS_ACME.encode("ascii") + jcs).hexdigest()
    assert first["prevHash"] == GENESIS_ACME
    assert first["hash"] == expected
    assert event_hash(first, GENESIS_ACME) == expected  # prevHash/hash members are left out
    assert "hash" not in event  # the input is not changed

    second = append(first, raw_event(2))
    jcs2 = canonical_json(raw_event(2))
    assert second["prevHash"] == expected
    assert second["hash"] == hashlib.sha256(b"moat/audit/v1\x00" + expected.encode() + jcs2).hexdigest()
    assert chain([event, raw_event(2)], TENANT) == [first, second]
    assert chain([raw_event(3)], TENANT, prev=second)[0]["prevHash"] == second["hash"]


@pytest.mark.parametrize(
    "prev, event, what",
    [
        (None, raw_event(2), "seq 1"),
        ("first", raw_event(3), "cannot follow"),
        ("first", raw_event(2, tenant="globex"), "tenant"),
        (None, {k: v for k, v in raw_event(1).items() if k != "actor"}, "missing actor"),
        (None, {**raw_event(1), "seq": True}, "seq"),
        (None, raw_event(1, detail={"x": math.nan}), "canonical"),
        (None, raw_event(1, detail={"x": 2**53}), "canonical"),
        (None, raw_event(1, detail={1: "int key"}), "canonical"),
    ],
)
def test_append_refuses_what_would_break_the_chain(prev: Any, event: dict, what: str) -> None:
    first = append(None, raw_event(1))
    with pytest.raises(RecordError) as info:
        append(first if prev == "first" else prev, event)
    assert what in str(info.value)


def test_chain_refuses_another_tenant_and_a_gap() -> None:
    with pytest.raises(RecordError, match="globex"):
        chain([raw_event(1), raw_event(2, tenant="globex")], TENANT)
    with pytest.raises(RecordError, match="cannot follow"):
        chain([raw_event(1), raw_event(3)], TENANT)


# --------------------------------------------------------------------------- RFC 8785


# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text ("" = must be refused).
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("7fffffffffffffff", ""),
    ("7ff0000000000000", ""),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits, text", RFC8785_NUMBERS)
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    if not text:
        with pytest.raises(RecordError):
            canonical_json(value)
        return
    assert canonical_json(value) == text.encode()
    assert canonical_json({"n": [value]}) == b'{"n":[' + text.encode() + b"]}"


def test_rfc8785_section_3_2_3_sorts_members_by_utf16_code_units() -> None:
    source = '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh",'
    source += '"1":"One","\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control",'
    source += '"\\u00f6":"Latin Small Letter O With Diaeresis"}'
    out = canonical_json(json.loads(source)).decode()
    names = [json.loads(f"[{part.split(':')[0]}]")[0] for part in out[1:-1].split(",")]
    # U+1F600 is the surrogate pair D83D DE00, so it sorts before U+FB33 in UTF-16.
    assert names == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_rfc8785_section_3_2_4_example() -> None:
    source = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_canonical_json_refuses_what_jcs_cannot_write() -> None:
    for bad in [
        math.inf,
        -math.inf,
        math.nan,
        2**53,
        -(2**53),
        {1: "x"},
        "\ud800",
        b"bytes",
        {"a": object()},
    ]:
        with pytest.raises(RecordError) as info:
            canonical_json(bad)
        assert info.value.code == "NOT_CANONICAL"
    # The message says what kind of value, never the value: the server answers it to clients,
    # and the value may be a secret (security review finding 7).
    with pytest.raises(RecordError, match=r"an integer beyond") as info:
        canonical_json({"X-Api-Key": 2**70})
    assert str(2**70) not in info.value.message
    with pytest.raises(RecordError, match=r"NaN or an infinity") as info:
        canonical_json({"pin": 1e400})
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    assert canonical_json("\x7f\u2028\x1f") == '"\x7f\u2028\\u001f"'.encode()


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats()
    | st.floats(min_value=-1e6, max_value=1e6).map(lambda f: round(f, 3))
    | st.text(st.characters(codec=None), max_size=12)  # includes lone surrogates and astral text
)
json_keys = st.text(st.characters(codec=None), max_size=6) | st.sampled_from(["a", "b", "😀", "\ufb33", "é"])
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(json_keys | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(detail=json_values, extra=json_values)
def test_fast_path_gives_rfc8785_bytes_whenever_it_answers(detail: Any, extra: Any) -> None:
    value = {**raw_event(5, detail=detail), "extra": extra}
    fast = audit._canonical_fast(value)
    try:
        reference = rfc8785.dumps(value)
    except Exception:  # noqa: BLE001 - whatever rfc8785 refuses, canonical_json must refuse too
        assert fast is None
        with pytest.raises(RecordError):
            canonical_json(value)
        return
    if fast is not None:
        assert fast == reference
    assert canonical_json(value) == reference


@settings(max_examples=150, deadline=None)
@given(detail=json_values, extra=json_values)
def test_the_stdlib_fast_path_too_gives_rfc8785_bytes_whenever_it_answers(detail: Any, extra: Any) -> None:
    """The path taken without orjson (a declared dependency, so the other path is the one the
    test above exercises), checked the same way; also what bench/bench_audit.py measures."""
    saved, audit.orjson = audit.orjson, None
    try:
        value = {**raw_event(5, detail=detail), "extra": extra, "t": (1, 2), "f": 49.0}
        fast = audit._canonical_fast(value)
        assert fast is None  # a tuple and an integral float: left to rfc8785 by this path
        value = {**raw_event(5, detail=detail), "extra": extra}
        fast = audit._canonical_fast(value)
        try:
            reference = rfc8785.dumps(value)
        except Exception:  # noqa: BLE001 - whatever rfc8785 refuses, the fast path leaves alone
            assert fast is None
            return
        assert fast is None or fast == reference
    finally:
        audit.orjson = saved


@settings(max_examples=300, deadline=None)
@given(number=st.floats(allow_nan=False, allow_infinity=False), text=st.text(st.characters(codec=None)))
def test_fast_path_numbers_and_strings_match_rfc8785(number: float, text: str) -> None:
    """The two claims the fast path rests on: float repr without exponent or ".0", and escaping."""
    fast = audit._canonical_fast([number])
    assert fast is None or fast == rfc8785.dumps([number])
    if "e" not in repr(number) and not repr(number).endswith(".0"):
        assert fast is not None
    try:
        reference = rfc8785.dumps({text: text})
    except Exception:  # noqa: BLE001 - lone surrogates
        assert audit._canonical_fast({text: text}) is None
        return
    assert audit._canonical_fast({text: text}) in (None, reference)


def test_fast_path_answers_for_typical_events() -> None:
    details = [
        {
            "durationMs": 12.345,
            "processorCount": 7,
            "resultStatus": "COMPLETED",
            "outputBodySha256": "ab" * 32,
        },
        {"reason": "prüfen – café \u2028", "payloadDiff": [{"op": "replace", "path": "/qty", "value": -3}]},
        {"filter": {"action": None, "limit": 100, "deep": [[{"x": True}], []]}, "rows": 0, "f": 0.0001},
        {},
    ]
    for i, detail in enumerate(details, 1):
        event = append(None, raw_event(1, detail=detail))
        fast = audit._canonical_fast(event)
        assert fast is not None and fast == rfc8785.dumps(event), i
    for slow in [{"durationMs": 49.0}, {"n": 1e-05}, {"n": 1e16}, {"😀": 1}, {"n": -0.0}, {"t": (1, 2)}]:
        event = raw_event(1, detail=slow)
        fast = audit._canonical_fast(event)
        # Left to rfc8785 by the stdlib path; the orjson path writes 1e-05 itself (as ECMAScript
        # does, "0.00001"), so either path answers nothing or rfc8785's bytes.
        assert fast is None or (audit.orjson is not None and fast == rfc8785.dumps(event))
        assert canonical_json(event) == rfc8785.dumps(event)


i_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(value=i_json, seed=st.integers(0, 2**16))
def test_canonical_bytes_survive_reordering_whitespace_and_reparsing(value: Any, seed: int) -> None:
    rnd = random.Random(seed)

    def shuffle(v: Any) -> Any:
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: shuffle(x) for k, x in items}
        return [shuffle(x) for x in v] if isinstance(v, list) else v

    text = json.dumps(shuffle(value), indent=rnd.choice([None, 1, 3]), ensure_ascii=rnd.random() < 0.5)
    assert canonical_json(json.loads(text)) == canonical_json(value)


# --------------------------------------------------------------------------- keys and checkpoints


def test_key_id_and_public_key_wire_form() -> None:
    raw = KEY_A.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id_for(KEY_A) == key_id_for(KEY_A.public_key()) == hashlib.sha256(raw).hexdigest()[:16]
    text = public_key_b64(KEY_A)
    der = KEY_A.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(text) == der
    assert key_id_for(load_public_key(text)) == key_id_for(KEY_A)
    assert key_id_for(text) == key_id_for(KEY_A) != key_id_for(KEY_B)


def test_load_public_key_refuses_anything_but_canonical_ed25519() -> None:
    text = public_key_b64(KEY_A)
    assert text.endswith("=")
    sloppy = text[:-2] + chr(ord(text[-2]) + 1) + "="  # same bytes with padding bits set
    assert base64.b64decode(sloppy) == base64.b64decode(text)
    x25519 = X25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    other = base64.b64encode(
        x25519.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    for bad in [sloppy, other, "", "not base64!", text[:-4], 42]:
        with pytest.raises(RecordError) as info:
            load_public_key(bad)  # type: ignore[arg-type]
        assert info.value.code == "BAD_KEY"


def test_checkpoint_signature_round_trip() -> None:
    events, _ = make_log(3, head=False)
    cp = sign_checkpoint(
        KEY_A, key_id_for(KEY_A), TENANT, 3, events[2]["hash"], datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert set(cp) == {"tenantId", "seq", "hash", "at", "keyId", "signature"}
    assert cp["at"] == "2026-01-02T00:00:00.000Z"
    message = b"moat/checkpoint/v1\x00" + rfc8785.dumps({k: v for k, v in cp.items() if k != "signature"})
    KEY_A.public_key().verify(base64.b64decode(cp["signature"]), message)  # raises if wrong
    result = verify(events, [cp], [KEY_A.public_key()])
    assert result.ok and result.checkpoints_checked == 1 and result.anchored_seq == 3
    assert verify(events, [cp], {key_id_for(KEY_A): public_key_b64(KEY_A)}).ok
    with pytest.raises(RecordError):
        sign_checkpoint(KEY_A, key_id_for(KEY_B), TENANT, 3, events[2]["hash"], AT)
    with pytest.raises(RecordError):
        sign_checkpoint(KEY_A, None, TENANT, 3, "ABC", AT)


def test_every_bit_flip_of_a_checkpoint_fails() -> None:
    """AUD-3: each single bit of the signature and of the signed fields, exhaustively."""
    events, cps = make_log(3, every=100)
    (cp,) = cps
    keys = [KEY_A, KEY_B]
    assert verify(events, cps, keys).ok
    signature = base64.b64decode(cp["signature"])
    for bit in range(len(signature) * 8):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        bad = {**cp, "signature": base64.b64encode(bytes(flipped)).decode()}
        assert verify(events, [bad], keys).reason == "BAD_SIGNATURE"
    flips = 0
    for name in ("tenantId", "hash", "at", "keyId"):
        for i, ch in enumerate(cp[name]):
            for bit in range(7):
                value = cp[name][:i] + chr(ord(ch) ^ (1 << bit)) + cp[name][i + 1 :]
                result = verify(events, [{**cp, name: value}], keys)
                assert not result.ok, (name, i, bit)
                flips += 1
    for bit in range(8):
        assert not verify(events, [{**cp, "seq": cp["seq"] ^ (1 << bit)}], keys).ok
    assert flips > 700


def test_unknown_wrong_and_rotated_keys() -> None:
    events, cps = make_log(40, every=10)  # seqs 10, 20 signed by A; 30, 40 by B
    assert [c["keyId"] for c in cps] == [key_id_for(KEY_A)] * 2 + [key_id_for(KEY_B)] * 2
    assert verify(events, cps, [KEY_A, KEY_B]).ok  # rotated keys verify historic checkpoints
    only_a = verify(events, cps, [KEY_A])
    assert (only_a.reason, only_a.first_bad_seq, only_a.checked) == ("UNKNOWN_KEY", 30, 29)
    assert verify(events, cps, [KEY_EVIL]).reason == "UNKNOWN_KEY"
    assert verify(events, cps, None).reason == "UNKNOWN_KEY"
    swapped = verify(events, cps, {key_id_for(KEY_A): public_key_b64(KEY_EVIL), key_id_for(KEY_B): KEY_B})
    assert swapped.reason == "KEY_ID_MISMATCH"
    assert verify(events, cps, {"x": "garbage"}).reason == "MALFORMED"
    # A list has no key ids: the bad key is named by its value ("public key None" named nothing;
    # found by an audit walk of a proof run with MOAT_AUDIT_KEYS=zzz).
    listed = verify(events, cps, [KEY_A, "zzz"])
    assert (listed.reason, listed.message) == ("MALFORMED", "public key 'zzz' is not Ed25519")


# --------------------------------------------------------------------------- honest logs


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 45), every=st.integers(1, 12), head=st.booleans(), seed=st.integers(0, 10**6))
def test_an_untouched_log_always_verifies(n: int, every: int, head: bool, seed: int) -> None:
    events, cps = make_log(n, every=every, head=head, seed=seed)
    result = verify(events, cps, [KEY_A, KEY_B])
    assert result.ok, result
    assert (result.checked, result.head_seq, result.checkpoints_checked) == (n, n, len(cps))
    assert result.head_hash == (events[-1]["hash"] if events else None)
    if not events:  # an empty log of a known tenant ends at its genesis
        assert verify([], [], None, tenant_id=TENANT).head_hash == GENESIS_ACME
    exported = json.loads(json.dumps(make_bundle(events, cps, [KEY_A, KEY_B])))  # as the server exports
    assert verify_bundle(exported, allow_unsigned_tail=True).to_wire() == result.to_wire()
    # A bundle verifies only up to its newest signed checkpoint: a tail after it fails.
    own = verify_bundle(exported)
    signed_head = not events or bool(cps) and cps[-1]["seq"] == n
    assert own.ok == signed_head and (own.ok or own.reason == "UNSIGNED_TAIL"), own
    # With trusted keys, a bundle verifies only when a checkpoint they signed covers it.
    trusted = verify_bundle(exported, public_keys=[KEY_A, KEY_B])
    assert trusted.ok == (bool(cps) and signed_head), trusted
    assert trusted.ok or trusted.reason == ("UNSIGNED_TAIL" if cps else "UNANCHORED"), trusted
    if n > 10 and cps:  # any range of it verifies too
        start = n // 2
        part = verify(events[start - 1 :], cps, [KEY_A, KEY_B], start_seq=start)
        assert part.ok and part.checked == n - start + 1
        anchored = verify(
            events[start - 1 :], [], None, start_seq=start, start_prev_hash=events[start - 2]["hash"]
        )
        assert anchored.ok


def test_a_bundle_no_trusted_checkpoint_covers_is_unanchored() -> None:
    # Anyone can chain events; only a checkpoint signed by a trusted key vouches for them.
    events, cps = make_log(20, every=5, head=False)
    assert cps and verify_bundle(make_bundle(events, cps, [KEY_A, KEY_B]), public_keys=[KEY_A, KEY_B]).ok
    forged = verify_bundle(make_bundle(events, [], []), public_keys=[KEY_A, KEY_B])
    assert (forged.ok, forged.reason) == (False, "UNANCHORED")
    # A range after the newest checkpoint: chained, but not vouched for yet.
    newest = max(c["seq"] for c in cps)
    tail = make_bundle(events[newest:], cps, [KEY_A, KEY_B], start_seq=newest + 1)
    assert verify_bundle(tail, public_keys=[KEY_A, KEY_B]).reason == "UNANCHORED"
    # Without trusted keys the bundle is checked for consistency, and still only up to its
    # newest checkpoint (none here): the unsigned events are reported, not passed.
    unsigned = verify_bundle(make_bundle(events, [], []))
    assert (unsigned.ok, unsigned.reason, unsigned.first_bad_seq) == (False, "UNSIGNED_TAIL", 1)
    assert verify_bundle(make_bundle(events, [], []), allow_unsigned_tail=True).ok


def test_to_wire_and_raise_on_failure() -> None:
    events, cps = make_log(12)
    good = verify(events, cps, [KEY_A, KEY_B])
    assert good.to_wire() == {
        "ok": True,
        "checked": 12,
        "headSeq": 12,
        "headHash": events[-1]["hash"],
        "firstBadSeq": None,
        "reason": None,
        "checkpoints": 2,
    }
    good.raise_on_failure()
    bad = verify(events[:5] + events[6:], cps, [KEY_A, KEY_B])
    assert bad.to_wire()["reason"] == "SEQ_GAP" and bad.to_wire()["firstBadSeq"] == 6
    with pytest.raises(AuditVerificationError) as info:
        bad.raise_on_failure()
    assert (info.value.first_bad_seq, info.value.reason) == (6, "SEQ_GAP")
    assert set(REASONS) >= {"HASH_MISMATCH", "BROKEN_LINK", "SEQ_GAP", "TRUNCATED", "MALFORMED"}
    # What to do next, as every MoatError says (there was no hint: fuzzing finding 17).
    assert info.value.hint == REASON_HINTS["SEQ_GAP"] and "p.audit_bundle()" in str(info.value)
    assert set(REASON_HINTS) == set(REASONS) and all(REASON_HINTS.values())


def test_each_tenant_has_its_own_chain() -> None:
    acme, acme_cps = make_log(15)
    globex, globex_cps = make_log(15, tenant="globex")
    assert globex[0]["prevHash"] == genesis_hash("globex") != acme[0]["prevHash"]
    assert verify(acme, acme_cps, [KEY_A, KEY_B]).ok and verify(globex, globex_cps, [KEY_A, KEY_B]).ok
    mixed = verify(acme[:5] + [globex[5]] + acme[6:], acme_cps, [KEY_A, KEY_B])
    assert (mixed.reason, mixed.first_bad_seq) == ("TENANT_MISMATCH", 6)
    assert verify(acme, globex_cps, [KEY_A, KEY_B]).reason == "TENANT_MISMATCH"
    assert verify(acme, acme_cps, [KEY_A, KEY_B], tenant_id="globex").reason == "TENANT_MISMATCH"


# --------------------------------------------------------------------------- tampering (AUD-1, AUD-2)


def leaf_paths(value: Any, path: tuple = ()) -> list[tuple]:
    paths = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            paths += leaf_paths(v, (*path, i))
    return paths


def other_value(rnd: random.Random, old: Any) -> Any:
    """A value whose canonical JSON differs from ``old``'s."""
    while True:
        if isinstance(old, str) and old:
            i = rnd.randrange(len(old))
            new: Any = old[:i] + rnd.choice('0aZ é😀\x00"') + old[i + 1 :]
        elif isinstance(old, bool) or old is None:
            new = rnd.choice([True, False, None, 0, "", "null"])
        elif isinstance(old, int):
            new = old + rnd.choice([-2, -1, 1, 7, 1000])
        elif isinstance(old, float):
            new = rnd.choice([old + 1, -old, old * 2, 0.1])
        else:
            new = rnd.choice([{}, [], "x", 0, None, {"k": old}])
        if canonical_json(new) != canonical_json(old):
            return new


def mutate(rnd: random.Random, bundle: dict, kind: str) -> tuple[dict, int | None]:
    """One tampering of ``bundle`` (copied where changed); returns it and the first seq it touches."""
    b = dict(bundle)
    events = b["events"] = list(bundle["events"])
    cps = b["checkpoints"] = [dict(c) for c in bundle["checkpoints"]]
    n = len(events)
    i = rnd.randrange(n)
    if kind == "edit":  # change, add or delete any member at any depth of one event
        ev = events[i] = copy.deepcopy(events[i])
        path = rnd.choice(leaf_paths(ev)[1:])
        parent = ev
        for step in path[:-1]:
            parent = parent[step]
        action = rnd.choice(["change", "change", "delete", "add"])
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent["injected" + str(rnd.randrange(9))] = rnd.choice([1, "x", None])
        else:
            parent[path[-1]] = other_value(rnd, parent[path[-1]])
        return b, i + 1
    if kind == "delete":
        del events[i]
        return b, i + 1
    if kind == "swap":
        j = rnd.randrange(n)
        while j == i:
            j = rnd.randrange(n)
        events[i], events[j] = events[j], events[i]
        return b, min(i, j) + 1
    if kind == "duplicate":
        events.insert(i + 1, copy.deepcopy(events[i]))
        return b, i + 1
    if kind == "forge":  # a made-up event with self-consistent-looking hashes
        fake = dict(raw_event(i + 1), prevHash=events[i]["prevHash"], hash=hashlib.sha256(b"x").hexdigest())
        events.insert(i, fake)
        return b, i + 1
    if kind == "truncate":
        t = rnd.randrange(1, n + 1)
        del events[n - t :]
        return b, n - t + 1
    if kind == "rechain":  # rewrite from i and recompute every hash after it, without the key
        changed = dict(events[i], action="REPLAY_DENIED")
        prev = events[i - 1] if i else None
        events[i:] = chain([changed] + events[i + 1 :], b["tenantId"], prev=prev)
        return b, i + 1
    c = rnd.randrange(len(cps))
    if kind == "cp_key_id":
        ids = [key_id_for(KEY_A), key_id_for(KEY_B), key_id_for(KEY_EVIL), "0" * 16]
        cps[c]["keyId"] = rnd.choice([k for k in ids if k != cps[c]["keyId"]])
    elif kind == "cp_signature":
        choice = rnd.randrange(3)
        if choice == 0 and len(cps) > 1:
            d = (c + 1) % len(cps)
            cps[c]["signature"], cps[d]["signature"] = cps[d]["signature"], cps[c]["signature"]
        elif choice == 1:
            cps[c]["signature"] = other_value(rnd, cps[c]["signature"])
        else:
            unsigned = {k: v for k, v in cps[c].items() if k != "signature"}
            forged = KEY_EVIL.sign(b"moat/checkpoint/v1\x00" + rfc8785.dumps(unsigned))
            cps[c]["signature"] = base64.b64encode(forged).decode()
    elif kind == "cp_field":
        name = rnd.choice(["tenantId", "seq", "hash", "at"])
        cps[c][name] = other_value(rnd, cps[c][name])
    elif kind == "public_key":
        keys = b["publicKeys"] = dict(bundle["publicKeys"])
        kid = rnd.choice(sorted(keys))
        choice = rnd.randrange(3)
        if choice == 0:
            keys[kid] = public_key_b64(KEY_EVIL)
        elif choice == 1:
            keys[kid] = other_value(rnd, keys[kid])
        else:
            keys[key_id_for(KEY_EVIL)] = keys.pop(kid)
    elif kind == "bundle_field":
        name = rnd.choice(["format", "tenantId", "startSeq"])
        b[name] = other_value(rnd, b[name])
    return b, None


KINDS = [
    "edit", "edit", "edit", "delete", "swap", "duplicate", "forge", "truncate", "rechain",
    "cp_key_id", "cp_signature", "cp_field", "public_key", "bundle_field",
]  # fmt: skip


def test_a_thousand_mutations_of_an_exported_bundle_are_all_detected() -> None:
    """AUD-1/AUD-2/AUD-10: every mutation fails, naming a first bad seq no later than the change."""
    events, cps = make_log(120, every=10, seed=7)
    bundle = json.loads(json.dumps(make_bundle(events, cps, [KEY_A, KEY_B])))
    assert verify_bundle(bundle).ok
    rnd = random.Random(20261126)
    seen: dict[str, int] = {}
    reasons: set[str] = set()
    for _ in range(1200):
        kind = rnd.choice(KINDS)
        tampered, touched = mutate(rnd, bundle, kind)
        result = verify_bundle(tampered)
        assert not result.ok, (kind, touched)
        assert result.reason in REASONS
        if touched is not None:
            assert result.first_bad_seq is not None and result.first_bad_seq <= touched, (
                kind,
                touched,
                result,
            )
        seen[kind] = seen.get(kind, 0) + 1
        reasons.add(result.reason)
    assert set(seen) == set(KINDS) and min(seen.values()) >= 30
    assert {"HASH_MISMATCH", "SEQ_GAP", "TRUNCATED", "CHECKPOINT_MISMATCH", "BAD_SIGNATURE"} <= reasons
    assert verify_bundle(bundle).ok  # the original was never touched


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 30), every=st.integers(1, 8), seed=st.integers(0, 10**6), kind=st.sampled_from(KINDS))
def test_mutations_of_random_logs_are_detected(n: int, every: int, seed: int, kind: str) -> None:
    events, cps = make_log(n, every=every, seed=seed)
    tampered, touched = mutate(random.Random(seed), make_bundle(events, cps, [KEY_A, KEY_B]), kind)
    result = verify_bundle(tampered)
    assert not result.ok
    if touched is not None:
        assert result.first_bad_seq is not None and result.first_bad_seq <= touched


def test_truncation_and_rewrite_need_a_checkpoint_outside_the_attackers_reach() -> None:
    """AUD-2, including its documented limitation."""
    events, cps = make_log(35, every=10, head=False)
    # A cut after the newest checkpoint cannot be seen: nothing vouches for seqs 31..35.
    assert verify(events[:32], cps, [KEY_A, KEY_B]).ok
    cut = verify(events[:15], cps, [KEY_A, KEY_B])
    assert (cut.reason, cut.first_bad_seq, cut.head_seq) == ("TRUNCATED", 16, 15)
    # A rewrite re-signed with the attacker's own key passes a bundle that carries that key,
    # and fails as soon as the verifier pins the keys it trusts.
    forged = chain([dict(events[0], action="REPLAY_DENIED")] + events[1:], TENANT)
    forged_cps = [
        sign_checkpoint(KEY_EVIL, None, TENANT, c["seq"], forged[c["seq"] - 1]["hash"], AT) for c in cps
    ]
    bundle = make_bundle(forged, forged_cps, [KEY_EVIL])
    assert verify_bundle(bundle, allow_unsigned_tail=True).ok  # 31..35 are after the newest checkpoint
    pinned = verify_bundle(bundle, public_keys=[KEY_A, KEY_B])
    assert (pinned.reason, pinned.first_bad_seq) == ("UNKNOWN_KEY", 10)
    original = verify(forged, cps, [KEY_A, KEY_B])
    assert (original.reason, original.first_bad_seq) == ("CHECKPOINT_MISMATCH", 1)


def test_ranges_need_their_start_and_keep_their_checkpoints() -> None:
    events, cps = make_log(40, every=10)
    keys = [KEY_A, KEY_B]
    assert verify(events[20:], cps, keys, start_seq=21).anchored_seq == 40  # checkpoint at 20 anchors it
    wrong = verify(events[20:], [], keys, start_seq=21, start_prev_hash="0" * 64)
    assert (wrong.reason, wrong.first_bad_seq) == ("BROKEN_LINK", 21)
    headless = make_bundle(events[1:], cps, keys, start_seq=1)  # claims to be whole, lost seq 1
    assert (verify_bundle(headless).reason, verify_bundle(headless).first_bad_seq) == ("SEQ_GAP", 1)
    assert verify_bundle(make_bundle(events[5:], cps, keys)).ok  # an honest range export
    assert verify(events, cps, keys, start_prev_hash="0" * 64).reason == "BROKEN_LINK"


# --------------------------------------------------------------------------- hostile input


def test_garbage_gives_malformed_never_an_exception() -> None:
    events, cps = make_log(5)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    cases: list[tuple[Any, Any, Any]] = [
        (None, [], None),
        ("events", [], None),
        (b"\x00", [], None),
        ({"seq": 1}, [], None),
        (42, [], None),
        ([1, 2, 3], [], None),
        ([{"seq": "1", "tenantId": TENANT}], [], None),
        ([{**events[0], "seq": True}], [], None),
        ([{**events[0], "seq": 1.0}], [], None),
        ([{**events[0], "tenantId": 7}], [], None),
        ([{**events[0], "prevHash": None}], [], None),
        ([{**events[0], "hash": ["x"]}], [], None),
        ([{**events[0], "detail": cyclic}], [], None),
        ([{**events[0], "detail": deep}], [], None),
        ([{**events[0], "detail": {"x": math.nan}}], [], None),
        ([{**events[0], "detail": {"x": 10**30}}], [], None),
        ([{**events[0], "detail": {(1, 2): "tuple key"}}], [], None),
        ([{**events[0], "detail": b"bytes"}], [], None),
        ([{**events[0], "detail": "\udc80"}], [], None),
        (events, None, None),
        (events, "cps", None),
        (events, [None], None),
        (events, [{"seq": "5"}], None),
        (events, [{**cps[0], "signature": 5}], [KEY_A]),
        (events, [{**cps[0], "hash": "X" * 64}], [KEY_A]),
        (events, [{**cps[0], "extra": math.inf}], [KEY_A]),
        (events, cps, 42),
        (events, cps, "key"),
        (events, cps, [None]),
        (events, cps, {None: None}),
    ]
    for evs, cks, keys in cases:
        result = verify(evs, cks, keys)
        assert isinstance(result, VerifyResult)
        assert not result.ok and result.reason in REASONS, (evs, cks, keys)
    assert verify(events, cps, [KEY_A], start_seq=0).reason == "MALFORMED"
    assert verify(events, cps, [KEY_A], start_seq="1").reason == "MALFORMED"  # type: ignore[arg-type]
    assert verify(events, cps, [KEY_A], tenant_id=5).reason == "MALFORMED"  # type: ignore[arg-type]
    for bundle in [
        None,
        [],
        "x",
        {},
        {"format": BUNDLE_FORMAT},
        {**make_bundle(events, cps, [KEY_A]), "x": 1},
    ]:
        result = verify_bundle(bundle)
        assert not result.ok and result.reason == "MALFORMED"


garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["seq", "tenantId", "prevHash", "hash", "keyId", "x"]), inner, max_size=5
        )
    ),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None)
@given(events=garbage, checkpoints=garbage, keys=garbage)
def test_verify_never_raises_on_arbitrary_values(events: Any, checkpoints: Any, keys: Any) -> None:
    result = verify(events, checkpoints, keys)
    assert result.ok == (result.reason is None)
    assert not result.ok or result.checked == 0
    assert verify_bundle({"format": BUNDLE_FORMAT, "events": events, "checkpoints": checkpoints}).ok is False


# --------------------------------------------------------------------------- bundle files


def test_load_bundle_round_trip_and_strictness(tmp_path: Any) -> None:
    events, cps = make_log(20)
    bundle = make_bundle(events, cps, [KEY_A, KEY_B])
    assert set(bundle) == {"format", "tenantId", "startSeq", "events", "checkpoints", "publicKeys"}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
    assert load_bundle(path) == bundle
    assert verify_bundle(load_bundle(str(path))).ok
    text = path.read_text(encoding="utf-8")
    for bad in [
        text.replace('"format"', '"format": "x", "format"', 1),  # duplicate member name
        text.replace('"startSeq": 1', '"startSeq": NaN', 1),
        text[:-10],
        "[]",
    ]:
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(RecordError) as info:
            load_bundle(path)
        assert info.value.code == "BAD_BUNDLE"
    path.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(RecordError):
        load_bundle(path)
    with pytest.raises(OSError):
        load_bundle(tmp_path / "missing.json")


def test_a_null_turned_into_an_overflowing_number_does_not_verify(tmp_path: Any) -> None:
    """``1e999`` reads as infinity in Python, and orjson writes infinity as null: a signed
    ``null`` changed to ``1e999`` hashed as before. The readers refuse such numbers."""
    events = chain([raw_event(1, TENANT, {"errorType": None, "durationMs": 2.5})], TENANT)
    cps = [sign_checkpoint(KEY_A, None, TENANT, 1, events[0]["hash"], AT)]
    bundle = make_bundle(events, cps, [KEY_A])
    text = json.dumps(bundle, indent=1)
    assert verify_bundle(json.loads(text), [KEY_A.public_key()]).ok
    forged = text.replace('"errorType": null', '"errorType": 1e999', 1)
    assert forged != text
    path = tmp_path / "forged.json"
    path.write_text(forged, encoding="utf-8")
    with pytest.raises(RecordError, match="beyond the range") as info:
        load_bundle(path)
    assert info.value.code == "BAD_BUNDLE"
    for bad in ("1e999", "-1e400", "[NaN]", '{"a": Infinity}'):
        with pytest.raises(ValueError):
            loads_strict(bad)
    assert loads_strict('{"a": 1.5e300, "b": null}') == {"a": 1.5e300, "b": None}


_NUMBERISH = st.text(alphabet=st.sampled_from(list('0123456789.e+-,]}"\\ ')), max_size=16)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_NUMBERISH, max_size=4),
    numbers=st.lists(
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53) + 1, 2**53 - 1), max_size=3
    ),
)
def test_number_like_text_inside_strings_neither_fools_nor_blocks_the_fast_path(
    texts: list[str], numbers: list[Any]
) -> None:
    """Strings spelling "59.0}" or "1e-5" (a JSON body held as a string) hit the text checks,
    and the walk of the value clears them: the fast path still answers for them, and only with
    rfc8785's bytes."""
    value = {"body": texts, "n": numbers}
    fast = audit._canonical_fast(value)
    assert fast is None or fast == rfc8785.dumps(value)
    if all("e" not in repr(n) and not repr(n).endswith(".0") for n in numbers if isinstance(n, float)):
        assert fast is not None  # strings alone never send it to the slow path


@settings(max_examples=500, deadline=None)
@given(
    text=st.binary(max_size=40)
    | st.lists(st.sampled_from([b"1", b"e", b"+", b"-", b"a", b'"', b"E"])).map(b"".join)
)
def test_exponent_in_is_the_exponent_pattern(text: bytes) -> None:
    assert audit._exponent_in(text) == bool(audit._EXPONENT.search(text))


def test_a_replay_command_with_prices_in_its_body_takes_the_fast_path() -> None:
    command = {"modifiedPayload": {"body": '{"unitPrice": 59.0, "qty": 1e-05}'}, "n": 3}
    assert audit._canonical_fast(command) == rfc8785.dumps(command)


# --------------------------------------------------------------------------- review s8 findings 3, 7


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(12, 40),
    every=st.integers(2, 10),
    data=st.data(),
    trusted=st.booleans(),
)
def test_a_forged_tail_after_a_dropped_checkpoint_is_never_ok(
    n: int, every: int, data: st.DataObject, trusted: bool
) -> None:
    """Finding 3: drop the newest checkpoints of an export, rewrite an event after the one left
    and re-chain from there: the bundle must not verify, with or without trusted keys, and the
    first bad seq is the first one no signature covers."""
    events, cps = make_log(n, every=every, head=True)
    keep = data.draw(st.integers(0, len(cps) - 1), label="checkpoints kept")
    kept = cps[:keep]
    anchored = kept[-1]["seq"] if kept else 0
    edit = data.draw(st.integers(anchored + 1, n), label="seq rewritten")
    body = [{k: v for k, v in e.items() if k not in ("prevHash", "hash")} for e in events]
    body[edit - 1] = {**body[edit - 1], "outcome": "FORGED", "detail": {"reason": "forged"}}
    forged = chain(body, TENANT)
    assert forged[: edit - 1] == events[: edit - 1]  # the signed part is untouched
    bundle = json.loads(json.dumps(make_bundle(forged, kept, [KEY_A, KEY_B])))
    result = verify_bundle(bundle, [KEY_A, KEY_B] if trusted else None)
    assert not result.ok, result
    expected = ("UNANCHORED", 1) if trusted and not kept else ("UNSIGNED_TAIL", anchored + 1)
    assert (result.reason, result.first_bad_seq) == expected, result
    if kept:
        assert result.anchored_seq == anchored
    # The same bundle with its checkpoints intact verifies; the untouched one too.
    assert verify_bundle(make_bundle(events, cps, [KEY_A, KEY_B]), [KEY_A, KEY_B]).ok
    # allow_unsigned_tail is the explicit way to accept the tail (the result says how far it is signed).
    lenient = verify_bundle(bundle, allow_unsigned_tail=True)
    assert lenient.ok and lenient.anchored_seq == anchored


@settings(max_examples=80, deadline=None)
@given(n=st.integers(20, 45), data=st.data(), how=st.sampled_from(["hash", "tenant", "signature_type"]))
def test_verify_names_the_earliest_bad_seq_when_a_checkpoint_is_malformed_too(
    n: int, data: st.DataObject, how: str
) -> None:
    """Finding 7: an edited event and a malformed checkpoint: the lower seq is reported."""
    events, cps = make_log(n, every=5, head=True)
    edit = data.draw(st.integers(1, n), label="seq edited")
    bad_index = data.draw(st.integers(0, len(cps) - 1), label="checkpoint malformed")
    events = [dict(e) for e in events]
    events[edit - 1]["outcome"] = "EDITED"
    cps = [dict(c) for c in cps]
    bad = cps[bad_index]
    if how == "hash":
        bad["hash"] = bad["hash"].upper()
    elif how == "tenant":
        bad["tenantId"] = "other"
    else:
        bad["signature"] = 7
    result = verify(events, cps, [KEY_A, KEY_B])
    assert not result.ok
    assert result.first_bad_seq == min(edit, bad["seq"]), (edit, bad["seq"], result)
    if edit < bad["seq"]:
        assert result.reason in ("HASH_MISMATCH", "CHECKPOINT_MISMATCH"), result
    else:
        assert result.reason in ("MALFORMED", "TENANT_MISMATCH"), result


# --------------------------------------------------------------------------- mutation-testing gaps
# Each test below fails on a mutant of moat_nb/audit.py that the tests above let through
# (hand mutation run, branch mut-s15): the mutant is named in the comment.


@pytest.fixture(params=["orjson", "stdlib"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both fast paths of canonical_json: orjson's and, without orjson, the C encoder's."""
    if request.param == "stdlib":
        monkeypatch.setattr(audit, "orjson", None)
    return str(request.param)


def test_both_fast_paths_keep_jcs_at_its_edges(fast_path: str) -> None:
    # _INT_MAX off by one on the stdlib path wrote 2**53, which JCS refuses (I-JSON).
    for edge in (2**53 - 1, -(2**53) + 1):
        assert canonical_json([edge]) == rfc8785.dumps([edge])
    for beyond in (2**53, -(2**53)):
        assert audit._canonical_fast([beyond]) is None
        with pytest.raises(RecordError):
            canonical_json({"n": [beyond]})
    # Without the astral check the stdlib path sorted code points: U+1F600 after U+FB33, where
    # JCS's UTF-16 order puts its surrogate pair D83D first (RFC 8785 3.2.3).
    astral = {"\ufb33": 1, "\U0001f600": 2}
    assert audit._canonical_fast(astral) in (None, rfc8785.dumps(astral))
    assert canonical_json(astral) == '{"\U0001f600":2,"\ufb33":1}'.encode()


def test_the_chain_functions_refuse_what_would_make_a_bad_link() -> None:
    first = append(None, raw_event(1))
    # event_hash without its hex check hashed an uppercase (or short) prev hash.
    for bad in (first["hash"].upper(), first["hash"][:63], 7):
        with pytest.raises(RecordError, match="prev_hash must be 64 lowercase hex"):
            event_hash(raw_event(2), bad)  # type: ignore[arg-type]
        with pytest.raises(RecordError, match="no valid hash"):
            append({**first, "hash": bad}, raw_event(2))
    # A prev event with seq 0 is no event: _check_event's seq >= 1 check guards it.
    with pytest.raises(RecordError, match="seq must be an integer >= 1"):
        append({**first, "seq": 0}, raw_event(1))
    # chain() must check its first event's tenant too (append only compares with the one before).
    with pytest.raises(RecordError, match="globex"):
        chain([raw_event(1, tenant="globex")], TENANT)
    with pytest.raises(RecordError, match="globex"):
        chain([raw_event(2, tenant="globex")], TENANT, prev=first)
    for seq in (0, -1, True, 1.0):
        with pytest.raises(RecordError, match="checkpoint seq"):
            sign_checkpoint(KEY_A, None, TENANT, seq, first["hash"], AT)  # type: ignore[arg-type]


def test_a_signature_respelt_in_non_canonical_base64_does_not_verify() -> None:
    """AUD-10: one changed character fails. The last character of the 88-character base64 of
    64 bytes carries 2 bits and 4 padding bits; setting a padding bit keeps the bytes."""
    events, cps = make_log(3, every=100)
    (cp,) = cps
    sig = cp["signature"]
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sloppy = sig[:-3] + alphabet[alphabet.index(sig[-3]) | 1] + "=="
    assert sloppy != sig and base64.b64decode(sloppy) == base64.b64decode(sig)
    result = verify(events, [{**cp, "signature": sloppy}], [KEY_A, KEY_B])
    assert (result.reason, result.first_bad_seq) == ("BAD_SIGNATURE", 3)


def test_verify_names_the_exact_reason_and_seq_for_malformed_input() -> None:
    events, cps = make_log(12, every=5)
    keys = [KEY_A, KEY_B]

    def found(*args: Any, **kw: Any) -> tuple[str | None, int | None]:
        result = verify(*args, **kw)
        assert not result.ok
        return result.reason, result.first_bad_seq

    # Events without any tenantId cannot start from a genesis: refused, not chained unanchored.
    bare = [{k: v for k, v in e.items() if k != "tenantId"} for e in events]
    assert found(bare, [], None) == ("MALFORMED", 1)
    # A checkpoint seq below 1 is malformed, not a mismatch against the genesis.
    for seq in (0, -3):
        assert found(events, [{**cps[0], "seq": seq}], keys) == ("MALFORMED", None)
    # A stored hash that is not lowercase hex is malformed, not a mismatch.
    upper = [dict(e) for e in events]
    upper[3]["hash"] = upper[3]["hash"].upper()
    assert found(upper, cps, keys) == ("MALFORMED", 4)
    # A range's start_prev_hash must be lowercase hex.
    start = events[5]["prevHash"]
    assert verify(events[5:], [], None, start_seq=6, start_prev_hash=start).ok
    assert found(events[5:], [], None, start_seq=6, start_prev_hash=start.upper()) == ("MALFORMED", None)
    # An unanchored range's first prevHash is taken only if it is lowercase hex.
    assert found([{**events[5], "prevHash": start.upper()}] + events[6:], [], None, start_seq=6) == (
        "MALFORMED",
        6,
    )
    # events as a string or an object are malformed input as a whole (no seq), not seq 1.
    for whole in ("events", {"seq": 1}, b"x"):
        assert found(whole, [], None) == ("MALFORMED", None)


def test_of_two_malformed_checkpoints_the_lower_seq_is_named() -> None:
    events, cps = make_log(20, every=5)  # checkpoints at 5, 10, 15, 20
    cps = [dict(c) for c in cps]
    cps[3]["hash"] = "X" * 64  # seq 20, listed first below
    cps[1]["tenantId"] = "globex"  # seq 10
    result = verify(events, [cps[3], cps[0], cps[1], cps[2]], [KEY_A, KEY_B])
    assert (result.reason, result.first_bad_seq, result.checked) == ("TENANT_MISMATCH", 10, 9)


def test_checkpoints_in_any_order_and_several_at_one_seq_verify() -> None:
    events, cps = make_log(30, every=10)
    keys = [KEY_A, KEY_B]
    shuffled = list(reversed(cps))
    result = verify(events, shuffled, keys)
    assert result.ok and result.checkpoints_checked == 3 and result.anchored_seq == 30
    # Both keys sign the head (a rotation's overlap): each checkpoint is checked, none is left over.
    both = sign_checkpoint(KEY_A, None, TENANT, 30, events[29]["hash"], AT)
    twice = verify(events, [*cps, both], keys)
    assert twice.ok and twice.checkpoints_checked == 4, twice
    forged = {**both, "at": "2026-11-26T13:09:45.000Z"}  # the signature no longer covers it
    assert verify(events, [*cps, forged], keys).reason == "BAD_SIGNATURE"


def test_a_checkpoint_beyond_the_head_must_be_genuine_to_claim_truncation() -> None:
    events, _ = make_log(30, every=100, head=False)
    evil = sign_checkpoint(KEY_EVIL, None, TENANT, 30, events[29]["hash"], AT)
    result = verify(events[:15], [evil], [KEY_A, KEY_B])
    assert (result.reason, result.first_bad_seq) == ("UNKNOWN_KEY", 30)
    genuine = sign_checkpoint(KEY_A, None, TENANT, 30, events[29]["hash"], AT)
    bad_sig = {**genuine, "hash": events[28]["hash"]}
    assert verify(events[:15], [bad_sig], [KEY_A]).reason == "BAD_SIGNATURE"
    assert verify(events[:15], [genuine], [KEY_A]).reason == "TRUNCATED"


def test_a_rewrite_after_a_matching_checkpoint_is_named_from_the_seq_after_it() -> None:
    events, cps = make_log(30, every=10)  # checkpoints at 10, 20, 30
    body = [{k: v for k, v in e.items() if k not in ("prevHash", "hash")} for e in events]
    body[14] = {**body[14], "outcome": "FORGED"}
    result = verify(chain(body, TENANT), cps, [KEY_A, KEY_B])
    assert (result.reason, result.first_bad_seq, result.anchored_seq) == ("CHECKPOINT_MISMATCH", 11, 10)


def test_a_range_starts_only_from_a_genuine_checkpoint_that_matches_it() -> None:
    events, cps = make_log(30, every=10, head=False)  # checkpoints at 10, 20, 30
    keys = [KEY_A, KEY_B]
    at_20 = cps[1]
    # A caller's start_prev_hash vouches for the range's start.
    start = events[19]["hash"]
    trusted = verify(events[20:25], [], None, start_seq=21, start_prev_hash=start)
    assert trusted.ok and trusted.anchored_seq == 20
    # ... and must agree with a checkpoint at the seq before the range.
    other = events[18]["hash"]
    relinked = chain(
        [{k: v for k, v in e.items() if k not in ("prevHash", "hash")} for e in events[20:25]],
        TENANT,
        prev={**events[19], "hash": other},
    )
    mismatch = verify(relinked, [at_20], keys, start_seq=21, start_prev_hash=other)
    assert (mismatch.reason, mismatch.first_bad_seq) == ("CHECKPOINT_MISMATCH", 21)
    # Without start_prev_hash the checkpoint is the start: a range linked elsewhere breaks.
    broken = verify(relinked, [at_20], keys, start_seq=21)
    assert (broken.reason, broken.first_bad_seq) == ("BROKEN_LINK", 21)
    # A checkpoint before the range is checked too: a forged anchor does not vouch for it.
    forged = sign_checkpoint(KEY_EVIL, None, TENANT, 20, other, AT)
    assert verify(relinked, [forged], keys, start_seq=21).reason == "UNKNOWN_KEY"
    re_signed = {**at_20, "at": "2026-11-26T13:09:45.000Z"}
    assert verify(events[20:25], [re_signed], keys, start_seq=21).reason == "BAD_SIGNATURE"


def test_an_unsigned_range_bundle_is_named_from_its_own_first_seq() -> None:
    events, _ = make_log(12, every=100, head=False)
    result = verify_bundle(make_bundle(events[5:], [], [KEY_A]))
    assert (result.reason, result.first_bad_seq) == ("UNSIGNED_TAIL", 6)


def test_a_bundle_names_its_events_tenant_even_without_checkpoints() -> None:
    events, _ = make_log(3, every=100, head=False)
    bundle = make_bundle(events, [], [])
    assert (bundle["tenantId"], bundle["startSeq"], bundle["publicKeys"]) == (TENANT, 1, {})
    globex, _ = make_log(2, tenant="globex", head=False)
    assert make_bundle(globex[1:], [], [KEY_A])["tenantId"] == "globex"
