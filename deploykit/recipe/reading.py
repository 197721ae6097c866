"""Reading a recipe file safely: bytes to a plain mapping, before the schema sees it.

Whatever a file holds, the result is a mapping or a :class:`~deploykit.errors.RecipeError`
naming the file and what to fix: a missing or unreadable path (a NUL byte, a name too long),
a file too large to be a recipe, text that is not UTF-8 (a UTF-16 or Latin-1 save), YAML
errors, nesting deep enough to overflow the parser, integers of thousands of digits, keys that
are not strings, and anchors and aliases that repeat each other into millions of values (a
"billion laughs" file of a few hundred bytes): the document's size with every alias expanded
is counted on the parsed node graph, each shared node once, before any value is built. YAML
is read with ``yaml.safe_load``: tags that would run code are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from deploykit.errors import RecipeError

__all__ = ["MAX_DEPTH", "MAX_RECIPE_BYTES", "MAX_VALUES", "check_structure", "key_path",
           "read_yaml_mapping", "safe_name", "shown_path"]

MAX_RECIPE_BYTES = 1_000_000
MAX_DEPTH = 32   # the schema nests 5 deep; YAML nesting past ~1000 overflows Python's stack
MAX_VALUES = 100_000   # keys and values with aliases expanded; a full recipe has a few hundred


def key_path(loc: tuple[Any, ...]) -> str:
    """``("stages", 1, "ratio")`` -> ``stages[1].ratio``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def read_yaml_mapping(path: Path) -> Any:
    """The YAML document in ``path``, read strictly (see the module docstring); ``None`` for an
    empty file.

    Raises:
        RecipeError: unreadable, too large, not UTF-8, not YAML, or nested too deeply.
    """
    text = _read_recipe_text(path)
    try:
        return _parse(text, path)
    except yaml.YAMLError as e:
        raise RecipeError(f"{shown_path(path)}: not valid YAML: {e}") from None
    except RecursionError:
        raise RecipeError(f"{shown_path(path)}: nested too deeply to read (over "
                          f"{MAX_DEPTH} levels is never a recipe)") from None
    except ValueError as e:   # e.g. an integer of thousands of digits
        raise RecipeError(f"{shown_path(path)}: a value cannot be read: {str(e)[:200]}") from None


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[...]`` / ``{...}`` in ``text``, quoted strings and comments
    aside: PyYAML's scanner takes time quadratic in it (5000 levels: seconds), so a document
    nested past any recipe is refused before it is parsed."""
    depth = deepest = 0
    quote = ""
    prev = "\n"
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            j = text.find("\n", i)
            i = n if j < 0 else j
            prev = "\n"
            continue
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
        i += 1
    return deepest


def _parse(text: str, path: Path) -> Any:
    """Parse once: count the node graph's values with aliases expanded, then build it."""
    if _flow_depth(text) > MAX_DEPTH:
        raise RecipeError(f"{shown_path(path)}: nested too deeply to read (over {MAX_DEPTH} "
                          "levels is never a recipe)")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if _expanded_values(node) > MAX_VALUES:
            raise RecipeError(f"{shown_path(path)}: with its aliases expanded the document "
                              f"holds over {MAX_VALUES} values (anchors and aliases that "
                              "repeat each other?); a recipe has a few hundred")
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


class _Expanded:
    """Counts the values of a composed YAML node graph as if every alias were expanded, each
    distinct node counted once (so the count costs as much as the file, not its expansion),
    stopping as soon as the count passes :data:`MAX_VALUES`."""

    def __init__(self) -> None:
        self.memo: dict[int, int] = {}

    def count(self, node: yaml.Node) -> int:
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = MAX_VALUES + 1   # a node reached again while counting: recursive
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(self.count(k) + self.count(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(self.count(v) for v in node.value)
        else:
            n = 1
        self.memo[key] = n = min(n, MAX_VALUES + 1)
        return n


def _expanded_values(node: yaml.Node | None) -> int:
    """How many keys and values the document under ``node`` holds with its aliases expanded
    (capped just past :data:`MAX_VALUES`)."""
    return 0 if node is None else _Expanded().count(node)


def shown_path(path: Path) -> str:
    """``path`` for a message: printable, and short even when the path is not."""
    text = str(path)
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= 200 else text[:100] + "..." + text[-80:]


def _read_recipe_text(path: Path) -> str:
    try:
        if not path.is_file():
            raise RecipeError(f"{shown_path(path)}: recipe file not found (resolved to "
                              f"{shown_path(path.absolute())})")
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{shown_path(path)}: {path.stat().st_size} bytes; a recipe is a "
                              f"short YAML file (under {MAX_RECIPE_BYTES} bytes)")
        data = path.read_bytes()
    except (OSError, ValueError) as e:   # a NUL byte, a name too long, no permission
        raise RecipeError(f"{shown_path(path)}: cannot read the recipe: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise RecipeError(f"{shown_path(path)}: saved as UTF-16; save the recipe as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{shown_path(path)}: not UTF-8 text (byte 0x{data[e.start]:02x} at "
                          f"offset {e.start}); save the recipe as UTF-8") from None
    if "\x00" in text:
        raise RecipeError(f"{shown_path(path)}: contains a NUL byte at offset "
                          f"{text.index(chr(0))}; is this a binary file?")
    return text


def safe_name(text: str) -> str:
    """``text`` made into a recipe ``name``: runs of other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip("._-")[:100]
    return name or "recipe"


def check_structure(raw: Any, source: str) -> None:
    """Refuse what no schema field can hold, naming the key: nesting deeper than
    :data:`MAX_DEPTH`, keys that are not strings, integers past 64 bits, very long strings,
    more than :data:`MAX_VALUES` values in all.
    (Iterative, so a deeply nested document cannot overflow the stack here.)"""
    todo: list[tuple[Any, tuple[Any, ...]]] = [(raw, ())]
    seen = 0
    while todo:
        value, loc = todo.pop()
        seen += 1
        if seen > MAX_VALUES:   # shared (aliased) values, counted as often as they appear
            raise RecipeError(f"{source}: over {MAX_VALUES} keys and values (repeated "
                              "aliases?); a recipe has a few hundred")
        where = key_path(loc)
        if len(loc) > MAX_DEPTH:
            raise RecipeError(f"{source}: {key_path(loc[:MAX_DEPTH])}: nested deeper than "
                              f"{MAX_DEPTH} levels; no recipe key takes such a value")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise RecipeError(f"{source}: {where}: key {k!r} is not a string; recipe "
                                      "keys are names such as 'model' or 'epochs'")
                todo.append((v, (*loc, k)))
        elif isinstance(value, list | tuple):
            todo.extend((v, (*loc, i)) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and abs(value) >= 2**63:
            raise RecipeError(f"{source}: {where}: integer {str(value)[:20]}... is out of range")
        elif isinstance(value, str) and len(value) > 10_000:
            raise RecipeError(f"{source}: {where}: a string of {len(value)} characters; no "
                              "recipe value is that long")
        elif isinstance(value, bytes):
            raise RecipeError(f"{source}: {where}: binary data (!!binary) is not a recipe value")
