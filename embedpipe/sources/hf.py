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
from embedpipe.sources.records import template_fields, to_document
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
    columns = select_columns(
        dataset, uri, cfg.text_field, cfg.id_field, cfg.metadata_fields, cfg.text_template
    )

    def read() -> Iterator[Document | RecordError]:
        return _read_dataset(
            dataset.select_columns(columns),
            source=uri,
            text_field=cfg.text_field,
            id_field=cfg.id_field,
            metadata_fields=cfg.metadata_fields,
            text_template=cfg.text_template,
        )

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
    columns = select_columns(dataset, uri, text_field, id_field, metadata_fields, text_template)
    yield from _read_dataset(
        dataset.select_columns(columns),
        source=uri,
        text_field=text_field,
        id_field=id_field,
        metadata_fields=metadata_fields,
        text_template=text_template,
    )


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


def select_columns(
    dataset: Dataset,
    uri: str,
    text_field: str,
    id_field: str,
    metadata_fields: Sequence[str] | None,
    text_template: str | None = None,
) -> list[str]:
    """The columns to read: text (or the template's fields), id when present, and metadata
    (named, or all but media)."""
    names = list(dataset.column_names)
    if text_template is not None:
        missing = [f for f in template_fields(text_template) if f not in names]
        if missing:
            raise SourceError(
                f"text_template field(s) {', '.join(map(repr, missing))} not in {uri}: its"
                f" columns are {', '.join(names)}; fix source.text_template"
            )
    elif text_field not in names:
        raise SourceError(
            f"No text column {text_field!r} in {uri}: its columns are {', '.join(names)};"
            " set source.text_field to one of them"
        )
    if metadata_fields is None:
        extra = [n for n in names if type(dataset.features[n]).__name__ not in _UNDECODED]
    else:
        extra = [n for n in metadata_fields if n in names]
    text = template_fields(text_template) if text_template is not None else [text_field]
    wanted = text + ([id_field] if id_field in names else [])
    return list(dict.fromkeys(wanted + extra))


def _read_dataset(
    dataset: Dataset,
    *,
    source: str,
    text_field: str,
    id_field: str,
    metadata_fields: Sequence[str] | None,
    text_template: str | None = None,
) -> Iterator[Document | RecordError]:
    i = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        for row in _rows(batch):
            yield to_document(
                row,
                source=source,
                record=f"row {i}",
                text_field=text_field,
                id_field=id_field,
                metadata_fields=metadata_fields,
                text_template=text_template,
            )
            i += 1


def _rows(batch: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    names = list(batch)
    for cells in zip(*batch.values(), strict=True):
        yield dict(zip(names, cells, strict=True))
