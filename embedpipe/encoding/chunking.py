"""Token-aware chunking on the model's own tokenizer.

A document is tokenised in windows of characters (never whole), chunk boundaries are chosen
from the offset mapping with numpy, and each chunk's final input ids come from one batched
tokenizer call over the chunk texts, so the encoder sees exactly what
`tokenizer(prefix + text)` gives and never more than `limit` ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embedpipe.errors import ConfigError, ModelError
from embedpipe.types import Chunk, Document

if TYPE_CHECKING:  # the config needs pydantic, which a bare GPU worker may lack
    from transformers import PreTrainedTokenizerBase

    from embedpipe.config import ChunkingConfig, ModelConfig

# Characters tokenised per call: big enough to amortise the call, small enough that the
# offsets of one window (Python lists inside transformers) stay a few MB.
WINDOW_CHARS = 65_536
# chunk_many tokenises documents of up to this many characters together in one call.
GROUP_CHARS = 262_144
GROUP_DOCS = 256
# A preferred break is only looked for in the latter part of the token window, so chunks
# stay at least this full.
MIN_FILL = 0.5

# Boundary scores: higher is a better place to cut.
PARAGRAPH, SENTENCE, WORD, TOKEN = 3, 2, 1, 0

# Character classes as bit flags in a table over the Basic Multilingual Plane: one fancy
# index classifies a whole window (np.isin per window costs more than the tokenizer on short
# documents). Code points above it clamp to U+FFFF, a non-character with no flags.
_SPACE, _TERMINAL, _CJK_TERMINAL, _CLOSER = 1, 2, 4, 8
_FLAGS = np.zeros(0x10000, dtype=np.uint8)
_FLAGS[[c for c in range(0x3001) if chr(c).isspace()]] |= _SPACE  # all of them lie below U+3001
_FLAGS[[ord(c) for c in ".!?…。！？"]] |= _TERMINAL
# CJK sentence ends need no whitespace after them: CJK text has none between sentences.
_FLAGS[[ord(c) for c in "。！？"]] |= _CJK_TERMINAL
# A sentence may end in a closing quote or bracket after its terminal: `He said "no."`.
_FLAGS[[ord(c) for c in "\"')]}’”»"]] |= _CLOSER
_NON_SPACE = re.compile(r"\S")


@dataclass(slots=True)
class _Window:
    """One tokenised stretch of a document, positions relative to its first character."""

    text: str
    starts: np.ndarray  # (n,) int64 start char of each token
    ends: np.ndarray  # (n,) int64 end char of each token
    score: np.ndarray  # (n + 1,) score of cutting before token i; -1 at 0 and n
    final: bool  # the window reaches the end of the document

    @property
    def n(self) -> int:
        return len(self.starts)


@dataclass(slots=True)
class _Plan:
    """A window's chunks: token spans, the (stripped) character spans they map to, and where
    the next window starts (characters into this one)."""

    tokens: list[tuple[int, int]]
    spans: list[tuple[int, int]]
    resume: int


class Chunker:
    """Split documents into chunks whose input ids, special tokens included, fit the model."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        chunk_tokens: int,
        overlap_tokens: int,
        max_seq_length: int,
        prefix: str = "",
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                f"{type(tokenizer).__name__} is a slow tokenizer without offset mapping: load it "
                "with AutoTokenizer.from_pretrained(path, use_fast=True) (needs the `tokenizers` "
                "package and a tokenizer.json or a convertible vocabulary)"
            )
        self._tok = tokenizer
        self.prefix = prefix
        self.chunk_tokens = chunk_tokens
        self.max_seq_length = max_seq_length
        self.overlap_tokens = overlap_tokens
        self.budget = self.limit - self._reserved_tokens()
        if self.budget < 2:
            # Name the key that set the limit: the smaller of the two.
            key = (
                "model.max_seq_length" if max_seq_length < chunk_tokens else "chunking.chunk_tokens"
            )
            raise ConfigError(
                f"chunk limit {self.limit} leaves {self.budget} tokens for text after special "
                f"tokens and the prefix {prefix!r}: raise {key}"
            )
        # Each chunk still advances by at least one token (see _next_start), so an overlap up
        # to the budget is accepted; the config keeps it below half of chunk_tokens.
        if not 0 <= overlap_tokens < self.budget:
            raise ConfigError(
                f"overlap_tokens={overlap_tokens} must be >= 0 and below the {self.budget} text "
                f"tokens per chunk: lower chunking.overlap_tokens"
            )

    @classmethod
    def for_run(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        chunking: ChunkingConfig,
        model: ModelConfig,
        max_seq_length: int,
    ) -> Chunker:
        """The chunker a run uses, from its chunking and model config (both engines)."""
        return cls(
            tokenizer,
            chunk_tokens=chunking.chunk_tokens,
            overlap_tokens=chunking.overlap_tokens,
            max_seq_length=max_seq_length,
            prefix=model.prefix,
        )

    @property
    def limit(self) -> int:
        """The most input ids a chunk may have, special tokens and prefix included."""
        return min(self.chunk_tokens, self.max_seq_length)

    def chunk(self, doc: Document) -> Iterator[Chunk]:
        """The chunks of one document, in order, tokenising it a window at a time."""
        text, index = doc.text, 0
        pos, size = _skip_space(text, 0), WINDOW_CHARS
        while pos < len(text):
            end = _window_end(text, pos, size)
            window = self._windows([text[pos:end]], [end >= len(text)])[0]
            plan = self._plan(window, {})
            plan, ids = self._fit(window, plan, self._input_ids(_texts(window, plan)))
            yield from _make_chunks(doc, window, plan, ids, offset=pos, first_index=index)
            if window.final:
                return
            index += len(plan.spans)
            # No chunk fitted (e.g. a long run of characters the tokenizer drops): widen the
            # window rather than loop.
            size = size * 2 if plan.resume == 0 else WINDOW_CHARS
            pos = _skip_space(text, pos + plan.resume)

    def chunk_many(self, docs: Iterable[Document]) -> Iterator[Chunk]:
        """Same chunks as chaining `chunk()`, with batched tokenizer calls across documents."""
        for group in _groups(docs):
            yield from self._chunk_group(group)

    def _chunk_group(self, docs: list[Document]) -> Iterator[Chunk]:
        """Chunk a group of documents, tokenising those that fit one window together."""
        starts = [_skip_space(d.text, 0) for d in docs]
        small = [i for i, d in enumerate(docs) if 0 < len(d.text) - starts[i] <= WINDOW_CHARS]
        windows = self._windows([docs[i].text[starts[i] :] for i in small], [True] * len(small))
        plans = [self._plan(w, {}) for w in windows]
        ids = iter(
            self._input_ids([t for w, p in zip(windows, plans, strict=True) for t in _texts(w, p)])
        )
        ready = {
            i: (w, p, [next(ids) for _ in p.spans])
            for i, w, p in zip(small, windows, plans, strict=True)
        }
        for i, doc in enumerate(docs):
            if i not in ready:
                yield from self.chunk(doc)  # empty, or longer than a window: stream it
                continue
            window, plan, doc_ids = ready.pop(i)
            plan, doc_ids = self._fit(window, plan, doc_ids)
            yield from _make_chunks(doc, window, plan, doc_ids, offset=starts[i], first_index=0)

    # -- windows and planning --------------------------------------------------------------

    def _reserved_tokens(self) -> int:
        specials = int(self._tok.num_special_tokens_to_add(pair=False))
        prefix = (
            self._tok(self.prefix, add_special_tokens=False)["input_ids"] if self.prefix else []
        )
        return specials + len(prefix)

    def _windows(self, texts: Sequence[str], finals: Sequence[bool]) -> list[_Window]:
        """Tokenise texts in one call and score every token boundary."""
        if not texts:
            return []
        enc = self._tok(
            list(texts),
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [
            _make_window(text, offsets, final)
            for text, final, offsets in zip(texts, finals, enc["offset_mapping"], strict=True)
        ]

    def _plan(self, w: _Window, budgets: dict[int, int]) -> _Plan:
        """The chunks a window decides; `budgets` overrides the budget of the chunk at a start token."""
        tokens: list[tuple[int, int]] = []
        s = 0
        while s < w.n:
            budget = budgets.get(s, self.budget)
            if s + budget >= w.n:
                if w.final:
                    tokens.append((s, w.n))
                    s = w.n
                # else: this chunk's end lies beyond the window; the next window starts here.
                break
            e = _best_end(w.score, s, budget)
            tokens.append((s, e))
            s = self._next_start(w.score, s, e)
        resume = int(w.starts[s]) if s < w.n else len(w.text)
        spans = [_char_span(w, s, e) for s, e in tokens]
        keep = [i for i, (a, b) in enumerate(spans) if a < b]
        return _Plan([tokens[i] for i in keep], [spans[i] for i in keep], resume)

    def _next_start(self, score: np.ndarray, s: int, e: int) -> int:
        """Start the next chunk about overlap_tokens before e, snapped to a word start."""
        if self.overlap_tokens == 0:
            return e
        lo = max(e - self.overlap_tokens, s + 1)
        words = np.flatnonzero(score[lo:e] >= WORD)
        return lo + int(words[0]) if len(words) else lo

    def _fit(self, w: _Window, plan: _Plan, ids: list[list[int]]) -> tuple[_Plan, list[list[int]]]:
        """Shrink chunks whose final ids exceed the limit, re-planning after each, until none does.

        The window's tokens only estimate a chunk's ids: a word cut in two re-tokenises with a
        word-initial piece, and the prefix may merge with the text.
        """
        budgets: dict[int, int] = {}
        while (i := self._first_over_limit(ids)) is not None:
            s, e = plan.tokens[i]
            budget = min(budgets.get(s, self.budget), e - s) - (len(ids[i]) - self.limit)
            budget = min(budget, e - s - 1)
            if budget < 1:
                raise ModelError(
                    f"A single token at characters {plan.spans[i]} re-tokenises into more than "
                    f"{self.limit} ids: raise chunking.chunk_tokens"
                )
            budgets[s] = budget
            plan = self._plan(w, budgets)
            ids = self._input_ids(_texts(w, plan))
        return plan, ids

    def _first_over_limit(self, ids: list[list[int]]) -> int | None:
        return next((i for i, row in enumerate(ids) if len(row) > self.limit), None)

    def _input_ids(self, texts: list[str]) -> list[list[int]]:
        """Model input ids of prefix + text, special tokens included, in one batched call."""
        if not texts:
            return []
        enc = self._tok(
            [self.prefix + t for t in texts],
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return list(enc["input_ids"])


def _texts(w: _Window, plan: _Plan) -> list[str]:
    return [w.text[a:b] for a, b in plan.spans]


def _make_chunks(
    doc: Document, w: _Window, plan: _Plan, ids: list[list[int]], *, offset: int, first_index: int
) -> Iterator[Chunk]:
    for i, ((a, b), row) in enumerate(zip(plan.spans, ids, strict=True)):
        text = w.text[a:b]
        yield Chunk(
            doc.id, first_index + i, text, row, offset + a, offset + b, metadata=doc.metadata
        )


def _make_window(text: str, offsets: list[tuple[int, int]], final: bool) -> _Window:
    arr = np.array(offsets, dtype=np.int64).reshape(-1, 2)
    if not final and text and not text[-1].isspace():
        # The window was cut inside a word: its last token may be a fragment.
        arr = arr[:-1]
    starts, ends = np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])
    return _Window(text, starts, ends, _boundary_scores(text, starts, ends), final)


