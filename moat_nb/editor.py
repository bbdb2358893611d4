"""Editing a start payload in a notebook: :class:`PayloadEditor` and its :class:`BodyEditor`.

:class:`PayloadEditor` shows an execution's start payload (DESIGN.md section 3: the headers,
body and properties the exchange entered its route with) for a what-if replay:

* headers and properties as key/value rows that can be added, removed and renamed
  (:class:`KeyValueEditor`); a row is marked new, changed or renamed;
* the body in :class:`BodyEditor`, an anywidget (``widgets/body_editor.js``) that checks JSON
  as you type and marks the lines that differ from the original. A JSON body is shown indented
  (the recorded body is one line, where every change would mark "line 1") and sent compact,
  as the agents record it; a body that is not JSON is edited as text;
* a reset button; :attr:`PayloadEditor.modified_payload` is the section 3 ``modifiedPayload``
  with only the changed parts present (a present part replaces the original's whole part);
* secrets (section 4 names: ``Authorization``, ``*token*`` ...) are shown masked; the platform
  only ever sends their redaction markers;
* Camel control headers (``Camel*``, ``org.apache.camel*``, any case; CVE-2025-27636) are
  refused inline, with the reason, before anything is sent — the server refuses them too.

The checks are pure functions (:func:`check_rows` here; :func:`moat_nb.body_editor.check_json`
and :func:`~moat_nb.body_editor.changed_lines` for the body), so the kernel and the tests agree
with what the browser shows.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import traitlets

from .audit import NonFiniteNumber, loads_strict
from .body_editor import BodyEditor, editable_body
from .errors import ControlHeaderRejected, ValidationError
from .expectations import json_equal
from .messages import message_html
from .model import Execution, Payload
from .payload import check_header_field, is_control_header, is_redacted, is_secret_name

__all__ = [
    "CONTROL_HEADER_REASON",
    "BodyEditor",
    "KeyValueEditor",
    "KeyValueRow",
    "PayloadEditor",
    "RowProblem",
    "check_rows",
]


# --------------------------------------------------------------------------- row checks


@dataclass(frozen=True)
class RowProblem:
    """A problem of one key/value row: its index, the name and the message in words."""

    index: int
    name: str
    message: str
    blocking: bool = True


#: Why a replay may not set a Camel control header (DESIGN.md section 4; CVE-2025-27636).
CONTROL_HEADER_REASON = (
    "Camel control headers (names that start with 'camel' or 'org.apache.camel', in any case) steer "
    "Camel's components — CamelHttpUri rewrites where an HTTP call goes, CamelBeanMethodName picks "
    "another bean method (CVE-2025-27636) — so a replay may not set them"
)


def _plural(kind: str) -> str:
    # "No propertys." was shown under an exchange without properties.
    return "properties" if kind == "property" else f"{kind}s"


def check_rows(kind: str, rows: Sequence[tuple[str, Any]]) -> list[RowProblem]:
    """Problems of key/value rows that are about to be sent (``kind``: ``header``/``property``).

    Every row needs a name; a name appears once (header names case-insensitively, as Camel's
    header map compares them); header names and values carry no CR, LF or NUL; no header is a
    Camel control header (section 4). A secret still holding its redaction marker is a warning:
    the platform never sends the real value, so the replay would run with the marker.
    """
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for i, (name, value) in enumerate(rows):
        if not name.strip():
            problems.append(RowProblem(i, name, f"this {kind} has no name: type one, or remove the row"))
            continue
        fold = name.lower() if kind == "header" else name
        if fold in seen:
            same = "case-insensitively, as Camel compares header names" if kind == "header" else ""
            problems.append(
                RowProblem(
                    i,
                    name,
                    f"{name!r} appears twice{' (' + same + ')' if same else ''}: "
                    "remove or rename one of them",
                )  # fmt: skip
            )
        seen.setdefault(fold, i)
        if kind == "header":
            if is_control_header(name):
                problems.append(
                    RowProblem(
                        i,
                        name,
                        f"{name} is a Camel control header. {CONTROL_HEADER_REASON}. Remove or rename it.",
                    )  # fmt: skip
                )
            try:
                check_header_field(name, value)
            except ValidationError as exc:
                problems.append(RowProblem(i, name, f"{exc.message}: {exc.hint or 'remove them'}"))
        if is_secret_name(name) and is_redacted(value):
            problems.append(
                RowProblem(
                    i,
                    name,
                    f"{name} holds the redaction marker the platform shows instead of the secret; as "
                    f"the {_plural(kind)} are modified, the replay would run with the marker itself. "
                    "Type the real value, or remove the row if the route does not need it",
                    blocking=False,
                )
            )
    return problems


def _same(a: Any, b: Any) -> bool:
    # Structurally: the canonical JSON (RFC 8785) compared before refuses an integer beyond
    # 2**53, so a body or property holding a Java long id could not be opened.
    return json_equal(a, b)


# --------------------------------------------------------------------------- key/value rows


def _display(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class KeyValueRow:
    """One editable row: ``name_field``, ``value_field`` (masked for a secret), ``remove_button``,
    ``state`` (new / changed / renamed) and ``message`` (the row's problem, inline)."""

    def __init__(
        self, owner: KeyValueEditor, name: str, value: Any, original: tuple[str, Any] | None
    ) -> None:
        self.owner = owner
        self.original = original
        kind = owner.kind
        self.name_field = widgets.Text(
            value=name,
            placeholder=f"{kind} name",
            tooltip=f"{kind.capitalize()} name",
            continuous_update=True,
            # Flexible widths with floors, in a row that wraps: fixed 30 % / 45 % plus the
            # button and the state ran out of the box below ~480 px (lab walk, at 390 px).
            layout=widgets.Layout(width="auto", flex="1 1 30%", min_width="8em"),
        )
        self.value_field = self._value_widget(name, _display(value))
        self.remove_button = widgets.Button(
            description="Remove",
            icon="trash",
            tooltip=f"Remove this {kind}",
            layout=widgets.Layout(width="auto", min_width="7.5em", flex="0 0 auto"),
        )
        self.state = widgets.HTML(layout=widgets.Layout(width="auto", min_width="90px"))
        self.message = widgets.HTML()
        self.line = widgets.HBox(
            [self.name_field, self.value_field, self.remove_button, self.state],
            layout=widgets.Layout(width="100%", flex_flow="row wrap"),
        )
        self.line.add_class("moat-kv-row")
        self.box = widgets.VBox([self.line, self.message], layout=widgets.Layout(width="100%"))
        self.name_field.observe(self._name_changed, names="value")
        self.value_field.observe(self._edited, names="value")
        self.remove_button.on_click(lambda _: owner.remove(self))

    def _value_widget(self, name: str, text: str) -> widgets.Text | widgets.Password:
        cls = widgets.Password if is_secret_name(name) else widgets.Text
        return cls(
            value=text,
            placeholder="value",
            tooltip=f"Value of {name or 'this ' + self.owner.kind}"
            + (" (secret: shown masked)" if cls is widgets.Password else ""),
            continuous_update=True,
            layout=widgets.Layout(width="auto", flex="2 1 45%", min_width="10em"),
        )

    def _name_changed(self, change: Any) -> None:
        secret = is_secret_name(change["new"])
        if secret != isinstance(self.value_field, widgets.Password):
            # A renamed secret stays masked, a row renamed to a secret becomes masked.
            old = self.value_field
            self.value_field = self._value_widget(change["new"], old.value)
            self.value_field.observe(self._edited, names="value")
            self.line.children = (self.name_field, self.value_field, self.remove_button, self.state)
            old.close()
        self._edited(change)

    def _edited(self, change: Any = None) -> None:
        self.owner._row_edited()

    @property
    def name(self) -> str:
        return self.name_field.value

    @property
    def value(self) -> Any:
        """The value to send: text, or JSON when the original value was not a string and the
        text still parses (a property holding a map stays a map)."""
        text = self.value_field.value
        if self.original is not None and not isinstance(self.original[1], str):
            try:
                return loads_strict(text)
            except (ValueError, RecursionError):  # NaN, 1e999 too: stays text, see number_error
                return text
        return text

    @property
    def number_error(self) -> str | None:
        """Why the value cannot be sent as the number it was (NaN, Infinity, ``1e999``), or None.

        The platform refuses non-finite numbers, and the text itself would replace a number
        with a string; so the row is refused inline, as the body editor refuses them."""
        if self.original is None or isinstance(self.original[1], str):
            return None
        text = self.value_field.value
        try:
            loads_strict(text)
        except NonFiniteNumber:
            return (
                f"{text.strip()[:40]} is not a JSON number: the platform refuses NaN, Infinity and "
                "numbers beyond the doubles. Type a finite number, or null"
            )
        except (ValueError, RecursionError):
            return None
        return None

    def describe(self) -> str:
        """``new``, ``renamed from X``, ``changed``, ``renamed from X, changed`` or ``""``."""
        if self.original is None:
            return "new"
        parts = []
        if self.name != self.original[0]:
            parts.append(f"renamed from {self.original[0]}")
        if not _same(self.value, self.original[1]):
            parts.append("changed")
        return ", ".join(parts)

    def close(self) -> None:
        for w in (
            self.name_field,
            self.value_field,
            self.remove_button,
            self.state,
            self.message,
            self.line,
            self.box,
        ):
            w.close()


class KeyValueEditor(widgets.VBox):
    """Headers or properties as editable rows (``kind`` ``"header"`` or ``"property"``).

    ``mapping()`` is what the rows say now, ``modified`` whether that differs from the original,
    ``problems`` what stops it from being sent (and warnings), each also shown under its row.
    """

    version = traitlets.Int(0)

    def __init__(
        self, kind: str, original: Mapping[str, Any] | None = None, *, title: str | None = None
    ) -> None:
        self.kind = kind
        self.plural = _plural(kind)
        self.original: dict[str, Any] = dict(original or {})
        self.rows: list[KeyValueRow] = []
        self.title = widgets.HTML(
            f"<div class='moat-section-title'>{html.escape(title or kind.capitalize() + 's')}</div>"
        )
        self.rows_box = widgets.VBox()
        self.add_button = widgets.Button(
            description=f"Add {kind}",
            icon="plus",
            tooltip=f"Add a {kind} row",
            layout=widgets.Layout(width="auto"),
        )
        self.add_button.on_click(lambda _: self.add())
        self.empty = widgets.HTML()
        #: The original rows removed, each with a button that puts it back (see _show_removed).
        self.removed_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self._removed_shown: list[str] = []
        self.problems: list[RowProblem] = []
        self._quiet = False
        super().__init__(
            [self.title, self.rows_box, self.empty, self.removed_box, widgets.HBox([self.add_button])],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("moat-view")
        self.reset()

    # ---------------------------------------------------------------- editing

    def reset(self, original: Mapping[str, Any] | None = None) -> None:
        """Rows of the original again (or of a new original)."""
        if original is not None:
            self.original = dict(original)
        for row in self.rows:
            row.close()
        self._quiet = True
        self.rows = [KeyValueRow(self, k, v, (k, v)) for k, v in self.original.items()]
        self._quiet = False
        self._layout()

    def add(self, name: str = "", value: Any = "") -> KeyValueRow:
        """A new row (the add button's action); returns it so that code can fill it."""
        self._quiet = True
        row = KeyValueRow(self, name, value, None)
        self._quiet = False
        self.rows.append(row)
        self._layout()
        return row

    def remove(self, row: KeyValueRow) -> None:
        """Drop a row (its remove button's action)."""
        self.rows.remove(row)
        row.close()
        self._layout()

    def restore(self, name: str) -> KeyValueRow:
        """Put back the original row ``name`` that was removed, as recorded (its Restore button)."""
        if name not in self.removed:
            raise ValidationError(
                f"{name!r} is not a removed {self.kind}",
                hint=f"removed {self.plural}: {', '.join(self.removed) or 'none'}",
            )
        self._quiet = True
        row = KeyValueRow(self, name, self.original[name], (name, self.original[name]))
        self._quiet = False
        self.rows.append(row)
        self._layout()
        return row

    @property
    def removed(self) -> list[str]:
        """Names of original rows no row holds any more (not renamed, not typed in again)."""
        kept = {r.original[0] for r in self.rows if r.original is not None} | {r.name for r in self.rows}
        return [name for name in self.original if name not in kept]

    def _show_removed(self) -> None:
        # A removed row vanished without a trace: the editor said "Modified: headers" and
        # nothing showed which header would be missing from the replay (lab walk).
        removed = self.removed
        if removed == self._removed_shown:
            return
        self._removed_shown = removed
        for w in self.removed_box.children:
            w.close()
        children: list[widgets.Widget] = []
        if removed:
            children.append(
                widgets.HTML(
                    f"<span class='moat-kv-state'>Removed, not sent with the replay ({len(removed)}):</span>"
                )
            )
        for name in removed:
            value = self.original[name]
            shown = "a secret" if is_secret_name(name) else repr(_display(value)[:60])
            button = widgets.Button(
                description=f"Restore {name}"[:40],
                icon="undo",
                tooltip=f"Put back the {self.kind} {name} as recorded ({shown})",
                layout=widgets.Layout(width="auto"),
            )
            button.on_click(lambda _, name=name: self.restore(name))
            children.append(button)
        self.removed_box.children = tuple(children)

    def find(self, name: str) -> KeyValueRow | None:
        """The row named ``name`` (header names case-insensitively)."""
        for row in self.rows:
            if row.name == name or (self.kind == "header" and row.name.lower() == name.lower()):
                return row
        return None

    def _layout(self) -> None:
        self.rows_box.children = tuple(r.box for r in self.rows)
        self._row_edited()

    def _row_edited(self) -> None:
        if self._quiet:
            return
        self.problems = check_rows(self.kind, [(r.name, r.value) for r in self.rows]) if self.modified else []
        for i, row in enumerate(self.rows):
            why = row.number_error
            if why is not None:
                self.problems.append(RowProblem(i, row.name, why))
        by_row: dict[int, list[RowProblem]] = {}
        for p in self.problems:
            by_row.setdefault(p.index, []).append(p)
        for i, row in enumerate(self.rows):
            state = row.describe()
            row.state.value = f"<span class='moat-kv-state'>{html.escape(state)}</span>" if state else ""
            mine = by_row.get(i, [])
            row.message.value = "".join(
                message_html(
                    "error" if p.blocking else "warn", "Refused:" if p.blocking else "Note:", p.message
                )
                for p in mine
            )
            for cls in ("moat-kv-changed", "moat-kv-new", "moat-kv-invalid"):
                row.line.remove_class(cls)
            if any(p.blocking for p in mine):
                row.line.add_class("moat-kv-invalid")
            elif state == "new":
                row.line.add_class("moat-kv-new")
            elif state:
                row.line.add_class("moat-kv-changed")
        self.empty.value = f"<span class='moat-hint'>No {self.plural}.</span>" if not self.rows else ""
        self._show_removed()
        self.version += 1

    # ---------------------------------------------------------------- reading

    def mapping(self) -> dict[str, Any]:
        """The rows as a dict, in row order."""
        return {r.name: r.value for r in self.rows}

    @property
    def modified(self) -> bool:
        """True when the rows no longer say what the original said (names, values or rows)."""
        rows = [(r.name, r.value) for r in self.rows]
        if len(rows) != len(self.original):
            return True
        return not _same(dict(rows), self.original) or len({n for n, _ in rows}) != len(rows)

    @property
    def blocking(self) -> list[RowProblem]:
        return [p for p in self.problems if p.blocking]


# --------------------------------------------------------------------------- the payload editor


class PayloadEditor(widgets.VBox):
    """Edit an execution's start payload for a replay (see the module docstring).

    ``PayloadEditor(execution)`` takes an :class:`~moat_nb.model.Execution` with its detail
    fields (``platform.execution(id)``; a search hit has no payload). Observable traits:
    ``execution``, ``errors`` (what stops a replay, in words; ``blockers``: the same, short),
    ``changed`` (anything edited),
    ``version`` (bumped at every edit). Read :attr:`modified_payload` for the replay request.
    """

    execution = traitlets.Any(None, allow_none=True)
    errors = traitlets.List(traitlets.Unicode())
    #: The same problems in a few words each, pointing at where they are said in full (the body
    #: editor, the row): what the status below the editor and the workbench's gate list.
    blockers = traitlets.List(traitlets.Unicode())
    warnings = traitlets.List(traitlets.Unicode())
    changed = traitlets.Bool(False)
    version = traitlets.Int(0)

    def __init__(self, execution: Execution | None = None) -> None:
        self.heading = widgets.HTML()
        self.headers = KeyValueEditor("header")
        self.properties = KeyValueEditor("property", title="Exchange properties")
        self.body_editor = BodyEditor(label="Body")
        self.send_raw = widgets.Checkbox(
            value=False,
            description="Send the body as typed, even if it is not valid JSON",
            tooltip="Replay a malformed body on purpose (to reproduce a parsing failure)",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.reset_button = widgets.Button(
            description="Reset",
            icon="undo",
            tooltip="Discard every edit: headers, properties and body as recorded",
            layout=widgets.Layout(width="auto"),
        )
        self.status = widgets.HTML()
        self.reset_button.on_click(lambda _: self.reset())
        super().__init__(
            [
                self.heading,
                self.headers,
                self.properties,
                self.body_editor,
                self.send_raw,
                widgets.HBox([self.reset_button]),
                self.status,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("moat-view")
        self.add_class("moat-payload-editor")
        self._original_text = ""
        self.headers.observe(self._edited, names="version")
        self.properties.observe(self._edited, names="version")
        self.body_editor.observe(self._edited, names="value")
        self.send_raw.observe(self._edited, names="value")
        self.send_raw.observe(self._say_what_happens, names="value")
        self._say_what_happens()
        self.load(execution)

    # ---------------------------------------------------------------- loading

    def load(self, execution: Execution | None) -> None:
        """Show another execution's start payload (None: nothing to edit)."""
        if execution is not None and execution.input_headers is None and execution.input_body is None:
            raise ValidationError(
                f"execution {execution.execution_id} has no start payload: it is a search hit",
                code="NO_PAYLOAD",
                hint="pass platform.execution(execution_id), which has the detail fields",
            )
        self.execution = execution
        payload = execution.start_payload if execution is not None else Payload()
        self._original = payload
        self._original_text, mode = editable_body(payload.body)
        with self.hold_trait_notifications():
            self.headers.reset(payload.headers)
            self.properties.reset(payload.properties)
            self.body_editor.mode = mode
            self.body_editor.original = self._original_text
            self.body_editor.value = self._original_text
            self.body_editor.read_only = execution is None
            self.send_raw.value = False
        self.send_raw.layout.display = None if mode == "json" else "none"
        if execution is None:
            self.heading.value = "<span class='moat-hint'>Pick an exchange to edit its start payload.</span>"
        else:
            self.heading.value = (
                "<div class='moat-section-title'>Start payload of "
                f"<code>{html.escape(execution.exchange_id)}</code></div>"
                f"<span class='moat-hint'>{html.escape(execution.route_id)} · "
                f"{html.escape(execution.environment or '')} · {html.escape(execution.status)} — as it "
                "entered the route. Edit it for a what-if replay; secrets show as redaction markers.</span>"
            )
        self._edited()

    def reset(self) -> None:
        """Discard every edit (the reset button)."""
        self.load(self.execution)

    # ---------------------------------------------------------------- editing from code

    @property
    def body(self) -> str:
        """The body text as edited (JSON bodies are shown indented)."""
        return self.body_editor.value

    @body.setter
    def body(self, text: str) -> None:
        self.body_editor.value = text

    def set_header(self, name: str, value: Any) -> None:
        """Change a header's value, or add the header."""
        self._set(self.headers, name, value)

    def remove_header(self, name: str) -> None:
        self._remove(self.headers, name)

    def rename_header(self, old: str, new: str) -> None:
        self._rename(self.headers, old, new)

    def set_property(self, name: str, value: Any) -> None:
        self._set(self.properties, name, value)

    def remove_property(self, name: str) -> None:
        self._remove(self.properties, name)

    def rename_property(self, old: str, new: str) -> None:
        self._rename(self.properties, old, new)

    @staticmethod
    def _row(rows: KeyValueEditor, name: str) -> KeyValueRow:
        row = rows.find(name)
        if row is None:
            raise ValidationError(
                f"there is no {rows.kind} {name!r}", hint=f"{rows.plural}: {sorted(rows.mapping())}"
            )
        return row

    def _set(self, rows: KeyValueEditor, name: str, value: Any) -> None:
        row = rows.find(name)
        if row is None:
            row = rows.add(name)
        row.value_field.value = _display(value)

    def _remove(self, rows: KeyValueEditor, name: str) -> None:
        rows.remove(self._row(rows, name))

    def _rename(self, rows: KeyValueEditor, old: str, new: str) -> None:
        self._row(rows, old).name_field.value = new

    #: What the body editor says to do about an invalid JSON body: fix it, or what happens.
    FIX_BODY = (
        "Fix it before replaying (the route parses the body as JSON), or tick 'Send the body as "
        "typed' below to replay it as it is, on purpose."
    )
    AS_TYPED = (
        "It is sent as typed, since 'Send the body as typed' is ticked: the route will likely fail "
        "to parse it (untick it to have the body checked)."
    )

    def _say_what_happens(self, change: Any = None) -> None:
        # The editor said "Fix it before replaying" with the box ticked, while the body would
        # be sent as typed (lab walk): its words follow the box.
        with self.body_editor.hold_trait_notifications():
            self.body_editor.as_typed = self.send_raw.value
            self.body_editor.todo = self.AS_TYPED if self.send_raw.value else self.FIX_BODY

    # ---------------------------------------------------------------- state

    def _body_to_send(self) -> tuple[bool, str | None, str | None]:
        """(body modified, body to send, error in words)."""
        text = self.body_editor.value
        if self.body_editor.mode == "json":
            if self.send_raw.value:
                return text != self._original_text, text, None
            error = self.body_editor.error
            if error is not None:
                return (
                    True,
                    None,
                    (
                        f"The body is not valid JSON ({error}): fix it, or tick 'Send the body as typed' "
                        "to replay a malformed body on purpose."
                    ),
                )
            parsed = json.loads(text)
            if self._original.body is not None and _same(parsed, json.loads(self._original.body)):
                return False, None, None
            # Compact, as the agents record bodies (json.dumps' default separators).
            return True, json.dumps(parsed, ensure_ascii=False), None
        if text == self._original_text:
            return False, None, None
        return True, text, None

    def _edited(self, change: Any = None) -> None:
        errors: list[str] = []
        blockers: list[str] = []
        warnings: list[str] = []
        for rows in (self.headers, self.properties):
            for p in rows.problems:
                (errors if p.blocking else warnings).append(f"{rows.kind} {p.name!r}: {p.message}")
                if p.blocking:
                    blockers.append(f"the {rows.kind} {p.name!r} is refused (see its row)")
        body_changed, _, body_error = self._body_to_send()
        if body_error:
            errors.append(body_error)
            # Said in full in the body editor, where it is fixed; here and in the workbench's
            # gate it read a second and a third time (lab walk).
            blockers.append("the body is not valid JSON (see the body editor)")
        changed = body_changed or self.headers.modified or self.properties.modified
        with self.hold_trait_notifications():
            self.errors = errors
            self.blockers = blockers
            self.warnings = warnings
            self.changed = changed
            self.version += 1
        self.status.value = self._status_html()

    def _status_html(self) -> str:
        if self.execution is None:
            return ""
        if self.blockers:
            items = "".join(f"<li>{html.escape(e)}</li>" for e in self.blockers)
            return (
                "<div class='moat-msg moat-msg-error' role='alert'><strong>This payload cannot be "
                f"replayed yet:</strong><ul>{items}</ul></div>"
            )
        raw = self.send_raw.value and self.body_editor.mode == "json" and self.body_editor.error is not None
        body = "body (as typed: not valid JSON)" if raw else "body"
        parts = [p for p, on in (("headers", self.headers.modified), ("properties", self.properties.modified),
                                 (body, self._body_to_send()[0])) if on]  # fmt: skip
        if not parts:
            return message_html("info", "Unmodified.", "A replay now runs the exchange as recorded.")
        return message_html(
            "ok",
            f"Modified: {', '.join(parts)}.",
            "The replay sends these parts whole; the others stay as recorded.",
        )

    @property
    def valid(self) -> bool:
        """True when nothing stops the payload from being sent."""
        return not self.errors

    @property
    def original_payload(self) -> Payload:
        """The start payload as recorded (secrets as redaction markers)."""
        return self._original

    @property
    def modified_payload(self) -> dict[str, Any]:
        """The section 3 ``modifiedPayload``: only the parts that changed, each whole
        (``{}`` when nothing changed). Raises :class:`~moat_nb.errors.ControlHeaderRejected` or
        :class:`~moat_nb.errors.ValidationError` while the editor shows a blocking problem."""
        if self.execution is None:
            return {}
        control = [p for p in self.headers.blocking if is_control_header(p.name)]
        if control:
            raise ControlHeaderRejected(
                f"{', '.join(p.name for p in control)}: {CONTROL_HEADER_REASON}",
                hint="remove or rename these headers",
                details={"headers": [p.name for p in control]},
            )
        if self.errors:
            raise ValidationError(
                "the payload cannot be sent: " + "; ".join(self.errors), code="INVALID_PAYLOAD"
            )
        out: dict[str, Any] = {}
        if self.headers.modified:
            out["headers"] = self.headers.mapping()
        modified, body, _ = self._body_to_send()
        if modified:
            out["body"] = body
        if self.properties.modified:
            out["properties"] = self.properties.mapping()
        return out

    @property
    def effective_payload(self) -> Payload:
        """What the replay would run: the modified parts over the original."""
        from .model import ModifiedPayload

        return ModifiedPayload.from_wire(self.modified_payload).apply(self._original)

    def on_change(self, callback: Callable[[PayloadEditor], None]) -> None:
        """Call ``callback(editor)`` after every edit."""
        self.observe(lambda _: callback(self), names="version")
