"""Configuration as pydantic models. Precedence: CLI flags > EMBEDPIPE_* environment > YAML file > defaults.

Environment variables name a key by its path, sections joined with a double underscore:
`EMBEDPIPE_MODEL__PRECISION=bf16`, `EMBEDPIPE_BATCHING__MAX_BATCH_TOKENS=8192`,
`EMBEDPIPE_SINK__URI=faiss:./index`. Values are parsed as YAML scalars.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from embedpipe.errors import ConfigError
from embedpipe.redact import redact_uri

DEFAULT_SINK = "qdrant-edge:./.embedpipe/qdrant-edge"
ENV_PREFIX = "EMBEDPIPE_"
# A collection names folders and Qdrant collections: no separators, no leading dot, bounded.
COLLECTION_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
DEFAULT_STATE_MODE = "0700"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Section):
    """Where documents come from."""

    uri: str = Field(
        "",
        description="directory, JSONL file, Parquet file or dir, or hf:PATH / "
        "hf:OWNER/NAME[:CONFIG][#split]",
    )
    text_field: str = Field("text", description="JSONL/Parquet/HF field holding the text")
    id_field: str = Field(
        "id", description="field holding a stable document id; missing = a hash of the text"
    )
    metadata_fields: list[str] | None = Field(
        None, description="fields copied into each chunk's payload; null = every other field"
    )
    extensions: list[str] = Field(
        [".txt", ".md", ".rst", ".html", ".htm", ".pdf"],
        description="file suffixes a directory source reads (PDF: the text of each page)",
    )
    include: list[str] = Field(
        [], description="directory source: read only paths matching one of these globs"
    )
    exclude: list[str] = Field(
        [], description="directory source: skip paths (and whole directories) matching these globs"
    )
    text_template: str | None = Field(
        None,
        description="JSONL/Parquet/HF: build the text from fields, e.g. '{title}\\n\\n{body}'",
    )

    @field_validator("text_template")
    @classmethod
    def _template_names_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"text_template is not a valid format string: {exc}") from exc
        if not names or any(not n or n[0].isdigit() for n in names):
            raise ValueError("text_template must name fields, e.g. '{title}\\n\\n{body}'")
        return value


class ModelConfig(_Section):
    """The embedding model and how it runs."""

    name: str | None = Field(
        None,
        description="sentence-transformers name or local folder; null = packaged all-MiniLM-L6-v2",
    )
    device: str = Field(
        "auto", description="auto (CUDA if present, else CPU) | cpu | cuda | cuda:N"
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto (bf16/fp16 on CUDA; on CPU bf16 when native, accurate and faster, else "
        "fp32) | fp32 | fp16 | bf16",
    )
    normalize: bool = Field(True, description="L2-normalise vectors (cosine = inner product)")
    prefix: str = Field("", description="text prepended to every chunk, e.g. 'passage: ' for E5")
    query_prefix: str = Field("", description="text prepended to queries, e.g. 'query: '")
    max_seq_length: int | None = Field(
        None, description="most tokens the model reads per chunk; null = the model's own limit"
    )
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads on CPU; null = chosen from the cores"
    )
    truncate_dim: int | None = Field(
        None,
        ge=1,
        description="keep the first N dims, re-normalised (Matryoshka-trained models; queries "
        "alike); null = all",
    )
    quantization: Literal["none", "int8", "binary"] = Field(
        "none",
        description="none | int8 | binary: what the sinks store, float vectors or their int8 "
        "codes / sign bits (README: Output precision)",
    )


class ChunkingConfig(_Section):
    """How documents are split."""

    chunk_tokens: int = Field(
        256,
        ge=8,
        description="most tokens per chunk, special tokens included (capped at max_seq_length)",
    )
    overlap_tokens: int = Field(
        32, ge=0, description="tokens shared by neighbouring chunks (under half of chunk_tokens)"
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("overlap_tokens must be less than half of chunk_tokens")
        return self


class BatchingConfig(_Section):
    """How chunks are packed for the encoder."""

    max_batch_tokens: int = Field(
        16384,
        ge=64,
        description="token budget per batch: chunks x longest chunk (left unset on CUDA: sized to "
        "the free memory)",
    )
    window: int = Field(4096, ge=1, description="chunks sorted together by length before packing")
    max_batch_size: int = Field(512, ge=1, description="cap on chunks per batch")


class HnswOptions(_Section):
    """HNSW graph parameters of a Qdrant collection; null keeps Qdrant's default."""

    m: int | None = Field(None, ge=2, description="edges per node (Qdrant's default: 16)")
    ef_construct: int | None = Field(
        None, ge=4, description="candidates while building (Qdrant's default: 100)"
    )


