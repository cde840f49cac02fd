"""Hugging Face sources by name (embedpipe/sources/hf.py): datasets read from the local cache,
offline, and a clear message for one that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets

from embedpipe.errors import SourceError
from tests.sourcekit import docs, source

datasets.disable_progress_bars()
ROOT = Path(__file__).resolve().parent.parent


def cache_dataset(cache: Path, repo_id: str, splits: dict[str, dict[str, list[Any]]]) -> None:
    """Put a dataset into a datasets cache exactly where load_dataset(repo_id) leaves one: the
    Parquet builder a Hub download uses prepares Arrow files under OWNER___NAME/default/0.0.0/HASH.
    Only the download is skipped: the data files are local."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo_id.split("/")
    files = {}
    for split, columns in splits.items():
        files[split] = str(cache.parent / f"{split}.parquet")
        pq.write_table(pa.table(columns), files[split])
    builder = Parquet(
        cache_dir=str(cache),
        dataset_name=name,
        config_id="default",
        data_files=files,
        hash="0" * 16,
    )
    builder.download_and_prepare()
    (cache / name).rename(cache / f"{owner}___{name}")


SPLITS = {
    "train": {
        "id": ["t1", "t2"],
        "title": ["Pumps", "Valves"],
        "body": ["move water", "stop flow"],
    },
    "test": {"id": ["x1"], "title": ["Filters"], "body": ["catch grit"]},
}


def test_hf_name_reads_a_dataset_from_the_local_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hf" / "datasets"
    cache.mkdir(parents=True)
    cache_dataset(cache, "acme/pump-docs", SPLITS)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # hf: forces offline itself
    src = source("hf:acme/pump-docs#test", text_template="{title}: {body}")
    assert src.total == 1
    [doc] = docs(src)
    assert (doc.id, doc.text, doc.source) == ("x1", "Filters: catch grit", "hf:acme/pump-docs#test")


def test_hf_name_resolves_through_hf_home_in_a_fresh_process(tmp_path: Path) -> None:
    home = tmp_path / "hf-home"
    (home / "datasets").mkdir(parents=True)
    cache_dataset(home / "datasets", "acme/pump-docs", SPLITS)
    code = (
        "from embedpipe.config import SourceConfig; from embedpipe.sources import open_source\n"
        "src = open_source(SourceConfig(uri='hf:acme/pump-docs', text_field='body'))\n"
        "print(src.uri, [d.id for d in src])"
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hf:acme/pump-docs#train ['t1', 't2']"


def test_hf_name_not_in_the_cache_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(SourceError, match="local Hugging Face cache"):
        source("hf:acme/not-downloaded")
