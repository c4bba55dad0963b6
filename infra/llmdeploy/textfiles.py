"""Reading the files a user hands llmdeploy (stack files, rosters, targets, outputs, limits): text, YAML, JSON.

Each reader turns what Python raises on a hostile file into FileProblem, whose message names the file, what is
wrong and what is accepted; callers re-raise it as their own error type. Beyond the parsers' own errors:
- a file that is not UTF-8 (UTF-16 from a Windows editor, binary) raises UnicodeDecodeError;
- brackets or indentation nested too deep: over MAX_YAML_DEPTH levels in YAML, RecursionError in json;
- an integer of more than 4,300 digits raises ValueError in PyYAML's int() (Python's digit limit).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

_BOMS = {b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16", b"\xff\xfe\x00\x00": "UTF-32"}


class FileProblem(UsageError):
    """A file that cannot be used; the message names it and says what is accepted."""


def read_text(path: Path, what: str, encoding: str = "utf-8") -> str:
    """The file's text. OSError is left to the caller (each says which path to check); a file that is not UTF-8
    raises FileProblem."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        found = next((name for bom, name in sorted(_BOMS.items(), key=lambda b: -len(b[0])) if data.startswith(bom)),
                     "")
        kind = f"{found} text" if found else f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise FileProblem(f"the {what} {path} is {kind}; llmdeploy reads UTF-8 only: save it as UTF-8 "
                          f"(iconv -f {found or 'LATIN1'} -t UTF-8 {path.name} > {path.name}.utf8)") from None


MAX_YAML_DEPTH = 100  # levels of lists and mappings; a config file needs a handful


class DuplicateKey(UsageError):
    """A mapping names a key twice: YAML's reader would keep the last silently, so a typo'd copy wins. load_yaml
    turns it into a FileProblem naming the file."""

    def __init__(self, key: Any, first_line: int, again_line: int) -> None:
        super().__init__(f"the key {key!r} is given twice (line {first_line} and line {again_line}): delete one; "
                         "YAML would silently keep the last")


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting beyond MAX_YAML_DEPTH at once. Left to Python's recursion limit, the limit
    would depend on the caller's stack, and PyYAML's scanner, whose cost grows with the square of the depth, spends
    over half a second on a hostile file before it gives up."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.ScalarEvent, yaml.AliasEvent):  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise RecursionError(f"YAML nested over {MAX_YAML_DEPTH} levels")  # handled as Python's own
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
            if first is not key_node:
                raise DuplicateKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_DepthLimitedLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as exc:
        raise FileProblem(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise FileProblem(f"{where} is not valid YAML: {exc}") from None
    except RecursionError:
        raise FileProblem(f"{where} nests lists or mappings too deeply for YAML's reader (more than {MAX_YAML_DEPTH} levels); "
                          "write each value as a string, list or mapping of a few levels") from None
    except ValueError as exc:  # int() of a number with more digits than Python converts
        raise FileProblem(f"{where} holds a value YAML's reader cannot convert ({exc}); quote it or shorten "
                          "it") from None


def load_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(f"{where} is not JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise FileProblem(f"{where} nests arrays or objects too deeply (about a thousand levels) to read") from None
    except ValueError as exc:  # a number with more digits than Python converts
        raise FileProblem(f"{where} holds a value that cannot be converted ({exc})") from None