# -- boundary scoring (vectorised over a window) ---------------------------------------------


def _boundary_scores(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Score of cutting before each token: paragraph > sentence > word > token; -1 at the edges."""
    n = len(starts)
    score = np.full(n + 1, -1, dtype=np.int8)
    if n < 2:
        return score
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    flags = _FLAGS[np.minimum(cp, 0xFFFF)]
    newlines = np.concatenate(([0], np.cumsum(cp == 10)))
    gap_a = ends[:-1]  # the whitespace run after token i-1 decides the cut before token i
    gap_b = _next_non_space(flags & _SPACE != 0)[gap_a]
    breaks = newlines[gap_b] - newlines[gap_a]
    spaced = gap_b > gap_a
    last = flags[np.maximum(gap_a - 1, 0)]
    before_last = flags[np.maximum(gap_a - 2, 0)]
    terminal = (last & _TERMINAL != 0) | ((last & _CLOSER != 0) & (before_last & _TERMINAL != 0))
    sentence = (terminal & spaced) | (breaks >= 1) | (last & _CJK_TERMINAL != 0)
    inner = np.where(
        breaks >= 2, PARAGRAPH, np.where(sentence, SENTENCE, np.where(spaced, WORD, TOKEN))
    )
    score[1:n] = inner
    return score


def _next_non_space(space: np.ndarray) -> np.ndarray:
    """For each position (and one past the end), the first non-whitespace position at or after it."""
    size = len(space)
    idx = np.where(space, size, np.arange(size))
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    return np.concatenate((nxt, [size]))


def _best_end(score: np.ndarray, s: int, budget: int) -> int:
    """The end token of a chunk starting at s: the best-scored cut in the latter part, the last of equals."""
    lo = s + max(1, int(budget * MIN_FILL))
    seg = score[lo : s + budget + 1]
    best = seg.max()
    return lo + int(np.flatnonzero(seg == best)[-1])


def _char_span(w: _Window, s: int, e: int) -> tuple[int, int]:
    """Characters of token span [s, e), reaching to the next token so nothing falls between chunks."""
    a = 0 if s == 0 else int(w.starts[s])
    b = int(w.starts[e]) if e < w.n else len(w.text)
    return _strip_span(w.text, a, b)


def _strip_span(text: str, a: int, b: int) -> tuple[int, int]:
    """Move a span's ends inward past whitespace (text itself is never edited)."""
    piece = text[a:b]
    stripped = piece.strip()
    if not stripped:
        return a, a
    a += len(piece) - len(piece.lstrip())
    return a, a + len(stripped)


# -- windows of a document -------------------------------------------------------------------


def _skip_space(text: str, pos: int) -> int:
    m = _NON_SPACE.search(text, pos)
    return m.start() if m else len(text)


def _window_end(text: str, pos: int, size: int) -> int:
    """End of a window of about `size` characters, cut at whitespace so no word is split."""
    end = pos + size
    if end >= len(text):
        return len(text)
    floor = pos + size // 2
    cut = max(text.rfind(ch, floor, end) for ch in " \n\t")
    # Keep the whitespace in this window so planning can tell a clean cut from a split word.
    return cut + 1 if cut > floor else end


def _groups(docs: Iterable[Document]) -> Iterator[list[Document]]:
    """Consecutive documents in groups of bounded count and characters."""
    group: list[Document] = []
    chars = 0
    for doc in docs:
        group.append(doc)
        chars += min(len(doc.text), WINDOW_CHARS)
        if len(group) >= GROUP_DOCS or chars >= GROUP_CHARS:
            yield group
            group, chars = [], 0
    if group:
        yield group
