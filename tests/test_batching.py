"""Batcher: token budget, exactly-once emission, padding, on synthetic chunks (no model)."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from embedpipe.encoding.batching import batches, fixed_count_batches, make_batch, padding_efficiency
from embedpipe.types import Batch, Chunk


def chunk(i: int, length: int) -> Chunk:
    """A chunk whose ids encode its number, so padding and row order can be checked."""
    return Chunk(
        f"doc{i}", 0, f"text {i}", [101, *([1000 + i % 50] * (length - 2)), 102][:length], 0, 1
    )


def varied(n: int, seed: int = 0, lo: int = 3, hi: int = 256) -> list[Chunk]:
    """Lengths like a real corpus: many short chunks, a bulk of full ones, a spread between."""
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(lo, 40), rng.randint(lo, hi), hi]) for _ in range(n)]
    return [chunk(i, length) for i, length in enumerate(lengths)]


def longest(batch: Batch) -> int:
    return int(batch.input_ids.shape[1])


@pytest.mark.parametrize("seed", range(20))
def test_budget_never_exceeded(seed: int) -> None:
    rng = random.Random(seed)
    budget, cap = rng.choice([512, 2048, 16384]), rng.choice([1, 7, 512])
    for b in batches(
        varied(rng.randint(1, 3000), seed),
        max_batch_tokens=budget,
        window=rng.choice([1, 50, 4096]),
        max_batch_size=cap,
    ):
        assert len(b.chunks) <= cap
        assert len(b.chunks) * longest(b) <= budget or len(b.chunks) == 1


@pytest.mark.parametrize("seed", range(20))
def test_every_chunk_emitted_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    chunks = varied(rng.randint(0, 2500), seed)
    out = batches(chunks, max_batch_tokens=rng.choice([64, 1024, 8192]), window=rng.randint(1, 700))
    seen = Counter(id(c) for b in out for c in b.chunks)
    assert seen == Counter(id(c) for c in chunks)


def test_oversized_chunk_gets_its_own_batch() -> None:
    chunks = [chunk(0, 10), chunk(1, 300), chunk(2, 12), chunk(3, 11)]
    out = list(batches(chunks, max_batch_tokens=100))
    big = [b for b in out if any(c.doc_id == "doc1" for c in b.chunks)]
    assert len(big) == 1 and len(big[0].chunks) == 1 and longest(big[0]) == 300
    assert sum(len(b.chunks) for b in out) == 4


def test_batch_grows_to_the_budget() -> None:
    out = list(batches([chunk(i, 10) for i in range(100)], max_batch_tokens=256))
    assert [len(b.chunks) for b in out] == [25, 25, 25, 25]


def test_max_batch_size_caps_batches() -> None:
    out = list(
        batches([chunk(i, 4) for i in range(100)], max_batch_tokens=10_000, max_batch_size=32)
    )
    assert [len(b.chunks) for b in out] == [32, 32, 32, 4]


def test_batches_are_sorted_within_a_window_and_windows_kept_in_order() -> None:
    chunks = varied(100, seed=3)
    out = list(batches(chunks, max_batch_tokens=4096, window=25))
    order = [int(c.doc_id[3:]) for b in out for c in b.chunks]
    for w in range(4):
        part = order[w * 25 : (w + 1) * 25]
        assert sorted(part) == list(range(w * 25, (w + 1) * 25))  # a window never mixes
        lengths = [chunks[i].token_count for i in part]
        assert lengths == sorted(lengths)


def test_rows_hold_ids_padded_only_to_longest_member() -> None:
    members = [chunk(0, 5), chunk(1, 9), chunk(2, 3)]
    b = make_batch(members, pad_id=7)
    assert b.input_ids.dtype == np.int64 and b.attention_mask.dtype == np.int64
    assert b.input_ids.shape == (3, 9)
    for row, c in enumerate(members):
        n = c.token_count
        assert b.input_ids[row, :n].tolist() == c.token_ids
        assert (b.input_ids[row, n:] == 7).all()
        assert b.attention_mask[row].tolist() == [1] * n + [0] * (9 - n)
    assert b.real_tokens == 17 and b.padded_tokens == 27


def test_padding_efficiency_far_above_unsorted_on_varied_lengths() -> None:
    chunks = varied(4000, seed=1)
    sorted_eff = padding_efficiency(batches(chunks, max_batch_tokens=16384))
    unsorted_eff = padding_efficiency(fixed_count_batches(chunks, 32))
    assert sorted_eff >= 0.95
    assert unsorted_eff < 0.75


def test_padding_efficiency_of_no_batches_is_one() -> None:
    assert padding_efficiency([]) == 1.0


def test_fixed_count_batches_keep_arrival_order() -> None:
    chunks = varied(70, seed=2)
    out = list(fixed_count_batches(chunks, 32))
    assert [len(b.chunks) for b in out] == [32, 32, 6]
    assert [c for b in out for c in b.chunks] == chunks


def test_reads_input_lazily_one_window_at_a_time() -> None:
    pulled = 0

    def source() -> object:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield chunk(i, 8)

    first = next(batches(source(), max_batch_tokens=1024, window=100))  # type: ignore[arg-type]
    assert len(first.chunks) == 100 and pulled <= 101


def test_rejects_non_positive_settings() -> None:
    with pytest.raises(ValueError, match="batching config"):
        next(batches([chunk(0, 5)], max_batch_tokens=0))
