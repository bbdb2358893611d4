"""Sandbox security: users, passwords, JWTs, roles and permissions, tenant tiers, signed agent
commands and secret redaction (DESIGN.md section 4 "Secrets", section 5 and section 6).

No HTTP here: the Starlette server calls these functions and turns the errors they raise
(classes from :mod:`moat_nb.errors`) into the ``{error, message, details}`` envelope. Every time
is handed in as an aware ``datetime`` (``now``), so tests drive expiry with a fixed clock.
Randomness (password salts, token ids, bootstrap tokens) is *not* handed in: it comes from
:mod:`secrets`, because a seeded source there would be a security bug, not a convenience.

Pieces, top to bottom:

* roles → permissions (section 6), default deny; ``replay:prod`` only by an explicit grant;
* passwords: scrypt, stored as ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, or Argon2id as
  its PHC string ``$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>``;
* the users file (TOML) and the four default users;
* :class:`Principal`, :func:`require`, :func:`replay_permissions`, :func:`check_tier`;
* :class:`Authority`: login, JWT access/refresh tokens (HS256, pyjwt), agent tokens;
* :class:`CommandSigner`, :func:`verify_command`, :class:`NonceCache`, :func:`check_command`:
  Ed25519 over RFC 8785 canonical JSON for the SSE command channel (section 5);
* :func:`is_secret_name`, :class:`Redactor`: ``[REDACTED:<16 hex of HMAC-SHA256>]``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import hmac
import ipaddress
import math
import os
import re
import secrets
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jwt
import rfc8785
from argon2 import low_level as _argon2
from argon2.exceptions import VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .. import payload as _payload
from ..audit import canonical_json
from ..errors import (
    AuthenticationError,
    PermissionDenied,
    RecordError,
    TierNotEntitled,
    ValidationError,
)
from ..model import ID_PATTERN, Payload, parse_time

__all__ = [
    "ACCESS_TTL",
    "ADMIN",
    "AGENT",
    "DEFAULT_USERS_TOML",
    "OPERATOR",
    "PERMISSIONS",
    "REFRESH_TTL",
    "REPLAY_TIERS",
    "ROLE_PERMISSIONS",
    "TIERS",
    "USER_ROLES",
    "VIEWER",
    "Authority",
    "CommandSigner",
    "LoginGuard",
    "NonceCache",
    "Principal",
    "Redactor",
    "Tenant",
    "TraceSecrets",
    "User",
    "UserTable",
    "check_command",
    "check_tier",
    "default_users",
    "hash_password",
    "is_prod",
    "is_secret_name",
    "load_users",
    "new_bootstrap_token",
    "parse_users",
    "replay_permissions",
    "require",
    "require_agent",
    "require_all",
    "verify_command",
    "verify_password",
]

# --------------------------------------------------------------------------- roles, permissions

VIEWER, OPERATOR, ADMIN, AGENT = "VIEWER", "OPERATOR", "ADMIN", "AGENT"
#: Roles a user may hold (Cameleer's, cameleer.md 4.2); ``AGENT`` is only ever in agent tokens.
USER_ROLES = (VIEWER, OPERATOR, ADMIN)
#: Every permission, in the order of the section 6 table (answers list them in this order).
PERMISSIONS = (
    "executions:read",
    "audit:read-own",
    "replay:run",
    "replay:modify",
    "audit:read",
    "replay:prod",
)
_READ = frozenset({"executions:read", "audit:read-own"})
#: Section 6, exactly. ``replay:prod`` is in no role (Datadog-style "sensitive" permission,
#: security.md 3): it reaches a user only through ``grants``. Anything absent is denied.
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        VIEWER: _READ,
        OPERATOR: _READ | {"replay:run", "replay:modify"},
        ADMIN: _READ | {"replay:run", "replay:modify", "audit:read"},
        AGENT: frozenset(),  # agents act through require_agent(), never through permissions
    }
)
TIERS = ("LOW", "MID", "HIGH", "BUSINESS")
#: Tiers entitled to Exchange Replay (section 6: LOW and MID get 403 TIER_NOT_ENTITLED).
REPLAY_TIERS = frozenset({"HIGH", "BUSINESS"})
#: Environment names that count as production. ``prod`` is the contract; ``production`` is
#: accepted too because over-matching only asks for *more* permission, never less.
_PROD_ENVIRONMENTS = frozenset({"prod", "production"})


def _ordered(perms: Iterable[str]) -> tuple[str, ...]:
    have = set(perms)
    return tuple(p for p in PERMISSIONS if p in have)


def _permissions_of(roles: Iterable[str], grants: Iterable[str]) -> tuple[str, ...]:
    out: set[str] = set(grants)
    for role in roles:
        out |= ROLE_PERMISSIONS.get(role, frozenset())
    return _ordered(out)


# --------------------------------------------------------------------------- passwords

# Two memory-hard KDFs, the two OWASP's Password Storage Cheat Sheet puts first, as section 6's
# `password_hash = "<argon2 or scrypt hash>"` allows:
#
# * scrypt, from the standard library (hashlib.scrypt, OpenSSL), for what the sandbox hashes
#   itself (clear `password` entries, hash-password's default): no native code of our own
#   choosing on the path every start-up takes. n=2**14, r=8, p=1 are the scrypt paper's
#   "interactive login" parameters (~16 MiB, ~40-70 ms here); OWASP suggests n=2**17 for
#   production, ~0.4 s per start-up and login on a two-core machine.
# * Argon2id (RFC 9106), through argon2-cffi, for hashes made elsewhere: it is what most
#   password tools and identity providers write today (`$argon2id$v=19$m=..,t=..,p=..$..`, the
#   PHC string format), and `hash-password --argon2` makes one with RFC 9106's second
#   recommended option (m=64 MiB, t=3, p=4; ~0.1 s here).
#
# A stored hash carries its own cost, and it is honoured; the users file is trusted to name a
# cost, not to name any cost: each scheme is bounded at load (256 MiB per login; ~4 s at most
# here) so that a typo in a users file cannot make every login take minutes or gigabytes.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
_MAX_SCRYPT_MEMORY = 256 * 2**20  # refuse hashes that would make one login allocate more
_HASH_FORMAT = "scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>"
#: argon2-cffi's default, RFC 9106 section 4's second recommended option (low memory).
ARGON2_T, ARGON2_M, ARGON2_P = 3, 64 * 1024, 4
_ARGON2_FORMAT = "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt base64>$<hash base64>"
#: The PHC string argon2-cffi and the reference implementation write (unpadded base64); the
#: digits are bounded so that int() never reads a page of them.
_ARGON2_PHC = re.compile(
    r"\$argon2id\$v=(\d{1,3})\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,10})"
    r"\$([A-Za-z0-9+/]{2,1024})\$([A-Za-z0-9+/]{2,1024})"
)
_MAX_ARGON2_MEMORY_KIB = _MAX_SCRYPT_MEMORY // 1024
#: memory x passes: eight passes over 256 MiB, ~2.5 s single-threaded here, as scrypt's
#: worst case within its memory bound (~4 s: n=2, r=1, p=2**21).
_MAX_ARGON2_WORK_KIB = 8 * _MAX_ARGON2_MEMORY_KIB
#: argon2-cffi runs one thread per lane: a login must not start thousands of threads.
_MAX_ARGON2_LANES = 64


def _scrypt_memory(n: int, r: int, p: int) -> int:
    # OpenSSL's EVP_PBE_scrypt needs 128*r*p bytes for B and 128*r*(n+2) for V.
    return 128 * r * (n + p + 2)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=dklen,
        maxmem=_scrypt_memory(n, r, p) + 2**20,
    )


def _b64_unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def hash_password(
    password: str,
    *,
    salt: bytes | None = None,
    n: int = SCRYPT_N,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
    scheme: Literal["scrypt", "argon2id"] = "scrypt",
) -> str:
    """Hash ``password`` for a users file: ``scrypt$16384$8$1$<salt b64>$<hash b64>``, or with
    ``scheme="argon2id"`` ``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>`` (``n``, ``r``, ``p``
    are scrypt's and ignored then).

    Standard base64 (padded for scrypt, unpadded in argon2's PHC string). ``salt`` defaults to
    16 random bytes. From a shell: ``python -m moat_nb.sandbox.security hash-password [--argon2]``.
    """
    if "\x00" in password:
        raise ValueError("a password may not contain NUL (scrypt would ignore trailing ones)")
    if not _encodable(password):
        raise ValueError("a password must be valid Unicode (it holds a lone surrogate)")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    if scheme == "argon2id":
        _check_argon2_params(19, ARGON2_M, ARGON2_T, ARGON2_P, salt, b"\0" * _KEY_BYTES)
        encoded = _argon2.hash_secret(
            password.encode("utf-8"),
            salt,
            time_cost=ARGON2_T,
            memory_cost=ARGON2_M,
            parallelism=ARGON2_P,
            hash_len=_KEY_BYTES,
            type=_argon2.Type.ID,
        )
        return encoded.decode("ascii")
    if scheme != "scrypt":
        raise ValueError(f"unknown scheme {scheme!r}; scrypt or argon2id")
    _check_scrypt_params(n, r, p, salt, b"\0" * _KEY_BYTES)
    key = _scrypt(password, salt, n, r, p, _KEY_BYTES)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(key).decode()}"


def _check_salt_and_key(salt: bytes, key: bytes) -> None:
    if len(salt) < 8:
        raise ValueError(f"salt is {len(salt)} bytes; use at least 8 (16 recommended)")
    if len(key) < 16:
        raise ValueError(f"hash is {len(key)} bytes; use at least 16")


def _check_scrypt_params(n: int, r: int, p: int, salt: bytes, key: bytes) -> None:
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt n={n} is not a power of two above 1")
    if r < 1 or p < 1:
        raise ValueError(f"scrypt r={r} and p={p} must be at least 1")
    if _scrypt_memory(n, r, p) > _MAX_SCRYPT_MEMORY:
        raise ValueError(f"scrypt n={n} r={r} p={p} needs more than 256 MiB per login")
    _check_salt_and_key(salt, key)


def _check_argon2_params(v: int, m: int, t: int, p: int, salt: bytes, key: bytes) -> None:
    if v != 19:
        raise ValueError(f"argon2 v={v}: only version 19 (0x13, RFC 9106) is accepted")
    if t < 1 or not 1 <= p <= _MAX_ARGON2_LANES:
        raise ValueError(f"argon2 t={t} must be at least 1 and p={p} within 1..{_MAX_ARGON2_LANES}")
    if m < 8 * p:
        raise ValueError(f"argon2 m={m} KiB is below 8 KiB per lane (p={p}; RFC 9106 3.1)")
    if m > _MAX_ARGON2_MEMORY_KIB:
        raise ValueError(f"argon2 m={m} KiB needs more than 256 MiB per login")
    if m * t > _MAX_ARGON2_WORK_KIB:
        raise ValueError(
            f"argon2 m={m} KiB x t={t} passes is more than {_MAX_ARGON2_WORK_KIB} KiB of work per "
            "login (a few seconds)"
        )
    _check_salt_and_key(salt, key)


def _b64decode_unpadded(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


#: What a stored hash costs to check: scheme, its cost parameters, salt and hash lengths.
_Cost = tuple[str, tuple[int, ...], int, int]


def _parse_hash(encoded: str) -> tuple[_Cost, bytes, bytes]:
    """Split and check a stored hash; its cost, salt and key, or ``ValueError`` saying what is
    wrong (a users file's ``password_hash`` is refused with that message at load)."""
    if isinstance(encoded, str) and encoded.startswith("$argon2"):
        match = _ARGON2_PHC.fullmatch(encoded)
        if match is None:
            raise ValueError(
                f"not of the form {_ARGON2_FORMAT} (only Argon2id is accepted, RFC 9106's "
                "recommendation; base64 without padding)"
            )
        v, m, t, p = (int(x) for x in match.group(1, 2, 3, 4))
        try:
            salt, key = (_b64decode_unpadded(match.group(i)) for i in (5, 6))
        except (ValueError, binascii.Error):
            raise ValueError(f"salt and hash must be base64 ({_ARGON2_FORMAT})") from None
        _check_argon2_params(v, m, t, p, salt, key)
        return ("argon2id", (v, m, t, p), len(salt), len(key)), salt, key
    parts = encoded.split("$") if isinstance(encoded, str) else []
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError(f"not of the form {_HASH_FORMAT} or {_ARGON2_FORMAT}")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"n, r, p must be integers and salt, hash base64 ({_HASH_FORMAT})") from None
    _check_scrypt_params(n, r, p, salt, key)
    return ("scrypt", (n, r, p), len(salt), len(key)), salt, key


def _password_matches(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a stored hash; ``ValueError`` if the hash is malformed (or
    argon2's own decoder refuses it: non-canonical base64, which the pattern lets by)."""
    cost, salt, key = _parse_hash(encoded)
    if not isinstance(password, str) or "\x00" in password or not _encodable(password):
        # scrypt's PBKDF2-HMAC pads the key with zero bytes, so "pw" and "pw\0" would give the
        # same hash; no password may contain NUL (hash_password refuses it too). A lone
        # surrogate (JSON allows "\ud800") has no UTF-8 bytes to hash: no password has one.
        return False
    scheme, params, _, _ = cost
    if scheme == "scrypt":
        n, r, p = params
        return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)
    try:
        # The C library compares in constant time (argon2_verify -> argon2_compare).
        return _argon2.verify_secret(encoded.encode("ascii"), password.encode("utf-8"), _argon2.Type.ID)
    except VerifyMismatchError:
        return False
    except VerificationError as exc:
        raise ValueError(f"argon2 refuses the hash: {exc}") from None


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches the stored hash; False for a wrong password or a bad hash.

    The final comparison is constant-time (``hmac.compare_digest``; argon2's own for argon2).
    """
    try:
        return _password_matches(password, encoded)
    except ValueError:
        return False


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dummy_hash(cost: _Cost) -> str:
    """A well-formed hash of no password anyone has, costing what ``cost`` costs: checked
    against when the user name is unknown, so that an unknown user costs the same KDF work as
    a wrong password (no user enumeration by timing; OWASP Authentication Cheat Sheet,
    "authentication responses"). The all-zero key is never a KDF's output in practice."""
    scheme, params, salt_len, key_len = cost
    salt = (b"moat-nb/no-user!" * (salt_len // 16 + 1))[:salt_len]
    if scheme == "argon2id":
        v, m, t, p = params
        return f"$argon2id$v={v}$m={m},t={t},p={p}${_b64_unpadded(salt)}${_b64_unpadded(bytes(key_len))}"
    n, r, p = params
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(bytes(key_len)).decode()}"


#: The dummy of a table of hashes made here (hash_password's scrypt defaults).
_DUMMY_HASH = _dummy_hash(("scrypt", (SCRYPT_N, SCRYPT_R, SCRYPT_P), _SALT_BYTES, _KEY_BYTES))

# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class Tenant:
    """The sandbox's one tenant: ``tenant = { id, tier }`` in the users file."""

    id: str = "default"
    tier: str = "HIGH"


@dataclass(frozen=True)
class User:
    """A user of the users table. The password exists only as its scrypt hash."""

    username: str
    password_hash: str = field(repr=False)
    roles: tuple[str, ...] = ()
    grants: tuple[str, ...] = ()
    #: True when the password equals the user name (the default users' scheme, like
    #: Cameleer's admin/admin development login).
    default_password: bool = False
    #: What the users file says the password is, stably: ``hash:`` and the stored hash, or
    #: ``clear:`` and the SHA-256 of a password written in clear (hashed afresh, with a new
    #: salt, at every start). Tokens carry a keyed mark of it (:meth:`Authority._password_mark`);
    #: empty: the hash is used.
    credential: str = field(default="", repr=False)

    @property
    def permissions(self) -> tuple[str, ...]:
        """Role permissions plus grants, in section 6 order."""
        return _permissions_of(self.roles, self.grants)

    def check_password(self, password: str) -> bool:
        return verify_password(password, self.password_hash)

    def to_wire(self) -> dict[str, Any]:
        """The ``user`` object of the login answer."""
        return {
            "username": self.username,
            "roles": list(self.roles),
            "permissions": list(self.permissions),
        }


@dataclass(frozen=True)
class UserTable:
    """The tenant and its users, as read from a users file (or the defaults)."""

    tenant: Tenant
    users: Mapping[str, User]
    #: Where the table came from, for messages: a file path or ``<built-in defaults>``.
    source: str = "<string>"
    #: What an unknown user name's login is checked against: a hash of no password, of the
    #: scheme and cost most of the users' hashes have (:func:`parse_users`).
    dummy_hash: str = field(default=_DUMMY_HASH, repr=False)

    def __iter__(self) -> Iterator[User]:
        return iter(self.users.values())

    def __len__(self) -> int:
        return len(self.users)

    def get(self, username: str) -> User | None:
        return self.users.get(username)

    @property
    def default_password_users(self) -> tuple[str, ...]:
        """Names of the users whose password is still their user name."""
        return tuple(u.username for u in self if u.default_password)

    @property
    def uses_default_passwords(self) -> bool:
        """True while any password equals its user name: the server must then bind loopback only."""
        return bool(self.default_password_users)

    def check_password(self, username: str, password: str) -> User:
        """The user, or ``AuthenticationError`` ``BAD_CREDENTIALS``.

        One message for an unknown user and a wrong password, and the same KDF work for both
        (:attr:`dummy_hash`), so that neither the answer nor its timing tells which user names
        exist.
        """
        user = self.users.get(username) if isinstance(username, str) else None
        ok = verify_password(password, user.password_hash if user else self.dummy_hash)
        if user is None or not ok:
            raise AuthenticationError(
                "wrong user name or password",
                code="BAD_CREDENTIALS",
                hint=f"check the credentials against the users file ({self.source})",
            )
        return user


#: The four default users of section 6; each password equals the user name.
DEFAULT_USERS_TOML = """\
tenant = { id = "default", tier = "HIGH" }

[users.admin]
password = "admin"
roles = ["ADMIN"]
grants = ["replay:prod"]

[users.operator]
password = "operator"
roles = ["OPERATOR"]
grants = []

[users.prod-operator]
password = "prod-operator"
roles = ["OPERATOR"]
grants = ["replay:prod"]

[users.analyst]
password = "analyst"
roles = ["VIEWER"]
grants = []
"""


@functools.cache
def default_users() -> UserTable:
    """The four default users (``admin``, ``operator``, ``prod-operator``, ``analyst``).

    Cached: the table is immutable and hashing four passwords costs ~0.3 s per call.
    """
    return parse_users(DEFAULT_USERS_TOML, source="<built-in defaults>")


def load_users(path: str | os.PathLike[str]) -> UserTable:
    """Read a users file (section 6 format); ``ValidationError`` ``USERS_FILE_INVALID`` if bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"{path}: cannot read the users file: {exc}",
            code="USERS_FILE_INVALID",
            hint="pass the path of a UTF-8 TOML file (the README's sandbox section shows one)",
            details={"file": str(path)},
        ) from None
    return parse_users(text, source=str(path))


def parse_users(text: str, *, source: str = "<string>") -> UserTable:
    """Parse a users file's text. Plain ``password`` values are hashed on the way in.

    Every problem raises ``ValidationError`` with code ``USERS_FILE_INVALID``, a message that
    starts with ``source`` and names the key (``users.bob.roles``), and a hint.
    """

    def bad(where: str, problem: str, hint: str) -> ValidationError:
        return ValidationError(
            f"{source}: {where}: {problem}" if where else f"{source}: {problem}",
            code="USERS_FILE_INVALID",
            hint=hint,
            details={"file": source, "key": where},
        )

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise bad("", f"not valid TOML ({exc})", "fix the TOML syntax at the line given") from None

    unknown = sorted(set(doc) - {"tenant", "users"})
    if unknown:
        raise bad(unknown[0], "unknown key", "the file has only `tenant` and `[users.NAME]` tables")

    raw_tenant = doc.get("tenant", {})
    if not isinstance(raw_tenant, dict) or set(raw_tenant) - {"id", "tier"}:
        raise bad(
            "tenant",
            "must be a table with only `id` and `tier`",
            'tenant = { id = "default", tier = "HIGH" }',
        )
    tenant_id = raw_tenant.get("id", "default")
    if not isinstance(tenant_id, str) or not ID_PATTERN.match(tenant_id):
        raise bad("tenant.id", f"{tenant_id!r} is not a valid id", "use 1-128 letters, digits and . _ : -")
    tier = raw_tenant.get("tier", "HIGH")
    if tier not in TIERS:
        raise bad("tenant.tier", f"bad tier {tier!r}", f"tier is one of {', '.join(TIERS)}")

    raw_users = doc.get("users")
    if not isinstance(raw_users, dict) or not raw_users:
        raise bad("users", "no users defined", "add at least one [users.NAME] table")

    users: dict[str, User] = {}
    for name, entry in raw_users.items():
        where = f"users.{name}"
        if not ID_PATTERN.match(name):
            raise bad(where, f"user name {name!r} is not valid", "use 1-128 letters, digits and . _ : -")
        if not isinstance(entry, dict):
            raise bad(where, "must be a table", f"write [users.{name}] with password and roles")
        extra = sorted(set(entry) - {"password", "password_hash", "roles", "grants"})
        if extra:
            raise bad(
                f"{where}.{extra[0]}", "unknown key", "a user has password | password_hash, roles, grants"
            )

        if ("password" in entry) == ("password_hash" in entry):
            raise bad(
                where,
                "needs exactly one of `password` and `password_hash`",
                "password_hash comes from `python -m moat_nb.sandbox.security hash-password`",
            )
        if "password" in entry:
            password = entry["password"]
            if not isinstance(password, str) or not password:
                raise bad(f"{where}.password", "must be a non-empty string", 'password = "..."')
            password_hash = hash_password(password)
            is_default = hmac.compare_digest(password.encode(), name.encode())
            # Not the hash: its salt is new at every start, and a restart would end every
            # session of the default users (found by the fresh-clone CI run).
            credential = "clear:" + hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()
        else:
            password_hash = entry["password_hash"]
            try:
                # Checking the name as the password runs the KDF once: argon2's decoder refuses
                # here, not at the first login, what the pattern let by.
                is_default = _password_matches(name, password_hash)
            except ValueError as exc:
                raise bad(
                    f"{where}.password_hash",
                    str(exc),
                    "scrypt and Argon2id hashes are accepted; make one with `python -m "
                    "moat_nb.sandbox.security hash-password [--argon2]`",
                ) from None
            credential = "hash:" + password_hash

        roles = entry.get("roles")
        if not isinstance(roles, list) or not all(isinstance(x, str) for x in roles):
            raise bad(f"{where}.roles", "must be a list of role names", 'roles = ["OPERATOR"]')
        for role in roles:
            if role not in USER_ROLES:
                raise bad(f"{where}.roles", f"unknown role {role!r}", f"roles are {', '.join(USER_ROLES)}")
        grants = entry.get("grants", [])
        if not isinstance(grants, list) or not all(isinstance(x, str) for x in grants):
            raise bad(f"{where}.grants", "must be a list of permissions", 'grants = ["replay:prod"]')
        for grant in grants:
            if grant not in PERMISSIONS:
                raise bad(
                    f"{where}.grants",
                    f"unknown permission {grant!r}",
                    f"permissions are {', '.join(PERMISSIONS)}",
                )

        users[name] = User(
            username=name,
            password_hash=password_hash,
            roles=tuple(dict.fromkeys(roles)),
            grants=_ordered(grants),
            default_password=is_default,
            credential=credential,
        )
    # An unknown name is checked against a hash of the cost most users' hashes have (on a tie,
    # the first user's): a file mixing schemes or costs leaves the others' timing apart.
    costs = Counter(_parse_hash(u.password_hash)[0] for u in users.values())
    return UserTable(
        tenant=Tenant(tenant_id, tier),
        users=MappingProxyType(users),
        source=source,
        dummy_hash=_dummy_hash(costs.most_common(1)[0][0]),
    )


# --------------------------------------------------------------------------- principals, authorization


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a user (from the current user table) or an agent."""

    username: str  # user name, or the agent's instanceId
    roles: tuple[str, ...]
    permissions: frozenset[str]
    kind: Literal["user", "agent"] = "user"
    #: The agent's environment (from its registration); None for users.
    env: str | None = None

    @property
    def subject(self) -> str:
        """The JWT ``sub``: ``user:<name>`` or ``agent:<instanceId>`` (cameleer.md 2.3)."""
        return f"{self.kind}:{self.username}"

    def has(self, permission: str) -> bool:
        return permission in self.permissions


def _grant_hint(permission: str) -> str:
    if permission == "replay:prod":
        return 'ask an admin to grant replay:prod (users file: grants = ["replay:prod"])'
    for role in USER_ROLES:
        if permission in ROLE_PERMISSIONS[role]:
            return f"ask an admin for the {role} role or a grant of {permission}"
    return f"{permission!r} is not a known permission; known: {', '.join(PERMISSIONS)}"


def require_all(principal: Principal, permissions: Iterable[str]) -> None:
    """Raise ``PermissionDenied`` (``FORBIDDEN``) naming every permission ``principal`` lacks.

    Default deny: an unknown permission is never held, so asking for one always fails.
    """
    needed = list(dict.fromkeys(permissions))
    missing = [p for p in needed if p not in PERMISSIONS or not principal.has(p)]
    if not missing:
        return
    raise PermissionDenied(
        f"{principal.subject} lacks permission {', '.join(missing)}",
        code="FORBIDDEN",
        hint="; ".join(_grant_hint(p) for p in missing),
        details={"missing": missing, "required": needed, "principal": principal.subject},
    )


def require(principal: Principal, permission: str) -> None:
    """Raise ``PermissionDenied`` (``FORBIDDEN``) unless ``principal`` holds ``permission``."""
    require_all(principal, [permission])


def require_agent(principal: Principal, instance_id: str | None = None) -> None:
    """Raise ``PermissionDenied`` unless ``principal`` is an agent (and, if given, that agent).

    For the agent endpoints (heartbeat, events, ack, chunks): an agent acts only for itself.
    """
    if principal.kind != "agent":
        raise PermissionDenied(
            f"{principal.subject} is not an agent",
            code="FORBIDDEN",
            hint="agent endpoints take the token from POST /agents/register",
            details={"principal": principal.subject},
        )
    if instance_id is not None and principal.username != instance_id:
        raise PermissionDenied(
            f"{principal.subject} cannot act for agent {instance_id!r}",
            code="FORBIDDEN",
            hint="use the agent's own id in the path",
            details={"principal": principal.subject, "instanceId": instance_id},
        )


def is_prod(environment: str | None) -> bool:
    """True for a production environment; an unknown (None or empty) one counts as production."""
    if not environment or not environment.strip():
        return True  # fail closed: an environment we cannot name needs the strongest permission
    return environment.strip().lower() in _PROD_ENVIRONMENTS


def replay_permissions(source_env: str | None, target_env: str | None, *, modified: bool) -> list[str]:
    """The permissions a replay needs (section 4 ``POST /replays``, section 6).

    ``replay:run``; plus ``replay:modify`` with a modifiedPayload; plus ``replay:prod`` when the
    source or the target environment is production.

    The caller must pass environments taken from *stored data*: ``source_env`` from the stored
    source execution, ``target_env`` from the registered environment of the chosen agent. Never
    a field of the request body (security.md RBAC-3: a body claiming ``dev`` for a prod exchange
    is treated as prod). None or empty counts as prod.
    """
    needed = ["replay:run"]
    if modified:
        needed.append("replay:modify")
    if is_prod(source_env) or is_prod(target_env):
        needed.append("replay:prod")
    return needed


def check_tier(tier: str) -> None:
    """Raise ``TierNotEntitled`` (403 ``TIER_NOT_ENTITLED``) unless ``tier`` includes replay."""
    if tier not in REPLAY_TIERS:
        raise TierNotEntitled(
            f"the tenant's tier {tier!r} does not include Exchange Replay",
            code="TIER_NOT_ENTITLED",
            hint="replay needs the HIGH or BUSINESS tier (users file: tenant.tier)",
            details={"tier": tier, "entitled": sorted(REPLAY_TIERS)},
        )


# --------------------------------------------------------------------------- tokens

ACCESS_TTL = timedelta(hours=1)  # cameleer.md 2.3: access 1 h, refresh 7 days
REFRESH_TTL = timedelta(days=7)
_ALGORITHMS = ["HS256"]  # the only algorithm accepted on decode: refuses alg=none and RS/HS confusion
#: How many verified tokens :class:`Authority` remembers (a few per user and agent are live at once).
_VERIFIED_TOKENS = 1024
_CLOCK_SKEW = 30  # seconds a token's iat may lie ahead of the handed-in clock
#: The longest exp - iat a token of each type may have: what :meth:`Authority._encode` gives it.
_LIFETIMES = {"access": int(ACCESS_TTL.total_seconds()), "refresh": int(REFRESH_TTL.total_seconds())}
_REQUIRED_CLAIMS = ["sub", "typ", "iat", "exp", "jti"]


def new_bootstrap_token() -> str:
    """A fresh random agent bootstrap token (256 bits, URL-safe) for the sandbox config."""
    return secrets.token_urlsafe(32)


def _epoch(now: datetime) -> float:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError("now must be an aware datetime, e.g. datetime.now(UTC)")
    return now.timestamp()


def _bearer(credentials: str | None) -> str:
    """The token from an ``Authorization`` value (``Bearer <t>``, RFC 6750 2.1) or a bare token."""
    missing = AuthenticationError(
        "no bearer token",
        code="UNAUTHORIZED",
        hint="send Authorization: Bearer <accessToken> (from POST /api/v1/auth/login)",
    )
    if not isinstance(credentials, str) or not credentials.strip():
        raise missing
    scheme, _, rest = credentials.strip().partition(" ")
    if scheme.lower() != "bearer":  # the auth-scheme is case-insensitive (RFC 9110 11.1)
        if not rest:
            return scheme  # a bare token: a JWT has no spaces, so it cannot be mistaken for a scheme
        raise AuthenticationError(
            f"unsupported authorization scheme {scheme!r}",
            code="UNAUTHORIZED",
            hint="send Authorization: Bearer <token>",
        )
    if not rest.strip():
        raise missing
    return rest.strip()


def _bad_token(message: str, hint: str = "log in again with POST /api/v1/auth/login") -> AuthenticationError:
    return AuthenticationError(message, code="BAD_TOKEN", hint=hint)


class Authority:
    """Issues and checks tokens for one user table, JWT secret and agent bootstrap token.

    ``users`` is a public attribute: the server may swap in a re-read table at any time, and
    the next request sees it (permissions are never taken from a token, see
    :meth:`authenticate`).
    """

    def __init__(self, users: UserTable, *, jwt_secret: bytes, bootstrap_token: str) -> None:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash output (32 bytes).
        if len(jwt_secret) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes (RFC 7518 section 3.2)")
        if len(bootstrap_token) < 16:
            raise ValueError("bootstrap_token must be at least 16 characters")
        self.users = users
        self._secret = bytes(jwt_secret)
        self._bootstrap = bootstrap_token
        # Tokens whose signature pyjwt already checked, with their claims: a token is sent with
        # every request, and checking an HS256 signature with pyjwt is most of authenticating.
        # The claims are a pure function of the token and the key; every other check (expiry,
        # type, the user or agent still existing) runs on each request as before.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verified_lock = threading.Lock()

    # ---------------------------------------------------------------- users

    def login(self, username: str, password: str, now: datetime) -> dict[str, Any]:
        """``POST /auth/login``: check the password, answer with :meth:`issue_tokens`."""
        return self.issue_tokens(self.users.check_password(username, password), now)

    def issue_tokens(self, user: User | str, now: datetime) -> dict[str, Any]:
        """``{accessToken, refreshToken, expiresIn, user:{username, roles, permissions}}``."""
        if isinstance(user, str):
            found = self.users.get(user)
            if found is None:
                raise AuthenticationError(f"no user {user!r}", code="BAD_CREDENTIALS")
            user = found
        subject = f"user:{user.username}"
        mark = {"pwd": self._password_mark(user)}
        return {
            "accessToken": self._access_token(
                subject, list(user.roles), list(user.permissions), None, now, mark
            ),
            "refreshToken": self._encode(subject, "refresh", REFRESH_TTL, now, mark),
            "expiresIn": int(ACCESS_TTL.total_seconds()),
            "user": user.to_wire(),
        }

    def refresh(self, credentials: str | None, now: datetime) -> dict[str, Any]:
        """``POST /auth/refresh``: a refresh token (user or agent) → ``{accessToken, expiresIn}``.

        The new access token carries the user's *current* roles and permissions. The refresh
        token is not rotated (as in Cameleer, cameleer.md 2.3); it lasts its 7 days.
        """
        claims = self._decode(_bearer(credentials), "refresh", now)
        principal = self._principal(claims)
        user = self.users.get(principal.username) if principal.kind == "user" else None
        return {
            "accessToken": self._access_token(
                principal.subject,
                list(principal.roles),
                list(_ordered(principal.permissions)),
                principal.env,
                now,
                {"pwd": self._password_mark(user)} if user is not None else None,
            ),
            "expiresIn": int(ACCESS_TTL.total_seconds()),
        }

    def authenticate(self, credentials: str | None, now: datetime) -> Principal:
        """The :class:`Principal` for an access token (``Authorization`` value or bare token).

        Raises ``AuthenticationError``: ``UNAUTHORIZED`` (no token), ``TOKEN_EXPIRED``,
        ``BAD_TOKEN`` (forged, wrong key, alg other than HS256, a refresh token, a user who no
        longer exists).

        Roles and permissions come from the user table *now*, not from the token's claims
        (which are there for clients to display): a revoked grant or role takes effect on the
        next request instead of when the token expires up to an hour later (security.md RBAC-7).
        """
        return self._principal(self._decode(_bearer(credentials), "access", now))

    def current(self, principal: Principal) -> Principal | None:
        """``principal`` as the user table has it *now* (its roles and permissions), or None
        for a user no longer in it: for what carries a principal past one request (a stream
        ticket), so that a revoked role or grant takes effect on the next request there too
        (security.md RBAC-7). An agent is returned as it is (agents are not in the table)."""
        if principal.kind != "user":
            return principal
        user = self.users.get(principal.username)
        if user is None:
            return None
        return Principal(user.username, user.roles, frozenset(user.permissions), "user", None)

    # ---------------------------------------------------------------- agents

    def check_bootstrap(self, credentials: str | None) -> None:
        """``POST /agents/register``: raise ``UNAUTHORIZED`` unless the bootstrap token matches.

        Constant-time comparison, as Cameleer's (cameleer.md 2.2); the 401 says nothing more.
        """
        try:
            token = _bearer(credentials)
        except AuthenticationError:
            token = ""
        if not hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            raise AuthenticationError(
                "bad bootstrap token",
                code="UNAUTHORIZED",
                hint="send Authorization: Bearer <bootstrap token from the sandbox config>",
            )

    def issue_agent_tokens(self, instance_id: str, environment: str, now: datetime) -> dict[str, Any]:
        """``{accessToken, refreshToken, expiresIn}`` for a registered agent (``sub`` =
        ``agent:<instanceId>``, role ``AGENT``, ``env``). The server adds ``serverPublicKey``."""
        for what, value in (("instanceId", instance_id), ("environmentId", environment)):
            if not isinstance(value, str) or not ID_PATTERN.match(value):
                raise ValidationError(
                    f"{what} {value!r} is not a valid id",
                    code="BAD_ID",
                    hint="ids are 1-128 characters of letters, digits and . _ : -",
                    details={"field": what},
                )
        subject = f"agent:{instance_id}"
        return {
            "accessToken": self._access_token(subject, [AGENT], [], environment, now),
            "refreshToken": self._encode(subject, "refresh", REFRESH_TTL, now, {"env": environment}),
            "expiresIn": int(ACCESS_TTL.total_seconds()),
        }

    # ---------------------------------------------------------------- internals

    def _access_token(
        self,
        subject: str,
        roles: list[str],
        permissions: list[str],
        env: str | None,
        now: datetime,
        more: Mapping[str, Any] | None = None,
    ) -> str:
        extra = {"roles": roles, "permissions": permissions, "env": env, **(more or {})}
        return self._encode(subject, "access", ACCESS_TTL, now, extra)

    def _password_mark(self, user: User) -> str:
        """16 hex of HMAC(JWT key, the user's password as the users file has it, ``User.
        credential``), the ``pwd`` claim of a user's tokens: a new password (or a new hash of
        it) gives a new mark, so tokens issued before it stop working at once, refresh tokens
        included, rather than for up to their 7 days (OWASP Session Management: invalidate
        sessions on a password change); a restart with the same file keeps them. Keyed, so a
        token's reader learns nothing of the password."""
        source = user.credential or "hash:" + user.password_hash
        digest = hmac.new(self._secret, b"moat/password/v1\0" + source.encode(), "sha256")
        return digest.hexdigest()[:16]

    def _encode(self, subject: str, typ: str, ttl: timedelta, now: datetime, extra: dict[str, Any]) -> str:
        iat = int(_epoch(now))
        claims = {
            "sub": subject,
            **extra,
            "typ": typ,
            "iat": iat,
            "exp": iat + int(ttl.total_seconds()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _decode(self, token: str, typ: str, now: datetime) -> dict[str, Any]:
        t = _epoch(now)
        with self._verified_lock:
            cached = self._verified.get(token)
        if cached is not None:
            claims = dict(cached)
        else:
            try:
                # pyjwt checks the signature and the algorithm allow-list; exp/iat/nbf are
                # checked below against the handed-in clock (pyjwt would read time.time()).
                claims = jwt.decode(
                    token,
                    self._secret,
                    algorithms=_ALGORITHMS,
                    options={
                        "verify_exp": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                        "require": _REQUIRED_CLAIMS,
                    },
                )
            except jwt.InvalidTokenError as exc:
                raise _bad_token(f"invalid token: {exc}") from None
            with self._verified_lock:
                self._verified[token] = dict(claims)
                while len(self._verified) > _VERIFIED_TOKENS:
                    self._verified.popitem(last=False)
        exp, iat = claims["exp"], claims["iat"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
            raise _bad_token("invalid token: iat and exp must be integers")
        if claims["typ"] != typ:
            where = "POST /api/v1/auth/refresh" if claims["typ"] == "refresh" else "the Authorization header"
            raise _bad_token(
                f"a {claims['typ']!r} token was sent where an {typ!r} token is needed",
                hint=f"send the {claims['typ']} token to {where}",
            )
        if t >= exp:  # RFC 7519 4.1.4: valid only *before* exp
            raise AuthenticationError(
                f"the {typ} token expired",
                code="TOKEN_EXPIRED",
                hint="refresh it with POST /api/v1/auth/refresh"
                if typ == "access"
                else "log in again with POST /api/v1/auth/login",
            )
        if iat > t + _CLOCK_SKEW:
            raise _bad_token("invalid token: issued in the future")
        # Found probing: nbf was never looked at (pyjwt's check is off, for the handed-in
        # clock), so a token "not before" next year was taken today; RFC 7519 4.1.5: it MUST
        # NOT be accepted before then. The sandbox issues none, but one that has it is held to it.
        nbf = claims.get("nbf")
        if nbf is not None:
            if not isinstance(nbf, int) or isinstance(nbf, bool):
                raise _bad_token("invalid token: nbf must be an integer")
            if nbf > t + _CLOCK_SKEW:
                raise _bad_token("invalid token: not valid yet (nbf)")
        # Nor did anything bound exp: a token signed with a lifetime of years passed. Every
        # token is issued with exactly its type's lifetime (1 h access, 7 days refresh,
        # cameleer.md 2.3), so a longer one was not issued by these rules.
        if exp - iat > _LIFETIMES[typ]:
            raise _bad_token(f"invalid token: it lasts longer than an {typ} token may")
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        kind, _, name = str(claims["sub"]).partition(":")
        if kind == "user":
            user = self.users.get(name)
            if user is None:
                raise _bad_token(f"user {name!r} no longer exists")
            if not hmac.compare_digest(str(claims.get("pwd", "")), self._password_mark(user)):
                raise _bad_token(
                    f"the password of user {name!r} changed since this token was issued "
                    "(or the token predates password marks)"
                )
            return Principal(name, user.roles, frozenset(user.permissions), "user", None)
        env = claims.get("env")
        if kind == "agent" and ID_PATTERN.match(name) and isinstance(env, str):
            # Agents are not in the user table: their identity and environment are what the
            # server signed at registration; whether the agent is still registered is the
            # server's registry's question.
            return Principal(name, (AGENT,), ROLE_PERMISSIONS[AGENT], "agent", env)
        raise _bad_token(f"invalid token: subject {claims['sub']!r}")


# --------------------------------------------------------------------------- command signing


def canonical_command(command: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes of ``command`` without its ``signature`` field: what is signed.

    Raises ``RecordError`` (``NOT_CANONICAL``) for values JCS refuses: NaN, infinities and
    integers beyond ±(2**53 - 1) (security.md 1.2 item 4: rejected, never silently rounded).
    Through :func:`moat_nb.audit.canonical_json`: its orjson path gives rfc8785's bytes (proven
    by tests/test_audit.py) in a tenth of the time, and a replay command, which carries the
    payload and the stub replies, is signed by the server and verified by the agent each time.
    """
    body = {k: v for k, v in command.items() if k != "signature"}
    try:
        return canonical_json(body)
    except RecordError as exc:
        raise RecordError(
            f"command cannot be canonicalised (RFC 8785): {exc.message}",
            code="NOT_CANONICAL",
            hint="use finite numbers and integers within ±(2**53 - 1)",
        ) from None


class CommandSigner:
    """The server's Ed25519 key for signing commands on the SSE channel (section 5).

    Keep the key in a PEM file outside the database (security.md 1.2 item 3), e.g. with
    :meth:`load_or_create`.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._public_b64 = base64.b64encode(der).decode("ascii")

    @classmethod
    def generate(cls) -> CommandSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<pem>") -> CommandSigner:
        """From an unencrypted PKCS#8 PEM private key."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValidationError(
                f"{source}: not an unencrypted PEM private key ({exc})",
                code="SIGNING_KEY_INVALID",
                hint="delete the file to have a new key made, or write one with CommandSigner.private_pem()",
                details={"file": source},
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValidationError(
                f"{source}: the key is {type(key).__name__}, not Ed25519",
                code="SIGNING_KEY_INVALID",
                hint="command signatures are Ed25519: the file must hold an Ed25519 private key (PEM)",
                details={"file": source},
            )
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CommandSigner:
        return cls.from_pem(Path(path).read_bytes(), source=str(path))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> CommandSigner:
        """Load the key at ``path``, or make one and write it there readable by the owner only."""
        p = Path(path)
        if p.exists():
            return cls.load(p)
        signer = cls.generate()
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(signer.private_pem())
        return signer

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_key_b64(self) -> str:
        """Base64 of the DER SubjectPublicKeyInfo: ``serverPublicKey`` of ``/agents/register``."""
        return self._public_b64

    def sign(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``command`` with ``signature`` = base64 Ed25519 over :func:`canonical_command`.

        Any ``signature`` already present is replaced (it is never part of the signed bytes).
        """
        signature = self._key.sign(canonical_command(command))
        out = {k: v for k, v in command.items() if k != "signature"}
        out["signature"] = base64.b64encode(signature).decode("ascii")
        return out


@functools.lru_cache(maxsize=32)
def _public_key(public_key_b64: str) -> Ed25519PublicKey | None:
    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64, validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def verify_command(command: Any, public_key_b64: str) -> bool:
    """True iff ``command`` carries a valid ``signature`` by the key ``public_key_b64``.

    Never raises: a missing or malformed signature, a bad key or a value JCS refuses is False.
    The signature must be the canonical base64 of 64 bytes, so that no two signature strings
    verify for one command (Python's decoder would otherwise ignore non-zero padding bits).
    """
    if not isinstance(command, Mapping) or not isinstance(command.get("signature"), str):
        return False
    key = _public_key(public_key_b64) if isinstance(public_key_b64, str) else None
    if key is None:
        return False
    text = command["signature"]
    try:
        signature = base64.b64decode(text, validate=True)
        payload = canonical_command(command)
    except (binascii.Error, ValueError, TypeError, RecordError):
        return False
    if len(signature) != 64 or base64.b64encode(signature).decode("ascii") != text:
        return False
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # not an IP address (a test client's "testclient", a socket path)
        return False


class LoginGuard:
    """Failed logins per user name and per client address, in a sliding window of ``window``
    seconds: the anti-automation a password login needs (ASVS 4.0.3 V2.2.1; security.md).

    A user name with ``attempts`` failures in the window, or an address with ``4 * attempts``
    (one address trying many names), is refused without its password being checked until the
    oldest of those failures leaves the window: :meth:`retry_after` says how many seconds.
    The machine's own addresses (loopback) are not limited as addresses: every user of a
    sandbox on 127.0.0.1 comes from there, and 20 wrong logins by anyone (a notebook looping
    with a bad MOAT_PASSWORD) locked every user out for 5 minutes (review finding). Their
    user names are still limited.

    Logins in flight (their password being checked) hold a slot each: a name (or address) may
    have at most ``attempts - failures`` of them at once (:meth:`begin`), so that concurrent
    guesses cannot all pass the check before the first of them has failed. A slot is not a
    failure: a right password gives it back (:meth:`succeeded`), so correct logins never use
    up the budget, however many arrive together (review finding: counted as failures until
    proved right, five right logins in one scrypt time gave the sixth a 429). A login finding
    every slot held waits for one (the server polls :meth:`begin`) instead of being refused.

    A successful login clears its user name's failures (not its address's). Bounded: at most
    ``max_keys`` names and addresses are remembered, the least recently failed forgotten first.
    Thread-safe; times come from ``clock`` (monotonic seconds), so tests can move it.
    """

    def __init__(
        self,
        *,
        attempts: int = 5,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if attempts < 1 or window <= 0:
            raise ValueError("LoginGuard: attempts must be >= 1 and window positive")
        self.attempts = attempts
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        #: Logins in flight per name and address (the slots :meth:`begin` handed out).
        self._pending: dict[tuple[str, str], int] = {}
        #: Ticket -> the keys its slot holds (a name's address may not be known at the end).
        self._tickets: dict[int, tuple[tuple[str, str], ...]] = {}
        self._next_ticket = 1
        self._lock = threading.Lock()

    def _limits(self, username: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("user", username[:128]), self.attempts)]
        if address and not _is_loopback(address):
            keys.append((("address", address), 4 * self.attempts))
        return keys

    def _live(self, key: tuple[str, str], now: float) -> deque[float] | None:
        """The failures of ``key`` still in the window (older ones dropped), or None."""
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> int | None:
        times = self._live(key, now)
        if times is None or len(times) < limit:
            return None
        return max(1, math.ceil(times[-limit] + self.window - now))

    def retry_after(self, username: str, address: str | None) -> int | None:
        """Seconds until this user name may try again from ``address``, or None: it may now."""
        now = self.clock()
        with self._lock:
            waits = [
                w for key, limit in self._limits(username, address) if (w := self._wait(key, limit, now))
            ]
        return max(waits) if waits else None

    def begin(self, username: str, address: str | None) -> tuple[int | None, int | None]:
        """Check an attempt and take a slot for it in one step (one lock), so that concurrent
        logins cannot all pass the check before any of them has failed.

        ``(seconds, None)``: refused, the name or address must wait (nothing taken).
        ``(None, None)``: busy, every slot its failures leave is held by a login in flight;
        ask again once one of them ends. ``(None, ticket)``: admitted; end it with
        :meth:`failed`, :meth:`succeeded` or :meth:`release`, passing ``ticket``.
        """
        now = self.clock()
        with self._lock:
            limits = self._limits(username, address)
            waits = [w for key, limit in limits if (w := self._wait(key, limit, now))]
            if waits:
                return max(waits), None
            for key, limit in limits:
                times = self._failures.get(key)
                if (len(times) if times else 0) + self._pending.get(key, 0) >= limit:
                    return None, None
            ticket = self._next_ticket
            self._next_ticket += 1
            keys = tuple(key for key, _ in limits)
            for key in keys:
                self._pending[key] = self._pending.get(key, 0) + 1
            self._tickets[ticket] = keys
        return None, ticket

    def in_flight(self, username: str, address: str | None = None) -> int:
        """Logins of this name (or, given, address) whose password is being checked now."""
        key = ("user", username[:128]) if address is None else ("address", address)
        with self._lock:
            return self._pending.get(key, 0)

    def _end(self, ticket: int | None) -> None:
        """Give back the slot of ``ticket`` (under the lock); unknown or None: nothing."""
        if ticket is None:
            return
        for key in self._tickets.pop(ticket, ()):
            left = self._pending.get(key, 0) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    def _count(self, username: str, address: str | None, now: float) -> None:
        for key, _ in self._limits(username, address):
            self._failures.setdefault(key, deque()).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def failed(self, username: str, address: str | None, ticket: int | None = None) -> int | None:
        """Count a failed login (ending the slot of ``ticket``, when :meth:`begin` gave one);
        the seconds it now has to wait (it reached the limit), or None."""
        now = self.clock()
        with self._lock:
            self._end(ticket)
            self._count(username, address, now)
        return self.retry_after(username, address)

    def succeeded(self, username: str, address: str | None = None, ticket: int | None = None) -> None:
        """Forget the user name's failures (a login with the right password) and give back
        the slot of ``ticket``: a right password counts against neither name nor address."""
        with self._lock:
            self._end(ticket)
            self._failures.pop(("user", username[:128]), None)

    def release(self, ticket: int | None) -> None:
        """Give back the slot of ``ticket`` without counting anything (the password was not
        checked: the request failed otherwise)."""
        with self._lock:
            self._end(ticket)


class NonceCache:
    """Nonces of accepted commands, each kept until its command's ``expiresAt``.

    Bounded in time and size. A nonce is forgotten only once its command has expired, when the
    expiry check refuses the command anyway; :func:`check_command` therefore refuses commands
    that expire more than ``max_ttl`` ahead, and a full cache refuses new nonces instead of
    evicting live ones (evicting would let a replayed command through). Only the server can
    sign commands, so filling the cache takes the server's own key. Not thread-safe: one per
    agent, used from its event loop.
    """

    def __init__(self, *, max_size: int = 10_000, max_ttl: timedelta = timedelta(minutes=10)) -> None:
        self.max_size = max_size
        self.max_ttl = max_ttl
        self._until: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._until

    def purge(self, now: datetime) -> None:
        """Forget nonces whose commands have expired."""
        while self._heap and self._heap[0][0] <= now:
            until, nonce = heapq.heappop(self._heap)
            if self._until.get(nonce) == until:
                del self._until[nonce]

    def claim(self, nonce: str, until: datetime, now: datetime) -> str | None:
        """Record ``nonce`` until ``until``; None if fresh, else the reason to refuse."""
        self.purge(now)
        if nonce in self._until:
            return f"nonce {nonce!r} was already used"
        if len(self._until) >= self.max_size:
            return f"nonce cache full ({self.max_size} live commands); retry later"
        self._until[nonce] = until
        heapq.heappush(self._heap, (until, nonce))
        return None


def check_command(command: Any, public_key_b64: str, now: datetime, nonces: NonceCache) -> str | None:
    """Why an agent must refuse ``command`` (ack ``FAILURE`` with it as message), or None.

    In order: a bad signature; a missing or past ``expiresAt`` (RFC 3339); an ``expiresAt``
    beyond ``nonces.max_ttl``; a missing or reused ``nonce``. The nonce is recorded only for
    a command that passed the other checks, so an unsigned message cannot burn a nonce.
    """
    if not isinstance(command, Mapping):
        return "command is not a JSON object"
    if not verify_command(command, public_key_b64):
        return "bad signature"
    try:
        expires_at = parse_time(command.get("expiresAt"))
    except RecordError:
        expires_at = None
    if expires_at is None:
        return "missing or malformed expiresAt (RFC 3339 time expected)"
    if now >= expires_at:
        return f"expired at {command['expiresAt']}"
    if expires_at - now > nonces.max_ttl:
        return f"expiresAt {command['expiresAt']} is more than {nonces.max_ttl} ahead"
    nonce = command.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        return "missing nonce"
    return nonces.claim(nonce, expires_at, now)


# --------------------------------------------------------------------------- secret redaction

# The rules (which names are secret, what a marker looks like, how mappings, bodies and patches
# are walked) live in the pure core, moat_nb.payload, so that the client, the store and the
# audit log agree on them; this is the server side that holds the key.
is_secret_name = _payload.is_secret_name


class Redactor:
    """Replaces secret values with ``[REDACTED:<first 16 hex of HMAC-SHA256(key, value)>]``.

    The keyed fingerprint lets an auditor see that a secret changed (or did not) between the
    original and the replay without a dictionary attack on short secrets (security.md 6).
    Hand :meth:`value` to the ``mask`` argument of the :mod:`moat_nb.payload` redactors
    (``redact_patch(patch, redactor.value)``).
    """

    def __init__(self, server_key: bytes) -> None:
        if len(server_key) < 16:
            raise ValueError("server_key must be at least 16 bytes")
        self._key = bytes(server_key)

    def value(self, value: Any) -> Any:
        """The marker for ``value``: a string's UTF-8 bytes are fingerprinted, anything else
        its RFC 8785 JSON. None stays None (nothing to hide) and a marker stays as it is, so
        redacting twice (store, then stream) changes nothing."""
        try:
            return _payload.redact_value(self._key, value)
        except (rfc8785.CanonicalizationError, TypeError):
            # A live exchange property may hold a non-JSON object; fingerprint its repr rather
            # than let the secret through or fail the trace.
            return _payload.redact_value(self._key, repr(value))

    def name_fingerprint(self, name: str) -> str:
        """16 hex of HMAC-SHA256(key, ``"moat/login-name/v1\\0"`` + name): how a user name that
        is no user's is written to the audit log (``LOGIN_FAILED``). Such a name is often a
        password typed into the wrong field (OWASP Logging Cheat Sheet: do not log it in
        clear), yet an auditor must still see the same unknown name tried again and again.
        Keyed, so that a reader of the log or of an export cannot test guesses against it;
        domain-separated from :meth:`value`, so that it never equals a payload's marker of
        the same text."""
        digest = hmac.new(
            self._key, b"moat/login-name/v1\0" + name.encode("utf-8", "surrogatepass"), "sha256"
        )
        return digest.hexdigest()[:16]

    def mapping(self, values: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A copy with the value of every secret-named key redacted, at any depth of nested
        mappings and lists (a property may hold a map with a ``password`` inside)."""
        return _payload.redact_mapping(values, self.value)

    def headers(self, headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Message headers with secrets redacted."""
        return self.mapping(headers)

    def properties(self, properties: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Exchange properties with secrets redacted."""
        return self.mapping(properties)

    def payload(self, payload: Payload) -> Payload:
        """A start payload with secret headers, properties and JSON body fields redacted."""
        return _payload.redact_payload(payload, self.value)


class TraceSecrets:
    """The secret values each multi-chunk execution's trace has shown, so that its later chunks
    are scrubbed of them too.

    Redaction finds a secret by its name (a header ``X-Api-Key``) and then looks for its value
    in the chunk's texts, where no name says it is one (a body the route built from the header,
    an error message). A trace of more than 200 processors or 512 KB comes in several chunks,
    and the header can sit in one while the body that echoes it comes in the next: the values
    are remembered per execution. They are kept past the final chunk, since a chunk sent again
    (a lost 202) must be redacted as it was the first time, and dropped oldest first beyond
    ``capacity`` executions, so that traces whose final chunk never comes (an agent that died)
    cannot grow it. In memory only, as a replay's payload secrets are while it runs; a single
    chunk trace takes no room. Chunks are scrubbed in the order they arrive, which is the order
    an agent sends them.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()  # live chunks are redacted on several threadpool threads

    def get(self, execution_id: str) -> frozenset[str]:
        """The values shown so far by ``execution_id``'s earlier chunks (empty when none)."""
        with self._lock:
            return self._values.get(execution_id, frozenset())

    def remember(self, execution_id: str, values: Iterable[str]) -> None:
        """Add what a chunk showed (before it is stored: a retry of it finds them too)."""
        with self._lock:
            merged = self._values.pop(execution_id, frozenset()).union(values)
            if merged:
                self._values[execution_id] = merged
                while len(self._values) > self._capacity:
                    self._values.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m moat_nb.sandbox.security hash-password [--argon2]``: print a
    ``password_hash`` line (scrypt, or Argon2id with ``--argon2``).

    Reads the password without echo from a terminal, or one line from standard input.
    """
    args = sys.argv[1:] if argv is None else argv
    if args not in (["hash-password"], ["hash-password", "--argon2"]):
        print("usage: python -m moat_nb.sandbox.security hash-password [--argon2]", file=sys.stderr)
        return 2
    scheme: Literal["scrypt", "argon2id"] = "argon2id" if "--argon2" in args else "scrypt"
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    try:
        encoded = hash_password(password, scheme=scheme)
    except ValueError as exc:  # NUL or a lone surrogate: say so, no traceback
        print(exc, file=sys.stderr)
        return 1
    print(f'password_hash = "{encoded}"')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
