"""The vocabulary of Camel's YAML DSL as the sandbox engine reads it, and YAML node helpers.

What is supported, what Camel has but the engine does not (so that an error can say "not
supported" rather than "unknown"), the short form to suggest for each construct, and
:class:`YamlMap`, a YAML mapping node read with the file and line of every key for
:class:`~moat_nb.errors.RouteLoadError`.

Keys are read in camelCase; Camel 3 also accepted kebab-case (``set-header``,
``exception-type``), which :func:`camel_case` maps.
"""

from __future__ import annotations

import difflib
import re

from yaml.nodes import MappingNode, Node, ScalarNode

from ...errors import RouteLoadError
from .conversion import SUPPORTED_TYPES, canonical_type
from .language import LANGUAGES

__all__ = [
    "UNSUPPORTED_STEPS",
    "UNSUPPORTED_LANGUAGES",
    "UNSUPPORTED_TOP_LEVEL",
    "COMMON_KEYS",
    "EXPRESSION_KEYS",
    "ROUTE_KEYS",
    "DATA_FORMAT_OPTIONS",
    "KNOWN_DATA_FORMATS",
    "FORMS",
    "YamlMap",
    "camel_case",
    "node_line",
    "is_null",
    "load_error",
    "form_hint",
    "with_parameters",
    "int_option",
    "check_type",
]

#: Camel EIPs this engine does not implement.
UNSUPPORTED_STEPS = frozenset(
    "aggregate circuitBreaker claimCheck convertHeaderTo convertVariableTo dynamicRouter enrich "
    "idempotentConsumer intercept interceptFrom interceptSendToEndpoint kamelet loadBalance "
    "multicast onCompletion onException onFallback pausable pipeline policy pollEnrich "
    "recipientList removeVariable resequence resumable rollback routingSlip saga sample script "
    "serviceCall setExchangePattern setHeaders setVariable setVariables sort step threads throttle "
    "tokenizer transacted validate wireTap".split()
)

#: Camel expression languages this engine does not implement.
UNSUPPORTED_LANGUAGES = frozenset(
    "bean csimple datasonnet groovy hl7terser java joor jq js kotlin language method mvel ognl "
    "python ref spel variable wasm xpath xquery xtokenize".split()
)

#: Top-level elements of a YAML DSL file besides ``route`` and ``from``.
UNSUPPORTED_TOP_LEVEL = frozenset(
    "beans camelContext dataFormats errorHandler intercept interceptFrom interceptSendToEndpoint "
    "onCompletion onException rest restConfiguration routeConfiguration routeTemplate "
    "templatedRoute".split()
)

#: Keys every step may carry.
COMMON_KEYS = frozenset({"id", "description", "disabled", "inheritErrorHandler", "note"})
#: Keys that hold a step's expression: a language name, or ``expression`` wrapping one.
EXPRESSION_KEYS = frozenset(LANGUAGES) | {"expression"}
#: Keys of ``- route:`` (Camel's RouteDefinition, as camel-yaml-dsl's RouteDefinitionDeserializer
#: reads them); all but ``id``/``from`` are accepted as notes.
ROUTE_KEYS = frozenset(
    "id description group precondition routeConfigurationId autoStartup routePolicy startupOrder "
    "streamCaching messageHistory logMask trace nodePrefixId inputType outputType from "
    "shutdownRoute shutdownRunningTask".split()
)
#: Options of the ``json`` data format (Camel's JsonDataFormat); only ``prettyPrint`` and
#: ``contentTypeHeader`` change the output, the others configure Jackson in ways a sandbox body
#: does not see.
DATA_FORMAT_OPTIONS = frozenset(
    "id library prettyPrint unmarshalType unmarshalTypeName allowUnmarshallType include jsonView "
    "collectionType useList autoDiscoverObjectMapper objectMapper disableFeatures enableFeatures "
    "moduleClassNames moduleRefs timezone schemaResolver namingStrategy contentTypeHeader "
    "allowJmsType useDefaultObjectMapper dropRootNode maxStringLength".split()
)
#: Camel data formats other than json (not supported here).
KNOWN_DATA_FORMATS = frozenset(
    "avro barcode base64 beanio bindy cbor crypto csv custom fhirJson fhirXml flatpack grok "
    "gzipDeflater hl7 ical jacksonXml jaxb jsonApi lzf mimeMultipart parquetAvro pgp protobuf rss "
    "smooks soap swiftMt swiftMx syslog tarFile thrift tidyMarkup univocityCsv univocityFixed "
    "univocityTsv xmlSecurity yaml zipDeflater zipFile".split()
)

