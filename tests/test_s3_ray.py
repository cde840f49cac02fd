"""Sources in S3 on the Ray engine: Ray Data reads the objects itself (read_parquet, binary files)
through the same pyarrow S3 filesystem, and the chunks are those of the local engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import embedpipe
from tests.s3kit import S3, config, ledger_chunks, put_corpus, s3_server  # noqa: F401 (fixture `s3`)

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray(s3: S3) -> Iterator[None]:
    """A local Ray instance started after the S3 environment is set: its workers inherit it."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    yield
    ray.shutdown()


def test_ray_reads_parquet_jsonl_and_documents_from_s3_like_the_local_engine(
    s3: S3, local_ray: None, tmp_path: Path
) -> None:
    put_corpus(s3, tmp_path)
    for kind in ("parquet", "jsonl", "docs"):
        on_ray = config(f"s3://lake/{kind}", tmp_path, f"ray-{kind}", engine="ray")
        here = config(f"s3://lake/{kind}", tmp_path, f"local-{kind}")
        report = embedpipe.run(on_ray)
        assert report.errors == [], kind
        assert any("read by Ray" in note for note in report.notes), report.notes
        embedpipe.run(here)
        assert ledger_chunks(on_ray) == ledger_chunks(here), kind
        s3.requests.clear()
        again = embedpipe.run(on_ray)
        assert again.chunks_embedded == 0 and s3.requests.bodies("lake") == [], kind
        if kind != "docs":
            # parquet: read_parquet fails the wave on an unreadable object (Ray's own retries);
            # jsonl: its objects are fetched by the same raw reader as documents (tested here).
            continue
        s3.fault("docs/doc02.md", "deny")
        denied = embedpipe.run(
            config(f"s3://lake/{kind}", tmp_path, f"ray-denied-{kind}", engine="ray")
        )
        locally = embedpipe.run(config(f"s3://lake/{kind}", tmp_path, f"local-denied-{kind}"))
        assert (
            [(e.source, e.record, e.reason) for e in denied.errors]
            == [(e.source, e.record, e.reason) for e in locally.errors]
            != []
        )
        assert denied.docs_read == locally.docs_read > 0
