"""What ``make demo`` tells its reader to run (moat_nb/demo.py). The demo itself runs end to
end in the notebook and report tests; here, only the check commands it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moat_nb import audit
from moat_nb.demo import check_commands

PUBLISHED = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
FORGER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _bundle(key: Ed25519PrivateKey) -> dict:
    raw = {
        "seq": 1,
        "eventId": "ev-1",
        "tenantId": "default",
        "occurredAt": "2026-11-26T10:00:00.000Z",
        "action": "REPLAY_STARTED",
        "actor": {"username": "alice", "roles": ["OPERATOR"], "permissions": []},
        "source": {"ip": None, "userAgent": None, "requestId": None, "client": None},
        "target": {"replayId": "replay-1", "sourceExchangeId": "ex-1", "routeId": "r", "environment": "dev"},
        "detail": {},
        "outcome": "STARTED",
    }
    events = audit.chain([raw], "default")
    cp = audit.sign_checkpoint(key, None, "default", 1, events[0]["hash"], "2026-11-26T11:00:00.000Z")
    return audit.make_bundle(events, [cp], [key])


def test_the_printed_audit_check_trusts_only_the_published_key(tmp_path: Path) -> None:
    # The demo printed "check it: moat-nb audit verify BUNDLE", which passes a bundle re-signed
    # with any key (its own keys are in it): an auditor following it was told OK.
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "audit-public-keys.txt").write_text(
        f"# audit key {audit.key_id_for(PUBLISHED)}\n{audit.public_key_b64(PUBLISHED)}\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key, code in ((PUBLISHED, 0), (FORGER, 1)):
        bundle = tmp_path / "audit-bundle.json"
        bundle.write_text(json.dumps(_bundle(key)))
        audit_check, report_check = check_commands(tmp_path / "out", bundle, data)
        run = subprocess.run(["bash", "-c", audit_check], env=env, capture_output=True, text=True)
        assert run.returncode == code, (audit_check, run.stdout, run.stderr)
    assert "--key" in report_check
