"""What the audit log keeps outside the database (DESIGN.md section 7; security.md 1.2 lessons
2 and 3): the Ed25519 key that signs checkpoints with the public keys that verify them, and the
append-only file that holds every checkpoint again, so that whoever rewrites the database holds
neither the key nor the last word on where the chain ended.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import audit
from ..errors import MoatError, RecordError

try:  # POSIX: appends of several AuditLogs (one per tenant) to one file take turns
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process, one writer per file
    fcntl = None  # type: ignore[assignment]

__all__ = ["ANCHOR_FILE", "KEY_FILE", "PUBLIC_KEYS_FILE", "AnchorFile", "AuditKey", "signature_problem"]

KEY_FILE = Path("keys") / "audit.pem"
PUBLIC_KEYS_FILE = Path("keys") / "audit-public-keys.txt"
ANCHOR_FILE = Path("audit-checkpoints.jsonl")
log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------- the key


class AuditKey:
    """The Ed25519 key that signs checkpoints, and the public keys that verify them.

    ``trusted`` maps each key id to its public key (base64 DER): the current key and every key
    listed in the public keys file (keys used before a rotation).
    """

    def __init__(self, private_key: Ed25519PrivateKey, trusted: Mapping[str, str] | None = None) -> None:
        self.private_key = private_key
        self.key_id = audit.key_id_for(private_key)
        self.public_key_b64 = audit.public_key_b64(private_key)
        self.trusted: dict[str, str] = {**(trusted or {}), self.key_id: self.public_key_b64}

    @classmethod
    def load_or_create(cls, key_file: Path, public_keys_file: Path | None = None) -> AuditKey:
        """Load the PEM key at ``key_file`` (made, owner-only, if absent) and the trusted public
        keys listed in ``public_keys_file``, to which the current key is added if missing."""
        if key_file.exists():
            try:
                key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise MoatError(
                    f"{key_file}: not an unencrypted PEM private key ({exc})",
                    code="AUDIT_KEY_INVALID",
                    hint="restore the audit key; checkpoints signed by it cannot be checked without it",
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise MoatError(
                    f"{key_file}: the audit key is {type(key).__name__}, not Ed25519",
                    code="AUDIT_KEY_INVALID",
                    hint="checkpoints are signed with Ed25519: the file must hold an Ed25519 private key",
                )
        else:
            key = Ed25519PrivateKey.generate()
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
        trusted: dict[str, str] = {}
        if public_keys_file is not None and public_keys_file.exists():
            for number, line in enumerate(public_keys_file.read_text(encoding="ascii").splitlines(), 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    trusted[audit.key_id_for(text)] = text
                except RecordError:
                    raise MoatError(
                        f"{public_keys_file}:{number}: not an Ed25519 public key (base64 DER)",
                        code="AUDIT_KEY_INVALID",
                        hint="one base64 DER SubjectPublicKeyInfo per line; # starts a comment",
                    ) from None
        made = cls(key, trusted)
        if public_keys_file is not None and made.key_id not in trusted:
            public_keys_file.parent.mkdir(parents=True, exist_ok=True)
            with open(public_keys_file, "a", encoding="ascii") as fh:
                fh.write(f"# audit key {made.key_id}\n{made.public_key_b64}\n")
        return made

    def sign(self, tenant_id: str, seq: int, hash_: str, at: datetime) -> dict[str, Any]:
        return audit.sign_checkpoint(self.private_key, self.key_id, tenant_id, seq, hash_, at)


# --------------------------------------------------------------------------- the anchor file


class AnchorFile:
    """The append-only JSON-lines file of checkpoints outside the database."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoints: Sequence[Mapping[str, Any]]) -> None:
        """Append checkpoints, one line each, and fsync (an anchor that a power cut can lose
        would not be one). One ``write`` per batch on an ``O_APPEND`` descriptor.

        A last line without its newline is a write a crash cut short (:meth:`read` skips it);
        it is cut off first, or the new line would be glued to it and the file would read as
        edited from then on: a false tamper alarm after every power cut (review finding 5)."""
        if not checkpoints:
            return
        data = "".join(_dumps(dict(cp)) + "\n" for cp in checkpoints).encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
            self._cut_torn_line(fd)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _cut_torn_line(self, fd: int) -> None:
        """Truncate the file after its last newline if it does not end with one (a torn write).
        Only bytes :meth:`read` already ignores are removed, and the cut is logged."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:  # find the last newline, reading backwards in blocks
            begin = max(end - 65536, 0)
            block = os.pread(fd, end - begin, begin)
            at = block.rfind(b"\n")
            if at >= 0:
                end = begin + at + 1
                break
            end = begin
        os.ftruncate(fd, end)
        log.warning(
            "%s: cut %d bytes of a checkpoint line a crash left unfinished before appending",
            self.path, size - end,
        )  # fmt: skip

    def read(self) -> tuple[list[Any], list[str]]:
        """``(checkpoints, problems)``: every line's value, and a description of each line that
        is not a JSON object. A last line without its newline is a write cut short by a crash and
        is skipped; any other unreadable line is a problem (the file was edited)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], []
        lines = raw.split(b"\n")
        if lines and lines[-1] != b"":
            lines = lines[:-1]  # torn final write
        out: list[Any] = []
        problems: list[str] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                problems.append(f"{self.path.name} line {number} is not JSON")
                continue
            if not isinstance(value, dict):
                problems.append(f"{self.path.name} line {number} is not a JSON object")
                continue
            out.append(value)
        return out, problems


def signature_problem(cp: Mapping[str, Any], keys: Mapping[str, str]) -> str | None:
    """Why ``cp`` is not a validly signed checkpoint, or None (verify() on it alone)."""
    seq = cp.get("seq")
    if type(seq) is not int or seq < 1 or not isinstance(cp.get("tenantId"), str):
        return "malformed checkpoint"
    check = audit.verify([], [dict(cp)], keys, tenant_id=cp["tenantId"], start_seq=seq + 1)
    return None if check.ok else check.message