class QdrantOptions(_Section):
    """How a qdrant-edge: / qdrant: collection is built: applied when it is created, checked when
    it is reused (a difference is an error)."""

    on_disk: bool = Field(False, description="keep original vectors on disk (mmap), not in RAM")
    hnsw: HnswOptions = HnswOptions()
    quantization: Literal["none", "int8", "binary"] = Field(
        "none",
        description="none | int8 (scalar, 4x smaller) | binary (32x smaller, for 1024+ dims): "
        "Qdrant's own quantized index, originals kept",
    )
    payload_index: list[str] = Field(
        ["doc_id"], description="payload fields given a keyword index (server and Edge; not local)"
    )
    shard_number: int | None = Field(None, ge=1, description="shards of a server collection")
    replication_factor: int | None = Field(
        None, ge=1, description="copies of each shard on a server cluster"
    )


class SinkConfig(_Section):
    """Where vectors go."""

    uri: str = Field(
        DEFAULT_SINK,
        description="qdrant-edge:PATH (Qdrant Edge, in-process) | qdrant:PATH (qdrant-client "
        "local mode) | qdrant+http(s)://HOST:PORT | faiss:DIR | parquet:DIR (README: Sinks)",
    )
    collection: str = Field(
        "embedpipe",
        description="public name (a Qdrant alias, a symlink in a local sink); must match "
        f"{COLLECTION_RULE}",
    )
    index_factory: str | None = Field(
        None,
        description="FAISS index_factory, e.g. 'IVF1024,Flat' or 'HNSW32'; null = the live "
        "index's (Flat for a new one)",
    )
    write_batch: int = Field(256, ge=1, description="points per upsert request")
    qdrant: QdrantOptions = QdrantOptions()
    nprobe: int | None = Field(
        None, ge=1, description="FAISS IVF lists probed per query; null = about sqrt(nlist)"
    )
    ef_search: int | None = Field(
        None,
        ge=1,
        description="HNSW candidates per query (FAISS efSearch, Qdrant hnsw_ef); null = default",
    )
    keep_previous: bool = Field(
        False,
        description="after a re-embed swap, keep the retired index (rollback) instead of dropping it",
    )

    @field_validator("collection")
    @classmethod
    def _collection_is_a_name(cls, value: str) -> str:
        if not re.fullmatch(COLLECTION_RULE, value):
            raise ValueError(
                f"collection {value!r} must match {COLLECTION_RULE}: a letter or digit, then up to "
                "127 letters, digits, '_', '.' or '-' (it names folders and Qdrant collections)"
            )
        return value


class RayConfig(_Section):
    """The Ray Data engine (engine: ray): where the cluster is and how the stages are spread."""

    address: str | None = Field(
        None,
        description="'auto' joins the running cluster, or ray://HOST:PORT; null starts a local Ray",
    )
    chunk_workers: int = Field(1, ge=1, description="CPU actors that parse, chunk and hash")
    encoders: int = Field(1, ge=1, description="encoder actors (one model load each)")
    num_gpus: float = Field(0, ge=0, description="GPUs per encoder actor (1 on a GPU cluster)")
    num_cpus: float = Field(1, gt=0, description="CPUs per encoder actor (also its torch threads)")
    wave_mb: float = Field(
        256, gt=0, description="source files read per wave, in MB (the object store holds two)"
    )
    wave_docs: int = Field(
        20000, ge=1, description="documents per wave of a source the driver reads (hf:, yours)"
    )
    block_docs: int = Field(256, ge=1, description="documents per chunking task")
    write_from: Literal["auto", "driver", "actors"] = Field(
        "auto",
        description="auto | driver | actors: who writes the sink; auto = the encoder actors for a "
        "Qdrant server, the driver for sinks in a local path; actors also for parquet:/faiss: on "
        "a shared filesystem",
    )


class PromoteConfig(_Section):
    """When a new generation (a model or chunking change) may replace the live index."""

    min_fraction: float = Field(
        0.9,
        ge=0,
        le=1,
        description="promote a new generation only when it holds at least this share of the "
        "live one's documents (else the run is held; --force overrides)",
    )


