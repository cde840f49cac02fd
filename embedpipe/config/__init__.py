"""Configuration as pydantic models. Precedence: CLI flags > EMBEDPIPE_* environment > YAML file > defaults.

Environment variables name a key by its path, sections joined with a double underscore:
`EMBEDPIPE_MODEL__PRECISION=bf16`, `EMBEDPIPE_BATCHING__MAX_BATCH_TOKENS=8192`,
`EMBEDPIPE_SINK__URI=faiss:./index`. A string key takes the value as given
(`EMBEDPIPE_MODEL__PREFIX="passage: "`); other values are parsed as YAML scalars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from embedpipe.config.explain import Layer, explain
from embedpipe.config.sections import (
    COLLECTION_RULE,
    DEFAULT_SINK,
    BatchingConfig,
    ChunkingConfig,
    EvalConfig,
    HnswOptions,
    ModelConfig,
    PostgresOptions,
    PromoteConfig,
    QdrantOptions,
    RayConfig,
    Section,
    SinkConfig,
    SourceConfig,
    SparseConfig,
    share,
)
from embedpipe.errors import ConfigError
from embedpipe.redact import redact_uri

__all__ = [
    "COLLECTION_RULE",
    "DEFAULT_SINK",
    "FLAT_KEYS",
    "BatchingConfig",
    "ChunkingConfig",
    "EvalConfig",
    "HnswOptions",
    "ModelConfig",
    "PostgresOptions",
    "PromoteConfig",
    "QdrantOptions",
    "RayConfig",
    "RunConfig",
    "SinkConfig",
    "SourceConfig",
    "SparseConfig",
    "env_overrides",
    "flat_overrides",
    "load_config",
    "load_yaml",
]

ENV_PREFIX = "EMBEDPIPE_"
DEFAULT_STATE_MODE = "0700"


class RunConfig(Section):
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
        # The names come first, from engines/registry.py (config.docs.describe lists them).
        description="local: threads on this machine; ray: Ray Data (pip install 'embedpipe[ray]')",
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
    max_delete_fraction: float = share(
        0.5, "refuse a run that would delete more than this share of the index (--force overrides)"
    )
    strict: bool = Field(False, description="exit 1 when any record failed")
    repeated_error_limit: int = Field(
        20,
        ge=0,
        description="stop before loading the model when each of the first N records failed for "
        "the same reason (a wrong text_field); 0 = never",
    )
    report: str | None = Field(
        None, description="write the JSON run report here (HTML: embedpipe report FILE)"
    )
    metrics: str | None = Field(
        None, description="write a Prometheus textfile here (node_exporter textfile collector)"
    )

    @model_validator(mode="after")
    def _keep_previous_once(self) -> RunConfig:
        """promote.keep_previous decides; the old sink.keep_previous switch still sets it."""
        if "keep_previous" in self.sink.model_fields_set and (
            "keep_previous" not in self.promote.model_fields_set
        ):
            self.promote.keep_previous = 1 if self.sink.keep_previous else 0
        # The sink keeps the replaced generation at a swap; the run drops what is past the count.
        self.sink.__dict__["keep_previous"] = self.promote.keep_previous > 0
        return self

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
    """EMBEDPIPE_SECTION__KEY=value pairs as a nested dict, each value read for its key's type."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        _set_path(out, path, env_value(path, raw))
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in lines:
                raise _DuplicateKey(str(key), line, lines[key])
            if isinstance(key, str | int | float | bool):
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`line:column` of a parse error (1-based), or `?`."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "?"


def _yaml_why(exc: yaml.YAMLError) -> str:
    """A parse error's reason in one line (PyYAML's own spans several, with a snippet)."""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    return ", ".join(str(p) for p in parts if p) or str(exc).splitlines()[0]


# YAML's spellings of null: an optional string key takes them as "unset".
_NULLS = frozenset({"null", "Null", "NULL", "~"})


def env_value(path: list[str], raw: str) -> Any:
    """An environment variable's value for the key at `path` of RunConfig: a string key takes
    the string as given (`passage: ` is a prefix, not a YAML mapping; `0700` stays a string),
    an optional string key takes YAML's null as unset; any other key's value is a YAML scalar."""
    kind = _field_type(RunConfig, path)
    if kind is str or (set(get_args(kind)) == {str, type(None)} and raw not in _NULLS):
        return raw
    return yaml.safe_load(raw) if raw else raw


def _field_type(model: type[BaseModel], path: list[str]) -> Any:
    """The annotation of the key at `path` (section names, then the key), None when unknown."""
    field = model.model_fields.get(path[0])
    if field is None:
        return None
    if len(path) == 1:
        return field.annotation
    inner = field.annotation
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return _field_type(inner, path[1:])
    return None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict, with a message that names the file when it is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"No config file at {p}: pass an existing YAML file (see configs/default.yaml)"
        )
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{p}:{exc.line}: duplicate key {exc.key!r} (first at line {exc.first}): keep one; "
            "a second block would silently replace the first"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}:{_yaml_where(exc)}: not valid YAML: {_yaml_why(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of sections (source:, model:, sink: ...)")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build a RunConfig from defaults < file < environment < overrides (nested dict, None = unset)."""
    from_file: dict[str, Any] = load_yaml(path) if path else {}
    from_env, from_flags = env_overrides(environ), _drop_none(overrides or {})
    data = _deep_merge(_deep_merge(from_file, from_env), from_flags)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        layers = [Layer(from_flags, _flag_name), Layer(from_env, _env_name)]
        layers += [Layer(from_file, lambda _loc: str(path))] if path else []
        # redact_uri: a wrong value may be a sink URI with a password in it.
        raise ConfigError(redact_uri(explain(exc, RunConfig, layers))) from exc


def _env_name(loc: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(loc).upper()


def _flag_name(loc: tuple[str, ...]) -> str:
    name = next((n for n, path in FLAT_KEYS.items() if path == loc), None)
    return "--" + name.replace("_", "-") if name else "option " + ".".join(loc)


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
    "backend": ("model", "backend"),
    "normalize": ("model", "normalize"),
    "prefix": ("model", "prefix"),
    "query_prefix": ("model", "query_prefix"),
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
    "sparse": ("sink", "sparse", "kind"),
    "mode": ("mode",),
    "engine": ("engine",),
    "ray_address": ("ray", "address"),
    "state": ("state",),
    "state_mode": ("state_mode",),
    "strict": ("strict",),
    "report": ("report",),
    "metrics": ("metrics",),
    "max_delete_fraction": ("max_delete_fraction",),
    "eval_queries": ("promote", "eval", "queries"),
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
