"""Configuration docs: every key is described once, in config/__init__.py, and nothing else drifts from it.

configs/default.yaml, the `embedpipe init` template and the CLI's option help are generated from
the Field descriptions (embedpipe.config.docs); these tests fail when one of them is edited by hand
or a key is added without a description.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup, TyperOption

from embedpipe.cli import app
from embedpipe.config import FLAT_KEYS, RunConfig, load_config
from embedpipe.config.docs import COMMENT_COLUMN, default_yaml, describe, field, section_model
from embedpipe.config.template import render_config
from embedpipe.errors import ConfigError
from embedpipe.sinks import SINKS

DEFAULT_YAML = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
KEY_LINE = re.compile(
    r"^(?P<indent> *)(?P<name>[a-z_][a-z0-9_]*):(?P<value>.*?)(?:  +# (?P<comment>.*))?$"
)
CONTINUATION = re.compile(rf"^ {{{COMMENT_COLUMN}}}# (?P<comment>.*)$")
INIT_CASES = [
    (None, None),
    ("./docs", "faiss:./index"),
    ("corpus.jsonl", "qdrant+https://qdrant.example:6333"),
    ("data/part.parquet", "qdrant:./.embedpipe/qdrant"),
    ("hf:acme/pump-docs#train", "parquet:/srv/vectors"),
]


def key_paths(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[str]:
    """Every key of the config as a dotted path (`sink.qdrant.hnsw.m`), sections left out."""
    for name, info in model.model_fields.items():
        inner = section_model(info.annotation)
        yield from key_paths(inner, f"{prefix}{name}.") if inner else [prefix + name]


def sections(model: type[BaseModel] = RunConfig) -> Iterator[type[BaseModel]]:
    for info in model.model_fields.values():
        inner = section_model(info.annotation)
        if inner:
            yield inner
            yield from sections(inner)


def key_comments(text: str) -> dict[str, str]:
    """`key: value  # comment` lines of a YAML text, by dotted path, wrapped comments joined."""
    comments: dict[str, str] = {}
    path: list[str] = []
    last = None
    for line in text.splitlines():
        more = CONTINUATION.match(line)
        if more and last:
            comments[last] += " " + more["comment"]
            continue
        last = None
        key = KEY_LINE.match(line)
        if not key:
            continue  # a blank line, or a full-line comment: a section's docstring or a hint
        path = [*path[: len(key["indent"]) // 2], key["name"]]
        if key["value"].strip() or key["comment"]:
            last = ".".join(path)
            comments[last] = key["comment"] or ""
    return comments


def full_line_comments(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.lstrip().startswith("#")]


def test_default_yaml_is_generated_from_the_models() -> None:
    assert DEFAULT_YAML.read_text(encoding="utf-8") == default_yaml(), (
        "configs/default.yaml drifted from embedpipe/config/__init__.py: regenerate it with "
        "`python -m embedpipe.config.docs > configs/default.yaml`"
    )


def test_default_yaml_loads_as_the_defaults() -> None:
    assert load_config(DEFAULT_YAML).model_dump() == RunConfig().model_dump()


def test_default_yaml_comments_every_key_with_its_description() -> None:
    comments = key_comments(default_yaml())
    assert comments == {path: describe(path) for path in key_paths()}


def test_every_key_has_a_description_and_every_section_a_docstring() -> None:
    assert [p for p in key_paths() if not field(p).description] == []
    assert [s.__name__ for s in sections() if not (s.__doc__ or "").strip()] == []


def test_every_choice_of_a_key_is_in_its_description() -> None:
    for path in key_paths():
        annotation = field(path).annotation
        if typing.get_origin(annotation) is typing.Literal:
            missing = [c for c in typing.get_args(annotation) if c not in describe(path)]
            assert missing == [], f"{path}: describe {missing} in its Field description"


def test_sink_description_names_every_sink_scheme() -> None:
    text = describe("sink.uri")
    assert [s for s in SINKS if s.replace("qdrant+https", "qdrant+http") not in text] == []


def cli_params() -> Iterator[tuple[str, TyperOption | TyperArgument]]:
    """(command, parameter) for every option and argument of `embedpipe` and its commands."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    commands = [("embedpipe", group), *group.commands.items()]
    for name, command in commands:
        yield from ((name, p) for p in command.params if isinstance(p, TyperOption | TyperArgument))


