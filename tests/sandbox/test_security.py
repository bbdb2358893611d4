"""Tests for moat_nb.sandbox.security against DESIGN.md sections 4 ("Secrets"), 5 and 6."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import json
import math
import os
import re
import stat
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import rfc8785
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from moat_nb.errors import (
    AuthenticationError,
    PermissionDenied,
    RecordError,
    TierNotEntitled,
    ValidationError,
)
from moat_nb.model import Payload
from moat_nb.sandbox import security as sec
from moat_nb.sandbox.security import (
    Authority,
    CommandSigner,
    NonceCache,
    Principal,
    Redactor,
    UserTable,
    check_command,
    check_tier,
    hash_password,
    is_secret_name,
    parse_users,
    replay_permissions,
    require,
    require_agent,
    require_all,
    verify_command,
    verify_password,
)

T0 = datetime(2026, 11, 26, 13, 0, 0, tzinfo=UTC)
SECRET = b"jwt-secret-for-tests-0123456789abcdef"
BOOT = "bootstrap-0123456789abcdef"
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Section 6, transcribed by hand: permission -> roles that hold it. replay:prod is in no role.
SPEC = {
    "executions:read": {"VIEWER", "OPERATOR", "ADMIN"},
    "audit:read-own": {"VIEWER", "OPERATOR", "ADMIN"},
    "replay:run": {"OPERATOR", "ADMIN"},
    "replay:modify": {"OPERATOR", "ADMIN"},
    "audit:read": {"ADMIN"},
    "replay:prod": set(),
}


def fast_hash(password: str) -> str:
    # Tiny scrypt parameters keep the suite fast; the format and the code path are the same.
    return hash_password(password, n=16, r=1, p=1)


def users_toml(*users: tuple[str, str, list[str], list[str]], tier: str = "HIGH") -> str:
    lines = [f'tenant = {{ id = "t1", tier = "{tier}" }}']
    for name, password, roles, grants in users:
        lines += [
            f"[users.{name}]",
            f'password_hash = "{fast_hash(password)}"',
            f"roles = {json.dumps(roles)}",
            f"grants = {json.dumps(grants)}",
        ]
    return "\n".join(lines) + "\n"


# One user per role, with and without the replay:prod grant, plus one with no role at all.
MATRIX = parse_users(
    users_toml(
        *[(r.lower(), f"pw-{r}", [r], []) for r in sec.USER_ROLES],
        *[(f"{r.lower()}-prod", f"pw-{r}-prod", [r], ["replay:prod"]) for r in sec.USER_ROLES],
        ("nobody", "pw-nobody", [], []),
    )
)


@pytest.fixture()
def authority() -> Authority:
    return Authority(sec.default_users(), jwt_secret=SECRET, bootstrap_token=BOOT)


@pytest.fixture()
def matrix() -> Authority:
    return Authority(MATRIX, jwt_secret=SECRET, bootstrap_token=BOOT)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------- roles and permissions


def test_permission_list_and_role_table_are_section_6() -> None:
    assert sec.PERMISSIONS == tuple(SPEC)
    for role in sec.USER_ROLES:
        assert sec.ROLE_PERMISSIONS[role] == {p for p, roles in SPEC.items() if role in roles}
    assert sec.ROLE_PERMISSIONS[sec.AGENT] == frozenset()


@pytest.mark.parametrize("granted", [False, True], ids=["no-grant", "prod-grant"])
@pytest.mark.parametrize("permission", list(SPEC))
@pytest.mark.parametrize("role", sec.USER_ROLES)
def test_every_role_and_permission(matrix: Authority, role: str, permission: str, granted: bool) -> None:
    name = role.lower() + ("-prod" if granted else "")
    principal = matrix.authenticate("Bearer " + matrix.issue_tokens(name, T0)["accessToken"], T0)
    allowed = role in SPEC[permission] or (granted and permission == "replay:prod")
    assert principal.has(permission) is allowed
    if allowed:
        require(principal, permission)
    else:
        with pytest.raises(PermissionDenied) as info:
            require(principal, permission)
        assert info.value.code == "FORBIDDEN" and info.value.status == 403
        assert permission in info.value.message and info.value.details["missing"] == [permission]
        assert info.value.hint


def test_no_role_means_no_permission(matrix: Authority) -> None:
    principal = matrix.authenticate(matrix.issue_tokens("nobody", T0)["accessToken"], T0)
    assert principal.permissions == frozenset()
    for permission in SPEC:
        with pytest.raises(PermissionDenied):
            require(principal, permission)


def test_default_users_permissions(authority: Authority) -> None:
    def perms(name: str) -> list[str]:
        return authority.login(name, name, T0)["user"]["permissions"]

    assert perms("admin") == list(SPEC)
    assert perms("operator") == ["executions:read", "audit:read-own", "replay:run", "replay:modify"]
    assert perms("prod-operator") == [
        "executions:read",
        "audit:read-own",
        "replay:run",
        "replay:modify",
        "replay:prod",
    ]
    assert perms("analyst") == ["executions:read", "audit:read-own"]


def test_unknown_permission_is_denied_even_to_admin(authority: Authority) -> None:
    admin = authority.authenticate(authority.login("admin", "admin", T0)["accessToken"], T0)
    with pytest.raises(PermissionDenied, match="replay:delete"):
        require(admin, "replay:delete")


def test_prod_hint_names_the_grant(authority: Authority) -> None:
    operator = authority.authenticate(authority.login("operator", "operator", T0)["accessToken"], T0)
    with pytest.raises(PermissionDenied) as info:
        require_all(operator, replay_permissions("prod", "prod", modified=True))
    assert info.value.details["missing"] == ["replay:prod"]
    assert "grant replay:prod" in info.value.hint
    assert "replay:prod" in str(info.value)


def test_require_all_names_every_missing_permission(authority: Authority) -> None:
    analyst = authority.authenticate(authority.login("analyst", "analyst", T0)["accessToken"], T0)
    with pytest.raises(PermissionDenied) as info:
        require_all(analyst, replay_permissions("dev", "prod", modified=True))
    assert info.value.details["missing"] == ["replay:run", "replay:modify", "replay:prod"]
    assert "OPERATOR" in info.value.hint


ENVS = ["dev", "staging", "prod"]


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize(("source", "target"), list(itertools.product(ENVS, ENVS)))
def test_replay_permissions(source: str, target: str, modified: bool) -> None:
    expected = ["replay:run"]
    if modified:
        expected.append("replay:modify")
    if "prod" in (source, target):
        expected.append("replay:prod")
    assert replay_permissions(source, target, modified=modified) == expected


def test_replay_permissions_literal_cases() -> None:
    assert replay_permissions("dev", "dev", modified=False) == ["replay:run"]
    assert replay_permissions("staging", "dev", modified=True) == ["replay:run", "replay:modify"]
    assert replay_permissions("prod", "dev", modified=False) == ["replay:run", "replay:prod"]
    assert replay_permissions("dev", "PROD", modified=False) == ["replay:run", "replay:prod"]
    assert replay_permissions("Production", "dev", modified=False)[-1] == "replay:prod"
    # An unknown environment fails closed.
    assert replay_permissions(None, "dev", modified=False)[-1] == "replay:prod"
    assert replay_permissions("dev", "", modified=False)[-1] == "replay:prod"


@pytest.mark.parametrize(
    ("user", "source", "target", "modified", "ok"),
    [
        ("analyst", "dev", "dev", False, False),
        ("operator", "dev", "staging", True, True),
        ("operator", "prod", "dev", False, False),
        ("operator", "dev", "prod", False, False),
        ("prod-operator", "prod", "prod", True, True),
        ("admin", "prod", "staging", True, True),
    ],
)
def test_replay_decisions_for_default_users(
    authority: Authority, user: str, source: str, target: str, modified: bool, ok: bool
) -> None:
    principal = authority.authenticate(authority.issue_tokens(user, T0)["accessToken"], T0)
    needed = replay_permissions(source, target, modified=modified)
    if ok:
        require_all(principal, needed)
    else:
        with pytest.raises(PermissionDenied):
            require_all(principal, needed)


@pytest.mark.parametrize("tier", ["LOW", "MID", "low", "GOLD", ""])
def test_tier_refused(tier: str) -> None:
    with pytest.raises(TierNotEntitled) as info:
        check_tier(tier)
    assert info.value.code == "TIER_NOT_ENTITLED" and info.value.status == 403
    assert isinstance(info.value, PermissionDenied)


@pytest.mark.parametrize("tier", ["HIGH", "BUSINESS"])
def test_tier_entitled(tier: str) -> None:
    assert check_tier(tier) is None


# --------------------------------------------------------------------------- tokens


def test_login_answer_and_claims(authority: Authority) -> None:
    answer = authority.login("prod-operator", "prod-operator", T0)
    assert set(answer) == {"accessToken", "refreshToken", "expiresIn", "user"}
    assert answer["expiresIn"] == 3600
    assert answer["user"]["username"] == "prod-operator"
    assert answer["user"]["roles"] == ["OPERATOR"]
    access = claims_of(answer["accessToken"])
    assert access["sub"] == "user:prod-operator"
    assert access["typ"] == "access"
    assert access["roles"] == ["OPERATOR"] and "replay:prod" in access["permissions"]
    assert "env" in access
    assert access["iat"] == int(T0.timestamp()) and access["exp"] - access["iat"] == 3600
    assert jwt.get_unverified_header(answer["accessToken"])["alg"] == "HS256"
    refresh = claims_of(answer["refreshToken"])
    assert refresh["typ"] == "refresh" and refresh["sub"] == "user:prod-operator"
    assert refresh["exp"] - refresh["iat"] == 7 * 86400
    assert access["jti"] != refresh["jti"]
    again = claims_of(authority.login("prod-operator", "prod-operator", T0)["accessToken"])
    assert again["jti"] != access["jti"]


def test_round_trip_principal(authority: Authority) -> None:
    token = authority.login("admin", "admin", T0)["accessToken"]
    for credentials in (f"Bearer {token}", f"bearer {token}", f"  BEARER   {token} ", token):
        principal = authority.authenticate(credentials, T0)
        assert principal == Principal("admin", ("ADMIN",), frozenset(SPEC), kind="user", env=None)
        assert principal.subject == "user:admin"


@pytest.mark.parametrize("credentials", [None, "", "   ", "Bearer", "Bearer   ", "Basic YWRtaW46YWRtaW4="])
def test_missing_or_foreign_credentials(authority: Authority, credentials: str | None) -> None:
    with pytest.raises(AuthenticationError) as info:
        authority.authenticate(credentials, T0)
    assert info.value.code == "UNAUTHORIZED" and info.value.status == 401


def test_access_token_expires_after_one_hour(authority: Authority) -> None:
    token = authority.login("operator", "operator", T0)["accessToken"]
    authority.authenticate(token, T0 + timedelta(minutes=59, seconds=59))
    for late in (timedelta(hours=1), timedelta(days=3)):
        with pytest.raises(AuthenticationError) as info:
            authority.authenticate(token, T0 + late)
        assert info.value.code == "TOKEN_EXPIRED"


def test_refresh(authority: Authority) -> None:
    refresh_token = authority.login("operator", "operator", T0)["refreshToken"]
    later = T0 + timedelta(hours=5)
    answer = authority.refresh(f"Bearer {refresh_token}", later)
    assert set(answer) == {"accessToken", "expiresIn"} and answer["expiresIn"] == 3600
    principal = authority.authenticate(answer["accessToken"], later + timedelta(minutes=30))
    assert principal.username == "operator" and principal.has("replay:run")
    authority.refresh(refresh_token, T0 + timedelta(days=7) - timedelta(seconds=1))
    with pytest.raises(AuthenticationError) as info:
        authority.refresh(refresh_token, T0 + timedelta(days=7))
    assert info.value.code == "TOKEN_EXPIRED"


def test_refresh_token_is_not_an_access_token_and_vice_versa(authority: Authority) -> None:
    answer = authority.login("admin", "admin", T0)
    with pytest.raises(AuthenticationError) as info:
        authority.authenticate(answer["refreshToken"], T0)
    assert info.value.code == "BAD_TOKEN" and "refresh" in info.value.message
    with pytest.raises(AuthenticationError) as info:
        authority.refresh(answer["accessToken"], T0)
    assert info.value.code == "BAD_TOKEN"


def _refusal(authority: Authority, token: str) -> tuple[str, int]:
    """(code, status) of the AuthenticationError that authenticating ``token`` raises."""
    with pytest.raises(AuthenticationError) as info:
        authority.authenticate(token, T0)
    return info.value.code, info.value.status


BAD_TOKEN = ("BAD_TOKEN", 401)


def test_tampered_signature_refused(authority: Authority) -> None:
    token = authority.login("analyst", "analyst", T0)["accessToken"]
    head, body, sig = token.split(".")
    flipped = sig[:5] + ("A" if sig[5] != "A" else "B") + sig[6:]
    assert _refusal(authority, f"{head}.{body}.{flipped}") == BAD_TOKEN
    assert _refusal(authority, f"{head}.{body}.") == BAD_TOKEN


def test_tampered_claims_refused(authority: Authority) -> None:
    token = authority.login("analyst", "analyst", T0)["accessToken"]
    head, body, sig = token.split(".")
    claims = claims_of(token)
    claims["sub"] = "user:admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _refusal(authority, f"{head}.{forged}.{sig}") == BAD_TOKEN


def test_alg_none_refused(authority: Authority) -> None:
    claims = claims_of(authority.login("analyst", "analyst", T0)["accessToken"])
    claims["sub"] = "user:admin"
    assert _refusal(authority, jwt.encode(claims, None, algorithm="none")) == BAD_TOKEN


@pytest.mark.filterwarnings("ignore:The HMAC key")  # HS512 with our 37-byte key: on purpose
def test_other_hmac_algorithm_refused(authority: Authority) -> None:
    claims = claims_of(authority.login("admin", "admin", T0)["accessToken"])
    assert _refusal(authority, jwt.encode(claims, SECRET, algorithm="HS512")) == BAD_TOKEN


def test_wrong_key_refused(authority: Authority) -> None:
    other = Authority(sec.default_users(), jwt_secret=b"x" * 32, bootstrap_token=BOOT)
    assert _refusal(authority, other.login("admin", "admin", T0)["accessToken"]) == BAD_TOKEN


@pytest.mark.parametrize(
    "change",
    [
        {"jti": None},
        {"typ": None},
        {"sub": "root:admin"},
        {"sub": "admin"},
        {"sub": "agent:a1", "env": None},
        {"exp": "tomorrow"},
        {"iat": int(T0.timestamp()) + 3600, "exp": int(T0.timestamp()) + 7200},
    ],
)
def test_well_signed_but_malformed_claims_refused(authority: Authority, change: dict) -> None:
    claims = claims_of(authority.login("admin", "admin", T0)["accessToken"])
    for key, value in change.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    assert _refusal(authority, jwt.encode(claims, SECRET, algorithm="HS256")) == BAD_TOKEN


def _same_password(authority: Authority, name: str, roles: list[str]) -> UserTable:
    """The users file edited for ``name``'s roles, its password line as it was (the default
    users' is their name, in clear)."""
    stored = authority.users.get(name)
    assert stored is not None and stored.default_password
    text = users_toml((name, "x", roles, []))
    return parse_users(re.sub(r'password_hash = ".*"', f'password = "{name}"', text))


