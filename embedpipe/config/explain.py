"""Configuration errors in the operator's words: where the key was set (the YAML file, an
EMBEDPIPE_* variable or a flag), its dotted path, what is wrong with it, and for an unknown key
the closest known one ("did you mean sink.collection?")."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str, ...]


@dataclass(frozen=True)
class Layer:
    """One place keys come from, and how to name it for a key: `data` as it was read."""

    data: Mapping[str, Any]
    name: Callable[[Loc], str]


def explain(exc: ValidationError, model: type[BaseModel], layers: Sequence[Layer]) -> str:
    """One line for every problem pydantic found, each naming where the key was set.

    `layers` go from the highest precedence (flags) to the lowest (the file)."""
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        where = next((layer.name(loc) for layer in layers if _holds(layer.data, loc)), None)
        if where is None:  # a rule across keys: name the file the section came from, if any
            where = next((layer.name(loc) for layer in layers[-1:] if layer.data), "defaults")
        path = ".".join(loc) or "the configuration"
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key {path}{suggestion(loc, model)}")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
        problems.append(f"{where}: {path}: {msg}{shown}")
    return "Invalid configuration: " + "; ".join(problems)


def suggestion(loc: Loc, model: type[BaseModel]) -> str:
    """' (did you mean X?)' for an unknown key: a close name in its own section, else the same
    name in another section; ' (known keys: ...)' when neither exists."""
    section = model_at(model, loc[:-1])
    if section is None:
        return ""
    prefix = "".join(f"{part}." for part in loc[:-1])
    close = difflib.get_close_matches(loc[-1], list(section.model_fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix}{close[0]}?)"
    elsewhere = [p for p in key_paths(model) if p.rsplit(".", 1)[-1] == loc[-1]]
    if elsewhere:
        return f" (did you mean {' or '.join(elsewhere)}?)"
    return f" (known keys: {', '.join(prefix + name for name in section.model_fields)})"


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The section model a key path names (`()` is the model itself), None past a plain key."""
    for part in loc:
        info = model.model_fields.get(part)
        inner = info.annotation if info is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    return model


def key_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every key's dotted path, sections included."""
    for name, info in model.model_fields.items():
        yield prefix + name
        inner = info.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from key_paths(inner, f"{prefix}{name}.")


def _holds(data: Mapping[str, Any], loc: Loc) -> bool:
    """Whether `data` sets the key at `loc` (a list index counts as part of its key)."""
    node: Any = data
    for part in loc:
        if not (isinstance(node, Mapping) and part in node):
            return isinstance(node, list) and part.isdigit()
        node = node[part]
    return True
