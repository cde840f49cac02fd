"""Configuration docs from the pydantic models: every key's words are written once, in config/__init__.py.

`configs/default.yaml`, the key comments of the `embedpipe init` template and the CLI's option
help all take a key's text from its `Field(description=...)`, and a section's from its class
docstring. After changing a model, regenerate the file:

    python -m embedpipe.config.docs > configs/default.yaml

tests/test_config.py fails when the file, the template or the help drift from the models.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
import typing
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from embedpipe.config import RunConfig
from embedpipe.engines.registry import ENGINES
from embedpipe.sinks.registry import SINKS
from embedpipe.sources.registry import FORMS as SOURCE_FORMS

COMMENT_COLUMN = 26  # where a key's comment starts when the key and its value leave room
WIDTH = 100
_UNSET: Any = object()

HEADER = """\
# embedpipe configuration: every key with its default and what it does.
# Generated from the models in embedpipe/config/__init__.py, do not edit by hand; after changing them run
#   python -m embedpipe.config.docs > configs/default.yaml
# Precedence: CLI flags > EMBEDPIPE_* environment (EMBEDPIPE_SECTION__KEY, e.g.
# EMBEDPIPE_MODEL__PRECISION=bf16) > this file > built-in defaults.
"""


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a section field (`sink.qdrant`), None for a plain key."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _required(annotation: Any) -> Any:
    """`X` of an optional section `X | None` (`promote.eval`), else the annotation itself."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else annotation


def field(path: str) -> FieldInfo:
    """The pydantic field a dotted key names: `sink.uri`, `ray.address`, `strict`."""
    model: type[BaseModel] = RunConfig
    *sections, name = path.split(".")
    for part in sections:
        inner = section_model(_required(model.model_fields[part].annotation))
        if inner is None:
            raise KeyError(f"{path}: {part} is a key, not a section")
        model = inner
    return model.model_fields[name]


def sink_forms(*, rebuildable: bool = False) -> str:
    """The URI forms of the registered sinks (only those that can be rebuilt, if asked)."""
    kinds = [k for k in SINKS.values() if k.capabilities.rebuildable or not rebuildable]
    return " | ".join(kind.form for kind in kinds)


def source_forms() -> str:
    """The forms of the registered sources, then the bucket locations."""
    return SOURCE_FORMS


def engine_names() -> str:
    """The registered engines."""
    return " | ".join(ENGINES)


# Keys whose choices live in a registry: their description starts with what it lists.
GENERATED = {"sink.uri": sink_forms, "source.uri": source_forms, "engine": engine_names}


def describe(path: str) -> str:
    """A key's description: its comment in YAML, its help on the command line."""
    text = field(path).description
    if not text:
        raise KeyError(
            f"{path} has no description: add Field(description=...) in config/__init__.py"
        )
    listed = GENERATED.get(path)
    return f"{listed()}; {text}" if listed else text


def default_text(path: str) -> str | None:
    """A key's default as the CLI shows it ('on'/'off' for a switch), None when it has none."""
    info = field(path)
    value = None if info.is_required() else info.get_default(call_default_factory=True)
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return yaml_scalar(value)


def help_for(path: str, more: str = "") -> str:
    """Help for the CLI option that sets `path`: its description, then what `more` adds."""
    return describe(path) + (f"; {more}" if more else "")


def yaml_scalar(value: Any) -> str:
    """`value` as YAML on one line: plain when that reads back the same, else quoted."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def key_lines(path: str, value: Any = _UNSET) -> list[str]:
    """`key: value  # description` (the default unless `value` is given), the comment wrapped."""
    name = path.rsplit(".", 1)[-1]
    shown = field(path).get_default(call_default_factory=True) if value is _UNSET else value
    line = f"{'  ' * path.count('.')}{name}: {yaml_scalar(shown)}"
    return textwrap.wrap(
        describe(path),
        WIDTH,
        initial_indent=line.ljust(COMMENT_COLUMN - 2) + "  # ",
        subsequent_indent=" " * COMMENT_COLUMN + "# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def section_lines(path: str) -> list[str]:
    """A section's class docstring as comment lines, then `name:`."""
    model = section_model(field(path).annotation)
    if model is None:
        raise KeyError(f"{path} is a key, not a section")
    indent = "  " * path.count(".")
    doc = " ".join(inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].split())
    comment = textwrap.wrap(
        doc, WIDTH, initial_indent=indent + "# ", subsequent_indent=indent + "# "
    )
    return [*comment, f"{indent}{path.rsplit('.', 1)[-1]}:"]


def _model_lines(model: type[BaseModel], prefix: str) -> list[str]:
    """A section's keys, then its subsections (`sink.qdrant` after `sink.keep_previous`)."""
    lines: list[str] = []
    fields = model.model_fields.items()
    for name, info in sorted(fields, key=lambda f: section_model(f[1].annotation) is not None):
        inner = section_model(info.annotation)
        if inner is None:
            lines += key_lines(prefix + name)
        else:
            lines += section_lines(prefix + name) + _model_lines(inner, f"{prefix}{name}.")
    return lines


def default_yaml() -> str:
    """The text of configs/default.yaml: every key of RunConfig, its default and description."""
    lines = HEADER.splitlines()
    after_section = True
    for name, info in RunConfig.model_fields.items():
        inner = section_model(info.annotation)
        if inner is not None or after_section:
            lines.append("")
        if inner is None:
            lines += key_lines(name)
        else:
            lines += section_lines(name) + _model_lines(inner, name + ".")
        after_section = inner is not None
    return "\n".join(lines) + "\n"


def main() -> None:
    """`python -m embedpipe.config.docs`: print configs/default.yaml."""
    sys.stdout.write(default_yaml())


if __name__ == "__main__":
    main()