class RunConfig(_Section):
    """Everything one run needs."""

    source: SourceConfig = SourceConfig()
    model: ModelConfig = ModelConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    batching: BatchingConfig = BatchingConfig()
    sink: SinkConfig = SinkConfig()
    promote: PromoteConfig = PromoteConfig()
    mode: Literal["incremental", "full"] = Field(
        "incremental",
        description="incremental | full (full also deletes documents the source no longer lists)",
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="local (threads on this machine) | ray (Ray Data; pip install 'embedpipe[ray]')",
    )
    ray: RayConfig = RayConfig()
    state: str | None = Field(
        None,
        description="state directory holding the ledger; null = PATH.state next to a local sink, "
        ".embedpipe/state/HOST for a server",
    )
    state_mode: str = Field(
        DEFAULT_STATE_MODE,
        description="permissions of the state directory, as a quoted octal string ('0700', "
        "'0750'); the ledger, and the files a run writes into local sinks, get the same minus "
        "the execute bits ('0600', '0640')",
    )
    max_delete_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="refuse a run that would delete more than this share of the index (--force "
        "overrides)",
    )
    strict: bool = Field(False, description="exit 1 when any record failed")
    report: str | None = Field(
        None, description="write the JSON run report here (HTML: embedpipe report FILE)"
    )
    metrics: str | None = Field(
        None, description="write a Prometheus textfile here (node_exporter textfile collector)"
    )

    @field_validator("state_mode", mode="before")
    @classmethod
    def _state_mode_is_octal(cls, value: Any) -> str:
        return normalize_mode(value)

    @property
    def state_mode_bits(self) -> int:
        """`state_mode` as a number (0o700)."""
        return int(self.state_mode, 8)


def normalize_mode(value: Any) -> str:
    """A directory mode as a 4-digit octal string; the owner must keep rwx (the run needs it).

    An int is taken as the mode itself: `0o750` from Python, or YAML 1.1's reading of `0750`.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"state_mode must be an octal string like '0750', not {value!r}")
    try:
        bits = value if isinstance(value, int) else int(value.strip().removeprefix("0o"), 8)
    except ValueError:
        raise ValueError(f"state_mode {value!r} is not octal: write it like '0750'") from None
    if not 0 <= bits <= 0o777 or bits & 0o700 != 0o700:
        raise ValueError(
            f"state_mode {value!r} must be between 0700 and 0777 with rwx for the owner: write a "
            "quoted octal string like '0700' or '0750'"
        )
    return f"{bits:04o}"


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """EMBEDPIPE_SECTION__KEY=value pairs as a nested dict."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        _set_path(out, path, yaml.safe_load(raw) if raw else raw)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict, with a message that names the file when it is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"No config file at {p}: pass an existing YAML file (see configs/default.yaml)"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of sections (source:, model:, sink: ...)")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build a RunConfig from defaults < file < environment < overrides (nested dict, None = unset)."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = _deep_merge(data, env_overrides(environ))
    data = _deep_merge(data, _drop_none(overrides or {}))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        # redact_uri: a wrong value may be a sink URI with a password in it.
        raise ConfigError(redact_uri(f"Invalid configuration{where}:\n{exc}")) from exc


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            inner = _drop_none(value)
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


# Short option names (CLI flags, keyword arguments of embedpipe.backfill) -> config paths.
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "source": ("source", "uri"),
    "text_field": ("source", "text_field"),
    "text_template": ("source", "text_template"),
    "metadata_fields": ("source", "metadata_fields"),
    "include": ("source", "include"),
    "exclude": ("source", "exclude"),
    "id_field": ("source", "id_field"),
    "model": ("model", "name"),
    "device": ("model", "device"),
    "precision": ("model", "precision"),
    "normalize": ("model", "normalize"),
    "prefix": ("model", "prefix"),
    "truncate_dim": ("model", "truncate_dim"),
    "quantization": ("model", "quantization"),
    "chunk_tokens": ("chunking", "chunk_tokens"),
    "overlap_tokens": ("chunking", "overlap_tokens"),
    "max_batch_tokens": ("batching", "max_batch_tokens"),
    "sink": ("sink", "uri"),
    "collection": ("sink", "collection"),
    "index_factory": ("sink", "index_factory"),
    "nprobe": ("sink", "nprobe"),
    "ef": ("sink", "ef_search"),
    "mode": ("mode",),
    "engine": ("engine",),
    "ray_address": ("ray", "address"),
    "state": ("state",),
    "state_mode": ("state_mode",),
    "strict": ("strict",),
    "report": ("report",),
    "metrics": ("metrics",),
    "max_delete_fraction": ("max_delete_fraction",),
}


def flat_overrides(**options: Any) -> dict[str, Any]:
    """Short option names to a nested override dict; None values mean 'not given'."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in FLAT_KEYS:
            raise ConfigError(f"Unknown option {name!r}: use one of {', '.join(sorted(FLAT_KEYS))}")
        if value is not None:
            _set_path(out, list(FLAT_KEYS[name]), value)
    return out
