"""Camel YAML DSL files to routes, validated at load time.

What a file may hold (https://camel.apache.org/components/latest/others/yaml-dsl.html): a list
of ``- route: {id, from: {uri, steps: [...]}}`` and ``- from: {uri, steps: [...]}`` (a route
without an id gets Camel's generated ``route1``, ``route2`` ...). Each step is a mapping with
one key, the EIP name, in Camel's camelCase or the older kebab-case (``set-header``); values
take Camel's long and short forms (``- to: "direct:x"`` and ``- to: {uri: ...}``; an expression
written directly, ``setBody: {simple: ...}``, or through ``expression:``, ``setBody:
{expression: {simple: {expression: ...}}}``).

Every processor gets a ``processorId``: its ``id``, or the id Camel's ``DefaultNodeIdFactory``
would generate — its short name and a per-name counter (``setHeader3``, ``choice1``, ``to5``),
counted in load order (files in the order given, folders sorted by name, each route's steps
depth first) across the whole set, so that the same files always give the same ids. ``when``,
``otherwise``, ``doCatch`` and ``doFinally`` count as processors, as they do in Camel.

Anything malformed or unsupported — an unknown step or option, an unsupported EIP or
expression language, a Simple or JSONPath expression that does not parse, a missing required
key, a ``direct:`` endpoint no route consumes, a duplicate id, an unregistered bean — raises
:class:`~moat_nb.errors.RouteLoadError` naming the file, the 1-based line, the construct and
what is supported instead. Nothing is left to fail at run time that could be known now.

PyYAML's *compose* API gives the node tree with each node's position (``start_mark``), which is
what lets every error name its line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ...errors import RouteLoadError
from ...model import ID_PATTERN
from .dsl import (
    ROUTE_KEYS,
    UNSUPPORTED_LANGUAGES,
    UNSUPPORTED_STEPS,
    UNSUPPORTED_TOP_LEVEL,
    YamlMap,
    camel_case,
    check_type,
    form_hint,
    int_option,
    is_null,
    load_error,
    node_line,
    with_parameters,
)
from .endpoints import To, direct_name, uri_scheme
from .engine import Route
from .language import (
    LANGUAGES,
    UNSUPPORTED_LANGUAGE_OPTIONS,
    ConstantExpression,
    ExchangePropertyExpression,
    Expression,
    HeaderExpression,
    JsonPathExpression,
    SimpleLanguageExpression,
    TokenizeExpression,
)
from .processors import Processor
from .steps import STEP_PARSERS, SUPPORTED_STEPS

__all__ = ["SUPPORTED_STEPS", "Builder", "route_files", "load_files", "load_texts"]


#: A property placeholder, ``{{key}}`` or ``{{key:default}}``.
_PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")
#: Placeholder functions (``{{env:HOME}}``, ``{{sys:user.home}}`` ...): their colon is no default.
_PLACEHOLDER_FUNCTIONS = frozenset(
    "env sys service service.host service.port bean ref aws gcp azure hashicorp kubernetes "
    "configmap secret".split()
)

# --------------------------------------------------------------------------- files


def route_files(path_or_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """The route files to load: a file, a folder's ``*.yaml``/``*.yml`` sorted by name, or a
    list of either, in the order given."""
    items = [path_or_dir] if isinstance(path_or_dir, str | Path) else list(path_or_dir)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise RouteLoadError(
                    f"folder {path} holds no route files",
                    file=str(path),
                    construct="routes",
                    hint="put Camel YAML DSL routes in *.yaml files there, or name the files",
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise RouteLoadError(
                f"{path} does not exist",
                file=str(path),
                construct="routes",
                hint="name a route file (*.yaml) or a folder of them",
            )
    if not files:
        raise RouteLoadError(
            "no route files given", construct="routes", hint="name a route file (*.yaml) or a folder of them"
        )
    return files


def load_files(files: Sequence[Path], beans: Mapping[str, Any] | None) -> list[Route]:
    """Parse and validate ``files`` as one set of routes (ids counted across all of them)."""
    texts = []
    for path in files:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            raise RouteLoadError(f"cannot read {path}: {err}", file=str(path), construct="routes") from None
    return load_texts(texts, beans)


def load_texts(texts: Sequence[tuple[str, str]], beans: Mapping[str, Any] | None) -> list[Route]:
    """Parse and validate YAML texts, each ``(file name, text)``, as one set of routes."""
    builder = Builder(beans)
    for name, text in texts:
        try:
            builder.add(name, text)
        except RecursionError:  # a YAML alias that contains itself, or absurd nesting
            raise RouteLoadError(
                "the steps nest too deeply (is a YAML alias used inside itself?)",
                file=name,
                construct="steps",
                hint="write the nested steps out instead of referring back with an alias",
            ) from None
    routes = builder.finish()
    if not routes:
        # Empty files (or only comments, or []) load nothing: say so here, rather than
        # "OK: 0 routes" from routes check, an unknown route from routes run, and an IndexError
        # from sandbox --app looking for its entry route.
        names = [name for name, _ in texts]
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RouteLoadError(
            "the file defines no routes" if len(names) == 1 else f"no routes in {listed}",
            file=names[0] if len(names) == 1 else None,
            construct="routes",
            hint=form_hint("route"),
        )
    return routes


# --------------------------------------------------------------------------- the builder


class Builder:
    """Builds routes from YAML node trees: assigns ids, parses steps (with :mod:`.steps`),
    compiles expressions, and collects ``direct:`` calls to check once every file is read."""

    def __init__(self, beans: Mapping[str, Any] | None) -> None:
        self.beans = beans
        self.counters: dict[str, int] = {}
        self.node_ids: dict[str, tuple[str, int]] = {}
        self.routes: list[Route] = []
        self.route_where: dict[str, tuple[str, int]] = {}
        self.direct_calls: list[tuple[To, str, int]] = []
        self.file = "<string>"
        # (counters, claimed ids) right after a disabled step claimed its own id: what _step
        # rolls back to once that step is parsed, so that its nested steps take no ids.
        self._disabled_marks: list[tuple[dict[str, int], dict[str, tuple[str, int]]]] = []

    def _new_id(self, short_name: str) -> str:
        # Camel's DefaultNodeIdFactory: <shortName><per-name counter>.
        n = self.counters.get(short_name, 0) + 1
        self.counters[short_name] = n
        return f"{short_name}{n}"

    def _claim_id(self, given: str | None, short_name: str, node: Node, construct: str) -> str:
        if given is not None:
            given = given.strip()
            if not ID_PATTERN.match(given):
                raise load_error(
                    self.file,
                    node,
                    f"id {given!r} is not a valid id",
                    construct,
                    "ids are 1-128 letters, digits and . _ : - (they go on the wire)",
                )
            pid = given
        else:
            pid = self._new_id(short_name)
        if pid in self.node_ids:
            file, line = self.node_ids[pid]
            raise load_error(
                self.file,
                node,
                f"Duplicate id detected: {pid} (first at {file}:{line})",
                construct,
                "give every step a unique id across all route files",
            )
        self.node_ids[pid] = (self.file, node_line(node))
        return pid

    def common(
        self, m: YamlMap, short_name: str, route_id: str, *, honour_disabled: bool = True
    ) -> dict[str, Any] | None:
        """``id`` (claimed now, before nested steps: Camel numbers depth first), ``description``;
        ``None`` for a ``disabled: true`` step.

        Camel 4 builds a disabled step as a no-op ``DisabledProcessor`` (``ProcessorReifier.reifier``
        returns a ``DisabledReifier``) after ``ProcessorReifier.createProcessor`` gave it its id
        (``idOrCreate``): so it takes a generated id (the next ``setBody`` after a disabled one
        is ``setBody2``), while its nested steps are never built and take none. The engine drops
        the step; its nested steps are still parsed (and checked), and their ids given back.
        ``honour_disabled=False`` is for the clauses whose ``disabled`` Camel never reads (an
        ``otherwise``, a ``when`` of a ``precondition`` choice).
        """
        disabled = m.flag("disabled") and honour_disabled
        description = m.text("description")
        pid = self._claim_id(m.text("id"), short_name, m.node, short_name)
        if disabled:
            self._disabled_marks.append((dict(self.counters), dict(self.node_ids)))
            return None
        return {
            "processor_id": pid,
            "route_id": route_id,
            "file": self.file,
            "line": m.line,
            "description": description,
        }

    def add(self, file: str, text: str) -> None:
        self.file = file
        try:
            documents = list(yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            raise RouteLoadError(
                f"not valid YAML: {err.problem or err}",
                file=file,
                line=mark.line + 1 if mark is not None else None,
                construct="yaml",
                hint="check the indentation and quoting around that line",
            ) from None
        except yaml.YAMLError as err:
            raise RouteLoadError(f"not valid YAML: {err}", file=file, construct="yaml") from None
        for document in documents:
            if is_null(document):
                continue
            self._resolve_placeholders(document)
            if not isinstance(document, SequenceNode):
                raise load_error(
                    file,
                    document,
                    "a route file is a list: - route: ... or - from: ...",
                    "routes",
                    form_hint("route"),
                )
            for item in document.value:
                self._top_level(item)

    def _resolve_placeholders(self, document: Node) -> None:
        """Camel's property placeholders, as its PropertiesComponent resolves them when the route
        starts (https://camel.apache.org/manual/using-propertyplaceholder.html): the sandbox has
        no properties, so ``{{key:default}}`` takes its default and any other placeholder fails
        at load time, as Camel fails to start a route whose property is not found. They were
        left in the text, so a route ran with ``kafka:{{topic}}`` as its endpoint."""
        stack: list[tuple[Node, str]] = [(document, "routes")]
        seen: set[int] = set()
        unresolved: list[tuple[int, Node, str, str]] = []
        while stack:
            node, construct = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, ScalarNode):
                if isinstance(node.value, str) and "{{" in node.value:
                    missing: list[str] = []

                    def resolve(m: re.Match[str], missing: list[str] = missing) -> str:
                        key, sep, default = m.group(1).strip().partition(":")
                        if sep and key not in _PLACEHOLDER_FUNCTIONS:
                            return default
                        missing.append(m.group(0))
                        return m.group(0)

                    node.value = _PLACEHOLDER.sub(resolve, node.value)
                    if missing:
                        unresolved.append((node_line(node), node, construct, missing[0]))
            elif isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    key = camel_case(str(key_node.value)) if isinstance(key_node, ScalarNode) else construct
                    stack.append((value_node, key))
            elif isinstance(node, SequenceNode):
                stack.extend((item, construct) for item in node.value)
        if unresolved:
            _, node, construct, text = min(unresolved, key=lambda u: u[0])
            raise load_error(
                self.file,
                node,
                f"property placeholder {text} cannot be resolved: the sandbox has no properties",
                construct,
                "write the value itself, or give the placeholder a default: {{key:value}}",
            )

    def _top_level(self, item: Node) -> None:
        if not isinstance(item, MappingNode) or len(item.value) != 1:
            raise load_error(
                self.file,
                item,
                "each list item must be one of route: or from:",
                "routes",
                form_hint("route"),
            )
        key_node, value = item.value[0]
        key = camel_case(str(key_node.value))
        if key == "route":
            m = YamlMap(value, "route", self.file)
            if "steps" in m.entries:
                # Early Camel 3 YAML DSL took steps beside from; Camel 4's RouteDefinitionDeserializer
                # refuses them there (UnsupportedFieldException): they go inside from.
                raise load_error(
                    self.file,
                    m.entries["steps"][0],
                    "a route's steps go inside its from, not beside it",
                    "route",
                    form_hint("route"),
                )
            m.check(ROUTE_KEYS)
            given = m.text("id")
            route_id = self._route_id(given, m.node)
            from_node = m.get("from")
            if from_node is None:
                raise load_error(self.file, m.node, "route needs 'from'", "route", form_hint("route"))
            self._from(from_node, route_id, m.text("description"), m.text("group"))
        elif key == "from":
            self._from(value, self._route_id(None, item), None, None)
        elif key in UNSUPPORTED_TOP_LEVEL:
            raise load_error(
                self.file,
                key_node,
                f"{key!r} is not supported by the sandbox engine",
                key,
                "a file may hold route: and from: items; handle errors with doTry/doCatch inside the route",
            )
        else:
            raise load_error(
                self.file,
                key_node,
                f"unknown top-level element {key!r}",
                key,
                "a route file is a list of route: or from: items",
            )

    def _route_id(self, given: str | None, node: Node) -> str:
        if given is not None:
            route_id = given.strip()
            if not ID_PATTERN.match(route_id):
                raise load_error(
                    self.file,
                    node,
                    f"route id {route_id!r} is not a valid id",
                    "route",
                    "ids are 1-128 letters, digits and . _ : -",
                )
        else:
            route_id = self._new_id("route")
        if route_id in self.route_where:
            file, line = self.route_where[route_id]
            raise load_error(
                self.file,
                node,
                f"Duplicate route id {route_id!r} (first at {file}:{line})",
                "route",
                "give every route a unique id",
            )
        self.route_where[route_id] = (self.file, node_line(node))
        return route_id

    def _from(self, node: Node, route_id: str, description: str | None, group: str | None) -> None:
        if isinstance(node, ScalarNode) and not is_null(node):
            uri, steps_node, line = str(node.value), None, node_line(node)
        else:
            m = YamlMap(node, "from", self.file)
            m.check({"uri", "id", "description", "parameters", "steps"})
            uri = with_parameters(m.text("uri", required=True) or "", m, self.file)
            steps_node, line = m.get("steps"), m.line
        if not uri_scheme(uri):
            raise load_error(
                self.file,
                node,
                f"from uri {uri!r} has no scheme",
                "from",
                'write from: {uri: "direct:name"} (or timer:, kafka:, platform-http: ...)',
            )
        steps = self.steps(steps_node, route_id)
        self.routes.append(Route(route_id, uri, tuple(steps), self.file, line, description, group))

    def finish(self) -> list[Route]:
        consumers: dict[str, Route] = {}
        for route in self.routes:
            if uri_scheme(route.from_uri) == "direct":
                name = direct_name(route.from_uri)
                if name in consumers:
                    first = consumers[name]
                    raise RouteLoadError(
                        f"Multiple consumers for the same endpoint is not allowed: direct://{name} "
                        f"(routes {first.route_id} and {route.route_id})",
                        file=route.file,
                        line=route.line,
                        construct="from",
                        hint="each direct: endpoint has exactly one consuming route",
                    )
                consumers[name] = route
        for node, file, line in self.direct_calls:
            target = consumers.get(direct_name(node.uri))
            if target is None:
                known = ", ".join(f"direct:{n}" for n in sorted(consumers)) or "none"
                raise RouteLoadError(
                    f"no route consumes {node.uri!r}",
                    file=file,
                    line=line,
                    construct="to",
                    hint=f'add a route from: {{uri: "direct:{direct_name(node.uri)}"}}, or load '
                    f"the file that has it too (pass the folder); direct endpoints here: {known}",
                )
            node.target = target
        return self.routes

    def steps(self, node: Node | None, route_id: str) -> list[Processor]:
        if is_null(node):
            return []
        assert node is not None
        if not isinstance(node, SequenceNode):
            raise load_error(self.file, node, "steps must be a list (- setBody: ...)", "steps")
        out = []
        for item in node.value:
            processor = self._step(item, route_id)
            if processor is not None:
                out.append(processor)
        return out

    def _step(self, item: Node, route_id: str) -> Processor | None:
        if not isinstance(item, MappingNode) or len(item.value) != 1:
            raise load_error(
                self.file,
                item,
                "a step is a mapping with one key, the EIP name (- setBody: {simple: ...})",
                "steps",
            )
        key_node, value = item.value[0]
        name = camel_case(str(key_node.value))
        parser = STEP_PARSERS.get(name)
        if parser is None:
            supported = ", ".join(sorted(STEP_PARSERS))
            if name in UNSUPPORTED_STEPS:
                raise load_error(
                    self.file,
                    key_node,
                    f"step {name!r} is not supported by the sandbox engine",
                    name,
                    f"supported steps: {supported}",
                )
            close = difflib.get_close_matches(name, sorted(STEP_PARSERS), n=1)
            raise load_error(
                self.file,
                key_node,
                f"unknown step {name!r}",
                name,
                (f"did you mean {close[0]!r}? " if close else "") + f"supported steps: {supported}",
            )
        marks = len(self._disabled_marks)
        processor = parser(self, name, value, route_id)
        if len(self._disabled_marks) > marks:
            if processor is None:  # this step was disabled: its nested steps take no ids
                self.counters, self.node_ids = self._disabled_marks[marks]
            del self._disabled_marks[marks:]
        return processor

    def step_map(self, name: str, value: Node, *, scalar_key: str | None = None) -> YamlMap:
        """The step's options; a scalar value is the short form for ``scalar_key``."""
        if isinstance(value, ScalarNode) and scalar_key is not None and not is_null(value):
            wrapper = MappingNode(
                "tag:yaml.org,2002:map",
                [(ScalarNode("tag:yaml.org,2002:str", scalar_key, value.start_mark, value.end_mark), value)],
                value.start_mark,
                value.end_mark,
            )
            return YamlMap(wrapper, name, self.file)
        if is_null(value):
            value = MappingNode("tag:yaml.org,2002:map", [], value.start_mark, value.end_mark)
        return YamlMap(value, name, self.file)

    def expression(self, m: YamlMap, *, predicate: bool, required: bool = True) -> Expression | None:
        present = [k for k in m.entries if k in LANGUAGES or k in UNSUPPORTED_LANGUAGES]
        if "expression" in m.entries:
            if present:
                raise load_error(
                    self.file,
                    m.node,
                    f"{m.construct} has both 'expression' and {present[0]!r}",
                    m.construct,
                    "write the expression once",
                )
            inner = YamlMap(m.get("expression"), "expression", self.file)  # type: ignore[arg-type]
            if "steps" in inner.entries:
                # The YAML DSL page indents a filter's steps under its expression in one example
                # ("Output Aware Steps"); Camel reads an expression as one language key, so the
                # steps belong to the step itself, beside 'expression'.
                raise load_error(
                    self.file,
                    inner.entries["steps"][0],
                    f"'steps' is inside the expression of {m.construct}",
                    m.construct,
                    f"move steps: out one level, beside expression: ({m.construct}: "
                    "{expression: {simple: ...}, steps: [...]})",
                )
            if len(inner.entries) != 1:
                raise load_error(
                    self.file,
                    inner.node,
                    "expression must name one language",
                    m.construct,
                    "write expression: {simple: ...}",
                )
            ((lang, (key_node, value)),) = inner.entries.items()
        elif len(present) == 1:
            lang = present[0]
            key_node, value = m.entries[lang]
        elif len(present) > 1:
            raise load_error(
                self.file,
                m.node,
                f"{m.construct} has more than one expression: " + ", ".join(present),
                m.construct,
                "keep one",
            )
        else:
            if required:
                raise load_error(
                    self.file,
                    m.node,
                    f"{m.construct} needs an expression",
                    m.construct,
                    "add one of: " + ", ".join(sorted(LANGUAGES)) + ' (e.g. simple: "${body}")',
                )
            return None
        return self._language(lang, key_node, value, predicate=predicate, construct=m.construct)

    def _refuse_unsupported_options(self, lm: YamlMap, lang: str) -> None:
        # A Camel option the engine lacks is "not supported", not "unknown": YamlMap.check
        # would call tokenize's endToken unknown and suggest includeTokens instead.
        for key, (key_node, _) in lm.entries.items():
            if key in UNSUPPORTED_LANGUAGE_OPTIONS.get(lang, ()):
                if key in ("source", "headerName", "propertyName", "variableName"):
                    hint = f"the sandbox evaluates {lang} on the body: set the body from that value first"
                else:
                    hint = "supported options: " + ", ".join(
                        sorted({"expression", "id", "trim", "resultType"} | LANGUAGES[lang])
                    )
                raise load_error(
                    self.file,
                    key_node,
                    f"option {key!r} of {lang} is not supported by the sandbox engine",
                    lang,
                    hint,
                )

    def _language(
        self, lang: str, key_node: Node, value: Node, *, predicate: bool, construct: str
    ) -> Expression:
        supported = ", ".join(sorted(LANGUAGES))
        if lang not in LANGUAGES:
            what = (
                "is not supported by the sandbox engine" if lang in UNSUPPORTED_LANGUAGES else ("is unknown")
            )
            raise load_error(
                self.file, key_node, f"expression language {lang!r} {what}", lang, f"use one of: {supported}"
            )
        line = node_line(value) if not is_null(value) else node_line(key_node)
        options: dict[str, Any] = {}
        if isinstance(value, MappingNode):
            lm = YamlMap(value, lang, self.file)
            self._refuse_unsupported_options(lm, lang)
            lm.check({"expression", "id", "trim", "resultType"} | LANGUAGES[lang])
            text = lm.text("expression")
            trim = lm.flag("trim", True)
            result_type = lm.text("resultType")
            for option in LANGUAGES[lang]:
                if option in lm.entries:
                    options[option] = lm
        elif isinstance(value, ScalarNode):
            text = None if is_null(value) else str(value.value)
            trim, result_type, lm = True, None, None
        else:
            raise load_error(
                self.file, value, f"{lang} expects text or a mapping of options", lang, f'write {lang}: "..."'
            )
        if lang == "tokenize":
            token = lm.text("token") if lm is not None else text
            if token is None or token == "":
                raise load_error(
                    self.file, value, "tokenize needs a token", "tokenize", 'write tokenize: {token: ","}'
                )
            return TokenizeExpression(
                token,
                regex=lm.flag("regex") if lm is not None else False,
                group=int_option(lm, "group", self.file) if lm is not None else None,
                skip_first=lm.flag("skipFirst") if lm is not None else False,
                group_delimiter=lm.text("groupDelimiter") if lm is not None else None,
                result_type=result_type,
                file=self.file,
                line=line,
            )
        if text is None or (trim and not text.strip() and lang != "constant"):
            raise load_error(self.file, value, f"{lang} expression is empty", lang, f'write {lang}: "..."')
        if trim:
            text = text.strip()
        if lang == "constant":
            return ConstantExpression(text, result_type, file=self.file, line=line)
        if lang == "simple":
            return SimpleLanguageExpression(text, result_type, predicate=predicate, file=self.file, line=line)
        if lang == "jsonpath":
            suppress = lm.flag("suppressExceptions") if lm is not None else False
            return JsonPathExpression(text, result_type, suppress=suppress, file=self.file, line=line)
        if lang == "header":
            return HeaderExpression("header", text, check_type(result_type, self.file, value))
        return ExchangePropertyExpression("exchangeProperty", text, check_type(result_type, self.file, value))