#: The form to suggest when a construct is written wrong.
FORMS: dict[str, str] = {
    "to": 'write - to: "kafka:topic" or - to: {uri: "kafka:topic"}',
    "toD": 'write - toD: "http://host/${header.x}" or - toD: {uri: ...}',
    "setBody": 'write - setBody: {simple: "${body}"} or {constant: ...} or {jsonpath: ...}',
    "setHeader": 'write - setHeader: {name: myHeader, simple: "${body}"}',
    "setProperty": 'write - setProperty: {name: myProperty, constant: "x"}',
    "choice": "write - choice: {when: [{simple: ..., steps: [...]}], otherwise: {steps: [...]}}",
    "split": 'write - split: {jsonpath: "$.lines[*]", steps: [...]}',
    "loop": "write - loop: {constant: 3, steps: [...]}",
    "doTry": "write - doTry: {steps: [...], doCatch: [{exception: [java.lang.Exception], "
    "steps: [...]}], doFinally: {steps: [...]}}",
    "bean": "write - bean: {ref: myBean, method: myMethod}",
    "throwException": "write - throwException: {exceptionType: java.lang.IllegalArgumentException, "
    "message: ...}",
    "route": 'write - route: {id: my-route, from: {uri: "direct:x", steps: [...]}}',
    "from": 'write from: {uri: "direct:x", steps: [...]}',
}


def camel_case(key: str) -> str:
    # Camel 3 accepted kebab-case keys (set-header, exception-type); Camel 4 uses camelCase.
    return re.sub(r"-([a-zA-Z0-9])", lambda m: m.group(1).upper(), key)


def node_line(node: Node) -> int:
    return node.start_mark.line + 1


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null"))


class YamlMap:
    """A YAML mapping node with camelCase keys, and the file it came from for errors."""

    __slots__ = ("node", "construct", "file", "entries")

    def __init__(self, node: Node, construct: str, file: str) -> None:
        self.node = node
        self.construct = construct
        self.file = file
        if not isinstance(node, MappingNode):
            raise load_error(
                file,
                node,
                f"{construct} must be a mapping (key: value lines)",
                construct,
                form_hint(construct),
            )
        self.entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise load_error(file, key_node, f"a key of {construct} is not a plain name", construct)
            key = camel_case(str(key_node.value))
            if key in self.entries:
                raise load_error(
                    file, key_node, f"{construct} has {key!r} twice", construct, "keep one of them"
                )
            self.entries[key] = (key_node, value_node)

    @property
    def line(self) -> int:
        return node_line(self.node)

    def get(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry is not None else None

    def line_of(self, key: str) -> int:
        entry = self.entries.get(key)
        return node_line(entry[0]) if entry is not None else self.line

    def check(self, allowed: frozenset[str] | set[str]) -> None:
        # Unsupported expression languages pass here so that _expression() can name them as
        # such; they are not listed as supported.
        for key, (key_node, _) in self.entries.items():
            if key not in allowed and key not in UNSUPPORTED_LANGUAGES:
                listed = sorted(allowed - UNSUPPORTED_LANGUAGES)
                close = difflib.get_close_matches(key, listed, n=1)
                hint = (f"did you mean {close[0]!r}? " if close else "") + "supported: " + ", ".join(listed)
                raise load_error(
                    self.file, key_node, f"unknown option {key!r} for {self.construct}", self.construct, hint
                )

    def text(self, key: str, *, required: bool = False) -> str | None:
        node = self.get(key)
        if is_null(node):
            if required:
                raise load_error(
                    self.file,
                    self.node,
                    f"{self.construct} needs {key!r}",
                    self.construct,
                    form_hint(self.construct),
                )
            return None
        assert node is not None
        if not isinstance(node, ScalarNode):
            raise load_error(
                self.file, node, f"{key!r} of {self.construct} must be a single value", self.construct
            )
        return str(node.value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.text(key)
        if value is None:
            return default
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        node = self.get(key)
        assert node is not None
        raise load_error(
            self.file,
            node,
            f"{key!r} of {self.construct} must be true or false, not {value!r}",
            self.construct,
        )


def load_error(
    file: str, node: Node | None, message: str, construct: str, hint: str | None = None
) -> RouteLoadError:
    return RouteLoadError(
        message, file=file, line=node_line(node) if node is not None else None, construct=construct, hint=hint
    )


def form_hint(construct: str) -> str | None:
    return FORMS.get(construct)


def with_parameters(uri: str, m: YamlMap, file: str) -> str:
    """``parameters: {k: v}`` appended to the URI's query, as Camel's YAML DSL does."""
    node = m.get("parameters")
    if is_null(node):
        return uri
    pm = YamlMap(node, "parameters", file)  # type: ignore[arg-type]
    pairs = []
    for key, (_, value) in pm.entries.items():
        if not isinstance(value, ScalarNode):
            raise load_error(file, value, f"parameter {key!r} must be a single value", "parameters")
        text = str(value.value)
        pairs.append(f"{key}={text}")
    if not pairs:
        return uri
    return uri + ("&" if "?" in uri else "?") + "&".join(pairs)


def int_option(m: YamlMap, key: str, file: str) -> int | None:
    text = m.text(key)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise load_error(
            file, m.get(key), f"{key!r} must be a whole number, not {text!r}", m.construct
        ) from None


def check_type(result_type: str | None, file: str, node: Node) -> str | None:
    if result_type is None:
        return None
    name = canonical_type(result_type)
    if name is None:
        raise load_error(
            file,
            node,
            f"resultType {result_type!r} is not supported",
            "resultType",
            "use one of " + ", ".join(SUPPORTED_TYPES),
        )
    return name
