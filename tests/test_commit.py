"""The commit module's sink retry (embedpipe/runs/commit.py), on a real (unopened) FAISS sink."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedpipe.config import SinkConfig
from embedpipe.errors import SinkError, TransientSinkError
from embedpipe.runs.commit import retry
from embedpipe.sinks import open_sink
from embedpipe.sinks.base import Sink


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return open_sink(SinkConfig(uri=f"faiss:{tmp_path / 'index'}", collection="docs"))


# -- retry -----------------------------------------------------------------------------------


def test_retry_repeats_a_transient_sink_failure_until_it_succeeds(sink: Sink) -> None:
    failures = [TransientSinkError("busy"), TransientSinkError("busy")]

    def call() -> str:
        if failures:
            raise failures.pop()
        return "written"

    assert retry(call, "write", sink, base_delay=0) == "written" and failures == []


def test_retry_gives_up_after_its_attempts(sink: Sink) -> None:
    def call() -> None:
        raise TransientSinkError("still busy")

    with pytest.raises(TransientSinkError, match="still busy"):
        retry(call, "write", sink, attempts=3, base_delay=0)


def test_retry_turns_an_os_error_into_one_sink_error_naming_the_sink(sink: Sink) -> None:
    def call() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(SinkError, match=rf"sink write on {sink.uri} failed: .*No space left"):
        retry(call, "write", sink)
