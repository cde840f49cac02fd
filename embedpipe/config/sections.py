"""The sections of a run's configuration (source, model, chunking, batching, sink, ray,
promote) as pydantic models; `config.RunConfig` holds one of each. Every key's description here
is its one documentation: default.yaml, the init template and the CLI help are made from it."""

from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_SINK = "qdrant-edge:./.embedpipe/qdrant-edge"
# A collection names folders and Qdrant collections: no separators, no leading dot, bounded.
COLLECTION_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"


def share(default: float, description: str) -> Any:
    """A field holding a share between 0 and 1."""
    return Field(default, ge=0, le=1, description=description)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Option names that would carry a credential: refused, credentials come from the environment.
_SECRET_OPTION = re.compile(r"key|secret|token|password|credential|session", re.IGNORECASE)


class StorageOptions(Section):
    """How a bucket source (s3://, gs://) is reached. Credentials are never set here: they come
    from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
    GOOGLE_APPLICATION_CREDENTIALS) and the profile files."""

    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, R2, Ceph) or GCS emulator URL; null = "
        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / the profile's, else the provider's own",
    )
    region: str | None = Field(
        None,
        description="S3 region; null = AWS_REGION / AWS_DEFAULT_REGION / profile, else us-east-1",
    )
    anonymous: bool = Field(False, description="read a public bucket without credentials")
    max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="tries per request and per object before an object is reported unreadable",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: object) -> object:
        secret = (
            [k for k in data if _SECRET_OPTION.search(str(k))] if isinstance(data, dict) else []
        )
        if secret:
            assert isinstance(data, dict)
            for key in secret:  # masked in place: pydantic's message shows the input it was given
                data[key] = "***"
            raise ValueError(
                "source.storage_options takes no credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or GOOGLE_APPLICATION_CREDENTIALS, in "
                "the environment"
            )
        return data


