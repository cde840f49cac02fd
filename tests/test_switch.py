"""The operator's switches (promotion/switch.py, promotion/__init__.py): a rollback stays, a killed rollback or
promote is finished (not repeated) by running it again, nothing is swapped in whose data is
gone, and a killed drop is finished, not left as a ghost. Real sinks, real processes, SIGKILL
at the crash points (faults.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import embedpipe
import embedpipe.api
from tests.clikit import embedpipe as command
from tests.clikit import flat
from tests.corpuskit import TOPICS, consistency, docs_for, settings

KINDS = ["faiss", "qdrant-edge"]


def base(cfg: embedpipe.RunConfig) -> list[str]:
    return ["--sink", cfg.sink.uri, "--collection", "docs"]


def states(cfg: embedpipe.RunConfig) -> dict[str, list[str]]:
    """Generation fingerprints by state, as the ledger has them."""
    out: dict[str, list[str]] = {}
    for g in embedpipe.status(cfg)[0]["generations"]:
        out.setdefault(g["state"], []).append(g["fingerprint"])
    return out


def two_generations(root: Path, kind: str, tmp_path: Path, **extra: object) -> tuple[str, str]:
    """A, then B (another chunking) live with A kept as previous: their fingerprints."""
    embedpipe.run(settings(root, kind, tmp_path, **extra))
    a = embedpipe.api.status(settings(root, kind, tmp_path))[0]["fingerprint"]
    rechunked = {"chunk_tokens": 48, "overlap_tokens": 0}
    b = embedpipe.run(settings(root, kind, tmp_path, chunking=rechunked, **extra)).fingerprint
    assert a != b
    return a, b


@pytest.mark.parametrize("kind", KINDS)
def test_a_nightly_run_after_a_rollback_holds_the_rolled_back_generation(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, kind, tmp_path)
    embedpipe.run(cfg)
    a = embedpipe.api.status(cfg)[0]["fingerprint"]
    nightly = tmp_path / "nightly.yaml"
    nightly.write_text(
        f"source: {{uri: '{root}'}}\nsink: {{uri: '{cfg.sink.uri}', collection: docs}}\n"
        "chunking: {chunk_tokens: 48, overlap_tokens: 0}\n"
    )
    assert command("run", str(nightly)).returncode == 0
    b = embedpipe.api.status(cfg)[0]["fingerprint"]
    assert b != a
    assert command("rollback", *base(cfg)).returncode == 0

    again = command("run", str(nightly))

    assert again.returncode == 1, again.stdout + again.stderr
    said = flat(again.stdout + again.stderr)
    assert "rollback" in said and f"promote --to {b[:12]}" in said, said
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == a
    assert states(cfg)["previous"] == [b]
    # promote makes it live again, and then the nightly run goes on in place.
    assert command("promote", *base(cfg), "--to", b[:12]).returncode == 0
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == b
    assert command("run", str(nightly)).returncode == 0
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == b


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_rollback_killed_after_its_swap_is_finished_by_running_it_again(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, kind, tmp_path)
    a, b = two_generations(root, kind, tmp_path)
    killed = command("rollback", *base(cfg), env={**os.environ, "EMBEDPIPE_CRASH_AT": "swap:1"})
    assert killed.returncode == -9, killed.stderr

    shown = command("status", "--sink", cfg.sink.uri, "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)[0]
    assert row["fingerprint"] == b and a.startswith(row["served"]) and row["served_differs"]
    said = flat(command("status", "--sink", cfg.sink.uri).stdout)
    assert f"the sink serves generation {row['served'][:12]}, not the ledger's {b[:12]}" in said

    rerun = command("rollback", *base(cfg))
    assert rerun.returncode == 0, rerun.stderr
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == a  # not switched back to B
    assert states(cfg) == {"live": [a], "previous": [b]}
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and in_sink
    # Targeted and idempotent: --to the live one does nothing.
    same = command("rollback", *base(cfg), "--to", a[:12])
    assert same.returncode == 0 and "already live" in flat(same.stdout), same.stderr
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == a


@pytest.mark.slow
def test_a_promote_killed_after_its_swap_is_finished_by_running_it_again(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, "faiss", tmp_path)
    a, b = two_generations(root, "faiss", tmp_path)
    assert command("rollback", *base(cfg)).returncode == 0  # A live, B previous
    args = ["promote", *base(cfg), "--to", b[:12]]
    killed = command(*args, env={**os.environ, "EMBEDPIPE_CRASH_AT": "swap:1"})
    assert killed.returncode == -9, killed.stderr
    rerun = command(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert states(cfg) == {"live": [b], "previous": [a]}
    assert command(*args).returncode == 0  # again: nothing to do
    assert states(cfg) == {"live": [b], "previous": [a]}


@pytest.mark.parametrize("kind", KINDS)
def test_a_switch_to_a_generation_whose_data_is_gone_is_refused(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, kind, tmp_path)
    a, b = two_generations(root, kind, tmp_path)
    gen = next((tmp_path / kind / ".generations").glob(f"docs__{a[:16]}"))
    for part in gen.iterdir():  # the segments go, the manifest stays
        if part.name not in ("manifest.json", ".lock"):
            shutil.rmtree(part) if part.is_dir() else part.unlink()

    for args in (["rollback"], ["promote", "--to", a[:12]]):
        refused = command(*args, *base(cfg))
        assert refused.returncode == 1, refused.stdout
        said = flat(refused.stderr)
        assert f"Generation {a[:12]}" in said and "Nothing was switched" in said, said
        assert "Traceback" not in refused.stderr
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == b
    assert docs_for(cfg, "baking sourdough with yeast")[0] == "bread.md"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_drop_killed_midway_is_finished_not_left_as_a_ghost(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, kind, tmp_path)
    a, b = two_generations(root, kind, tmp_path)  # keep_previous 1: A previous, B live
    args = ["backfill", str(root), *base(cfg), "--chunk-tokens", "40", "--overlap-tokens", "0"]
    killed = command(*args, env={**os.environ, "EMBEDPIPE_CRASH_AT": "drop:1"})
    assert killed.returncode == -9, killed.stderr  # C went live; dropping A was killed
    c = embedpipe.api.status(cfg)[0]["fingerprint"]
    assert c not in (a, b)

    looked = command("reconcile", *base(cfg))
    assert looked.returncode == 0, looked.stdout + looked.stderr
    assert "was being dropped" in flat(looked.stdout)
    repaired = command("reconcile", *base(cfg), "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert states(cfg) == {"live": [c], "previous": [b]}
    gens = tmp_path / kind / ".generations"
    assert sorted(p.name for p in gens.iterdir()) == sorted(f"docs__{f[:16]}" for f in (b, c))
    assert command("rollback", *base(cfg)).returncode == 0
    assert states(cfg) == {"live": [b], "previous": [c]}
    assert all(g["chunks"] > 0 for g in embedpipe.status(cfg)[0]["generations"])


@pytest.mark.slow
def test_a_switch_finishes_a_drop_a_crash_interrupted(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, "faiss", tmp_path)
    a, b = two_generations(root, "faiss", tmp_path)
    args = ["backfill", str(root), *base(cfg), "--chunk-tokens", "40", "--overlap-tokens", "0"]
    assert command(*args, env={**os.environ, "EMBEDPIPE_CRASH_AT": "drop:1"}).returncode == -9
    rolled = command("rollback", *base(cfg))
    assert rolled.returncode == 0, rolled.stderr
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == b
    assert a not in {g["fingerprint"] for g in embedpipe.status(cfg)[0]["generations"]}
