"""One registry per extension point (sinks, sources, engines), and every list a user sees derived
from it: a registered sink, source or engine missing from the CLI's help, `export --help`,
`--version`, `init`, the config's descriptions or a message fails here."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import typing
from pathlib import Path

import pytest

from embedpipe.config import RunConfig
from embedpipe.config.docs import default_yaml, describe
from embedpipe.config.template import render_config
from embedpipe.engines.registry import ENGINES
from embedpipe.errors import NoSourceError
from embedpipe.sinks.registry import LIBRARIES, SINKS
from embedpipe.sources import detect_kind
from embedpipe.sources.registry import HINT, REMOTE_FORMS, SOURCES
from tests.clikit import cli, flat
from tests.sinkkit import SINK_KINDS

OPENED = {"cwd": Path(__file__).parent}


def flat_help(text: str) -> str:
    """Help text with its panel borders and line wrapping undone."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def unwrapped(yaml_text: str) -> str:
    """YAML text with its wrapped comments joined: a hint reads as one line."""
    return flat(re.sub(r"\n\s*#", " ", yaml_text))


def resolves(spec: str, package: str) -> bool:
    """Whether "module:name" of `package` names something that exists (imported to check)."""
    module, _, name = spec.partition(":")
    return hasattr(importlib.import_module(f"{package}.{module}"), name)


# ------------------------------------------------------------------------------------- sinks


def test_every_registered_sink_is_in_the_lists_the_cli_shows() -> None:
    export_help = flat_help(cli("export", "--help", **OPENED).stdout)
    run_help = flat_help(cli("backfill", "--help", **OPENED).stdout)
    version = cli("--version", **OPENED).stdout
    version_help = flat_help(cli("--help", **OPENED).stdout)
    for scheme, kind in SINKS.items():
        assert kind.form in export_help, (scheme, "export --help")
        assert kind.form in run_help, (scheme, "backfill --help")
        assert kind.form in describe("sink.uri"), (scheme, "sink.uri description")
        if kind.library is not None:
            name = kind.library[0]
            assert re.search(rf"^{re.escape(name)}\s", version, re.M), (scheme, version)
            assert name in version_help, (scheme, "--version help")
    assert [name for name, _ in LIBRARIES] == ["qdrant-edge", "qdrant-client", "faiss", "psycopg"]


@pytest.mark.parametrize("scheme", list(SINKS))
def test_init_writes_each_registered_sinks_hint_and_keys(scheme: str, tmp_path: Path) -> None:
    kind = SINKS[scheme]
    uri = f"{scheme}:{tmp_path / 'sink'}" if kind.capabilities.local_path else f"{scheme}://h:1"
    text = unwrapped(render_config(source=str(tmp_path), sink=uri))
    assert f"uri: {uri}" in text
    assert flat(kind.hint) in text
    for path, value in kind.keys:
        assert re.search(rf"\b{path.rsplit('.', 1)[1]}: {value or ''}", text), path


def test_every_registered_sink_class_exists_and_the_matrices_hold_every_local_one() -> None:
    assert [s for s, k in SINKS.items() if not resolves(k.cls, "embedpipe.sinks")] == []
    local = [s for s, k in SINKS.items() if k.capabilities.local_path]
    assert [kind for kind in SINK_KINDS if kind in local] == local
    assert set(SINK_KINDS) <= set(SINKS)


# ----------------------------------------------------------------------------------- sources


def test_every_registered_source_is_in_the_lists_a_user_sees() -> None:
    run_help = flat_help(cli("backfill", "--help", **OPENED).stdout)
    yaml_text = unwrapped(default_yaml())
    for name, kind in SOURCES.items():
        assert kind.form in describe("source.uri"), name
        assert flat(kind.form) in run_help, (name, "backfill --help")
        assert flat(kind.form) in yaml_text, (name, "configs/default.yaml")
        assert kind.phrase in HINT, name
        assert resolves(kind.opener, "embedpipe.sources"), name
    assert all(form in describe("source.uri") for form in REMOTE_FORMS)
    with pytest.raises(NoSourceError, match=re.escape(HINT)):
        detect_kind("")


@pytest.mark.parametrize("name", list(SOURCES))
def test_init_writes_each_registered_source_with_its_fields(name: str, tmp_path: Path) -> None:
    kind = SOURCES[name]
    text = unwrapped(render_config(source=f"{name}:{tmp_path / 'corpus'}", sink=None))
    assert ("text_field:" in text) is kind.records, name
    assert ("extensions:" in text) is not kind.records, name
    if kind.hint:
        assert flat(kind.hint) in text


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_registered_source_kind_is_a_prefix_detect_kind_takes(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / "x"
    path.mkdir()
    assert detect_kind(f"{name}:{path}") == (name, os.fspath(path))


# ----------------------------------------------------------------------------------- engines


def test_the_engine_key_takes_exactly_the_registered_engines() -> None:
    annotation = RunConfig.model_fields["engine"].annotation
    assert typing.get_args(annotation) == tuple(ENGINES)
    assert all(name in describe("engine") for name in ENGINES)
    for spec in ENGINES.values():
        module = spec.partition(":")[0]
        assert importlib.util.find_spec(f"embedpipe.engines.{module}") is not None, spec