class SourceConfig(Section):
    """Where documents come from."""

    uri: str = Field(
        "",
        # The forms come first, from sources/registry.py (config.docs.describe lists them).
        description="the kind is told from the path, or named by a KIND: prefix (jsonl:PATH)",
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
    follow_symlinks: bool = Field(
        False,
        description="directory source: read files whose symbolic link leads outside the "
        "folder (off: each is a skipped record naming the link's target)",
    )
    text_template: str | None = Field(
        None,
        description="JSONL/Parquet/HF: build the text from fields, e.g. '{title}\\n\\n{body}'",
    )
    storage_options: StorageOptions = Field(
        default_factory=StorageOptions,
        description="s3:// and gs:// sources: endpoint, region, retries (never credentials)",
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


class ModelConfig(Section):
    """The embedding model and how it runs."""

    name: str | None = Field(
        None,
        description="sentence-transformers name or local folder; null = packaged all-MiniLM-L6-v2",
    )
    device: str = Field(
        "auto", description="auto (CUDA if present, else CPU) | cpu | cuda | cuda:N"
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="auto (bf16/fp16 on CUDA; on CPU bf16 where native and within the parity "
        "bar, else fp32; decided once per machine and model) | fp32 | fp16 | bf16 | int8 "
        "(OpenVINO, changes the fingerprint; README: Precision and backends)",
    )
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="auto (OpenVINO on x86 CPUs where installed and within the parity bar, else "
        "torch; torch on CUDA) | torch | openvino (pip install 'embedpipe[openvino]')",
    )
    int8_min_cosine: float = share(
        0.99,
        "precision int8 is refused when its min cosine to fp32 (on sample texts it was not "
        "calibrated on) is lower",
    )
    normalize: bool = Field(True, description="L2-normalise vectors (cosine = inner product)")
    prefix: str = Field("", description="text prepended to every chunk, e.g. 'passage: ' for E5")
    query_prefix: str = Field("", description="text prepended to queries, e.g. 'query: '")
    max_seq_length: int | None = Field(
        None,
        ge=1,
        description="most tokens the model reads per chunk; null = the model's own limit",
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


class ChunkingConfig(Section):
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


class BatchingConfig(Section):
    """How chunks are packed for the encoder."""

    max_batch_tokens: int = Field(
        16384,
        ge=64,
        description="token budget per batch: chunks x longest chunk (left unset on CUDA: sized to "
        "the free memory)",
    )
    window: int = Field(4096, ge=1, description="chunks sorted together by length before packing")
    max_batch_size: int = Field(512, ge=1, description="cap on chunks per batch")


class HnswOptions(Section):
    """HNSW graph parameters of a Qdrant collection; null keeps Qdrant's default."""

    m: int | None = Field(None, ge=2, description="edges per node (Qdrant's default: 16)")
    ef_construct: int | None = Field(
        None, ge=4, description="candidates while building (Qdrant's default: 100)"
    )


class QdrantOptions(Section):
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
    layout: Literal["embedpipe", "langchain", "llama-index"] = Field(
        "embedpipe",
        description="payload layout: embedpipe | langchain | llama-index (embedpipe's keys plus "
        "those that framework's stock QdrantVectorStore reads; `export --layout`)",
    )
    shard_number: int | None = Field(None, ge=1, description="shards of a server collection")
    replication_factor: int | None = Field(
        None, ge=1, description="copies of each shard on a server cluster"
    )


class PostgresOptions(Section):
    """How a postgresql:// sink's tables are built: the HNSW options apply when a generation's
    index is built (after its bulk load) and are checked when it is reused."""

    schema_name: str = Field(
        "public",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="schema of the tables and the view (a ?schema= in the URI wins)",
    )
    hnsw_m: int = Field(16, ge=2, le=100, description="HNSW edges per node (pgvector's m)")
    hnsw_ef_construction: int = Field(
        64, ge=4, le=1000, description="HNSW candidates while building (pgvector's ef_construction)"
    )
    layout: Literal["embedpipe", "langchain", "llama-index"] | None = Field(
        None,
        description="views the frameworks' stock PGVectorStore read: langchain adds langchain_id, "
        "content, langchain_metadata to the collection's view; llama-index adds a view "
        "data_<collection>; null keeps the collection's own (`export --layout`)",
    )


class SparseConfig(Section):
    """Sparse (BM25) vectors written beside the dense ones, for `sparse` and `hybrid` queries:
    computed in-process from each chunk's text (Qdrant Edge's BM25, no model to download; on
    Postgres, a tsvector in the language's text search configuration), the IDF applied by the
    engine at query time. Part of what defines a generation."""

    kind: Literal["none", "bm25"] = Field(
        "none",
        description="none | bm25: also write a BM25 sparse vector per chunk (Qdrant Edge, Qdrant "
        "local and server; Postgres: a tsvector ranked by BM25)",
    )
    k1: float = Field(1.2, ge=0, description="BM25 term-frequency saturation")
    b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation (0 = none)")
    avg_len: float = Field(256, gt=0, description="BM25 expected average chunk length in tokens")
    tokenizer: Literal["word", "code", "whitespace", "multilingual"] = Field(
        "word",
        description="word | code (also splits snake_case and camelCase identifiers) | whitespace "
        "| multilingual",
    )
    language: str = Field(
        "english", description="language of the stopwords and the stemmer (Snowball names)"
    )

    @property
    def on(self) -> bool:
        """Whether sparse vectors are written."""
        return self.kind != "none"


class SinkConfig(Section):
    """Where vectors go."""

    uri: str = Field(
        DEFAULT_SINK,
        # The forms come first, from sinks/registry.py (config.docs.describe lists them).
        description="qdrant-edge runs Qdrant Edge in-process, qdrant:PATH is qdrant-client's "
        "local mode (README: Sinks)",
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
    sparse: SparseConfig = SparseConfig()
    qdrant: QdrantOptions = QdrantOptions()
    postgres: PostgresOptions = PostgresOptions()
    nprobe: int | None = Field(
        None, ge=1, description="FAISS IVF lists probed per query; null = about sqrt(nlist)"
    )
    ef_search: int | None = Field(
        None,
        ge=1,
        description="HNSW candidates per query (FAISS efSearch, Qdrant hnsw_ef); null = default",
    )
    keep_previous: bool = Field(
        True,
        description="deprecated: use promote.keep_previous (true = keep 1, false = keep 0); set "
        "from it otherwise",
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


class RayConfig(Section):
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


class EvalConfig(Section):
    """The quality gate: a new generation is promoted only if it retrieves no worse than live."""

    queries: str = Field(
        description='JSONL file, one {"query": "...", "relevant": ["doc_id", ...]} per line'
    )
    k: int = Field(10, ge=1, description="hits per query scored (recall@k, MRR@k, nDCG@k)")
    max_drop: float = share(0.01, "hold when any metric is more than this below live's")
    mode: Literal["auto", "dense", "sparse", "hybrid"] = Field(
        "auto",
        description="retrieval the generations are scored on: auto = hybrid for a generation "
        "with sparse vectors, dense otherwise (each as it is served best)",
    )


class PromoteConfig(Section):
    """When a new generation (a model or chunking change) may replace the live index."""

    min_fraction: float = share(
        0.9,
        "promote a new generation only when it holds at least this share of the live one's "
        "documents (else the run is held; --force overrides)",
    )
    keep_previous: int = Field(
        1,
        ge=0,
        description="previous generations kept after a promotion, for `embedpipe rollback` "
        "(0 drops the replaced one at the swap)",
    )
    eval: EvalConfig | None = Field(
        None,
        description="the quality gate: {queries: FILE.jsonl, k: 10, max_drop: 0.01}; both "
        "generations are scored on the queries and the new one is held if a metric drops more "
        "than max_drop (null = no gate)",
    )