def test_revoked_grant_takes_effect_before_expiry(authority: Authority) -> None:
    token = authority.login("prod-operator", "prod-operator", T0)["accessToken"]
    require(authority.authenticate(token, T0), "replay:prod")
    authority.users = _same_password(authority, "prod-operator", ["OPERATOR"])
    principal = authority.authenticate(token, T0 + timedelta(minutes=1))
    with pytest.raises(PermissionDenied):
        require(principal, "replay:prod")
    # A role given after login applies at once too.
    authority.users = _same_password(authority, "prod-operator", ["ADMIN"])
    require(authority.authenticate(token, T0 + timedelta(minutes=2)), "audit:read")
    # ... and a refreshed access token carries the current permissions in its claims.
    refreshed = authority.refresh(authority.issue_tokens("prod-operator", T0)["refreshToken"], T0)
    assert "audit:read" in claims_of(refreshed["accessToken"])["permissions"]


def test_a_new_password_ends_the_tokens_issued_before_it(authority: Authority) -> None:
    """Found by the security follow-up: tokens outlived a password change (the users file
    edited, the sandbox restarted with the same JWT key), a refresh token for its 7 days.
    A user's tokens carry a keyed mark of the stored password hash; another hash ends them."""
    answer = authority.login("operator", "operator", T0)
    later = T0 + timedelta(minutes=1)
    authority.users = _same_password(authority, "operator", ["OPERATOR"])  # roles file re-read
    assert authority.authenticate(answer["accessToken"], later).username == "operator"
    fresh = authority.refresh(answer["refreshToken"], later)["accessToken"]
    assert authority.authenticate(fresh, later).username == "operator"
    assert "pwd" in claims_of(answer["accessToken"]) and "pwd" in claims_of(answer["refreshToken"])
    assert authority.users.get("operator").password_hash not in json.dumps(claims_of(fresh))
    # The same password set again is a new hash (a new salt): the old tokens end too.
    authority.users = parse_users(users_toml(("operator", "operator", ["OPERATOR"], [])))
    for token in (answer["accessToken"], fresh):
        with pytest.raises(AuthenticationError) as info:
            authority.authenticate(token, later)
        assert info.value.code == "BAD_TOKEN" and "password" in info.value.message
    with pytest.raises(AuthenticationError) as info:
        authority.refresh(answer["refreshToken"], later)
    assert info.value.code == "BAD_TOKEN"
    assert authority.authenticate(authority.login("operator", "operator", later)["accessToken"], later)


