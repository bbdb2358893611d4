"""What-if replays without code: :class:`ReplayWorkbench` (DESIGN.md section 9, issue 7).

Pick an exchange (:class:`~moat_nb.picker.ExchangePicker`), edit its start payload
(:class:`~moat_nb.editor.PayloadEditor`), choose the target environment, write the reason,
press **Replay**. The trace then streams into a table and a timeline while the replay runs —
section 9's streaming: an asyncio task on the kernel's own loop reads the replay's SSE stream
(:meth:`moat_nb.stream.ReplayRun.aevents`) and draws; no thread touches a widget (without a
running loop, as in a plain script, it follows the replay right there instead). When it ends,
tabs show the diff against the original (:func:`moat_nb.diff.diff`, with noise calibrated by two
unmodified replays unless unticked; figures of :mod:`moat_nb.plots`), the payload lineage
(:func:`moat_nb.lineage.lineage`, the route graph, the first divergent field across processors)
and the replay's audit receipt (its audit events, each hash recomputed here).

The Replay button says why it is disabled: nothing picked, no reason written, a payload the
platform would refuse, a replay still running, or a permission the user lacks — read from the
login answer (or the access token's claims): ``replay:run``, ``replay:modify`` for a modified
payload, ``replay:prod`` when the source or the target is ``prod`` (section 6). The server
checks all of it again; its refusals (permission, tier, validation, agent) show inline, in
words, with what to do.

While a replay is followed, **Stop following** stops reading its trace (the replay itself goes
on on the platform) and gives the Replay button back; a platform that stops answering is said
in the progress line while the reader reconnects (for minutes, with the default back-off).
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import jwt
import traitlets

from .diff import DiffResult, diff, noise_rules_from
from .editor import PayloadEditor
from .errors import MoatError
from .lineage import Lineage, lineage
from .messages import Message, describe_error, message_html
from .model import Execution
from .noise import NoiseRule
from .picker import ExchangePicker
from .replay_views import (
    DIFF_COLUMNS,
    LINEAGE_COLUMNS,
    RECEIPT_COLUMNS,
    TRACE_COLUMNS,
    diff_figures,
    diff_records,
    draw_timeline,
    lineage_figures,
    lineage_records,
    plot_box,
    receipt_records,
    text_of,
    timeline_widget,
    trace_record,
)
from .table import DataTable, format_ms

#: The longest reason the platform accepts (section 4's replay request; the server checks it too).
MAX_REASON = 500

_REPLAY_ENDS = {
    "ERROR": "the agent could not run it",
    "TIMED_OUT": "it did not finish in time",
    "ABORTED": "the platform stopped while it ran",
}

__all__ = ["ReplayWorkbench", "permissions_of", "user_name"]


def _problems(problems: list[str]) -> list[widgets.HTML]:
    return [widgets.HTML(message_html("warn", "A figure could not be drawn:", p)) for p in problems]


def _divergence_text(row: Any) -> str:
    # A processor that ran on one side only showed its route record as JSON ("route: →
    # {"processorType": "when", ...}"); the diff's summary says it in words, so does this.
    if row.field == "route":
        side = "original" if row.kind == "removed" else "replay"
        return f"{row.processor.processor_id} ran only in the {side}"
    # A side where the field is absent read as nothing ("error:type:  → com.acme..."); the
    # diff table and the summary say "(absent)", so does this.
    before = "(absent)" if row.kind == "added" else text_of(row.original)[:60]
    after = "(absent)" if row.kind == "removed" else text_of(row.replay)[:60]
    return f"{row.path}: {before} → {after}"


# --------------------------------------------------------------------------- who may do what


def _claims(platform: Any) -> dict[str, Any]:
    token = getattr(getattr(platform, "session", None), "access_token", None)
    if not token:
        return {}
    try:
        # Only to grey out a button: the server checks the signature and the permissions.
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def permissions_of(platform: Any) -> frozenset[str] | None:
    """The user's permissions from the login answer, else from the access token's claims; None
    when neither tells (the server will say)."""
    user = getattr(platform, "user", None)
    perms = user.get("permissions") if isinstance(user, Mapping) else None
    if perms is None:
        perms = _claims(platform).get("permissions")
    return frozenset(str(p) for p in perms) if isinstance(perms, list) else None


def user_name(platform: Any) -> str:
    user = getattr(platform, "user", None)
    if isinstance(user, Mapping) and user.get("username"):
        return str(user["username"])
    sub = str(_claims(platform).get("sub") or "")
    return sub.removeprefix("user:") or "this user"


def _roles(platform: Any) -> list[str]:
    user = getattr(platform, "user", None)
    roles = user.get("roles") if isinstance(user, Mapping) else _claims(platform).get("roles")
    return [str(r) for r in roles] if isinstance(roles, list) else []


# --------------------------------------------------------------------------- the workbench


class ReplayWorkbench(widgets.VBox):
    """Picker + payload editor + target + reason + Replay, then the live trace and the results.

    Observable traits: ``running``, ``replay_id``, ``status`` (the replay's), ``done`` (bumped
    when a replay's results are shown). After a replay: ``run`` (the
    :class:`~moat_nb.stream.ReplayRun`), ``result`` (the replay's Execution), ``diff``,
    ``lineage``, ``receipt`` (its audit events). ``await wb.wait()`` waits for the replay task.
    """

    running = traitlets.Bool(False)
    replay_id = traitlets.Unicode("")
    status = traitlets.Unicode("")
    done = traitlets.Int(0)

    #: Seconds between two redraws of the trace while it streams (events come faster).
    refresh = 0.1

    def __init__(self, platform: Any, *, page_size: int = 8, debounce: float = 0.3) -> None:
        self.platform = platform
        self.permissions = permissions_of(platform)
        self.picker = ExchangePicker(platform, page_size=page_size, debounce=debounce)
        self.editor = PayloadEditor(None)
        envs = [o for o in self.picker.environment.options if o[1]]
        self.target = widgets.Dropdown(
            options=[("Same as the source", "")] + list(envs),
            description="Target environment",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="auto"),
        )
        self.reason = widgets.Text(
            description="Reason",
            placeholder="why you replay it (kept in the audit log)",
            tooltip="Why you replay this exchange: required, kept in the audit log",
            continuous_update=True,
            style={"description_width": "initial"},
            layout=widgets.Layout(width="36em"),
        )
        self.calibrate = widgets.Checkbox(
            value=True,
            description="Filter noise by calibration",
            tooltip="Replay the unmodified exchange twice more (both audited) and treat what differs "
            "between those two runs (timestamps, random ids) as noise in the diff",
            indent=False,
            layout=widgets.Layout(width="auto"),
        )
        self.replay_button = widgets.Button(
            description="Replay",
            icon="play",
            button_style="primary",
            tooltip="Replay the picked exchange with the edited payload",
            disabled=True,
        )
        self.stop_button = widgets.Button(
            description="Stop following",
            icon="stop",
            tooltip="Stop reading this replay's trace here; the replay itself goes on on the platform",
            layout=widgets.Layout(width="auto", display="none"),
        )
        self.gate = widgets.HTML()
        self.gate.add_class("moat-gate")
        self.message = widgets.HTML()
        self.progress = widgets.HTML()
        self.trace_table = DataTable(
            TRACE_COLUMNS, key="seq", page_size=500, max_height=360, follow=True,
            caption="Processors of the replay, as they arrive",
            empty_text="Press Replay: the trace streams here.",
            row_class=lambda r: "moat-row-failed" if r.get("status") == "FAILED" else "",
        )  # fmt: skip
        self.trace_table.add_class("moat-trace")
        self.timeline = timeline_widget()
        self.diff_box = widgets.VBox()
        self.lineage_box = widgets.VBox()
        self.receipt_box = widgets.VBox()
        self._clear_results()
        self.tabs = widgets.Tab(
            children=[
                widgets.VBox([self.trace_table, self.timeline]),
                self.diff_box,
                self.lineage_box,
                self.receipt_box,
            ],
            titles=("Trace", "Diff", "Lineage", "Audit receipt"),
        )
        self.tabs.add_class("moat-results")
        self.run: Any = None
        self.result: Execution | None = None
        self.diff: DiffResult | None = None
        self.lineage: Lineage | None = None
        self.receipt: list[dict[str, Any]] = []
        #: The figures (plotly) of the Diff and Lineage tabs, by name.
        self.figures: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self._source: Execution | None = None
        #: How the replay whose results the tabs hold ended (its message), None before any.
        self._outcome: Message | None = None
        self._pending: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._drawn = 0.0
        #: startTime of the replay's first processor: the timeline's zero.
        self._origin: Any = None
        self._target: str | None = None
        #: What the trace reader meets besides events (the platform not answering), for the
        #: progress line: a reader retries for minutes, and the user should see why it waits.
        self._trouble = ""
        #: Noise rules from calibration, by (source exchange, target environment).
        self.noise_rules: dict[tuple[str, str | None], list[NoiseRule]] = {}
        #: The execution the reason was written for (None: written before any pick), and the
        #: exchange whose reason a new pick cleared (for the gate's words).
        self._reason_for: Execution | None = None
        self._reason_cleared: str | None = None
        self._reason_put_aside: tuple[Execution, str] | None = None
        controls = widgets.HBox(
            [self.target, self.reason, self.calibrate, self.replay_button, self.stop_button],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        super().__init__(
            [
                widgets.HTML(self._who_html()),
                widgets.HTML("<div class='moat-section-title'>1 · Pick an exchange</div>"),
                self.picker,
                widgets.HTML("<div class='moat-section-title'>2 · Edit its start payload</div>"),
                self.editor,
                widgets.HTML("<div class='moat-section-title'>3 · Replay</div>"),
                controls,
                self.gate,
                self.message,
                self.progress,
                self.tabs,
            ],
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("moat-view")
        self.add_class("moat-workbench")
        self.picker.observe(self._picked, names="value")
        self.editor.observe(lambda _: self._update_gate(), names="version")
        self.reason.observe(self._reason_edited, names="value")
        self.target.observe(lambda _: self._update_gate(), names="value")
        self.observe(lambda _: self._update_gate(), names="running")
        self.replay_button.on_click(self._clicked)
        self.stop_button.on_click(lambda _: self.stop())
        self._update_gate()

    # ---------------------------------------------------------------- who and what

    def _who_html(self) -> str:
        perms = self.permissions
        roles = ", ".join(_roles(self.platform)) or "no role"
        if perms is None:
            can = "permissions unknown until the server answers"
        else:
            can = "; ".join(
                f"{p}: {'yes' if p in perms else 'no'}"
                for p in ("replay:run", "replay:modify", "replay:prod")
            )
        url = html.escape(str(getattr(self.platform, "url", "")))
        return (
            f"<span class='moat-hint'>Signed in to {url} as <b>{html.escape(user_name(self.platform))}</b> "
            f"({html.escape(roles)}) · {html.escape(can)}</span>"
        )

    def _environments(self) -> set[str]:
        source = self.picker.value
        envs = {source.environment} if source is not None and source.environment else set()
        if self.target.value:
            envs.add(self.target.value)
        return envs

    def blocked(self) -> Message | None:
        """Why the Replay button is disabled now (None: it is enabled)."""
        perms = self.permissions
        who = user_name(self.platform)
        if perms is not None and "replay:run" not in perms:
            roles = ", ".join(_roles(self.platform)) or "no role"
            return Message(
                "warn",
                "You lack replay:run, so you cannot replay.",
                f"{who} ({roles}) can search and read executions; replaying needs the replay:run "
                "permission, which the OPERATOR and ADMIN roles have.",
                "ask an administrator for the OPERATOR role (or a grant of replay:run); meanwhile you "
                # It said "and read their traces": the workbench shows a replay's trace, not a
                # picked exchange's recorded one (lab walk).
                "can still search and pick exchanges and read their start payloads",
            )
        if self.running:
            return Message(
                "info", "A replay is running.", "Its trace streams below; Replay is back when it ends."
            )
        if self.picker.value is None:
            return Message(
                "info", "Pick an exchange first.", "Click a row of the results, or press Enter on it."
            )
        if self.editor.blockers:
            # Short: each problem is said in full where it is fixed (the body editor, the row).
            what = "; ".join(self.editor.blockers)
            return Message(
                "warn",
                "The payload cannot be replayed yet:",
                what[0].upper() + what[1:] + ".",
                "fix what the editor marks, or press Reset",
            )
        if perms is not None and self.editor.changed and "replay:modify" not in perms:
            return Message(
                "warn",
                "You lack replay:modify.",
                "Replaying with a modified payload needs replay:modify.",
                "press Reset to replay the exchange as recorded, or ask an administrator for replay:modify",
            )
        if perms is not None and "prod" in self._environments() and "replay:prod" not in perms:
            return Message(
                "warn",
                "You lack replay:prod.",
                "Replaying in prod, or replaying an exchange recorded in prod, needs the replay:prod "
                "permission, which no role implies.",
                "pick an exchange from another environment and a non-prod target, or ask an administrator "
                "to grant you replay:prod",
            )
        if len(self.reason.value.strip()) > MAX_REASON:
            return Message(
                "warn",
                "The reason is too long.",
                f"It has {len(self.reason.value.strip())} characters; a replay's reason has at most "
                f"{MAX_REASON}.",
                "shorten it",
            )
        if not self.reason.value.strip():
            cleared = (
                f" The reason written for exchange {self._reason_cleared} was cleared when you picked "
                "this one: a reason is about its own replay (picking that exchange again puts it back)."
                if self._reason_cleared
                else ""
            )
            return Message(
                "info",
                "Write a reason.",
                "Why you replay it goes into the audit log with the replay." + cleared,
            )
        return None

    def _update_gate(self) -> None:
        following = self.running and self.task is not None and not self.task.done()
        self.stop_button.layout.display = None if following else "none"
        why = self.blocked()
        self.replay_button.disabled = why is not None
        self.replay_button.tooltip = why.plain() if why is not None else "Replay the picked exchange now"
        self.gate.value = why.html() if why is not None else ""

    def _reason_edited(self, change: Any) -> None:
        self._reason_for = self.picker.value
        if change["new"].strip():
            self._reason_cleared = None
        self._update_gate()

    def _forget_reason(self, picked: Execution | None) -> None:
        """Clear the reason when another exchange is picked: it stayed, and a reason written for
        one replay went into the audit log (append-only, DESIGN.md section 7) of another's (lab
        walk). A reason written before any pick is kept for the first one; picking the same
        execution again keeps it, and picking back the one it was written for (a mis-click)
        puts it back."""
        if picked is None:
            return
        written_for, text = self._reason_for, self.reason.value
        if not text.strip():
            put_aside = self._reason_put_aside
            if put_aside is not None and put_aside[0].execution_id == picked.execution_id:
                self.reason.value = put_aside[1]  # _reason_edited: of this pick again
                self._reason_put_aside = None
            return
        if written_for is None or written_for.execution_id == picked.execution_id:
            self._reason_for = picked
            return
        self.reason.value = ""  # _reason_edited: now of the new pick
        self._reason_cleared = written_for.exchange_id
        self._reason_put_aside = (written_for, text)

    def _picked(self, change: Any) -> None:
        self._forget_reason(change["new"])
        try:
            self.editor.load(change["new"])
        except MoatError as exc:
            self._say(describe_error(exc, "open the payload"))
        else:
            if not self.running:  # a running replay's results are labelled when it ends
                self._label_results()
        self._update_gate()

    def _label_results(self) -> None:
        """Say whose results the tabs hold once another exchange is picked: they kept the last
        replay's message, diff, lineage and receipt under the new pick, as if they were its
        results (lab walk). They stay (a mis-click loses nothing); picking that exchange again
        drops the note."""
        source, picked = self._source, self.picker.value
        if source is None or self._outcome is None:
            return
        if picked is not None and picked.execution_id == source.execution_id:
            self._say(self._outcome)
            return
        now = (
            f"the exchange now picked ({picked.exchange_id})" if picked is not None else "no exchange picked"
        )
        note = Message(
            "info",
            f"The results below are of replay {self.replay_id}, of exchange {source.exchange_id}.",
            f"They are not of {now}.",
            ("press Replay to replay the exchange now picked" if picked is not None else "pick an exchange")
            + f"; pick {source.exchange_id} again to read these results with their own message",
        )
        self.message.value = note.html() + self._outcome.html()

    def _say(self, message: Message | None) -> None:
        self.message.value = message.html() if message is not None else ""

    def _say_outcome(self, message: Message) -> None:
        """The message about how the replay whose results the tabs hold ended."""
        self._outcome = message
        self._label_results()

    # ---------------------------------------------------------------- replay

    def _clicked(self, button: Any = None) -> None:
        if self.blocked() is not None:
            self._update_gate()
            return
        self.replay()

    def replay(self) -> Any:
        """Start a replay of the picked exchange with the edited payload (the Replay button).

        On a running event loop (a kernel's) the trace is followed by a task (``self.task``);
        without one, right here, until the replay ends. Returns the ReplayRun, or None when the
        platform refused (the reason is shown inline)."""
        source = self.picker.value
        self._say(None)
        try:
            modified = self.editor.modified_payload
            run = self.platform.replay(
                source,
                headers=modified.get("headers"),
                body=modified.get("body"),
                properties=modified.get("properties"),
                target_environment=self.target.value or None,
                reason=self.reason.value.strip(),
            )
        except MoatError as exc:
            self._say(describe_error(exc, "start the replay"))
            return None
        self._target = self.target.value or None
        self._start(run, source)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._follow_blocking(run)
        else:
            self.task = loop.create_task(self._follow(run))
            self.task.add_done_callback(self._task_done)
            self._update_gate()  # the Stop following button, now that there is a task to stop
        return run

    def stop(self) -> None:
        """Stop following the running replay (the Stop following button). The replay itself goes
        on on the platform (the client has no call that cancels one); its result and audit
        record stay there."""
        if self.task is not None and not self.task.done():
            # Through the task's loop: called from a button's click (a comm message), a plain
            # task.cancel() took effect only once the reader's back-off sleep ended (up to 30 s).
            self.task.get_loop().call_soon_threadsafe(self.task.cancel)

    def _clear_results(self) -> None:
        """The result tabs as before any replay: a new replay's tabs kept the previous one's
        diff, lineage and receipt while it ran, and for good when it ended without a result."""
        for box, what in ((self.diff_box, "diff"), (self.lineage_box, "lineage"),
                          (self.receipt_box, "audit receipt")):  # fmt: skip
            box.children = (
                widgets.HTML(f"<span class='moat-hint'>The {what} shows when a replay ends.</span>"),
            )
        self.figures = {}

    def _start(self, run: Any, source: Execution) -> None:
        self.run, self._source = run, source
        self._outcome = None
        self.result = self.diff = self.lineage = None
        self.receipt = []
        self._records, self._pending, self._drawn = [], [], 0.0
        self._origin = None
        self._trouble = ""
        # Told of each dropped connection of the trace stream (and of each one that reached
        # it): the reader retries for minutes when the platform is gone, and says nothing.
        cursor = getattr(run, "cursor", None)
        if cursor is not None:
            cursor.watch = self._stream_watch
        self.trace_table.set_records([])
        draw_timeline(self.timeline, [])
        self._clear_results()
        self.tabs.selected_index = 0
        with self.hold_trait_notifications():
            self.replay_id = run.replay_id
            self.status = run.status
            self.running = True
        self._progress()

    def _consume(self, event: Any) -> None:
        if event.event == "processor":
            if self._origin is None:
                self._origin = event.data.get("startTime")
            self._pending.append(trace_record(event.data, self._origin))
        elif event.event in ("status", "end") and isinstance(event.data, Mapping):
            self.status = str(event.data.get("status") or self.status)
        now = time.monotonic()
        if now - self._drawn >= self.refresh or event.event == "end":
            self._flush()
            self._drawn = now

    def _flush(self) -> None:
        if self._pending:
            self._records.extend(self._pending)
            self.trace_table.append_records(self._pending)
            self._pending = []
            draw_timeline(self.timeline, self._records)
        self._progress()

    def _stream_watch(self, cause: BaseException | str | None) -> None:
        cursor = getattr(self.run, "cursor", None)
        if cause is None or cursor is None:
            self._trouble = ""
        else:
            self._trouble = (
                f"the platform does not answer: reconnecting ({cursor.failures} of "
                f"{cursor.policy.max_retries}); press Stop following to stop waiting"
            )
        self._progress()

    def _progress(self, note: str = "") -> None:
        note = note or self._trouble
        n = len(self._records)
        self.progress.value = (
            f"<div class='moat-msg moat-msg-info' role='status'><strong>Replay</strong> "
            f"<code>{html.escape(self.replay_id)}</code> · status <b>{html.escape(self.status)}</b> · "
            f"{n} processor{'s' if n != 1 else ''}{' so far' if self.running else ''}"
            f"{' · ' + html.escape(note) if note else ''}</div>"
        )

    async def _follow(self, run: Any) -> None:
        try:
            try:
                async for event in run.aevents():
                    self._consume(event)
                self._flush()
                execution = await run
            except Exception as exc:  # noqa: BLE001 - shown inline: a widget task has no caller to raise to
                self._ended_without_result(exc)
                return
            rules, note = None, None
            if self.calibrate.value:
                rules, note = await self._acalibrate()
            self._finish(execution, rules, note)
        finally:
            self._ended()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Stop following (or wb.task.cancel(), even before the task ran): CancelledError is no
        # Exception, and the workbench stayed "running" for good, its Replay button disabled.
        if task.cancelled() and task is self.task:
            self._stopped_following()
            self._ended()

    def _follow_blocking(self, run: Any) -> None:
        try:
            try:
                for event in run.events():
                    self._consume(event)
                self._flush()
                execution = run.wait()
            except Exception as exc:  # noqa: BLE001 - shown inline, as in _follow
                self._ended_without_result(exc)
                return
            rules, note = self._calibrate_blocking() if self.calibrate.value else (None, None)
            self._finish(execution, rules, note)
        finally:
            self._ended()

    def _ended(self) -> None:
        """Not running any more; the progress line drops its "so far" (it kept it, after the
        replay had ended, since it was drawn while ``running`` was still set)."""
        self._trouble = ""
        self.running = False
        self._progress()

    def _stopped_following(self) -> None:
        self._flush()
        self._say_outcome(
            Message(
                "warn",
                f"Stopped following replay {self.replay_id}.",
                "Only this view stopped: the replay is not cancelled on the platform. The trace below is "
                "what arrived until now; the Diff, Lineage and Audit receipt tabs are not filled for it.",
                "find its result with 'Include replays' in the picker, and its audit events in "
                "AuditBrowser (Replay: its id); or press Replay to run it again",
            )
        )
        self.done += 1

    def _ended_without_result(self, exc: BaseException) -> None:
        self._flush()
        if isinstance(exc, MoatError) and exc.code.startswith("REPLAY_"):
            status = exc.code.removeprefix("REPLAY_")
            why = _REPLAY_ENDS.get(status, "it ended without a result")
            self._say_outcome(
                Message(
                    "error",
                    f"The replay ended {status}: {why}.",
                    exc.message,
                    (exc.hint or "")
                    + "; check the agents of the target environment (platform.agents()) and replay again",
                )
            )
        else:
            self._say_outcome(describe_error(exc, "follow the replay"))
        self.done += 1

    # ---------------------------------------------------------------- noise calibration

    def _calibration_runs(self) -> list[Any]:
        reason = f"noise calibration for replay {self.replay_id}: the unmodified exchange, twice"
        return [
            self.platform.replay(self._source, target_environment=self._target, reason=reason) for _ in "ab"
        ]

    def _calibration_key(self) -> tuple[str, str | None]:
        assert self._source is not None
        return self._source.exchange_id, self._target

    def _calibration_failed(self, exc: BaseException) -> Message:
        return Message(
            "warn",
            "Noise was not calibrated.",
            describe_error(exc).plain(),
            "the diff shows timestamps and random ids as differences; untick 'Filter noise by "
            "calibration' to skip it",
        )

    async def _acalibrate(self) -> tuple[list[NoiseRule] | None, Message | None]:
        """Rules for the noise of this exchange: two unmodified replays, read on this loop."""
        key = self._calibration_key()
        if key in self.noise_rules:
            return self.noise_rules[key], None
        self._progress("calibrating noise: two unmodified replays")
        try:
            first, second = self._calibration_runs()
            a, b = await first, await second
        except Exception as exc:  # noqa: BLE001 - a diff without calibration is still a diff
            return None, self._calibration_failed(exc)
        self.noise_rules[key] = rules = noise_rules_from(a, b)
        return rules, None

    def _calibrate_blocking(self) -> tuple[list[NoiseRule] | None, Message | None]:
        key = self._calibration_key()
        if key in self.noise_rules:
            return self.noise_rules[key], None
        try:
            first, second = self._calibration_runs()
            a, b = first.wait(), second.wait()
        except Exception as exc:  # noqa: BLE001 - as in _acalibrate
            return None, self._calibration_failed(exc)
        self.noise_rules[key] = rules = noise_rules_from(a, b)
        return rules, None

    async def wait(self) -> None:
        """Wait for the replay task (if any) to finish (or to be stopped: Stop following)."""
        if self.task is not None:
            # asyncio.wait, not await: a task stopped with Stop following would raise its
            # CancelledError into the cell that waits, as a traceback.
            await asyncio.wait([self.task])

    # ---------------------------------------------------------------- results

    def _finish(self, execution: Execution, rules: list[NoiseRule] | None, note: Message | None) -> None:
        self.result = execution
        self.status = self.run.status if self.run is not None else self.status
        self._progress()
        self._say_outcome(self._result_message(execution))
        self._show_diff(execution, rules, note)
        self._show_lineage(execution)
        self._show_receipt()
        self.tabs.selected_index = 1
        self.done += 1

    def _result_message(self, execution: Execution) -> Message:
        """What the replay's route did. A route that failed says with what: the headline said
        only "the route ended FAILED", and the exception was three tabs and a scroll away
        (lab walk)."""
        ran = (
            f"{execution.processor_count} processors in {format_ms(execution.duration_ms)} on "
            f"{execution.environment} ({execution.route_version})."
        )
        if execution.status == "COMPLETED":
            return Message("ok", f"Replay {self.status.lower()}: the route ended COMPLETED.", ran)
        kind = (execution.error_type or "").rsplit(".", 1)[-1]
        error = ": ".join(t for t in (kind, (execution.error_message or "").strip()) if t)[:300]
        return Message(
            "warn",
            f"Replay {self.status.lower()}: the route ended {execution.status}"
            + (f" with {error.rstrip('.')}." if error else "."),
            ran,
            "read the Trace tab (the processors that failed are marked) and the Diff tab (where the "
            "replay first went another way than the original)",
        )

    def _show_diff(self, execution: Execution, rules: list[NoiseRule] | None, note: Message | None) -> None:
        assert self._source is not None
        try:
            self.diff = result = diff(self._source, execution, ignore=rules)
        except MoatError as exc:
            self.diff_box.children = (widgets.HTML(describe_error(exc, "diff the replay").html()),)
            return
        first = result.first_divergence
        if first is None:
            head = message_html(
                "ok",
                "No divergence.",
                "The replay did what the original did, apart from noise (timestamps, ids).",
            )
        else:
            rows = [r for r in result.rows_at(first) if not r.noise and r.cause == "route"]
            what = "; ".join(_divergence_text(r) for r in rows[:3])
            head = message_html("warn", f"First divergence at {first.label}.", what)
        if note is not None:
            head += note.html()
        elif not rules and rules is not None:
            # It said "0 rule(s) ... marked noise (paths: )".
            head += message_html(
                "info",
                "Noise calibrated: none found.",
                "The two unmodified replays gave the same results, so no difference is marked noise.",
            )
        elif rules is not None:
            paths = ", ".join(sorted({str(r.path) for r in rules if r.path is not None})[:8])
            head += message_html(
                "info",
                f"Noise calibrated: {len(rules)} rule(s) from two unmodified replays.",
                f"Differences there are marked noise (paths: {paths}).",
            )
        summary = widgets.HTML(f"{head}<pre class='moat-code'>{html.escape(result.summary())}</pre>")
        show_noise = widgets.Checkbox(value=False, description="Show noise rows", indent=False)
        table = DataTable(
            DIFF_COLUMNS, page_size=15, caption="Differences, in execution order",
            empty_text="No difference (noise hidden).",
            row_class=lambda r: " ".join(c for c, on in (("moat-row-noise", r["_noise"]),
                                                          ("moat-row-divergent", r["_first"])) if on),
        )  # fmt: skip
        table.add_class("moat-diff-table")
        records = diff_records(result)

        def fill(_: Any = None) -> None:
            table.set_records([r for r in records if show_noise.value or not r["_noise"]])

        show_noise.observe(fill, names="value")
        fill()
        figures, problems = diff_figures(result)
        self.figures = dict(figures)
        self.diff_box.children = (
            summary,
            *(plot_box(fig) for _, fig in figures),
            *_problems(problems),
            show_noise,
            table,
        )

    def _show_lineage(self, execution: Execution) -> None:
        assert self._source is not None
        plots: list[widgets.Widget] = []
        if self.diff is not None:
            first = self.diff.first_divergence
            path = next((r.path for r in self.diff.rows_at(first) if not r.noise), None) if first else None
            figures, problems = lineage_figures(self.diff, path)
            self.figures.update(figures)
            plots = [*(plot_box(fig) for _, fig in figures), *_problems(problems)]
        sides = {"replay": execution, "original": self._source}
        choice = widgets.ToggleButtons(
            options=[("Replay", "replay"), ("Original", "original")],
            description="Lineage of",
            tooltips=[
                "How the replay's payload changed, processor by processor",
                "The same for the original",
            ],
            style={"description_width": "initial"},
        )
        note = widgets.HTML()
        table = DataTable(
            LINEAGE_COLUMNS, page_size=15, caption="Which processor set, changed or removed which field"
        )

        def fill(_: Any = None) -> None:
            try:
                # The replay's lineage names the start payload's own changes at "(start)": a
                # workbench replay is mostly a modified payload, and without the original its
                # "who changed" of an edited field was empty.
                replay_side = choice.value == "replay"
                result = lineage(sides[choice.value], original=self._source if replay_side else None)
            except MoatError as exc:
                note.value = describe_error(exc, "compute the lineage").html()
                table.set_records([])
                return
            if choice.value == "replay":
                self.lineage = result
            note.value = "".join(message_html("info", "Could not compare:", t) for t in result.limitations)
            table.set_records(lineage_records(result))

        choice.observe(fill, names="value")
        fill()
        self.lineage_box.children = (*plots, choice, note, table)

    def _show_receipt(self) -> None:
        replay_id = self.replay_id
        try:
            events = self.platform.replay_receipt(replay_id)
        except MoatError as exc:
            self.receipt_box.children = (widgets.HTML(describe_error(exc, "read the audit receipt").html()),)
            return
        self.receipt = list(events)
        records = receipt_records(self.receipt)
        bad = [r for r in records if not r["_ok"]]
        if not records:
            head = message_html(
                "warn", "No audit events for this replay yet.", "", "open this tab again in a moment"
            )
        elif bad:
            head = message_html(
                "error",
                f"{len(bad)} of {len(records)} audit events do not match their hash.",
                f"First: seq {bad[0]['seq']}.",
                "verify the whole log with AuditBrowser or `moat-nb audit verify`",
            )
        else:
            actions = ", ".join(f"{r['action']} (seq {r['seq']})" for r in records)
            head = message_html(
                "ok",
                f"Audit receipt: {len(records)} events share replay id {replay_id}.",
                f"{actions}. Each event's hash recomputes from its content and the hash before it.",
            )
        table = DataTable(RECEIPT_COLUMNS, page_size=20, caption=f"Audit events of {replay_id}")
        table.set_records(records)
        self.receipt_box.children = (widgets.HTML(head), table)