def test_cli_option_help_is_the_description_of_the_key_it_sets() -> None:
    checked = 0
    for command, param in cli_params():
        if (command, param.name) == ("rebuild", "sink"):
            continue  # lists only the rebuildable sinks (tests/test_cli.py)
        if param.name in FLAT_KEYS:
            path = ".".join(FLAT_KEYS[param.name])
            assert (param.help or "").startswith(escape(describe(path))), f"{command} {param.name}"
            checked += 1
    assert checked >= 40


def test_boolean_flags_show_no_metavar() -> None:
    flags = [
        (command, p.name)
        for command, p in cli_params()
        if isinstance(p, TyperOption) and p.is_flag and p.metavar != ""
    ]
    assert flags == []


@pytest.mark.parametrize(("source", "sink"), INIT_CASES)
def test_init_comments_every_key_with_its_description(source: str | None, sink: str | None) -> None:
    comments = key_comments(render_config(source, sink))
    assert len(comments) > 15
    assert comments == {path: describe(path) for path in comments}


@pytest.mark.parametrize(("source", "sink"), INIT_CASES)
def test_init_hints_restate_no_description(source: str | None, sink: str | None) -> None:
    hints = " ".join(full_line_comments(render_config(source, sink)))
    assert [p for p in key_paths() if describe(p) in hints] == []


# -- bad files, said in one line ---------------------------------------------------------------


def test_a_key_given_twice_in_a_yaml_file_names_file_key_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text("source:\n  uri: ./docs\nsink:\n  uri: faiss:./idx\nsource:\n  uri: /etc\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:5: duplicate key 'source' (first at line 1)")


def test_invalid_yaml_is_one_line_naming_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text("source:\n  uri: [unclosed\nsink: {\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3:5: not valid YAML: ") and "\n" not in message


def test_a_negative_max_seq_length_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    path.write_text("model:\n  max_seq_length: -5\n")
    with pytest.raises(ConfigError, match=r"model\.max_seq_length: Input should be greater than"):
        load_config(path)


# -- the environment ---------------------------------------------------------------------------


def test_a_string_key_takes_the_environment_value_as_given() -> None:
    """`passage: ` read as YAML is a mapping, `2024` an integer: a string key takes neither."""
    cfg = load_config(
        None,
        environ={
            "EMBEDPIPE_MODEL__PREFIX": "passage: ",
            "EMBEDPIPE_MODEL__QUERY_PREFIX": "query: ",
            "EMBEDPIPE_SINK__COLLECTION": "2024",
        },
    )
    assert (cfg.model.prefix, cfg.model.query_prefix) == ("passage: ", "query: ")
    assert cfg.sink.collection == "2024"


def test_other_environment_values_are_yaml_scalars_and_null_unsets_an_optional_string() -> None:
    cfg = load_config(
        None,
        environ={
            "EMBEDPIPE_BATCHING__MAX_BATCH_TOKENS": "8192",
            "EMBEDPIPE_MODEL__NORMALIZE": "false",
            "EMBEDPIPE_MODEL__NAME": "null",
            "EMBEDPIPE_SOURCE__TEXT_TEMPLATE": "~",
            "EMBEDPIPE_SINK__INDEX_FACTORY": "IVF16,Flat",
        },
    )
    assert (cfg.batching.max_batch_tokens, cfg.model.normalize) == (8192, False)
    assert (cfg.model.name, cfg.source.text_template, cfg.sink.index_factory) == (
        None,
        None,
        "IVF16,Flat",
    )
