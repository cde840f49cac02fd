"""A reader of read snapshots (embedpipe/sinks/snapshots.py) on real folders: the first queries
of several threads at once copy and open the snapshot once, and share it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from embedpipe.sinks.snapshots import READER_PREFIX, SnapshotReader, Snapshots


def test_the_first_queries_of_two_threads_copy_and_open_one_snapshot(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path, "docs")
    snapshots.publish(lambda folder: (folder.mkdir(), (folder / "data").write_text("v1")))
    opened: list[Path] = []

    def open_engine(folder: Path) -> Path:
        time.sleep(0.3)  # an engine takes a while to open: the other thread arrives meanwhile
        opened.append(folder)
        return folder

    reader: SnapshotReader[Path] = SnapshotReader(
        snapshots, open_engine, lambda _: None, lambda: True, lambda: AssertionError("missing")
    )
    start = threading.Barrier(2)
    seen: list[str] = []

    def query() -> None:
        start.wait()
        with reader.use() as served:
            seen.append((served.engine / "data").read_text())

    threads = [threading.Thread(target=query) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == ["v1", "v1"]
    print("OPENED", opened, list(snapshots.root.iterdir()))
    assert len(opened) == 1  # one private copy, opened once, serves both
    assert len(list(snapshots.root.glob(f"{READER_PREFIX}*"))) == 1
    reader.close()
    assert list(snapshots.root.glob(f"{READER_PREFIX}*")) == []
