"""Corpora and configs the end-to-end test modules share: a dozen real-looking notes
(`corpus_files`), a small mixed corpus (`FILES`), a run config on a sink kind (`config`), and
whether sink and ledger agree (`consistency`); six one-topic documents (`TOPICS`), a run config
with short chunks on a sink kind (`settings`) and the top two documents a query finds (`docs_for`)."""

from __future__ import annotations

from pathlib import Path

import embedpipe
from embedpipe.config import load_config
from embedpipe.sinks import open_sink
from embedpipe.state.ledger import Ledger, Target, state_dir_for, target_key
from tests.sinkkit import sink_uri


def corpus_files(n: int = 12) -> dict[str, str]:
    """n real-looking documents, two paragraphs each."""
    topics = [
        "trains",
        "boats",
        "bread",
        "tomatoes",
        "json",
        "sockets",
        "threads",
        "gardens",
        "rivers",
        "stars",
        "violins",
        "glaciers",
        "bees",
        "castles",
        "volcanoes",
    ]
    return {
        f"doc{i:02d}.md": f"# About {topics[i % len(topics)]}\n\nThis note {i} explains {topics[i % len(topics)]} "
        f"in some detail, with history and practice.\n\nA second paragraph on {topics[i % len(topics)]} care."
        for i in range(n)
    }


def config(root: Path, kind: str, tmp_path: Path, **extra: object) -> embedpipe.RunConfig:
    data = {
        "source": {"uri": str(root)},
        "sink": {"uri": sink_uri(kind, tmp_path), "collection": "docs"},
        "chunking": {"chunk_tokens": 24, "overlap_tokens": 0},
        **extra,
    }
    return load_config(None, data)


def consistency(cfg: embedpipe.RunConfig) -> tuple[list[str], list[str]]:
    """(sink chunk ids, ledger done chunk ids) for the live fingerprint."""
    sink = open_sink(cfg.sink)
    try:
        in_sink = list(sink.chunk_ids())
    finally:
        sink.abort()
    ledger = Ledger(state_dir_for(cfg.sink.uri, cfg.state) / "ledger.sqlite")
    live = ledger.live(target_key(cfg.sink.uri, cfg.sink.collection))
    in_ledger = (
        list(
            ledger.chunk_ids(
                Target(target_key(cfg.sink.uri, cfg.sink.collection), live["fingerprint"])
            )
        )
        if live
        else []
    )
    ledger.close()
    return in_sink, in_ledger


FILES = {
    "python/json.md": "The json module encodes Python objects as JSON text and decodes JSON back.\n\n"
    "Use json.dumps to serialise a dict to a string and json.loads to parse one.",
    "python/argparse.md": "argparse parses command-line options, arguments and sub-commands.\n\n"
    "Create an ArgumentParser, add_argument for each flag, then call parse_args().",
    "cooking/bread.md": "Knead the dough for ten minutes, let it rise for an hour, then bake at 220 degrees.",
    "cooking/soup.txt": "Simmer onions, carrots and celery in stock; season with salt and pepper.",
    "notes/unicode.md": "Grüße aus München. 東京の天気は晴れです。 Emoji: 🚀✨. שלום עולם.",
    "site/page.html": "<html><head><title>t</title><style>p{}</style><script>var x=1;</script></head>"
    "<body><h1>Garden</h1><p>Water tomatoes in the morning.</p></body></html>",
}


TOPICS = {
    "trains.md": "Steam locomotives pulled passenger trains across the country; railway timetables "
    "and signalling kept the trains running on time.",
    "bread.md": "Knead the dough, let the yeast rise overnight, then bake the loaf of sourdough "
    "bread in a hot oven until the crust is brown.",
    "bees.md": "Honey bees live in hives; the queen lays eggs while worker bees gather nectar and "
    "pollen from flowers to make honey.",
    "volcano.md": "A volcano erupts when magma rises through the crust; lava flows and ash clouds "
    "follow the eruption.",
    "violin.md": "The violin is a string instrument played with a bow; violinists practise scales "
    "and tune the four strings.",
    "glacier.md": "Glaciers are rivers of ice that carve valleys as they slowly move downhill and "
    "melt in summer.",
}


def settings(root: Path, kind: str, tmp_path: Path, **extra: object) -> embedpipe.RunConfig:
    data = {
        "source": {"uri": str(root)},
        "sink": {"uri": f"{kind}:{tmp_path / kind}", "collection": "docs"},
        "chunking": {"chunk_tokens": 64, "overlap_tokens": 0},
        **extra,
    }
    return load_config(None, data)


def docs_for(cfg: embedpipe.RunConfig, text: str) -> list[str]:
    return [h.doc_id for h in embedpipe.query(text, k=2, config=cfg)]