def test_a_restart_with_the_same_users_keeps_the_tokens() -> None:
    # The default users' passwords are written in clear and hashed afresh (a new salt) at every
    # start: marking the hash ended every session at each restart of a sandbox (the fresh-clone
    # CI run: a batch and a stream resumed on a restarted platform got 401).
    first = Authority(parse_users(sec.DEFAULT_USERS_TOML), jwt_secret=SECRET, bootstrap_token=BOOT)
    answer = first.login("operator", "operator", T0)
    restarted = parse_users(sec.DEFAULT_USERS_TOML)
    again = Authority(restarted, jwt_secret=SECRET, bootstrap_token=BOOT)
    assert again.users.get("operator").password_hash != first.users.get("operator").password_hash
    assert again.authenticate(answer["accessToken"], T0).username == "operator"
    assert again.refresh(answer["refreshToken"], T0)["accessToken"]
    # A new clear password does end them.
    changed = Authority(
        parse_users('[users.operator]\npassword = "s3cret-new"\nroles = ["OPERATOR"]\n'),
        jwt_secret=SECRET,
        bootstrap_token=BOOT,
    )
    with pytest.raises(AuthenticationError) as info:
        changed.authenticate(answer["accessToken"], T0)
    assert info.value.code == "BAD_TOKEN"


