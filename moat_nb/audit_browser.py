"""Reading and verifying the audit log in a notebook: :class:`AuditBrowser` (DESIGN.md section 7).

Filters (action, actor, replay id, time range) over ``GET /admin/audit``, the events as a
sortable, paged table, and a **Verify** button whose answer is a pass/fail a person cannot
misread: the server's own check of the whole chain (``GET /admin/audit/verify``) and, besides
it, an export of the log verified here, offline, by :func:`moat_nb.audit.verify_bundle` — the
same code ``moat-nb audit verify BUNDLE`` runs. A failure names the first bad seq and why.

Users with ``audit:read`` see the tenant's log; with ``audit:read-own`` only their own
replays' events (the server filters); verification needs ``audit:read``. Refusals show inline.

Offline checks trust the keys given as ``public_keys=`` (base64 DER, as the sandbox's
``keys/audit-public-keys.txt`` lists them), else those in ``MOAT_AUDIT_KEYS``, as ``moat-nb audit
verify --key`` and ``report verify`` do. With neither, a bundle can only be shown consistent
with the keys it carries itself, which anyone can make: the verdict then says "signer not
checked", never PASS (security.md AUD-10).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from os import PathLike
from typing import Any

import ipywidgets as widgets

from . import audit as audit_core
from .client import AuditBundle
from .errors import MoatError, ValidationError
from .messages import Message, describe_error, message_html
from .picker import Debouncer
from .table import Column, DataTable, format_time_cell

__all__ = ["AUDIT_ACTIONS", "AUDIT_COLUMNS", "AuditBrowser", "trusted_keys", "verification_html"]

#: Section 7's actions, and the sandbox's AUDIT_DENIED (an audit query refused),
#: ACCESS_DENIED (a call of another endpoint refused), LOGIN_FAILED and AUDIT_GUARD_RESTORED
#: (append-only triggers found missing at start-up and re-created).
AUDIT_ACTIONS: tuple[str, ...] = (
    "REPLAY_REQUESTED", "REPLAY_STARTED", "REPLAY_COMPLETED", "REPLAY_FAILED", "REPLAY_ERROR",
    "REPLAY_ABORTED", "REPLAY_DENIED", "CONTROL_HEADER_REJECTED", "AUDIT_QUERIED", "AUDIT_EXPORTED",
    "AUDIT_DENIED", "ACCESS_DENIED", "LOGIN_FAILED", "AUDIT_GUARD_RESTORED",
)  # fmt: skip

#: Outcomes marked as failures (red, as their pills in moat.css): every outcome but SUCCESS was,
#: so a REPLAY_REQUESTED (ACCEPTED) or REPLAY_STARTED (STARTED) row looked like a failure.
FAILED_OUTCOMES = frozenset({"FAILED", "ERROR", "DENIED", "REJECTED", "TIMED_OUT", "ABORTED"})

AUDIT_COLUMNS: tuple[Column, ...] = (
    Column("seq", "Seq", kind="number", desc_first=True),
    Column("occurred_at", "When (UTC)", desc_first=True, format=format_time_cell),
    Column("action", "Action"),
    Column("actor", "Actor"),
    Column("outcome", "Outcome", kind="status"),
    Column("replay_id", "Replay", kind="code"),
    Column("source_exchange_id", "Source exchange", kind="code"),
    Column("environment", "Env"),
    Column("detail", "Detail", sortable=False),
    Column("hash", "Hash", kind="code", sortable=False, format=lambda v: f"{v[:12]}…" if v else ""),
)


def _records(frame: Any) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict("records"):
        detail = row.get("detail")
        try:
            parsed = json.loads(detail) if isinstance(detail, str) else {}
        except ValueError:
            parsed = {}
        if isinstance(parsed, dict):
            shown = ", ".join(
                f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in parsed.items()
            )
        else:
            shown = str(parsed)
        row["detail"] = shown
        out.append(row)
    return out


def trusted_keys(public_keys: str | Iterable[str] | Mapping[str, str] | None) -> tuple[list[str] | None, str]:
    """The keys an offline check trusts and where they came from: ``public_keys`` (a string of
    keys separated as ``MOAT_AUDIT_KEYS`` separates them, a list, or a mapping keyId -> key)
    -> ``"argument"``; else ``MOAT_AUDIT_KEYS`` -> ``"environment"``; else ``(None, "bundle")``.
    Keys given but none in them is refused (BAD_KEY), not read as "use the bundle's own"."""
    from .report import split_keys, trusted_keys_from_env

    if public_keys is None:
        return trusted_keys_from_env()
    if isinstance(public_keys, str):
        keys = split_keys(public_keys)
    elif isinstance(public_keys, Mapping):
        keys = [str(k) for k in public_keys.values()]
    else:
        keys = [k for value in public_keys for k in split_keys(str(value))]
    if not keys:
        raise ValidationError(
            "public_keys holds no key",
            code="BAD_KEY",
            hint="pass the platform's published audit key (base64 DER), as keys/audit-public-keys.txt "
            "lists it, or leave public_keys out to use MOAT_AUDIT_KEYS",
        )
    for key in keys:
        try:
            audit_core.load_public_key(key)
        except MoatError as exc:
            raise ValidationError(f"public key {key[:20]!r}: {exc.message}", code="BAD_KEY") from None
    return keys, "argument"


def _normalise(result: Any) -> dict[str, Any]:
    """A server answer (wire dict) or a :class:`moat_nb.audit.VerifyResult` as one dict."""
    if isinstance(result, Mapping) and "first_bad_seq" in result:
        return dict(result)
    if isinstance(result, Mapping):
        return {
            "ok": bool(result.get("ok")),
            "checked": result.get("checked"),
            "head_seq": result.get("headSeq"),
            "head_hash": result.get("headHash"),
            "first_bad_seq": result.get("firstBadSeq"),
            "reason": result.get("reason"),
            "checkpoints": result.get("checkpoints"),
            "message": result.get("message") or "",
            "anchored_seq": result.get("anchoredSeq"),
        }
    return {
        "ok": result.ok,
        "checked": result.checked,
        "head_seq": result.head_seq,
        "head_hash": result.head_hash,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "checkpoints": result.checkpoints_checked,
        "message": result.message,
        "anchored_seq": result.anchored_seq,
    }


def verification_html(result: Any, where: str, *, signer_checked: bool = True) -> str:
    """A verification result as a large PASS / FAIL verdict (symbol and word, not colour alone),
    what was checked, and — on a failure — the first bad seq, the reason and what to do.

    ``signer_checked=False`` (checked against the bundle's own keys): a consistent bundle is
    shown as "consistent, signer not checked", not PASS: anyone can chain events and sign them
    with a key they put in the bundle (AUD-10)."""
    r = _normalise(result)
    if r["ok"] and not signer_checked:
        return (
            "<div class='moat-verdict moat-verdict-warn' role='status'>⚠ CONSISTENT, SIGNER NOT CHECKED — "
            f"{html.escape(where)}</div>"
            + message_html(
                "warn",
                "The bundle is consistent, but nothing says who signed it.",
                f"{r['checked']} events and {r['checkpoints'] or 0} checkpoint signature(s) check out "
                "against the public keys the bundle carries itself, which anyone can make.",
                "pass public_keys= (the platform's published audit key, keys/audit-public-keys.txt) or set "
                "MOAT_AUDIT_KEYS, and verify again",
            )
        )
    if r["ok"]:
        anchored = (
            f" The newest signed checkpoint vouches for seq {r['anchored_seq']}." if r["anchored_seq"] else ""
        )
        head = f" Head: seq {r['head_seq']}, hash {str(r['head_hash'] or '')[:16]}…" if r["head_seq"] else ""
        return (
            f"<div class='moat-verdict moat-verdict-pass' role='status'>✔ PASS — {html.escape(where)}</div>"
            + message_html(
                "ok",
                "The audit log verifies.",
                f"{r['checked']} events checked: contiguous seqs, every link and hash, "
                f"{r['checkpoints'] or 0} checkpoint signature(s).{anchored}{head}",
            )
        )
    reason = r["reason"] or "MALFORMED"
    meaning = audit_core.REASONS.get(reason, "")
    return (
        f"<div class='moat-verdict moat-verdict-fail' role='alert'>✘ FAIL — {html.escape(where)}</div>"
        + message_html(
            "error",
            f"The audit log does not verify: first bad seq {r['first_bad_seq']}.",
            f"{reason}: {meaning}. {r['message']}".strip(),
            f"treat the events from seq {r['first_bad_seq']} on as untrusted; keep an export as evidence "
            "and tell your security team",
        )
    )


class AuditBrowser(widgets.VBox):
    """Audit events with filters, and their verification (see the module docstring).

    ``refresh()`` reads the events, ``verify()`` checks the log (server and offline export),
    ``verify_bundle(bundle_or_path)`` checks an exported bundle offline; ``verification`` holds
    the last results as dicts (``ok``, ``first_bad_seq``, ``reason`` ...) by where they ran.
    """

    def __init__(
        self,
        platform: Any,
        *,
        limit: int = 1000,
        page_size: int = 15,
        debounce: float = 0.3,
        autoload: bool = True,
        public_keys: str | Iterable[str] | Mapping[str, str] | None = None,
    ) -> None:
        self.platform = platform
        self.limit = limit
        #: The keys offline checks trust, and where they came from (:func:`trusted_keys`).
        self.public_keys, self.keys_from = trusted_keys(public_keys)
        wide = {"description_width": "initial"}
        self.action = widgets.Dropdown(
            options=[("Any action", "")] + [(a, a) for a in AUDIT_ACTIONS], description="Action", style=wide
        )
        self.actor = widgets.Text(
            description="Actor", placeholder="user name", continuous_update=False, style=wide,
            tooltip="Only events of this user; Enter applies",
        )  # fmt: skip
        self.replay_id = widgets.Text(
            description="Replay", placeholder="replay-…", continuous_update=False, style=wide,
            tooltip="Only the events of one replay (its audit record); Enter applies",
        )  # fmt: skip
        self.since = widgets.Text(
            description="From", placeholder="2026-01-01T00:00:00Z or 24h", continuous_update=False,
            style=wide, tooltip="Events at or after this time (RFC 3339), or this long ago (24h, 7d); Enter"
            " applies",
        )  # fmt: skip
        self.until = widgets.Text(
            description="To", placeholder="RFC 3339 or 1h", continuous_update=False, style=wide,
            tooltip="Events at or before this time; Enter applies",
        )  # fmt: skip
        self.refresh_button = widgets.Button(
            description="Refresh", icon="refresh", tooltip="Read the events again"
        )
        self.verify_button = widgets.Button(
            description="Verify the audit log",
            icon="check",
            button_style="primary",
            tooltip="Check every seq, link, hash and checkpoint signature: on the server, and on an "
            "export here",
            layout=widgets.Layout(width="auto"),
        )
        self.message = widgets.HTML()
        self.verdict = widgets.HTML()
        self.table = DataTable(
            AUDIT_COLUMNS, key="seq", page_size=page_size, sort="seq:desc",
            caption="Audit events (newest first)", empty_text="No audit event matches these filters.",
            row_class=lambda r: "moat-row-failed" if r.get("outcome") in FAILED_OUTCOMES else "",
        )  # fmt: skip
        self.records: list[dict[str, Any]] = []
        self.verification: dict[str, dict[str, Any]] = {}
        self._debounced = Debouncer(debounce, self.refresh)
        super().__init__(
            [
                widgets.HBox(
                    [self.action, self.actor, self.replay_id],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                widgets.HBox(
                    [self.since, self.until, self.refresh_button],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                self.message,
                self.table,
                widgets.HBox([self.verify_button]),
                self.verdict,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("moat-view")
        self.add_class("moat-audit")
        self.action.observe(lambda _: self._debounced(), names="value")
        for w in (self.actor, self.replay_id, self.since, self.until):
            w.observe(lambda _: self.refresh(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.verify_button.on_click(lambda _: self.verify())
        if autoload:
            self.refresh()

    def filters(self) -> dict[str, Any]:
        """The current filters as ``platform.audit(**filters)`` takes them."""
        values = {
            "action": self.action.value,
            "actor": self.actor.value.strip(),
            "replay_id": self.replay_id.value.strip(),
            "since": self.since.value.strip(),
            "until": self.until.value.strip(),
        }
        return {k: v for k, v in values.items() if v}

    def refresh(self) -> None:
        """Read the events for the current filters (at most ``limit``)."""
        self._debounced.cancel()
        try:
            frame = self.platform.audit(limit=self.limit, **self.filters())
        except MoatError as exc:
            # No rows rather than the last answer's under filters that no longer match them.
            self.records = []
            self.table.set_records([])
            self.message.value = describe_error(exc, "read the audit log").html()
            return
        self.records = _records(frame)
        self.table.set_records(self.records)
        more = (
            f" Showing the first {self.limit}: narrow the filters to see the rest."
            if len(self.records) >= self.limit
            else ""
        )
        self.message.value = f"<span class='moat-hint'>{len(self.records)} events.{html.escape(more)}</span>"

    def verify(self, *, offline: bool = True) -> dict[str, dict[str, Any]]:
        """Verify the log on the server and (``offline``) an export of it here; show both."""
        parts: list[str] = []
        self.verification = {}
        try:
            server = self.platform.audit_verify()
        except MoatError as exc:
            self.verdict.value = describe_error(exc, "verify the audit log").html()
            return self.verification
        self.verification["server"] = _normalise(server)
        parts.append(verification_html(server, "checked by the server"))
        if offline:
            try:
                bundle = self.platform.audit_bundle()
                local = bundle.verify(self.public_keys)
            except MoatError as exc:
                parts.append(describe_error(exc, "export the audit log").html())
            else:
                self.verification["offline"] = self._result(local)
                parts.append(
                    verification_html(
                        local,
                        f"an export of {len(bundle.events)} events, checked here",
                        signer_checked=self.public_keys is not None,
                    )
                )
        self.verdict.value = "".join(parts)
        return self.verification

    def _result(self, result: Any) -> dict[str, Any]:
        return {
            **_normalise(result),
            "keys_from": self.keys_from,
            "signer_checked": self.public_keys is not None,
        }

    def verify_bundle(
        self,
        bundle: AuditBundle | Mapping[str, Any] | str | PathLike[str],
        *,
        public_keys: str | Iterable[str] | Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Verify an exported bundle offline (an AuditBundle, its dict, or a JSON file) and show it.

        Against ``public_keys`` if given, else the browser's keys (see the module docstring).
        A file is read strictly (:func:`moat_nb.audit.load_bundle`, as ``moat-nb audit verify``
        reads it): NaN, Infinity or a number beyond the doubles is refused, since the canonical
        form cannot hold it and a signed null would verify in its place."""
        keys, keys_from = (
            (self.public_keys, self.keys_from) if public_keys is None else trusted_keys(public_keys)
        )
        if isinstance(bundle, str | PathLike):
            try:
                data = audit_core.load_bundle(bundle)
            except (OSError, MoatError) as exc:
                text = exc.message if isinstance(exc, MoatError) else f"{bundle}: {exc.strerror or exc}"
                message = Message(
                    "error",
                    "Could not read the bundle.",
                    text,
                    "pass the JSON file GET /admin/audit/export returned (AuditBundle.save writes one), "
                    "unchanged",
                )
                self.verdict.value = message.html()
                self.verification = {}
                return {}
            bundle = AuditBundle(data)
        elif not isinstance(bundle, AuditBundle):
            bundle = AuditBundle(dict(bundle))
        result = {
            **_normalise(bundle.verify(keys)),
            "keys_from": keys_from,
            "signer_checked": keys is not None,
        }
        self.verification = {"bundle": result}
        self.verdict.value = verification_html(
            result, f"a bundle of {len(bundle.events)} events", signer_checked=keys is not None
        )
        return result
