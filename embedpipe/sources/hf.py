"""Hugging Face source: a dataset saved with `save_to_disk` (`hf:PATH`, `hf:PATH#split`), or one
in the local Hugging Face datasets cache (`hf:NAME`, `hf:OWNER/NAME:CONFIG#split`), read offline.

A cached dataset is one `datasets.load_dataset(NAME)` has already downloaded and prepared under
`$HF_DATASETS_CACHE` (default `$HF_HOME/datasets`, i.e. ~/.cache/huggingface/datasets). It is
opened with the Hub forced offline: a nightly job never waits on the network or gets a new
revision behind its back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from embedpipe.config import SourceConfig
from embedpipe.errors import SourceError
from embedpipe.sources.base import Source
from embedpipe.sources.records import (
    RecordFields,
    check_text_column,
    column_rows,
    template_columns,
    template_fields,
    to_document,
)
from embedpipe.types import Document, RecordError

if TYPE_CHECKING:
    from datasets import Dataset

BATCH_ROWS = 1000
# A Hub dataset id, optionally with a config: "imdb", "owner/name", "owner/name:config".
_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?(:[\w.-]+)?")
_UNDECODED = frozenset(
    {"Image", "Audio", "Video", "Pdf"}
)  # features too costly to decode for metadata


def open_hf(path: str, cfg: SourceConfig) -> Source:
    """A Source over a saved dataset (`PATH` or `PATH#split`); the dataset is memory-mapped."""
    location, _, split = path.partition("#")
    dataset, split_name = load_split(location, split or None)
    uri = f"hf:{location}" + (f"#{split_name}" if split_name else "")
    fields = RecordFields.of(cfg)
    columns = select_columns(dataset, uri, fields)

    def read() -> Iterator[Document | RecordError]:
        return _read_dataset(dataset.select_columns(columns), fields, source=uri)

    return Source(uri=uri, kind="hf", read=read, total=len(dataset))


def read_hf(
    path: str,
    *,
    split: str | None = None,
    text_field: str = "text",
    id_field: str = "id",
    metadata_fields: Sequence[str] | None = None,
    text_template: str | None = None,
) -> Iterator[Document | RecordError]:
    """Each row of the dataset at `path` (saved, or a cached Hub name) as a Document or a
    RecordError naming the row."""
    dataset, split_name = load_split(path, split)
    uri = f"hf:{path}" + (f"#{split_name}" if split_name else "")
    fields = RecordFields(text_field, id_field, metadata_fields, text_template)
    columns = select_columns(dataset, uri, fields)
    yield from _read_dataset(dataset.select_columns(columns), fields, source=uri)


def load_split(path: str, split: str | None) -> tuple[Dataset, str | None]:
    """The dataset at `path` (a save_to_disk directory, else a name in the local datasets cache):
    for a DatasetDict the named split, else "train", else the only one."""
    import datasets

    if not os.path.isdir(path) and _HUB_NAME.fullmatch(path):
        loaded = load_cached(path)
    else:
        try:
            loaded = datasets.load_from_disk(path)
        except (FileNotFoundError, ValueError) as exc:
            raise SourceError(
                f"No saved dataset at {path}: hf:PATH needs a directory written by"
                " Dataset.save_to_disk or DatasetDict.save_to_disk, or the name of a dataset"
                " in the local Hugging Face cache (hf:OWNER/NAME)"
            ) from exc
    if not isinstance(loaded, datasets.DatasetDict):
        if split:
            raise SourceError(f"hf:{path} holds a single dataset, not splits: drop '#{split}'")
        return loaded, None
    name = _pick_split(list(loaded), split, path)
    return loaded[name], name


def load_cached(name: str) -> Any:
    """`NAME` or `NAME:CONFIG` from the local datasets cache, with the Hub forced offline."""
    import datasets

    repo, _, config = name.partition(":")
    with _hub_offline():
        try:
            return datasets.load_dataset(repo, config or None)
        except (ConnectionError, FileNotFoundError, ValueError) as exc:
            raise SourceError(
                f"hf:{name} is not a saved dataset directory, nor in the local Hugging Face cache"
                f" ({datasets.config.HF_DATASETS_CACHE}): run datasets.load_dataset({repo!r})"
                " once where the Hub is reachable, or set HF_HOME to a cache that holds it"
                f" ({type(exc).__name__}: {exc})"
            ) from exc


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Force datasets offline for one call (its flag is read from the environment at import),
    and mute its 'using the latest cached version' warning, which is the point here."""
    from datasets import config

    saved, logger = config.HF_HUB_OFFLINE, logging.getLogger("datasets")
    level = logger.level
    config.HF_HUB_OFFLINE = True
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = saved
        logger.setLevel(level)


def _pick_split(splits: list[str], wanted: str | None, path: str) -> str:
    if wanted in splits:
        return wanted
    if wanted is None and "train" in splits:
        return "train"
    if wanted is None and len(splits) == 1:
        return splits[0]
    asked = f"no split {wanted!r}" if wanted else "several splits and none is 'train'"
    raise SourceError(
        f"hf:{path} has {asked}: pass hf:{path}#SPLIT with one of {', '.join(splits)}"
    )


def select_columns(dataset: Dataset, uri: str, fields: RecordFields) -> list[str]:
    """The columns to read: text (or the template's fields), id when present, and metadata
    (named, or all but media)."""
    names = list(dataset.column_names)
    if fields.text_template is not None:
        template_columns(fields.text_template, names, uri)
    else:
        check_text_column(fields.text_field, names, uri)
    if fields.metadata_fields is None:
        extra = [n for n in names if type(dataset.features[n]).__name__ not in _UNDECODED]
    else:
        extra = [n for n in fields.metadata_fields if n in names]
    template = fields.text_template
    text = template_fields(template) if template is not None else [fields.text_field]
    wanted = text + ([fields.id_field] if fields.id_field in names else [])
    return list(dict.fromkeys(wanted + extra))


def _read_dataset(
    dataset: Dataset, fields: RecordFields, *, source: str
) -> Iterator[Document | RecordError]:
    i = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        for row in column_rows(batch):
            yield to_document(row, fields, source=source, record=f"row {i}")
            i += 1
