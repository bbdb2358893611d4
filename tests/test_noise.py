"""Diff paths and noise rules (moat_nb/noise.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moat_nb.diff import DiffRow, ProcessorRef
from moat_nb.errors import ValidationError
from moat_nb.noise import (
    DEFAULT_RULES,
    IdContext,
    NoiseRule,
    ParsedPath,
    as_rules,
    check_glob,
    check_prefix,
    escape_glob,
    format_name,
    format_segments,
    glob_regex,
    parse_path,
)

names = st.text(min_size=1, max_size=8)
segments = st.lists(st.one_of(st.integers(0, 99), names), max_size=4)


@settings(max_examples=200, deadline=None)
@given(segments)
def test_body_paths_round_trip(segs: list[str | int]) -> None:
    path = "body:$" + format_segments(segs)
    assert parse_path(path) == ParsedPath("body", segments=tuple(segs), json=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["headers", "properties"]), names, segments)
def test_header_and_property_paths_round_trip(field: str, name: str, segs: list[str | int]) -> None:
    path = f"{field}:{format_name(name)}" + format_segments(segs)
    assert parse_path(path) == ParsedPath(field, name=name, segments=tuple(segs))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["headers", "properties"]), names, segments)
def test_a_printed_path_used_as_a_glob_matches_itself(field: str, name: str, segs: list[str | int]) -> None:
    path = f"{field}:{format_name(name)}" + format_segments(segs)
    assert NoiseRule(path=path).matches(row(path, 1, 2))
    assert NoiseRule(path=path).matches(row(path + ".below", 1, 2))
    assert not NoiseRule(path=path).matches(row(path + "x", 1, 2)) or path.endswith("*")
    assert glob_regex(escape_glob(path)).match(path)


def test_path_formatting_examples() -> None:
    assert format_segments(["lines", 0, "total"]) == ".lines[0].total"
    assert format_segments(["unit price", "a.b", "it's"]) == "['unit price']['a.b']['it\\'s']"
    assert format_name("Content-Type") == "Content-Type"
    assert format_name("org.apache.camel.Foo") == "['org.apache.camel.Foo']"
    assert format_segments(["0"]) == "['0']"  # a key that looks like an index stays a key
    assert parse_path("body:$['0']").segments == ("0",)
    assert parse_path("body:line 12") == ParsedPath("body", line=12)
    assert parse_path("error:message") == ParsedPath("error", name="message")
    assert parse_path("status") == ParsedPath("status")


@pytest.mark.parametrize(
    "bad",
    [
        "payload:x",
        "body:lines",
        "body:line 0",
        "headers:",
        "status:x",
        "error:kind",
        "body:$[x]",
        "body:$['a",
    ],
)
def test_bad_paths_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_path(bad)
    assert err.value.code == "BAD_PATH" and "body:$.lines[0].total" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("glob", "path", "hit"),
    [
        ("body:$.lines[0].total", "body:$.lines[0].total", True),
        ("body:$.lines[0].total", "body:$.lines[0]Xtotal", False),  # '.' and '[' are literal
        ("body:$.lines[0]", "body:$.lines[0].total", True),  # covers what lies below
        ("body:$.lines[0]", "body:$.lines[01]", False),
        ("body:$.lines[0].tot", "body:$.lines[0].total", False),  # not a segment boundary
        ("body:$.lines[*].total", "body:$.lines[12].total", True),
        ("body:$.*", "body:$.a.b", True),  # prefix "body:$.a", then ".b" below it
        ("body:$.*.c", "body:$.a.b.c", False),  # * stays within one segment
        ("body:$.**.c", "body:$.a.b.c", True),
        ("headers:Camel*", "headers:CamelHttpUri", True),
        ("headers:camelhttp*", "headers:CamelHttpUri", True),  # header names: case-insensitive
        ("properties:camelhttp*", "properties:CamelHttpUri", False),
        ("headers", "headers:anything", True),
        ("body:$['a*b']", "body:$['aXXb']", True),
        (escape_glob("body:$['a*b']"), "body:$['aXXb']", False),
        (escape_glob("body:$['a*b']"), "body:$['a*b']", True),
        ("body:line ?", "body:line 7", True),
    ],
)
def test_glob_semantics(glob: str, path: str, hit: bool) -> None:
    assert bool(glob_regex(glob).match(path)) is hit


def row(path: str, original: object, replay: object, kind: str = "changed", pid: str = "p") -> DiffRow:
    return DiffRow(ProcessorRef("orders", pid, 0, 1, 1), path.partition(":")[0], path, original, replay, kind)


NO_IDS = IdContext()


def noise_of(r: DiffRow, ids: IdContext = NO_IDS) -> str | None:
    for rule in DEFAULT_RULES:
        if rule.matches(r, ids):
            return rule.label
    return None


def test_default_rules() -> None:
    assert noise_of(row("headers:breadcrumbId", "a", "b")) == "Camel per-run id or timestamp"
    assert noise_of(row("properties:breadcrumbid", "a", "b")) is None  # property names: exact case
    assert noise_of(row("headers:breadcrumbIdentity", "a", "b")) is None
    assert noise_of(row("headers:BREADCRUMBID", "a", "b")) is not None
    assert noise_of(row("properties:CamelCreatedTimestamp", 1, 2)) is not None
    assert noise_of(row("headers:X-Cameleer-Replay", None, "rp-1", "added")) is not None
    assert (
        noise_of(row("headers:ref", "ID-host-1-1700000000000-0-1", "ID-host-1-1700000000000-0-2"))
        == "Camel exchange id"
    )
    assert noise_of(row("body:$.id", "0A1B2C3D4E5F607-0000000000000001", "0A1B2C3D4E5F607-0000000000000002"))
    assert noise_of(row("body:$.id", "ID-1", "ID-2")) is None  # an id of the application, not Camel's
    # Camel 2's shape (a host with dashes, a port) and the sandbox's are Camel's; a business
    # reference that merely starts with "ID-" is not (review finding: it was hidden as noise).
    assert noise_of(
        row("headers:ref", "ID-LT-001-53541-1431684858787-0-2", "ID-LT-001-53541-1431684858787-0-3")
    )
    assert noise_of(row("headers:ref", "ID-sandbox-6f6684a6592b-0001", "ID-sandbox-0a1b2c3d4e5f-beef"))
    assert noise_of(row("body:$.documentId", "ID-2024-05-000123", "ID-2023-11-000987")) is None
    assert noise_of(row("body:$.id", "ID-host-1-1-1", "plain")) is None  # both sides must look like one
    ids = IdContext(("ID-a-1-1-1", "exec-a"), ("ID-b-2-2-2", "exec-b"))
    assert noise_of(row("properties:ref", "r/ID-a-1-1-1/x", "r/ID-b-2-2-2/x"), ids) == (
        "differs only by the exchange's own id"
    )
    assert noise_of(row("properties:ref", "r/ID-a-1-1-1/x", "r/ID-b-2-2-2/y"), ids) is None
    assert noise_of(row("properties:ref", "r/1", "r/2"), ids) is None
    assert noise_of(row("headers:processedAt", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z")) is None


def test_as_rules_accepts_globs_regexes_rules_and_lists() -> None:
    rule = NoiseRule(path="body:$.a", reason="mine")
    rules = as_rules(["headers:x", "re:^body", re.compile("properties"), rule, [["headers:y"]]])
    assert len(rules) == 5
    assert rules[3] is rule
    assert rules[1].matches(row("body:$.a", 1, 2)) and not rules[1].matches(row("headers:body", 1, 2))
    assert rules[2].matches(row("properties:a", 1, 2))
    assert as_rules(None) == []
    with pytest.raises(ValidationError, match="ignore must be"):
        as_rules(3.5)  # type: ignore[arg-type]


def test_rule_value_and_processor_parts() -> None:
    rule = NoiseRule(processor="orders/stamp*", value=r"\d{4}-\d\d-\d\dT.*")
    assert rule.matches(row("headers:t", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", pid="stamp-1"))
    assert not rule.matches(row("headers:t", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", pid="other"))
    assert not rule.matches(row("headers:t", "2026-01-01T00:00:00Z", "tomorrow", pid="stamp-1"))
    assert rule.matches(row("headers:t", None, "2026-01-02T00:00:00Z", kind="added", pid="stamp-1"))
    assert "value" in NoiseRule(value="x").label


def test_rule_kinds_limit_the_kinds_of_difference_it_covers() -> None:
    # What calibration uses so that a value seen to change is not noise where it goes away.
    rule = NoiseRule(path="error:message", kinds=("changed", "type_changed"))
    assert rule.matches(row("error:message", "boom r-1", "boom r-2"))
    assert not rule.matches(row("error:message", "boom r-1", None, kind="removed"))
    assert not rule.matches(row("error:message", None, "boom r-2", kind="added"))
    assert NoiseRule(path="error:message", kinds="removed").kinds == ("removed",)
    assert NoiseRule(path="error:message", kinds=["changed"]) == NoiseRule(
        path="error:message", kinds=("changed",)
    )
    assert NoiseRule(path="error:message").matches(row("error:message", "boom", None, kind="removed"))
    for bad in ((), ("sometimes",)):
        with pytest.raises(ValidationError) as err:
            NoiseRule(path="error:message", kinds=bad)
        assert err.value.code == "BAD_IGNORE"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["headers", "properties", "body"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,7}", fullmatch=True),
    segments,
)
def test_sweeps_dotted_paths_are_refused_with_the_diff_spelling(
    field: str, name: str, segs: list[str | int]
) -> None:
    """A path in sweep's syntax (``headers.processedAt``) was taken by ignore= and who_changed
    and matched nothing (fuzzing finding 14). Refused, with the printed diff path as the hint;
    every printed path (and a field alone) is still taken."""
    if field == "body":
        segs = [name, *segs]
        printed, dotted = "body:$" + format_segments(segs), "body" + format_segments(segs)
    else:
        printed = f"{field}:{name}{format_segments(segs)}"
        dotted = f"{field}.{name}{format_segments(segs)}"
    check_glob(printed)
    check_prefix(printed)
    check_prefix(field)
    for check in (check_glob, check_prefix, parse_path):
        with pytest.raises(ValidationError) as err:
            check(dotted)
        assert err.value.code == "BAD_PATH" and f"write {printed!r}" in (err.value.hint or "")
    with pytest.raises(ValidationError):
        NoiseRule(path=dotted)


@st.composite
def printed_paths(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["status", "error", "route", "body", "json", "line", "map"]))
    if kind == "error":
        return "error:" + draw(st.sampled_from(["type", "message"]))
    if kind == "json":
        return "body:$" + format_segments(draw(segments))
    if kind == "line":
        return f"body:line {draw(st.integers(1, 99))}"
    if kind == "map":
        field = draw(st.sampled_from(["headers", "properties"]))
        return f"{field}:{format_name(draw(names))}" + format_segments(draw(segments))
    return kind


@settings(max_examples=500, deadline=None)
@given(printed_paths(), st.data())
def test_check_glob_refuses_only_globs_that_match_no_printed_path(path: str, data: st.DataObject) -> None:
    """A glob made from a printed path (a leading part, a character turned into a wildcard, a
    '.' for the ':'), or any text: when check_glob refuses it, it matches that path neither as a
    glob nor literally, and the error is BAD_PATH with a hint."""
    cut = data.draw(st.integers(0, len(path)))
    glob = path[:cut]
    if glob and data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(glob) - 1))
        glob = glob[:at] + data.draw(st.sampled_from(["*", "**", "?", ".", ":", "["])) + glob[at + 1 :]
    glob = data.draw(st.just(glob) | st.text(max_size=20))
    try:
        check_glob(glob)
    except ValidationError as err:
        assert err.code == "BAD_PATH" and err.hint
        assert glob_regex(glob).match(path) is None
        assert not (path.startswith(glob) and (len(path) == len(glob) or path[len(glob)] in ".:["))
    else:
        NoiseRule(path=glob)  # taken whole


def test_a_noise_rule_path_that_is_no_glob_is_refused_in_words() -> None:
    with pytest.raises(ValidationError) as err:
        NoiseRule(path=5)  # type: ignore[arg-type]
    assert err.value.code == "BAD_IGNORE" and err.value.hint
    with pytest.raises(ValidationError) as err:
        NoiseRule(path="re:^headers:X-")  # a glob: re: would be matched literally, i.e. never
    assert err.value.code == "BAD_PATH" and "re.compile('^headers:X-')" in (err.value.hint or "")
    assert as_rules("re:^headers:X-")[0].matches(row("headers:X-B3", 1, 2))  # in ignore= it is a regex
