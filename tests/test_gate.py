"""Champion / challenger: a new model or chunking goes live only if it retrieves no worse; the
metrics (promotion/quality.py), the gate (promotion/gate.py), promote and rollback (promotion/switch.py) on real models and
every sink."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

import embedpipe
import embedpipe.api
from embedpipe.errors import ConfigError, EmbedpipeError, HeldError
from embedpipe.promotion.quality import Query, load_queries, score
from tests.clikit import embedpipe as command
from tests.corpuskit import TOPICS, consistency, docs_for, settings
from tests.sinkkit import LOCAL_SINK_KINDS

QUERIES = [
    {"query": "how do trains keep to their timetable", "relevant": ["trains.md"]},
    {"query": "baking sourdough with yeast", "relevant": ["bread.md"]},
    {"query": "what do worker bees collect", "doc_id": "bees.md"},
    {"query": "lava and magma eruption", "relevant": ["volcano.md"]},
    {"query": "playing a bowed string instrument", "relevant": ["violin.md"]},
    {"query": "ice moving down a valley", "relevant": ["glacier.md", "volcano.md"]},
]


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    path = tmp_path / "queries.jsonl"
    lines = [json.dumps(q) for q in QUERIES] + ["{not json", '{"query": "no answer"}', ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- the metrics ------------------------------------------------------------------------------


def test_scores_match_a_hand_computation() -> None:
    queries = [
        Query("a", frozenset({"x"})),
        Query("b", frozenset({"y", "z"})),
        Query("c", frozenset({"w"})),
    ]
    rankings = [["q", "x", "r"], ["z", "s", "y"], ["s", "t", "u"]]
    got = score(queries, rankings, k=3)
    # recall: 1, 2/2, 0 -> 2/3. MRR: 1/2, 1/1, 0 -> 1/2.
    # nDCG: (1/log2 3) / 1; (1 + 1/log2 4) / (1 + 1/log2 3); 0.
    ndcg = (1 / math.log2(3) + (1 + 1 / 2) / (1 + 1 / math.log2(3))) / 3
    assert got.recall == pytest.approx(2 / 3)
    assert got.mrr == pytest.approx(1 / 2)
    assert got.ndcg == pytest.approx(ndcg)
    assert got.per_query[1]["ranks"] == {"z": 1, "y": 3}


def test_only_the_top_k_count() -> None:
    got = score([Query("a", frozenset({"x"}))], [["p", "q", "x"]], k=2)
    assert (got.recall, got.mrr, got.ndcg) == (0.0, 0.0, 0.0)


def test_bad_query_lines_are_reported_and_skipped(queries: Path) -> None:
    found, errors = load_queries(queries)
    assert len(found) == len(QUERIES)
    assert [e.record for e in errors] == [f"line {len(QUERIES) + 1}", f"line {len(QUERIES) + 2}"]
    assert "not valid JSON" in errors[0].reason and "relevant" in errors[1].reason


def test_eval_ranks_are_the_documents_query_returns(
    make_corpus, tmp_path: Path, queries: Path
) -> None:  # type: ignore[no-untyped-def]
    cfg = settings(make_corpus(TOPICS), "faiss", tmp_path)
    embedpipe.run(cfg)
    result = embedpipe.evaluate(cfg, queries=queries, k=3)
    assert result["generation"]["state"] == "live" and len(result["errors"]) == 2
    for q, row in zip(QUERIES, result["per_query"], strict=True):
        hits = list(dict.fromkeys(h.doc_id for h in embedpipe.query(q["query"], k=3, config=cfg)))
        relevant = q.get("relevant", [q.get("doc_id")])
        assert row["ranks"] == {d: i + 1 for i, d in enumerate(hits) if d in relevant}
    assert result["recall"] >= 0.9  # MiniLM answers these


# -- the gate, promote, rollback --------------------------------------------------------------


@pytest.mark.parametrize("kind", LOCAL_SINK_KINDS)
def test_worse_challenger_is_held_then_promoted_then_rolled_back(
    kind: str, make_corpus, tmp_path: Path, queries: Path, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    champion = settings(root, kind, tmp_path, promote={"eval": {"queries": str(queries), "k": 3}})
    embedpipe.run(champion)
    answer = docs_for(champion, "baking sourdough with yeast")
    assert answer[0] == "bread.md"
    challenger = settings(
        root,
        kind,
        tmp_path,
        model={"name": str(tiny_model)},
        promote={"eval": {"queries": str(queries), "k": 3}},
    )

    held = embedpipe.api.run(challenger, raise_on_failure=False)
    assert held.outcome == "held" and held.promotion is not None
    assert held.promotion["promoted"] is False and "vs live" in held.promotion["reason"]
    assert held.promotion["live"]["recall"] > held.promotion["staged"]["recall"]
    assert docs_for(champion, "baking sourdough with yeast") == answer  # live still answers
    states = {g["state"] for g in embedpipe.status(champion)[0]["generations"]}
    assert states == {"live", "staged"}

    promoted = embedpipe.promote(champion)
    assert promoted["live"] == held.fingerprint
    assert embedpipe.api.status(champion)[0]["model"] == str(tiny_model)
    rolled = embedpipe.rollback(champion)
    assert rolled["replaced"] == held.fingerprint
    assert docs_for(champion, "baking sourdough with yeast") == answer
    gens = {g["state"]: g for g in embedpipe.status(champion)[0]["generations"]}
    assert gens["previous"]["fingerprint"] == held.fingerprint
    assert embedpipe.api.reconcile(champion)["relink"] is None
    # An incremental run continues against what is live (MiniLM): nothing to embed.
    assert embedpipe.run(settings(root, kind, tmp_path)).chunks_embedded == 0


@pytest.mark.parametrize("kind", ["faiss", "qdrant-edge"])
def test_no_worse_challenger_is_promoted(
    kind: str, make_corpus, tmp_path: Path, queries: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    gate = {"eval": {"queries": str(queries), "k": 3}}
    embedpipe.run(settings(root, kind, tmp_path, promote=gate))
    rechunked = settings(
        root, kind, tmp_path, promote=gate, chunking={"chunk_tokens": 48, "overlap_tokens": 0}
    )
    report = embedpipe.run(rechunked)
    assert report.outcome == "done" and report.promotion["promoted"] is True  # type: ignore[index]
    assert report.promotion["staged"]["recall"] >= report.promotion["live"]["recall"] - 0.01  # type: ignore[index]
    assert embedpipe.api.status(rechunked)[0]["fingerprint"] == report.fingerprint


def test_keep_previous_zero_drops_the_replaced_generation(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    embedpipe.run(settings(root, "faiss", tmp_path, promote={"keep_previous": 0}))
    rechunked = settings(
        root,
        "faiss",
        tmp_path,
        promote={"keep_previous": 0},
        chunking={"chunk_tokens": 48, "overlap_tokens": 0},
    )
    embedpipe.run(rechunked)
    assert [g["state"] for g in embedpipe.status(rechunked)[0]["generations"]] == ["live"]
    assert len(list((tmp_path / "faiss" / ".generations").iterdir())) == 1
    with pytest.raises(EmbedpipeError, match="No generation 'previous'"):
        embedpipe.rollback(rechunked)


def test_promote_refuses_a_generation_still_being_built(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, "faiss", tmp_path)
    embedpipe.run(cfg)
    args = [
        "backfill",
        str(root),
        "--sink",
        cfg.sink.uri,
        "--collection",
        "docs",
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "0",
        "--max-batch-tokens",
        "64",
    ]
    env = {**os.environ, "EMBEDPIPE_CRASH_AT": "ledger-commit:1"}
    assert command(*args, env=env).returncode == -9
    with pytest.raises(EmbedpipeError, match="No generation 'staged'"):
        embedpipe.promote(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qdrant-edge", "qdrant", "faiss"])
def test_sigkill_at_the_rollback_switch_leaves_one_live_generation_the_ledger_agrees_with(
    kind: str, make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, kind, tmp_path)
    embedpipe.run(cfg)
    first = embedpipe.api.status(cfg)[0]["fingerprint"]
    embedpipe.run(
        settings(root, kind, tmp_path, chunking={"chunk_tokens": 48, "overlap_tokens": 0})
    )
    args = ["rollback", "--sink", cfg.sink.uri, "--collection", "docs"]
    killed = command(*args, env={**os.environ, "EMBEDPIPE_CRASH_AT": "swap:1"})
    assert killed.returncode == -9, killed.stderr
    embedpipe.api.reconcile(cfg, repair=True)  # the ledger follows the sink
    gens = embedpipe.api.status(cfg)[0]["generations"]
    assert [g["fingerprint"] for g in gens if g["state"] == "live"] == [first]
    in_sink, in_ledger = consistency(cfg)
    assert sorted(in_sink) == sorted(in_ledger) and in_sink
    assert docs_for(cfg, "baking sourdough with yeast")[0] == "bread.md"


def test_cli_eval_promote_and_rollback(make_corpus, tmp_path: Path, queries: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, "faiss", tmp_path)
    embedpipe.run(cfg)
    base = ["--sink", cfg.sink.uri, "--collection", "docs"]
    shown = command("eval", *base, "--queries", str(queries), "-k", "3", "--json")
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout)
    assert result["generation"]["state"] == "live" and set(result) >= {"recall", "mrr", "ndcg"}
    assert len(result["per_query"]) == len(QUERIES)
    held = command(
        "backfill",
        str(root),
        *base,
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "0",
        "--eval-queries",
        str(queries),
    )
    assert held.returncode == 0, held.stderr  # same model, other chunking: no worse
    rolled = command("rollback", *base)
    assert rolled.returncode == 0 and "is live" in rolled.stdout, rolled.stderr
    again = command("promote", *base, "--generation", "previous")
    assert again.returncode == 0, again.stderr
    none = command("promote", *base, "--generation", "staged")
    assert none.returncode == 1 and "No generation 'staged'" in none.stderr


def test_held_gate_is_not_forced_by_the_documents_rule(
    make_corpus, tmp_path: Path, queries: Path, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    gate = {"eval": {"queries": str(queries), "k": 3}}
    embedpipe.run(settings(root, "faiss", tmp_path, promote=gate))
    with pytest.raises(HeldError, match="vs live") as caught:
        embedpipe.run(
            settings(root, "faiss", tmp_path, promote=gate, model={"name": str(tiny_model)})
        )
    said = str(caught.value)  # the gate held it, with the scores; the source is not blamed
    assert (
        said.startswith("The quality gate held the new generation")
        and "Check the source" not in said
    )
    assert re.search(r"recall \d\.\d{3} vs live \d\.\d{3}", said)


def test_html_report_shows_live_and_staged_metrics_side_by_side(
    make_corpus, tmp_path: Path, queries: Path, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    from embedpipe.report.html import render

    root = make_corpus(TOPICS)
    gate = {"eval": {"queries": str(queries), "k": 3}}
    embedpipe.run(settings(root, "faiss", tmp_path, promote=gate))
    challenger = settings(root, "faiss", tmp_path, promote=gate, model={"name": str(tiny_model)})
    held = embedpipe.api.run(challenger, raise_on_failure=False)
    page = render(held.to_dict())
    table = page[page.index("<table id='promotion'>") :].split("</table>")[0]
    assert "Promotion: held" in page
    for metric in ("documents", "recall", "mrr", "ndcg"):
        assert f"<th>{metric}</th>" in table
    live, staged = held.promotion["live"], held.promotion["staged"]  # type: ignore[index]
    assert f"<td>{live['recall']:.3f}</td><td>{staged['recall']:.3f}</td>" in table


# -- errors found early and said plainly ------------------------------------------------------


def test_a_missing_empty_or_invalid_eval_queries_file_is_a_usage_error_before_the_model_loads(
    make_corpus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    for name in ("missing.jsonl", "empty.jsonl", "bad.jsonl"):
        sink = tmp_path / f"idx-{name}"
        queries_file = str(tmp_path / name)
        done = command(
            "backfill", str(root), "--sink", f"faiss:{sink}", "--eval-queries", queries_file
        )
        assert done.returncode == 2 and str(tmp_path / name) in done.stderr, done.stderr
        assert "loading model" not in done.stderr and not sink.exists()  # nothing was built


def test_relevant_ids_that_match_no_document_are_refused(
    make_corpus, tmp_path: Path, queries: Path
) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    cfg = settings(root, "faiss", tmp_path)
    embedpipe.run(cfg)
    wrong = tmp_path / "wrong.jsonl"  # ids without their suffix: no document has them
    wrong.write_text(
        "".join(
            json.dumps({"query": q["query"], "relevant": ["trains", "bread"]}) + "\n"
            for q in QUERIES
        )
    )
    base = ["--sink", cfg.sink.uri, "--collection", "docs"]
    shown = command("eval", *base, "--queries", str(wrong))
    assert shown.returncode == 2 and "names a document of the index" in shown.stderr
    gated = command(
        "backfill",
        str(root),
        *base,
        "--chunk-tokens",
        "48",
        "--overlap-tokens",
        "0",
        "--eval-queries",
        str(wrong),
    )
    assert gated.returncode == 2 and "names a document of the index" in gated.stderr
    assert "loading model" not in gated.stderr
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        queries.read_text() + json.dumps({"query": "q", "relevant": ["nope.md"]}) + "\n"
    )
    result = embedpipe.api.evaluate(cfg, queries=mixed, k=3)
    assert result["queries"] == len(QUERIES)
    assert [e["reason"] for e in result["errors"]][-1] == (
        "no relevant id is a document of the index (nope.md)"
    )


@pytest.mark.parametrize("k", ["0", "-1"])
def test_k_below_one_is_a_usage_error(make_corpus, tmp_path: Path, queries: Path, k: str) -> None:  # type: ignore[no-untyped-def]
    cfg = settings(make_corpus(TOPICS), "faiss", tmp_path)
    embedpipe.run(cfg)
    base = ["--sink", cfg.sink.uri, "--collection", "docs"]
    for args in (
        ["query", "trains", *base, "-k", k],
        ["eval", *base, "--queries", str(queries), "-k", k],
    ):
        done = command(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "-k" in done.stderr and "1" in done.stderr
    with pytest.raises(ConfigError, match="k must be at least 1"):
        embedpipe.query("trains", k=int(k), config=cfg)
    with pytest.raises(ConfigError, match="k must be at least 1"):
        embedpipe.api.evaluate(cfg, queries=queries, k=int(k))


def test_promoting_the_live_generation_says_it_is_already_live(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = settings(make_corpus(TOPICS), "faiss", tmp_path)
    live = embedpipe.run(cfg).fingerprint
    done = command(
        "promote", "--sink", cfg.sink.uri, "--collection", "docs", "--generation", "live"
    )
    assert done.returncode == 0, done.stderr
    assert f"generation {live[:12]} is already live; nothing changed" in done.stdout
    assert "kept as previous" not in done.stdout


def test_reconcile_names_each_generation_by_its_ledger_state(make_corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_corpus(TOPICS)
    first = embedpipe.run(settings(root, "faiss", tmp_path)).fingerprint
    embedpipe.run(
        settings(root, "faiss", tmp_path, chunking={"chunk_tokens": 48, "overlap_tokens": 0})
    )
    done = command("reconcile", "--sink", f"faiss:{tmp_path / 'faiss'}", "--collection", "docs")
    assert done.returncode == 0, done.stderr
    assert f"previous {first[:12]}" in done.stdout and "staged" not in done.stdout


@pytest.mark.parametrize("verb", ["eval", "rollback", "reconcile"])
def test_a_mistyped_sink_path_is_refused_creating_nothing(
    verb: str, tmp_path: Path, queries: Path
) -> None:
    typo = tmp_path / "idnex"
    extra = ["--queries", str(queries)] if verb == "eval" else []
    done = command(verb, "--sink", f"faiss:{typo}", "--collection", "docs", *extra)
    assert done.returncode == 2 and "No embedpipe index at" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queries.jsonl"]


NOISY_PROMPT = "Ignore this: bananas violins lava sourdough bees glaciers trains. "


def test_each_generation_is_scored_with_its_own_query_prompt(
    make_corpus, tmp_path: Path, queries: Path
) -> None:  # type: ignore[no-untyped-def]
    # Live was built without prompts; the challenger is rechunked (each document still one
    # chunk: live's vectors) with a noisy query prompt, so only its prompt can score it worse.
    # Scored with the challenger's prompt, live would look as bad and the challenger would go live.
    root = make_corpus(TOPICS)
    base = [
        "--sink",
        f"faiss:{tmp_path / 'faiss'}",
        "--collection",
        "docs",
        "--overlap-tokens",
        "0",
        "--eval-queries",
        str(queries),
    ]
    env = {**os.environ, "EMBEDPIPE_PROMOTE__EVAL__K": "3"}
    first = command("backfill", str(root), *base, "--chunk-tokens", "64", env=env)
    assert first.returncode == 0, first.stderr
    cfg = settings(root, "faiss", tmp_path)
    live = embedpipe.api.status(cfg)[0]["fingerprint"]

    noisy = {**env, "EMBEDPIPE_MODEL__QUERY_PREFIX": json.dumps(NOISY_PROMPT)}
    report = tmp_path / "report.json"
    held = command(
        "backfill", str(root), *base, "--chunk-tokens", "48", "--report", str(report), env=noisy
    )

    assert held.returncode == 1, held.stdout + held.stderr
    promotion = json.loads(report.read_text())["promotion"]
    assert promotion["promoted"] is False and "vs live" in promotion["reason"]
    assert promotion["live"]["recall"] == 1.0  # live as it serves: no prompt
    assert promotion["staged"]["recall"] < promotion["live"]["recall"]
    assert embedpipe.api.status(cfg)[0]["fingerprint"] == live