def test_removed_user_token_refused(authority: Authority) -> None:
    answer = authority.login("analyst", "analyst", T0)
    authority.users = parse_users(users_toml(("someone", "else", ["VIEWER"], [])))
    assert _refusal(authority, answer["accessToken"]) == BAD_TOKEN
    with pytest.raises(AuthenticationError) as info:
        authority.refresh(answer["refreshToken"], T0)
    assert info.value.code == "BAD_TOKEN"


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "wrong"), ("admin", "ADMIN"), ("nobody", "nobody"), ("", ""), ("admin", None)],
)
def test_login_failure_is_uniform(authority: Authority, username: str, password: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        authority.login(username, password, T0)
    assert info.value.code == "BAD_CREDENTIALS" and info.value.status == 401
    assert info.value.message == "wrong user name or password"


def test_authority_refuses_weak_secrets() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Authority(sec.default_users(), jwt_secret=b"short", bootstrap_token=BOOT)
    with pytest.raises(ValueError, match="bootstrap"):
        Authority(sec.default_users(), jwt_secret=SECRET, bootstrap_token="abc")


def test_naive_clock_is_a_programming_error(authority: Authority) -> None:
    with pytest.raises(TypeError, match="aware"):
        authority.login("admin", "admin", datetime(2026, 1, 1))


# --------------------------------------------------------------------------- agents


def test_bootstrap_token(authority: Authority) -> None:
    authority.check_bootstrap(f"Bearer {BOOT}")
    authority.check_bootstrap(BOOT)
    for wrong in (None, "", "Bearer ", f"Bearer {BOOT}x", f"Bearer {BOOT[:-1]}", "Basic " + BOOT):
        with pytest.raises(AuthenticationError) as info:
            authority.check_bootstrap(wrong)
        assert info.value.code == "UNAUTHORIZED"
    assert len(sec.new_bootstrap_token()) >= 40
    assert sec.new_bootstrap_token() != sec.new_bootstrap_token()


def test_agent_tokens(authority: Authority) -> None:
    answer = authority.issue_agent_tokens("orders-prod-1", "prod", T0)
    assert set(answer) == {"accessToken", "refreshToken", "expiresIn"}
    claims = claims_of(answer["accessToken"])
    assert claims["sub"] == "agent:orders-prod-1" and claims["roles"] == ["AGENT"]
    assert claims["env"] == "prod" and claims["typ"] == "access"
    principal = authority.authenticate(answer["accessToken"], T0)
    assert principal == Principal("orders-prod-1", ("AGENT",), frozenset(), kind="agent", env="prod")
    require_agent(principal)
    require_agent(principal, "orders-prod-1")
    with pytest.raises(PermissionDenied):
        require_agent(principal, "orders-dev-1")
    for permission in SPEC:  # an agent token grants no user permission
        with pytest.raises(PermissionDenied):
            require(principal, permission)
    refreshed = authority.refresh(answer["refreshToken"], T0 + timedelta(hours=2))
    again = authority.authenticate(refreshed["accessToken"], T0 + timedelta(hours=2))
    assert again.kind == "agent" and again.env == "prod"
    with pytest.raises(AuthenticationError):
        authority.authenticate(answer["refreshToken"], T0)


def test_user_is_not_an_agent(authority: Authority) -> None:
    user = authority.authenticate(authority.login("admin", "admin", T0)["accessToken"], T0)
    with pytest.raises(PermissionDenied, match="not an agent"):
        require_agent(user)


@pytest.mark.parametrize(("instance", "env"), [("../etc", "dev"), ("a1", "prod env"), ("", "dev")])
def test_agent_ids_checked(authority: Authority, instance: str, env: str) -> None:
    with pytest.raises(ValidationError):
        authority.issue_agent_tokens(instance, env, T0)


# --------------------------------------------------------------------------- users file


def test_design_section_6_example() -> None:
    table = parse_users(
        """
tenant = { id = "default", tier = "HIGH" }     # LOW | MID | HIGH | BUSINESS
[users.operator]
password = "operator"          # or password_hash = "<argon2 or scrypt hash>"
roles = ["OPERATOR"]
grants = []                    # extra permissions, e.g. ["replay:prod"]
""",
        source="users.toml",
    )
    assert table.tenant == sec.Tenant("default", "HIGH")
    user = table.get("operator")
    assert user is not None and user.roles == ("OPERATOR",) and user.grants == ()
    assert user.password_hash.startswith("scrypt$16384$8$1$") and "scrypt" not in repr(user)
    assert user.check_password("operator") and not user.check_password("Operator")
    assert table.uses_default_passwords and table.default_password_users == ("operator",)


def test_default_users() -> None:
    table = sec.default_users()
    assert [u.username for u in table] == ["admin", "operator", "prod-operator", "analyst"]
    assert {u.username: (u.roles, u.grants) for u in table} == {
        "admin": (("ADMIN",), ("replay:prod",)),
        "operator": (("OPERATOR",), ()),
        "prod-operator": (("OPERATOR",), ("replay:prod",)),
        "analyst": (("VIEWER",), ()),
    }
    assert table.uses_default_passwords and len(table.default_password_users) == 4
    assert table.tenant.tier == "HIGH"
    for user in table:
        assert user.check_password(user.username)


def test_hashed_users_file_without_defaults(tmp_path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(users_toml(("alice", "correct horse", ["ADMIN"], ["replay:prod"]), tier="BUSINESS"))
    table = sec.load_users(path)
    assert table.source == str(path) and table.tenant.tier == "BUSINESS"
    assert not table.uses_default_passwords
    auth = Authority(table, jwt_secret=SECRET, bootstrap_token=BOOT)
    assert auth.login("alice", "correct horse", T0)["user"]["permissions"] == list(SPEC)
    with pytest.raises(AuthenticationError):
        auth.login("alice", "alice", T0)


def test_hash_equal_to_user_name_counts_as_default() -> None:
    table = parse_users(users_toml(("bob", "bob", ["VIEWER"], []), ("eve", "s3cret!", ["VIEWER"], [])))
    assert table.default_password_users == ("bob",)


BAD_FILES = [
    ('[users.bob]\npassword = "x"\nroles = ["OPERATER"]\n', "users.bob.roles", "unknown role 'OPERATER'"),
    (
        '[users.bob]\npassword = "x"\nroles = ["VIEWER"]\ngrants = ["replay:all"]\n',
        "users.bob.grants",
        "unknown permission 'replay:all'",
    ),
    (
        'tenant = { id = "t", tier = "GOLD" }\n[users.bob]\npassword = "x"\nroles = []\n',
        "tenant.tier",
        "bad tier 'GOLD'",
    ),
    (
        'tenant = { id = "t", tier = "high" }\n[users.bob]\npassword = "x"\nroles = []\n',
        "tenant.tier",
        "bad tier",
    ),
    ('[users.bob]\nroles = ["VIEWER"]\n', "users.bob", "exactly one"),
    (
        '[users.bob]\npassword = "x"\npassword_hash = "scrypt$16$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="\n'
        "roles = []\n",
        "users.bob",
        "exactly one",
    ),
    (
        '[users.bob]\npassword_hash = "bcrypt$2b$12$c2FsdA"\nroles = []\n',
        "users.bob.password_hash",
        "scrypt$",
    ),
    *[
        (f'[users.bob]\npassword_hash = "{encoded}"\nroles = []\n', "users.bob.password_hash", problem)
        for encoded, problem in [
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "salt is 4 bytes"),
            ("$argon2i$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "only Argon2id"),
            ("$argon2id$v=16$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "version 19"),
            # padded base64 is not the PHC string argon2 writes
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA==", "without padding"),
            ("$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "256 MiB"),
            ("$argon2id$v=19$m=262144,t=9,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "of work per login"),
            ("$argon2id$v=19$m=8,t=4000000000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "of work"),
            ("$argon2id$v=19$m=65536,t=3,p=4096$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "p=4096"),
            ("$argon2id$v=19$m=16,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "8 KiB per lane"),
            ("$argon2id$v=19$m=65536,t=0,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "t=0"),
            ("$argon2id$v=19$t=3,m=65536,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", "not of the form"),
            # "B" ends in bits a 16-byte value cannot have: Python's base64 lets it by, argon2 not
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaB", "argon2 refuses"),
        ]
    ],
    (
        '[users.bob]\npassword_hash = "scrypt$1073741824$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="\n'
        "roles = []\n",
        "users.bob.password_hash",
        "256 MiB",
    ),
    (
        '[users.bob]\npassword_hash = "scrypt$16$1$1$!!$AAAA"\nroles = []\n',
        "users.bob.password_hash",
        "base64",
    ),
    ('[users.bob]\npassword = ""\nroles = []\n', "users.bob.password", "non-empty"),
    ('[users.bob]\npassword = "x"\nroles = "ADMIN"\n', "users.bob.roles", "list"),
    ('[users.bob]\npassword = "x"\n', "users.bob.roles", "list"),
    ('[users.bob]\npassword = "x"\nroles = []\nrole = ["ADMIN"]\n', "users.bob.role", "unknown key"),
    ('[users."bob smith"]\npassword = "x"\nroles = []\n', "users.bob smith", "not valid"),
    ('tenant = { id = "t", tier = "HIGH" }\n', "users", "no users"),
    (
        'tenant = { id = "t", tier = "HIGH", plan = "x" }\n[users.bob]\npassword = "x"\nroles = []\n',
        "tenant",
        "only `id` and `tier`",
    ),
    ('tenants = {}\n[users.bob]\npassword = "x"\nroles = []\n', "tenants", "unknown key"),
    ("[users.bob\npassword = 1\n", "", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_FILES)
def test_bad_users_file(tmp_path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        sec.load_users(path)
    err = info.value
    assert err.code == "USERS_FILE_INVALID"
    assert err.message.startswith(f"{path}: ") and err.details["file"] == str(path)
    assert err.details["key"] == key and problem in err.message
    assert err.hint


def test_missing_users_file_named(tmp_path) -> None:
    with pytest.raises(ValidationError) as info:
        sec.load_users(tmp_path / "nope.toml")
    assert info.value.code == "USERS_FILE_INVALID" and "nope.toml" in info.value.message


# --------------------------------------------------------------------------- passwords


def test_hash_password_format_and_verify() -> None:
    encoded = hash_password("s3cret")
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=", encoded)
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded) and not verify_password("", encoded)
    assert hash_password("s3cret") != encoded  # a fresh salt each time
    salt = b"0123456789abcdef"
    expected = hashlib.scrypt(b"s3cret", salt=salt, n=16384, r=8, p=1, dklen=32)
    assert hash_password("s3cret", salt=salt).split("$")[5] == base64.b64encode(expected).decode()


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "scrypt$16$1$1$AAAAAAAAAAA=",
        "bcrypt$16$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$15$1$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16$0$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16$1$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16$1$1$AAAAAAAAAAA=$AAAA",
    ],
)
def test_malformed_hash_never_verifies(encoded: str) -> None:
    assert verify_password("", encoded) is False


_NO_NUL = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))


@PROPS
@given(st.text(_NO_NUL, min_size=1, max_size=30), st.text(min_size=1, max_size=5))
def test_password_hash_property(password: str, suffix: str) -> None:
    encoded = fast_hash(password)
    assert verify_password(password, encoded)
    assert not verify_password(password + suffix, encoded)
    # Any change to the stored hash bytes makes it fail.
    head, key = encoded.rsplit("$", 1)
    raw = bytearray(base64.b64decode(key))
    raw[0] ^= 1
    assert not verify_password(password, f"{head}${base64.b64encode(bytes(raw)).decode()}")


def test_a_lone_surrogate_in_a_password_never_matches_and_cannot_be_hashed() -> None:
    # JSON lets a client send "\ud800" (a Hypothesis finding: it reached scrypt and was a 500).
    encoded = fast_hash("pw")
    assert verify_password("\ud800", encoded) is False
    assert verify_password("pw\udfff", encoded) is False
    with pytest.raises(ValueError, match="lone surrogate"):
        fast_hash("pw\ud800")


def test_nul_in_a_password_never_matches_and_cannot_be_hashed() -> None:
    # PBKDF2-HMAC (inside scrypt) zero-pads its key: without the check "0" and "0\0" collide.
    encoded = fast_hash("0")
    assert verify_password("0", encoded)
    assert not verify_password("0\x00", encoded)
    with pytest.raises(ValueError):
        hash_password("pw\x00")


def test_hash_password_cli(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert sec.main(["hash-password"]) == 0
    line = capsys.readouterr().out.strip()
    match = re.fullmatch(r'password_hash = "(.+)"', line)
    assert match and verify_password("hunter2", match.group(1))
    assert sec.main(["nonsense"]) == 2


def test_hash_password_cli_makes_argon2id(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert sec.main(["hash-password", "--argon2"]) == 0
    match = re.fullmatch(
        r'password_hash = "(\$argon2id\$v=19\$m=65536,t=3,p=4\$.+)"', capsys.readouterr().out.strip()
    )
    assert match and verify_password("hunter2", match.group(1))
    table = parse_users(f'[users.ann]\npassword_hash = "{match.group(1)}"\nroles = []\n')
    assert table.check_password("ann", "hunter2").username == "ann"


# --------------------------------------------------------------------------- argon2 (section 6)

# Small argon2 costs for the suite (the parsing and the C library's path are the same).
FAST_ARGON2 = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


def test_a_standard_argon2id_hash_logs_in(tmp_path) -> None:
    # The string any argon2 tool writes (argon2-cffi's PasswordHasher here), not only ours.
    encoded = FAST_ARGON2.hash("correct horse")
    path = tmp_path / "users.toml"
    path.write_text(
        f'tenant = {{ id = "t1", tier = "HIGH" }}\n[users.ann]\npassword_hash = "{encoded}"\n'
        'roles = ["OPERATOR"]\ngrants = ["replay:prod"]\n'
    )
    table = sec.load_users(path)
    assert not table.uses_default_passwords
    auth = Authority(table, jwt_secret=SECRET, bootstrap_token=BOOT)
    assert "replay:prod" in auth.login("ann", "correct horse", T0)["user"]["permissions"]
    for wrong in ("correct horse ", "ann", "", "correct horse\x00", "\ud800"):
        with pytest.raises(AuthenticationError):
            auth.login("ann", wrong, T0)


def test_an_argon2id_hash_of_the_user_name_counts_as_default() -> None:
    table = parse_users(f'[users.bob]\npassword_hash = "{FAST_ARGON2.hash("bob")}"\nroles = []\n')
    assert table.default_password_users == ("bob",)


@PROPS
@given(st.text(_NO_NUL, min_size=1, max_size=30), st.text(min_size=1, max_size=5), st.data())
def test_argon2_hash_property(password: str, suffix: str, data: st.DataObject) -> None:
    encoded = FAST_ARGON2.hash(password)
    assert verify_password(password, encoded)
    assert not verify_password(password + suffix, encoded)
    # Any one character of the stored string changed: refused (never an exception).
    i = data.draw(st.integers(0, len(encoded) - 1))
    other = data.draw(st.sampled_from("$=,0123456789AZaz+/").filter(lambda c: c != encoded[i]))
    assert verify_password(password, encoded[:i] + other + encoded[i + 1 :]) is False


def test_an_unknown_name_costs_what_the_tables_hashes_cost() -> None:
    """An unknown name was checked against a scrypt hash of the default cost (~40 ms) whatever
    the file held: with argon2 users of a higher cost, the answer's time told a name apart."""
    slow = PasswordHasher(time_cost=4, memory_cost=64 * 1024, parallelism=1)
    table = parse_users(
        f'[users.ann]\npassword_hash = "{slow.hash("a")}"\nroles = []\n'
        f'[users.bob]\npassword_hash = "{slow.hash("b")}"\nroles = []\n'
        f'[users.eve]\npassword_hash = "{fast_hash("e")}"\nroles = []\n'
    )
    assert table.dummy_hash.startswith("$argon2id$v=19$m=65536,t=4,p=1$")
    assert not verify_password("", table.dummy_hash) and not verify_password("a", table.dummy_hash)

    def cost(name: str) -> float:
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            with pytest.raises(AuthenticationError):
                table.check_password(name, "wrong")
            best = min(best, time.perf_counter() - start)
        return best

    known, unknown = cost("ann"), cost("nobody-such")
    assert 0.5 < unknown / known < 2, (known, unknown)


# --------------------------------------------------------------------------- command signing

SIGNER = CommandSigner.generate()
PUB = SIGNER.public_key_b64()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
commands = st.dictionaries(st.text(max_size=10).filter(lambda k: k != "signature"), json_values, max_size=6)


def replay_command(now: datetime = T0, nonce: str = "n-1", ttl: timedelta = timedelta(seconds=60)) -> dict:
    return {
        "commandId": "cmd-1",
        "replayId": "rp-1",
        "sourceExchangeId": "ex-1",
        "routeId": "orders",
        "environment": "dev",
        "modifiedPayload": {"headers": {"a": "1"}, "body": '{"qty": 3}', "properties": {}},
        "issuedAt": "2026-11-26T13:00:00.000Z",
        "expiresAt": (now + ttl).isoformat().replace("+00:00", "Z"),
        "nonce": nonce,
    }


def test_public_key_is_der_spki_base64() -> None:
    key = serialization.load_der_public_key(base64.b64decode(PUB, validate=True))
    assert isinstance(key, Ed25519PublicKey)


def test_sign_is_ed25519_over_jcs() -> None:
    command = replay_command()
    signed = SIGNER.sign(command)
    assert "signature" not in command  # the input is not mutated
    assert {k: v for k, v in signed.items() if k != "signature"} == command
    key = serialization.load_der_public_key(base64.b64decode(PUB))
    # Independent check: the signature is over RFC 8785 bytes of the command minus signature.
    key.verify(base64.b64decode(signed["signature"]), rfc8785.dumps(command))
    assert verify_command(signed, PUB)
    # Key order and a JSON round trip (what the agent sees over SSE) do not matter.
    reordered = dict(reversed(list(json.loads(json.dumps(signed)).items())))
    assert verify_command(reordered, PUB)
    # Signing a signed command replaces the signature instead of signing it.
    assert SIGNER.sign(signed) == signed


def test_verify_rejects_wrong_or_bad_keys() -> None:
    signed = SIGNER.sign(replay_command())
    assert not verify_command(signed, CommandSigner.generate().public_key_b64())
    assert not verify_command(signed, "not base64!")
    ec_der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert not verify_command(signed, base64.b64encode(ec_der).decode())
    assert not verify_command({k: v for k, v in signed.items() if k != "signature"}, PUB)
    assert not verify_command([signed], PUB)


def test_non_canonical_signature_encoding_refused() -> None:
    signed = SIGNER.sign(replay_command())
    sig = signed["signature"]
    assert sig.endswith("==") and len(sig) == 88
    # The last data character carries 2 signature bits and 4 padding bits: change only the
    # padding bits, so the decoded bytes are the same but the text is not canonical.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    idx = alphabet.index(sig[85])
    sibling = alphabet[(idx & ~0b1111) | ((idx + 1) & 0b1111)]
    loose = sig[:85] + sibling + "=="
    assert base64.b64decode(loose) == base64.b64decode(sig)
    assert not verify_command({**signed, "signature": loose}, PUB)
    assert not verify_command({**signed, "signature": sig + "\n"}, PUB)


def test_sign_refuses_values_jcs_cannot_encode() -> None:
    for bad in (float("nan"), float("inf"), 2**53):
        with pytest.raises(RecordError) as info:
            SIGNER.sign({"x": bad})
        assert info.value.code == "NOT_CANONICAL"


@PROPS
@given(commands)
def test_verify_sign_property(command: dict) -> None:
    signed = SIGNER.sign(command)
    assert verify_command(signed, PUB)
    assert verify_command(json.loads(json.dumps(signed)), PUB)


@PROPS
@given(commands, st.data())
def test_any_tampering_fails(command: dict, data: st.DataObject) -> None:
    signed = SIGNER.sign(command)
    mutated = dict(signed)
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "add":
        key = data.draw(st.text(max_size=10).filter(lambda k: k not in signed))
        mutated[key] = data.draw(json_values)
    else:
        key = data.draw(st.sampled_from(sorted(signed)))
        if action == "delete":
            del mutated[key]
        else:
            mutated[key] = data.draw(json_values | st.text(min_size=1, max_size=90))
    same_signature = mutated.get("signature") == signed["signature"]
    # JCS maps some distinct Python values to one text (1 and 1.0, 0.0 and -0.0): those are
    # the same JSON document, not a tampering.
    assume(not same_signature or sec.canonical_command(mutated) != sec.canonical_command(signed))
    assert not verify_command(mutated, PUB)


@PROPS
@given(
    st.sampled_from(sorted(replay_command())),
    json_values.filter(lambda v: v is not None),
)
def test_tampered_replay_command_is_rejected(field: str, value: object) -> None:
    signed = SIGNER.sign(replay_command())
    mutated = {**signed, field: value}
    assume(sec.canonical_command(mutated) != sec.canonical_command(signed))
    assert check_command(mutated, PUB, T0, NonceCache()) == "bad signature"


def test_check_command_accepts_then_refuses_reused_nonce() -> None:
    cache = NonceCache()
    signed = SIGNER.sign(replay_command(nonce="abc"))
    assert check_command(signed, PUB, T0, cache) is None
    assert "abc" in cache and len(cache) == 1
    reason = check_command(signed, PUB, T0 + timedelta(seconds=1), cache)
    assert reason is not None and "already used" in reason
    # Another command with the same nonce is refused too.
    other = SIGNER.sign({**replay_command(nonce="abc"), "commandId": "cmd-2"})
    assert "already used" in check_command(other, PUB, T0, cache)


def test_check_command_expiry() -> None:
    signed = SIGNER.sign(replay_command(ttl=timedelta(seconds=60)))
    assert "expired" in check_command(signed, PUB, T0 + timedelta(seconds=60), NonceCache())
    assert "expired" in check_command(signed, PUB, T0 + timedelta(days=1), NonceCache())
    assert check_command(signed, PUB, T0 + timedelta(seconds=59), NonceCache()) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expiresAt": None}, "expiresAt"),
        ({"expiresAt": "tomorrow"}, "expiresAt"),
        ({"expiresAt": "2026-11-26T13:01:00"}, "expiresAt"),  # no offset
        ({"expiresAt": "2026-11-27T13:00:00.000Z"}, "ahead"),
        ({"nonce": None}, "nonce"),
        ({"nonce": ""}, "nonce"),
        ({"nonce": 7}, "nonce"),
    ],
)
def test_check_command_field_problems(change: dict, reason: str) -> None:
    command = {**replay_command(), **change}
    command = {k: v for k, v in command.items() if v is not None}
    result = check_command(SIGNER.sign(command), PUB, T0, NonceCache())
    assert result is not None and reason in result


def test_unsigned_message_cannot_burn_a_nonce() -> None:
    cache = NonceCache()
    forged = {**replay_command(nonce="victim"), "signature": SIGNER.sign({})["signature"]}
    assert check_command(forged, PUB, T0, cache) == "bad signature"
    assert "victim" not in cache
    assert check_command(SIGNER.sign(replay_command(nonce="victim")), PUB, T0, cache) is None


def test_nonce_cache_is_bounded_in_time_and_size() -> None:
    cache = NonceCache(max_size=2, max_ttl=timedelta(minutes=5))
    a = SIGNER.sign(replay_command(nonce="a", ttl=timedelta(seconds=10)))
    b = SIGNER.sign(replay_command(nonce="b", ttl=timedelta(seconds=20)))
    c = SIGNER.sign(replay_command(nonce="c", ttl=timedelta(seconds=30)))
    assert check_command(a, PUB, T0, cache) is None
    assert check_command(b, PUB, T0, cache) is None
    # Full of live nonces: refuse rather than evict (eviction would let a replay through).
    assert "full" in check_command(c, PUB, T0, cache)
    assert "a" in cache and "c" not in cache
    # Once "a" has expired it is forgotten and there is room again.
    assert check_command(c, PUB, T0 + timedelta(seconds=10), cache) is None
    assert "a" not in cache and len(cache) == 2
    cache.purge(T0 + timedelta(seconds=30))
    assert len(cache) == 0
    assert "ahead" in check_command(
        SIGNER.sign(replay_command(nonce="d", ttl=timedelta(minutes=6))), PUB, T0, cache
    )


def test_signing_key_files(tmp_path) -> None:
    path = tmp_path / "keys" / "command.pem"
    first = CommandSigner.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = CommandSigner.load_or_create(path)
    assert again.public_key_b64() == first.public_key_b64()
    assert verify_command(again.sign({"a": 1}), first.public_key_b64())
    assert CommandSigner.from_pem(first.private_pem()).public_key_b64() == first.public_key_b64()
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ValidationError) as info:
        CommandSigner.load(tmp_path / "junk.pem")
    assert info.value.code == "SIGNING_KEY_INVALID" and "junk.pem" in info.value.message
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValidationError, match="not Ed25519"):
        CommandSigner.from_pem(ec_pem)


# --------------------------------------------------------------------------- redaction

KEY = b"server-redaction-key-0123456789"
SECRET_NAMES = [
    "Authorization",
    "Cookie",
    "Set-Cookie",
    "Proxy-Authorization",
    "X-API-Key",
    "password",
    "db.password",
    "MY_SECRET",
    "clientSecret",
    "token",
    "X-Auth-Token",
    "apikey",
    "api_key",
    "passphrase",
    "accessKey",
    "aws-access-key",
    "secretKey",
]
PLAIN_NAMES = [
    "Content-Type",
    "CamelHttpUri",
    "orderId",
    "X-Request-Id",
    "Accept",
    "X-Cookie-Consent",
    "author",
    "tok",
    "key",
    "access",
]


def case_permutations(name: str) -> set[str]:
    options = [(c.lower(), c.upper()) if c.isalpha() else (c,) for c in name]
    return {"".join(p) for p in itertools.product(*options)}


@pytest.mark.parametrize("name", ["cookie", "token", "secret", "apikey", "x-api-key"])
def test_secret_names_in_every_case_permutation(name: str) -> None:
    perms = case_permutations(name)
    assert len(perms) == 2 ** sum(c.isalpha() for c in name)
    assert all(is_secret_name(p) for p in perms)


@PROPS
@given(st.sampled_from(SECRET_NAMES), st.data())
def test_secret_names_any_case(name: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    cased = "".join(c.swapcase() if f else c for c, f in zip(name, flips, strict=True))
    assert is_secret_name(cased)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names_are_not_secret(name: str) -> None:
    assert not is_secret_name(name) and not is_secret_name(name.upper())


def test_redacted_value_is_keyed_hmac() -> None:
    redactor = Redactor(KEY)
    expected = hmac.new(KEY, b"hunter2", hashlib.sha256).hexdigest()[:16]
    assert redactor.value("hunter2") == f"[REDACTED:{expected}]"
    assert redactor.value("hunter2") == redactor.value("hunter2")
    assert redactor.value("hunter2") != redactor.value("hunter3")
    assert Redactor(b"another-key-0123456789").value("hunter2") != redactor.value("hunter2")
    marker = redactor.value("hunter2")
    assert redactor.value(marker) == marker  # idempotent: store then stream
    assert redactor.value(None) is None
    assert re.fullmatch(r"\[REDACTED:[0-9a-f]{16}\]", redactor.value(["a", 1]))
    with pytest.raises(ValueError):
        Redactor(b"short")


def test_redact_headers_and_properties() -> None:
    redactor = Redactor(KEY)
    headers = {"Authorization": "Bearer abc.def", "content-type": "application/json", "X-API-KEY": "k-1"}
    out = redactor.headers(headers)
    assert out["content-type"] == "application/json"
    assert out["Authorization"] == redactor.value("Bearer abc.def")
    assert out["X-API-KEY"] == redactor.value("k-1")
    assert headers["Authorization"] == "Bearer abc.def"  # input untouched
    props = {"config": {"db": {"Password": "pw-1"}}, "items": [{"token": "t-1"}, 3], "n": 1}
    text = json.dumps(redactor.properties(props))
    assert "pw-1" not in text and "t-1" not in text and '"n": 1' in text
    body = json.dumps({"user": "u", "password": "pw-2"})
    payload = redactor.payload(Payload(headers=headers, body=body, properties=props))
    assert isinstance(payload, Payload)
    assert "k-1" not in json.dumps(payload.headers) and "pw-1" not in json.dumps(payload.properties)
    assert "pw-2" not in payload.body and json.loads(payload.body)["user"] == "u"
    # A live exchange property may hold a non-JSON object: still redacted, not an error.
    odd = redactor.properties({"secretKey": object(), "when": T0})
    assert re.fullmatch(r"\[REDACTED:[0-9a-f]{16}\]", odd["secretKey"]) and odd["when"] == T0
    assert redactor.headers(None) is None


@PROPS
@given(
    st.dictionaries(st.sampled_from(SECRET_NAMES), st.text(min_size=1, max_size=20), min_size=1),
    st.dictionaries(st.sampled_from(PLAIN_NAMES), st.text(max_size=10), max_size=3),
    st.data(),
)
def test_no_secret_survives(secrets_: dict, plain: dict, data: st.DataObject) -> None:
    marked = {}
    for name, value in secrets_.items():
        cased = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in name)
        marked[cased] = f"SECRET<{value}>"
    out = Redactor(KEY).headers({**plain, **marked})
    text = json.dumps(out, ensure_ascii=False)
    for value in marked.values():
        assert value not in text
    for name, value in plain.items():
        assert out[name] == value


def test_a_verified_token_remembered_does_not_vouch_for_a_tampered_copy(authority: Authority) -> None:
    token = authority.login("analyst", "analyst", T0)["accessToken"]
    authority.authenticate(token, T0)  # verified once, now remembered
    head, payload, signature = token.split(".")
    forged_claims = (
        base64.urlsafe_b64encode(json.dumps({**claims_of(token), "sub": "admin"}).encode())
        .rstrip(b"=")
        .decode()
    )
    for forged in (
        f"{head}.{forged_claims}.{signature}",
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
    ):
        assert _refusal(authority, forged) == BAD_TOKEN
    assert authority.authenticate(token, T0).username == "analyst"


# --------------------------------------------------------------------------- login guard


_login_steps = st.lists(
    st.one_of(
        # A login starts: seconds since the previous step, its user name, its address.
        st.tuples(
            st.just("begin"),
            st.sampled_from([0.0, 0.5, 1.0, 7.0, 30.0]),
            st.sampled_from(["ann", "bob", "cy", "dee"]),
            st.sampled_from(["10.0.0.1", "10.0.0.2", "127.0.0.1", None]),
        ),
        # A login in flight ends: which one (modulo those in flight), the right password or not.
        st.tuples(st.just("end"), st.sampled_from([0.0, 0.5, 7.0]), st.integers(0, 7), st.booleans()),
    ),
    max_size=100,
)


@given(_login_steps)
@settings(max_examples=300, deadline=None)
def test_login_guard_waits_exactly_as_a_sliding_window_says(steps: list[tuple[Any, ...]]) -> None:
    """Against a model, with logins overlapping as concurrent requests do: a name may start a
    login while it has fewer than ``attempts`` failures in the last ``window`` seconds (since
    its last success), an address (not loopback) while it has fewer than four times that; a
    refused try is not counted; the wait ends when the failure that made it leaves. A login in
    flight holds a slot: a name with ``failures + in flight == attempts`` is busy (it waits for
    a slot, not refused), so no more wrong passwords are ever checked than the limit allows,
    and a right password gives its slot back without counting (review finding)."""
    attempts, window = 2, 20.0
    now = [0.0]
    guard = sec.LoginGuard(attempts=attempts, window=window, clock=lambda: now[0])
    by_name: dict[str, list[float]] = {}
    by_address: dict[str, list[float]] = {}
    flight: list[tuple[int, str, str | None]] = []

    def limited(name: str, address: str | None) -> list[tuple[list[float], int, int]]:
        """(failures, limit, logins in flight) of the name and, unless loopback, the address."""
        out = [(by_name.get(name, []), attempts, sum(n == name for _, n, _ in flight))]
        if address is not None and address != "127.0.0.1":
            out.append((by_address.get(address, []), 4 * attempts, sum(a == address for _, _, a in flight)))
        return out

    def live(times: list[float]) -> list[float]:
        return [t for t in times if t > now[0] - window]

    def expected_wait(name: str, address: str | None) -> int | None:
        waits = [
            max(1, math.ceil(live(times)[-limit] + window - now[0]))
            for times, limit, _ in limited(name, address)
            if len(live(times)) >= limit
        ]
        return max(waits) if waits else None

    for step in steps:
        now[0] += step[1]
        if step[0] == "begin":
            _, _, name, address = step
            wait = expected_wait(name, address)
            assert guard.retry_after(name, address) == wait
            busy = any(len(live(t)) + n >= limit for t, limit, n in limited(name, address))
            got, ticket = guard.begin(name, address)
            if wait is not None:
                assert (got, ticket) == (wait, None)  # refused before the password is checked
            elif busy:
                assert (got, ticket) == (None, None)  # every slot held: wait for one
            else:
                assert got is None and ticket is not None
                flight.append((ticket, name, address))
        elif flight:
            _, _, which, right = step
            ticket, name, address = flight.pop(which % len(flight))
            if right:
                guard.succeeded(name, address, ticket)
                by_name.pop(name, None)
            else:
                by_name.setdefault(name, []).append(now[0])
                if address is not None and address != "127.0.0.1":
                    by_address.setdefault(address, []).append(now[0])
                assert guard.failed(name, address, ticket) == expected_wait(name, address)
        # The point of the slots: failures in the window plus wrong passwords that may still
        # be checked never exceed the limit, however the logins overlap.
        for name in ("ann", "bob", "cy", "dee"):
            assert len(live(by_name.get(name, []))) + guard.in_flight(name) <= attempts
            assert guard.in_flight(name) == sum(n == name for _, n, _ in flight)


def test_login_guard_is_bounded_and_checks_its_settings() -> None:
    now = [0.0]
    guard = sec.LoginGuard(attempts=1, window=60.0, clock=lambda: now[0], max_keys=10)
    for i in range(100):
        guard.failed(f"user-{i}", None)
    assert len(guard._failures) == 10  # the least recently failed forgotten first
    assert guard.retry_after("user-99", None) == 60 and guard.retry_after("user-0", None) is None
    # A 10 kB name is remembered by its first 128 characters, as it is audited.
    guard.failed("x" * 10_000, None)
    assert guard.retry_after("x" * 128, None) == 60
    for bad in ({"attempts": 0}, {"window": 0.0}):
        with pytest.raises(ValueError):
            sec.LoginGuard(**bad)  # type: ignore[arg-type]


def test_login_guard_slots_are_not_failures() -> None:
    """Review findings: checked before scrypt and counted after it, concurrent logins all passed
    the check; then counted as failures until proved right, right logins of one name sent
    together used up its budget (429 for a right password). begin() checks and takes a slot in
    one step; a slot blocks further logins only while it is in flight, and a right password
    (succeeded) or a login that never reached the password check (release) leaves nothing."""
    now = [0.0]
    guard = sec.LoginGuard(attempts=2, window=60.0, clock=lambda: now[0])
    first, second = guard.begin("ann", "10.0.0.1"), guard.begin("ann", "10.0.0.1")
    assert first[0] is None and first[1] is not None and second[0] is None and second[1] is not None
    assert guard.begin("ann", "10.0.0.1") == (None, None)  # two in flight: the third waits, not 429
    assert guard.retry_after("ann", "10.0.0.1") is None  # ... and nobody has failed yet
    guard.release(first[1])
    guard.succeeded("ann", "10.0.0.1", second[1])
    assert not guard._failures and not guard._pending and not guard._tickets
    for _ in range(10):  # right logins one after another, each in flight with the next
        _, a = guard.begin("ann", "10.0.0.1")
        _, b = guard.begin("ann", "10.0.0.1")
        guard.succeeded("ann", "10.0.0.1", a)
        guard.succeeded("ann", "10.0.0.1", b)
    assert guard.retry_after("ann", "10.0.0.1") is None and not guard._failures
    # A wrong password in flight with a right one is still counted when it ends.
    _, right = guard.begin("bob", "10.0.0.1")
    _, wrong = guard.begin("bob", "10.0.0.1")
    guard.succeeded("bob", "10.0.0.1", right)
    assert guard.failed("bob", "10.0.0.1", wrong) is None
    assert list(guard._failures[("user", "bob")]) == [0.0]
    guard.release(None)  # no slot: nothing to give back


def test_login_guard_does_not_lock_the_machines_own_address() -> None:
    """Every user of a sandbox on 127.0.0.1 logs in from there: 20 wrong logins by anyone (a
    notebook looping with a bad password) locked every user out, the right password too
    (review finding). Loopback addresses are not limited as addresses; names still are."""
    now = [0.0]
    guard = sec.LoginGuard(attempts=2, window=60.0, clock=lambda: now[0])
    for address in ("127.0.0.1", "::1", "10.0.0.7"):
        for i in range(20):
            guard.failed(f"typo-{i % 10}@{address}", address)  # ten names, twice each
        other = guard.retry_after("operator", address)
        assert (other is None) is (address != "10.0.0.7"), address
        assert guard.retry_after(f"typo-0@{address}", address) == 60  # the name itself waits
