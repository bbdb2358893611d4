"""Inline messages of the widgets: what went wrong, in words, and what to do (DESIGN.md section 9).

The widgets never show a traceback. An error of :mod:`moat_nb.errors` already carries a message
and a hint; :func:`describe_error` adds a title a person scans first ("You lack replay:prod",
"Replay is not part of your plan", "No agent can run this replay" ...) and :func:`message_html`
lays the three out with the theme's colours (``widgets/moat.css``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from .errors import (
    AgentUnavailable,
    AuditUnavailable,
    AuditVerificationError,
    AuthenticationError,
    ControlHeaderRejected,
    IdempotencyConflict,
    MoatError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerError,
    TierNotEntitled,
    TransportError,
    ValidationError,
)

__all__ = ["Message", "describe_error", "message_html"]

_ROLE = {"error": "alert", "warn": "status", "ok": "status", "info": "status"}


@dataclass(frozen=True)
class Message:
    """A message for the user: ``kind`` (``error``, ``warn``, ``ok``, ``info``), a ``title``,
    the ``text`` and ``todo`` (what to do next)."""

    kind: str
    title: str
    text: str = ""
    todo: str = ""

    def html(self) -> str:
        return message_html(self.kind, self.title, self.text, self.todo)

    def plain(self) -> str:
        """The message as one line of text (for logs, tests and tooltips)."""
        # Titles that end in a full stop already ("Pick an exchange first.") got a second one.
        title = self.title if self.title.endswith((".", "!", "?", ":")) else self.title + "."
        return " ".join(p for p in (title, self.text, f"What to do: {self.todo}" if self.todo else "") if p)


def message_html(kind: str, title: str, text: str = "", todo: str = "") -> str:
    """A themed message box; ``role="alert"`` for errors so that screen readers announce them."""
    parts = [f"<strong>{html.escape(title)}</strong>"]
    if text:
        parts.append(f" {html.escape(text)}")
    if todo:
        parts.append(f"<span class='moat-msg-todo'>What to do: {html.escape(todo)}</span>")
    return (
        f"<div class='moat-msg moat-msg-{kind}' role='{_ROLE.get(kind, 'status')}'>"
        + "".join(parts)
        + "</div>"
    )


def _missing(exc: MoatError) -> list[str]:
    missing = exc.details.get("missing")
    return [str(m) for m in missing] if isinstance(missing, list) else []


def describe_error(exc: BaseException, doing: str = "") -> Message:
    """A :class:`Message` for an exception raised while ``doing`` something ("replay", "search")."""
    prefix = f"Could not {doing}: " if doing else ""
    if not isinstance(exc, MoatError):
        return Message(
            "error",
            f"{prefix}unexpected {type(exc).__name__}",
            str(exc),
            "this is a bug in moat_nb: report it with the steps that led here",
        )
    text = exc.message
    todo = exc.hint or ""
    if isinstance(exc, TierNotEntitled):
        title = "Replay is not part of your plan"
        todo = todo or "ask your Cameleer administrator to move the tenant to the HIGH or BUSINESS tier"
    elif isinstance(exc, PermissionDenied):
        missing = _missing(exc)
        if "replay:prod" in missing:
            title = "You lack replay:prod"
            text = (
                "Replaying in prod, or replaying an exchange recorded in prod, needs the replay:prod "
                "permission, which no role implies. " + text
            )
        elif missing:
            title = f"You lack {', '.join(missing)}"
        else:
            title = "Permission denied"
    elif isinstance(exc, ControlHeaderRejected):
        title = "Camel control header refused"
    elif isinstance(exc, PayloadTooLarge):
        title = "The payload is too large"
    elif isinstance(exc, ValidationError):
        title = f"{prefix}the request is not valid" if prefix else "The request is not valid"
    elif isinstance(exc, AgentUnavailable):
        title = "No agent can run this replay"
    elif isinstance(exc, AuditUnavailable):
        title = "The audit log is unavailable, so nothing ran"
    elif isinstance(exc, IdempotencyConflict):
        title = "This request was already made with other data"
    elif isinstance(exc, AuthenticationError):
        title = "Not logged in"
    elif isinstance(exc, NotFound):
        title = f"{prefix}not found" if prefix else "Not found"
    elif isinstance(exc, TransportError):
        title = "The platform cannot be reached"
    elif isinstance(exc, ServerError):
        title = "The platform failed"
    elif isinstance(exc, AuditVerificationError):
        title = "The audit log does not verify"
    else:
        title = f"{prefix}{exc.code}" if prefix else exc.code
    return Message("error", title, text, todo)
