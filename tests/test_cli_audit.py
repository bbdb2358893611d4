"""``moat-nb audit verify BUNDLE.json [--key ...]`` (moat_nb/cli.py; DESIGN.md section 7;
security.md AUD-10): offline verification of an exported bundle, no database.

Bundles here are made with the audit core (the server's export is checked through the same
command in tests/sandbox/test_admin_api.py). Exit 0 when the bundle verifies, 1 with the first
bad seq and the reason, 2 for a usage error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moat_nb import audit
from moat_nb.cli import main

TENANT = "default"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
#: The console script pyproject.toml installs next to the interpreter.
COMMAND = str(Path(sys.executable).with_name("moat-nb"))


def make_bundle(n: int = 30, every: int = 10, key: Ed25519PrivateKey = KEY) -> dict[str, Any]:
    raw = [
        {
            "seq": i,
            "eventId": f"ev-{i}",
            "tenantId": TENANT,
            "occurredAt": f"2026-11-26T10:00:{i % 60:02d}.000Z",
            "action": "REPLAY_STARTED",
            "actor": {"username": "alice", "roles": ["OPERATOR"], "permissions": []},
            "source": {"ip": None, "userAgent": None, "requestId": None, "client": None},
            "target": {
                "replayId": f"replay-{i}",
                "sourceExchangeId": "ex-1",
                "routeId": "r",
                "environment": "dev",
            },
            "detail": {"durationMs": 1.5 * i, "note": "prüfen"},
            "outcome": "STARTED",
        }
        for i in range(1, n + 1)
    ]
    events = audit.chain(raw, TENANT)
    cps = [
        audit.sign_checkpoint(key, None, TENANT, e["seq"], e["hash"], "2026-11-26T11:00:00.000Z")
        for e in events
        if e["seq"] % every == 0 or e["seq"] == n
    ]
    return audit.make_bundle(events, cps, [key])


def write(tmp_path: Path, bundle: Any, name: str = "bundle.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(bundle) if not isinstance(bundle, str) else bundle, encoding="utf-8")
    return path


def test_a_good_bundle_exits_0_and_says_what_it_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, make_bundle())
    assert main(["audit", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {path}: 30 events (seq 1..30) and 3 checkpoints verify; signed up to seq 30")
    assert "pass --key" in out  # the bundle's own keys prove consistency, not who signed
    assert main(["audit", "verify", str(path), "--key", audit.public_key_b64(KEY)]) == 0
    assert "pass --key" not in capsys.readouterr().out


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, make_bundle())
    assert main(["audit", "verify", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["checked"] == 30 and result["headSeq"] == 30
    assert result["checkpoints"] == 3 and result["firstBadSeq"] is None and result["tenantId"] == TENANT
    assert result["startSeq"] == 1 and result["anchoredSeq"] == 30  # as the text output says


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"),
    [
        (lambda b: b["events"][11]["detail"].update(durationMs=1), 12, "HASH_MISMATCH"),
        (lambda b: b["events"].pop(4), 5, "SEQ_GAP"),
        (lambda b: b["events"].__setitem__(slice(25, None), []), 26, "TRUNCATED"),
        (lambda b: b["events"].insert(3, b["events"][7]), 4, "SEQ_GAP"),
        (lambda b: b["events"][20].update(prevHash="0" * 64), 21, "BROKEN_LINK"),
        (
            lambda b: b["checkpoints"][0].update(signature=b["checkpoints"][1]["signature"]),
            10,
            "BAD_SIGNATURE",
        ),
    ],
)
def test_a_tampered_bundle_exits_1_naming_the_seq_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Any, seq: int, reason: str
) -> None:
    bundle = make_bundle()
    tamper(bundle)
    path = write(tmp_path, bundle)
    assert main(["audit", "verify", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"FAILED: {path}: seq {seq}: {reason}: ")
    assert reason in captured.err  # the reason code explained on stderr


def test_keys_decide_who_is_trusted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = make_bundle(key=OTHER)  # consistent, but signed by someone else
    path = write(tmp_path, forged)
    assert main(["audit", "verify", str(path)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--key", audit.public_key_b64(KEY)]) == 1
    assert ": UNKNOWN_KEY: " in capsys.readouterr().out
    both = ["--key", audit.public_key_b64(KEY), "--key", audit.public_key_b64(OTHER)]
    assert main(["audit", "verify", str(path), *both]) == 0
    # One --key with the published keys file after a rotation: a key a line, and a comment.
    listed = f"# audit public keys\n{audit.public_key_b64(KEY)}\n{audit.public_key_b64(OTHER)}\n"
    assert main(["audit", "verify", str(path), "--key", listed]) == 0
    # An empty --key (the shell found no keys file) is refused, not read as "the bundle's own".
    capsys.readouterr()
    assert main(["audit", "verify", str(path), "--key", ""]) == 1
    assert "BAD_KEY" in capsys.readouterr().err


def test_unreadable_input_exits_1_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "missing": None,
        "not-json": "{not json",
        "duplicate": '{"format": "x", "format": "y"}',
        "nan": '{"format": NaN}',
        "not-a-bundle": "[1, 2]",
        "wrong-format": json.dumps({**make_bundle(), "format": "other/v9"}),
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.json" if text is None else write(tmp_path, text, f"{name}.json")
        code = main(["audit", "verify", str(path)])
        captured = capsys.readouterr()
        assert code == 1, name
        assert "Traceback" not in captured.err + captured.out
        assert captured.err.strip() or captured.out.startswith("FAILED"), name
    bad_key = write(tmp_path, make_bundle())
    assert main(["audit", "verify", str(bad_key), "--key", "not-a-key"]) == 1
    assert "BAD_KEY" in capsys.readouterr().err
    assert main(["audit", "verify"]) == 2  # usage


def test_the_installed_command_runs(tmp_path: Path) -> None:
    path = write(tmp_path, make_bundle())
    ok = subprocess.run(
        [COMMAND, "audit", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stderr
    bundle = make_bundle()
    bundle["events"][2]["outcome"] = "X"
    bad = subprocess.run(
        [COMMAND, "audit", "verify", str(write(tmp_path, bundle, "bad.json"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "seq 3: HASH_MISMATCH" in bad.stdout


@pytest.mark.parametrize("with_key", [True, False])
def test_a_forged_tail_after_a_dropped_checkpoint_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], with_key: bool
) -> None:
    """Review finding 3: drop the checkpoint at the head, rewrite seq 27 and re-chain: the
    events after the newest checkpoint (20) are reported, exit 1, one line, no traceback."""
    bundle = make_bundle()
    body = [{k: v for k, v in e.items() if k not in ("prevHash", "hash")} for e in bundle["events"]]
    body[26]["outcome"] = "FAILED"
    bundle["events"] = audit.chain(body, TENANT)
    bundle["checkpoints"] = [c for c in bundle["checkpoints"] if c["seq"] <= 20]
    path = write(tmp_path, bundle)
    args = ["audit", "verify", str(path)] + (["--key", audit.public_key_b64(KEY)] if with_key else [])
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"FAILED: {path}: seq 21: UNSIGNED_TAIL: seqs 21..30 come after")
    assert "(20 of 30 events are under a signed checkpoint)" in captured.out
    assert captured.err.strip().startswith("moat-nb: UNSIGNED_TAIL:") and "Traceback" not in captured.err
    assert main([*args, "--json"]) == 1
    wire = json.loads(capsys.readouterr().out)
    assert (wire["ok"], wire["reason"], wire["firstBadSeq"]) == (False, "UNSIGNED_TAIL", 21)


def test_what_cannot_be_verified_is_said_with_a_code_and_no_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by an audit walk: a bundle with no events array printed "seq None: MALFORMED", and a
    # missing or unreadable file was the only refusal with no code.
    bundle = {**make_bundle(), "events": None}
    assert main(["audit", "verify", str(write(tmp_path, bundle))]) == 1
    out = capsys.readouterr().out
    assert "None" not in out and ": MALFORMED: bundle events must be a JSON array" in out
    for path in (tmp_path / "missing.json", tmp_path):
        assert main(["audit", "verify", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"moat-nb: [NO_BUNDLE] cannot read {path}: ") and "Traceback" not in err


def test_a_bundle_no_trusted_checkpoint_covers_says_none_of_its_events_is_vouched_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by an audit walk: "seq 1: UNANCHORED: ... (30 of 30 events verified before it)".
    bundle = make_bundle()
    bundle["checkpoints"] = []
    assert main(["audit", "verify", str(write(tmp_path, bundle)), "--key", audit.public_key_b64(KEY)]) == 1
    out = capsys.readouterr().out
    assert ": seq 1: UNANCHORED: " in out and out.rstrip().endswith(
        "(0 of 30 events are under a signed checkpoint)"
    )
