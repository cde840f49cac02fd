"""The source registry: one entry per input kind, naming its opener and what a user is told.

An opener is imported only when `SourceKind.open` runs it, so reading the registry (the forms in
the config's description, the `init` template, the hints in messages) never imports pyarrow or
datasets.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedpipe.config import SourceConfig
    from embedpipe.sources.base import Source


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One input kind, named by its `KIND:` prefix.

    `form`: what it is, in the config's description of `source.uri`; `phrase`: what to pass, in
    a message; `opener`: "module:function" of embedpipe.sources, `function(path, cfg) -> Source`;
    `records`: record-shaped (text_field, id_field, metadata_fields apply) rather than files;
    `local`: what to pass when it is opened as a local path that does not exist (None: not a
    local path); `hint`: what `embedpipe init` writes about it.
    """

    form: str
    phrase: str
    opener: str
    records: bool
    local: str | None = None
    hint: str = ""

    def open(self, path: str, cfg: SourceConfig) -> Source:
        """The Source at `path`; nothing is read yet."""
        module, _, name = self.opener.partition(":")
        source: Source = getattr(importlib.import_module(f"embedpipe.sources.{module}"), name)(
            path, cfg
        )
        return source


# One line per input kind: KIND -> SourceKind(form, phrase, "module:function", records, ...).
SOURCES: dict[str, SourceKind] = {
    "dir": SourceKind("directory", "a directory", "files:open_dir", False, "directory"),
    "jsonl": SourceKind(
        "JSONL file", "a .jsonl file", "jsonl:open_jsonl", True, ".jsonl/.jsonl.gz file"
    ),
    "parquet": SourceKind(
        "Parquet file or dir",
        "a .parquet file/dir",
        "parquet:open_parquet",
        True,
        ".parquet file or directory of them",
    ),
    "hf": SourceKind(
        "hf:PATH / hf:OWNER/NAME[:CONFIG][#split]",
        "hf:PATH",
        "hf:open_hf",
        True,
        hint="hf:PATH is a save_to_disk directory; hf:OWNER/NAME[:CONFIG][#split] a dataset in "
        "the local Hugging Face cache ($HF_HOME), read offline: download it once beforehand.",
    ),
}

# Bucket locations, holding any kind above (sources/storage.py, sources/remote.py).
REMOTE_FORMS = ("s3://BUCKET/PREFIX", "gs://BUCKET/PREFIX")


def _either(phrases: list[str]) -> str:
    """'a, b or c'."""
    return " or ".join(filter(None, [", ".join(phrases[:-1]), phrases[-1]]))


HINT = "pass " + _either([kind.phrase for kind in SOURCES.values()] + [REMOTE_FORMS[0]])
# The forms `source.uri` takes, as its description lists them.
FORMS = ", ".join(kind.form for kind in SOURCES.values()) + ", or " + " / ".join(REMOTE_FORMS)
# Sources opened as local paths (checked to exist before their opener runs) and what to pass.
LOCAL_KINDS = {name: kind.local for name, kind in SOURCES.items() if kind.local}
# Record-shaped kinds: the text, id and metadata fields apply.
RECORD_KINDS = tuple(name for name, kind in SOURCES.items() if kind.records)
