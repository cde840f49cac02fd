"""End to end through the `embedpipe` command, as a user runs it, into local Qdrant and FAISS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from embedpipe.cli import app
from embedpipe.cli.running import summary
from embedpipe.cli.version import cpu_bf16
from embedpipe.config import flat_overrides, load_config
from embedpipe.encoding.openvino import runtime_bf16
from embedpipe.encoding.precision import cpu_flags, native_bf16_flags
from embedpipe.index import BuiltWith
from embedpipe.sinks import open_sink
from tests.clikit import embedpipe as command
from tests.corpuskit import FILES

pytestmark = pytest.mark.slow


def embedpipe(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process, as cron or an operator runs it."""
    return command(
        *args, cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    )


@pytest.mark.parametrize("kind", ["qdrant", "faiss"])
def test_backfill_and_query_through_the_cli(kind: str, make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    sink = f"{kind}:{tmp_path / 'index'}"
    report = tmp_path / "report.json"
    done = embedpipe(
        "backfill",
        str(root),
        "--sink",
        sink,
        "--collection",
        "docs",
        "--report",
        str(report),
        "--max-batch-tokens",
        "1024",
        "--precision",
        "fp32",
    )
    assert done.returncode == 0, done.stderr
    assert "embedded" in done.stderr  # the summary table
    data = json.loads(report.read_text())
    assert (
        data["docs_read"] == len(FILES)
        and data["chunks_embedded"] > 0
        and data["outcome"] == "done"
    )
    found = embedpipe(
        "query",
        "serialise a dict to a JSON string",
        "--sink",
        sink,
        "--collection",
        "docs",
        "-k",
        "2",
        "--json",
    )
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits[0]["doc_id"] == "python/json.md" and hits[0]["score"] > 0.3
    table = embedpipe("query", "bake bread", "--sink", sink, "--collection", "docs", "-k", "1")
    assert "cooking/bread.md" in table.stdout


def test_backfill_takes_the_document_and_query_prompts_as_flags(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert flat_overrides(prefix="passage: ", query_prefix="query: ") == {
        "model": {"prefix": "passage: ", "query_prefix": "query: "}
    }
    sink = f"faiss:{tmp_path / 'index'}"
    done = embedpipe(
        "backfill",
        str(make_corpus(FILES)),
        "--sink",
        sink,
        "--collection",
        "docs",
        "--prefix",
        "passage: ",
        "--query-prefix",
        "query: ",
        "--precision",
        "fp32",
    )
    assert done.returncode == 0, done.stderr
    cfg = load_config(None, {"sink": {"uri": sink, "collection": "docs"}})
    opened = open_sink(cfg.sink)
    try:
        built = BuiltWith.read(opened, cfg)
    finally:
        opened.abort()
    assert (built.passage_prompt, built.query_prompt) == ("passage: ", "query: ")


def test_run_uses_the_config_file_and_env_overrides(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(FILES)
    config = tmp_path / "nightly.yaml"
    config.write_text(
        f"source:\n  uri: {root}\nsink:\n  uri: qdrant:{tmp_path / 'q'}\n  collection: docs\nmode: full\n"
    )
    report = tmp_path / "r.json"
    done = embedpipe(
        "run",
        str(config),
        "--report",
        str(report),
        env={"EMBEDPIPE_SINK__URI": f"faiss:{tmp_path / 'f'}"},
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["sink"].startswith("faiss:") and data["mode"] == "full"
    status = embedpipe("status", "--sink", f"faiss:{tmp_path / 'f'}", "--json")
    rows = json.loads(status.stdout)
    assert rows[0]["chunks"] == data["chunks_embedded"] and rows[0]["runs"][0]["outcome"] == "done"


def test_usage_errors_exit_2_with_the_fix(tmp_path: Path) -> None:
    bad_sink = embedpipe("backfill", str(tmp_path), "--sink", "mongo://x")
    assert bad_sink.returncode == 2 and "qdrant:PATH" in bad_sink.stderr
    no_config = embedpipe("run", str(tmp_path / "missing.yaml"))
    assert no_config.returncode == 2 and "No config file" in no_config.stderr


def test_source_that_does_not_exist_fails_with_exit_1(tmp_path: Path) -> None:
    missing = embedpipe("backfill", str(tmp_path / "nowhere"), "--sink", f"faiss:{tmp_path / 'f'}")
    assert missing.returncode in (1, 2) and "No source at" in missing.stderr


def test_strict_exits_1_when_a_record_failed(tmp_path: Path) -> None:
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "a", "text": "fine"}\n{broken\n')
    lenient = embedpipe("backfill", str(jsonl), "--sink", f"faiss:{tmp_path / 'f'}")
    assert lenient.returncode == 0 and "line 2" in lenient.stderr
    strict = embedpipe("backfill", str(jsonl), "--sink", f"faiss:{tmp_path / 'g'}", "--strict")
    assert strict.returncode == 1


# ---------------------------------------------------------------- the operator's terminal


def flat_help(text: str) -> str:
    """Help text with its panel borders and line wrapping undone."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_version_names_embedpipe_its_engines_and_the_device() -> None:
    shown = embedpipe("--version")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^embedpipe\s+0\.1\.0$", shown.stdout, re.M), shown.stdout
    for name in ("torch", "sentence-transformers", "qdrant-edge", "faiss"):
        assert re.search(rf"^{name}\s+\d", shown.stdout, re.M), (name, shown.stdout)
    assert re.search(r"^device\s+(cpu|cuda)", shown.stdout, re.M)
    # What this machine really has, as its flags and its OpenVINO say.
    native = bool(native_bf16_flags(cpu_flags()))
    bf16 = re.search(r"^cpu bf16\s+(native \(|not native: torch runs fp32)", shown.stdout, re.M)
    assert bf16 and bf16.group(1).startswith("native") == native, shown.stdout
    if find_spec("openvino"):
        ran = "bf16" if runtime_bf16() else "fp32"
        assert re.search(rf"^cpu bf16 .*; OpenVINO runs {ran}$", shown.stdout, re.M), shown.stdout


def test_version_says_what_runs_bf16_on_either_cpu() -> None:
    avx512 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
    assert cpu_bf16(avx512, True) == "native (avx512_bf16); OpenVINO runs bf16"
    assert cpu_bf16(frozenset({"avx2", "fma"}), False) == (
        "not native: torch runs fp32; OpenVINO runs fp32"
    )
    assert cpu_bf16(frozenset({"amx_bf16"}), None) == "native (amx_bf16); OpenVINO not installed"


def test_every_command_summary_and_help_read_as_whole_paragraphs() -> None:
    """Docstrings are wrapped at 100 columns in the source; the help shows their paragraphs
    whole, wrapped only by the terminal (typer's command list kept the source's line breaks)."""
    import typer

    wide = {"COLUMNS": "400"}
    listed = embedpipe("--help", env=wide).stdout
    for name, cmd in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        text = summary(cmd.help or "")
        assert re.search(rf"^│ {name}\s+{re.escape(text)}\s+│$", listed, re.M), (name, listed)
        own = embedpipe(name, "--help", env=wide).stdout
        assert text in own, (name, own)


def test_help_lists_every_sink_shows_defaults_and_no_bool_metavar() -> None:
    from embedpipe.sinks.registry import SINKS

    for args in (["--help"], ["backfill", "--help"], ["run", "--help"], ["rebuild", "--help"]):
        shown = embedpipe(*args)
        assert shown.returncode == 0 and "<bool>" not in shown.stdout, args
    text = flat_help(embedpipe("backfill", "--help").stdout)
    assert [kind.form for kind in SINKS.values() if kind.form not in text] == []
    for default in ("qdrant-edge:./.embedpipe/qdrant-edge", "embedpipe", "16384", "auto", "256"):
        assert f"[default: {default}]" in text, default


def test_rebuild_offers_only_the_sinks_that_can_be_rebuilt() -> None:
    from embedpipe.sinks.registry import SINKS

    text = flat_help(embedpipe("rebuild", "--help").stdout)
    rebuildable = [k.form for k in SINKS.values() if k.capabilities.rebuildable]
    assert rebuildable == ["faiss:DIR"] and "faiss:DIR" in text
    assert [
        k.form for k in SINKS.values() if not k.capabilities.rebuildable and k.form in text
    ] == []


def test_a_typo_in_a_config_key_names_the_file_the_key_and_the_closest_key(tmp_path: Path) -> None:
    config = tmp_path / "nightly.yaml"
    config.write_text(f"source:\n  uri: {tmp_path}\nsink:\n  colection: docs\n")
    done = embedpipe("run", str(config))
    assert done.returncode == 2
    line = " ".join(done.stderr.split())
    assert f"{config}: unknown key sink.colection (did you mean sink.collection?)" in line
    assert "Extra inputs are not permitted" not in line and "pydantic.dev" not in line


def test_a_wrong_text_field_stops_before_the_model_loads_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    rows = [{"id": f"d{i}", "pkg": "json", "section": "intro", "body": "text"} for i in range(60)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probe = (
        "import sys\nfrom embedpipe.cli import main\n"
        f"sys.argv = ['embedpipe', 'backfill', {str(source)!r}, '--text-field', 'text_body', "
        f"'--sink', 'faiss:{tmp_path / 'index'}']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, 'sentence_transformers' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    assert done.stdout.split() == ["1", "False"], done.stderr  # exit 1, the model never loaded
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(done.stderr.strip().splitlines()) == 1
    assert errors[0].startswith(
        "error: no record has text field 'text_body' (fields present: id, pkg, section, body)"
    )
