"""YAML text → plain values with a line for every path, `${VAR}` expansion, located problems.

The loader in `poller.config` validates what this produces; every problem found on the way, here
or by validation, is collected on one `Reader` and raised together as a `ConfigError`.

`${VAR}` is expanded inside values, after parsing, so a variable's value never becomes YAML
structure. The parser never sees a reference either: each is swapped for a placeholder that
is a plain word to YAML, which is what lets `{port: ${PORT:-9102}}` be a flow mapping (`{`,
`,` and `}` inside it are YAML's own). Only references whose default has none of YAML's
indicators or quotes are swapped, so a file that parsed before parses to the same values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, ValidationError

from poller.config.messages import describe_error
from poller.config.rules import Loc


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file, located as precisely as the YAML allows."""

    file: str
    line: int | None
    path: str
    message: str

    def format(self) -> str:
        """`FILE:LINE: PATH: message`, the form `poller validate` prints."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return ": ".join(part for part in (where, self.path, self.message) if part)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists everything found, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__("\n".join(problem.format() for problem in self.problems))

    @classmethod
    def single(cls, file: str, path: str, message: str, line: int | None = None) -> ConfigError:
        """An error carrying one problem, for callers outside the loader (e.g. no file given)."""
        return cls([ConfigProblem(file, line, path, message)])


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# The references the parser gets as placeholders: a default without YAML's flow indicators,
# quotes, escapes, comments or line breaks, which could end or start a scalar around it.
_MASKABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}{\[\],'\"\\#\n]*)?\}")
# Private-use characters: printable to YAML (so a plain scalar), never in a real config.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_QUOTING_HINT = (
    "; a ${...} reference on this line is not read as one: write ${NAME} or "
    "${NAME:-default} (a default without quotes, commas, brackets, braces or '#'), "
    'or quote the whole value, like port: "${PORT:-9102}"'
)
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class Reader:
    """Reads one file: plain values, a line for every path, `${VAR}` expanded on the way.

    It also collects the file's problems, wherever they are found, with their lines.
    """

    def __init__(self, filename: str, environ: Mapping[str, str]) -> None:
        self.filename = filename
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self.lines: dict[Loc, int] = {}
        self.data: dict[str, Any] = {}
        self._broken: set[Loc] = set()  # paths whose value could not be read or expanded
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()
        self._references: list[str] = []  # placeholder N stands for self._references[N]

    def read(self, text: str) -> dict[str, Any]:
        """Compose and walk the document; fatal shapes raise ConfigError at once."""
        masked = self._mask(text)
        try:
            root = yaml.compose(masked, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else None
            context = f" ({exc.context})" if exc.context else ""
            message = self._unmask(f"invalid YAML: {exc.problem}{context}")
            # A reference left unmasked on the failing line is the likely cause: say how to fix.
            if line is not None and "${" in "".join(masked.splitlines()[line - 1 : line]):
                message += _QUOTING_HINT
            self._fatal(line, message)
        except yaml.YAMLError as exc:
            self._fatal(None, self._unmask(f"invalid YAML: {exc}"))
        if root is None:
            self._fatal(None, "the file is empty; expected a mapping with a 'mappings' list")
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            self._fatal(root.start_mark.line + 1, f"the top level must be a mapping (got {kind})")
        self.lines[()] = root.start_mark.line + 1
        self.data = self._value(root, (), frozenset())
        return self.data

    def line_of(self, path: Loc) -> int | None:
        """The line of `path`, or of its nearest ancestor present in the file (missing keys)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def add(self, path: Loc, message: str, line: int | None = None) -> None:
        """Record a problem, unless it follows from a value that could not be read or expanded."""
        if any(path[: len(unset)] == unset for unset in self._broken):
            return
        text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        where = line if line is not None else self.line_of(path)
        self.problems.append(ConfigProblem(self.filename, where, text, message))

    def add_pydantic(self, exc: ValidationError, model: type[BaseModel], prefix: Loc) -> None:
        """Record every error pydantic found, translated to the user's paths and words."""
        for error in exc.errors():
            path, message = describe_error(error, model)
            self.add(prefix + path, message)

    def _fatal(self, line: int | None, message: str) -> NoReturn:
        raise ConfigError([ConfigProblem(self.filename, line, "", message)])

    def _mask(self, text: str) -> str:
        """The text with each maskable `${...}` as a placeholder; the same reference, the same
        placeholder (so duplicate keys stay duplicates). A text that already holds the
        placeholder characters is left as it is."""
        if _OPEN in text or _CLOSE in text:
            return text
        numbers: dict[str, int] = {}  # in the order numbered

        def placeholder(match: re.Match[str]) -> str:
            return f"{_OPEN}{numbers.setdefault(match.group(0), len(numbers))}{_CLOSE}"

        masked = _MASKABLE.sub(placeholder, text)
        self._references = list(numbers)
        return masked

    def _unmask(self, text: str) -> str:
        """`text` with its placeholders back as the references the file has."""
        if not self._references or _OPEN not in text:
            return text
        return _PLACEHOLDER.sub(lambda match: self._references[int(match.group(1))], text)

    def _value(self, node: yaml.Node, path: Loc, active: frozenset[int]) -> Any:
        if id(node) in active:
            self.add(path, "an alias refers to itself")
            return None
        active |= {id(node)}
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key, value in self._pairs(node, path):
                self.lines[(*path, key.value)] = key.start_mark.line + 1
                result[key.value] = self._value(value, (*path, key.value), active)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self._value(item, (*path, index), active))
            return items
        assert isinstance(node, yaml.ScalarNode)  # the composer makes only three kinds
        return self._scalar(node, path)

    def _unmasked(self, node: yaml.ScalarNode) -> yaml.ScalarNode:
        """The scalar as the file wrote it, its references back in place of the placeholders."""
        value = self._unmask(node.value)
        if value == node.value:
            return node
        return yaml.ScalarNode(node.tag, value, node.start_mark, node.end_mark, node.style)

    def _pairs(self, node: yaml.MappingNode, path: Loc) -> list[tuple[yaml.Node, yaml.Node]]:
        # Merge keys (`<<: *defaults`) first, so the mapping's own keys override them.
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                key = self._unmasked(key)
            if key.tag == _MERGE:
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for source in reversed(sources):  # earlier sources win
                    if isinstance(source, yaml.MappingNode):
                        merged += self._pairs(source, path)
                    else:
                        line = source.start_mark.line + 1
                        self.add(path, "a merge key (<<) must refer to a mapping", line)
            elif not isinstance(key, yaml.ScalarNode):
                self.add(path, "keys must be plain strings", key.start_mark.line + 1)
            elif key.value in own:
                first = own[key.value][0].start_mark.line + 1
                message = f"duplicate key (first at line {first})"
                self.add((*path, key.value), message, key.start_mark.line + 1)
            else:
                own[key.value] = (key, value)
        return merged + list(own.values())

    def _scalar(self, node: yaml.ScalarNode, path: Loc) -> Any:
        node = self._unmasked(node)
        if node.tag == _STR and "${" in node.value:
            expanded = self._expand(node.value, path)
            if expanded is None:
                return node.value
            # A plain scalar is typed after expansion (`port: ${PORT:-9102}` is an int);
            # a quoted one stays a string.
            resolve: Any = self._resolver.resolve  # untyped in types-PyYAML
            tag = resolve(yaml.ScalarNode, expanded, (True, False))
            node = yaml.ScalarNode(tag if node.style is None else _STR, expanded, node.start_mark)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.add(path, f"invalid value: {getattr(exc, 'problem', None) or exc}")
            self._broken.add(path)
            return None

    def _expand(self, text: str, path: Loc) -> str | None:
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    missing.append(name)
                return default or ""
            return value

        expanded = _VARIABLE.sub(substitute, text)
        for name in missing:
            message = f"environment variable {name} is not set and has no default"
            self.add(path, f"{message} (${{{name}:-VALUE}} gives one)")
        if "${" in _VARIABLE.sub("", text):
            self.add(path, "malformed variable reference; use ${NAME} or ${NAME:-default}")
            missing.append("")
        if missing:
            self._broken.add(path)
            return None
        return expanded


def check_names(mappings: list[Any], reader: Reader) -> None:
    """Report every mapping whose name an earlier mapping already uses."""
    first: dict[str, int] = {}
    for index, item in enumerate(mappings):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            other = first[name]
            line = reader.line_of(("mappings", other, "name"))
            message = f"duplicate mapping name {name!r} (also mappings[{other}], line {line})"
            reader.add(("mappings", index, "name"), message)
        else:
            first[name] = index
