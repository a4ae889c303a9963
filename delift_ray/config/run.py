"""A run's whole config: its sections, the top-level keys, which sections each command checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from delift_ray import storage
from delift_ray.config.sections import (
    ActorPoolConfig,
    CompareConfig,
    DataConfig,
    EmbedderConfig,
    EvalConfig,
    Method,
    ModelConfig,
    PairsConfig,
    RefreshConfig,
    ScoringConfig,
    SelectionConfig,
    StoreConfig,
    TemplatesConfig,
    TrainConfig,
    check_choice,
)
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.selection.stages import STAGES

RUN = "run"  # the top-level keys: method, stage (with its target or existing set), budget, seed
SELECT_SECTIONS = (
    RUN,
    "data",
    "model",
    "templates",
    "pairs",
    "scoring",
    "store",
    "selection",
    "embedder",
)
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "select": SELECT_SECTIONS,
    "refresh": (*SELECT_SECTIONS, "refresh"),
    "train": ("data", "model", "templates", "train"),
    "eval": ("data", "model", "templates", "embedder", "eval"),
    "compare": (*SELECT_SECTIONS, "train", "eval", "compare"),
}
ALL_SECTIONS = (*SELECT_SECTIONS, "train", "eval", "refresh", "compare")


@dataclass
class Config:
    """One run: the sections, and the top-level keys (method: a key of
    delift_ray.selection.methods.METHODS; stage: a key of delift_ray.selection.stages.STAGES)."""

    data: DataConfig = field(default_factory=DataConfig)
    target: DataConfig | None = None
    existing: DataConfig | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Method = "delift"
    stage: str = "instruction"
    budget: int | float = 0.3
    pairs: PairsConfig = field(default_factory=PairsConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    output_dir: str = "runs/demo"
    seed: int = 0


def sections_of(command: str | None) -> tuple[str, ...]:
    """The sections `command` (a key of COMMAND_SECTIONS) checks; every section for None."""
    return ALL_SECTIONS if command is None else COMMAND_SECTIONS[command]


def validate(cfg: Config, sections: Iterable[str] = ALL_SECTIONS) -> None:
    """Check output_dir and the values of `sections` that are wrong whatever the data."""
    if not cfg.output_dir:
        raise ConfigError("config: output_dir must not be empty")
    storage.check(cfg.output_dir, "output_dir")
    for name in sections:
        if name == RUN:
            validate_run(cfg)
        else:
            getattr(cfg, name).validate(name)
    for pool in ("scoring", "eval"):
        if pool in sections:
            check_gpu_device(cfg.model, getattr(cfg, pool), pool)


def check_gpu_device(model: ModelConfig, pool: ActorPoolConfig, key: str) -> None:
    """ConfigError for actors that would reserve a GPU and compute on the CPU."""
    if pool.executor == "ray" and pool.gpus_per_actor > 0 and model.device == "cpu":
        raise ConfigError(
            f"config: {key}.gpus_per_actor is {pool.gpus_per_actor:g} but model.device is cpu "
            "(each actor would hold a GPU and compute on the CPU); set model.device: auto or cuda"
        )


def validate_run(cfg: Config) -> None:
    """The top-level keys: a known method and stage, the stage's set, the method's needs, budget
    and seed."""
    from delift_ray.selection.methods import METHODS  # the table imports the config

    check_choice("method", cfg.method, tuple(METHODS))
    check_choice("stage", cfg.stage, tuple(STAGES))
    b = cfg.budget
    if b <= 0:
        raise ConfigError(f"config: budget must be > 0, got {b}")
    if isinstance(b, float) and b > 1:
        raise ConfigError(
            f"config: budget {b} is a fraction > 1; use a fraction in (0, 1] or an integer count"
        )
    if cfg.seed < 0:
        raise ConfigError(f"config: seed must be >= 0, got {cfg.seed}")
    stage = STAGES[cfg.stage]
    if stage.cross is not None:
        cross = getattr(cfg, stage.cross)
        if cross is None:
            raise ConfigError(
                f"config: stage {cfg.stage} needs {stage.cross}.path ({stage.cross_role})"
            )
        cross.validate(stage.cross)
    method = METHODS[cfg.method]
    if method.needs == "utilities" and not cfg.model.path:
        raise ConfigError(f"config: method {cfg.method} needs model.path")
    if method.check is not None:
        method.check(cfg.selection)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data (for manifests)."""
    return dataclasses.asdict(cfg)


def store_uri(cfg: Config) -> str:
    """The block store location: store.uri, or <output_dir>/store."""
    return cfg.store.uri or storage.join(cfg.output_dir, "store")


def resolve_budget(budget: float | int, n: int) -> int:
    """Turn a fraction or a count into a count for a pool of n; DeliftError if impossible."""
    if n == 0:
        raise DeliftError("data: the pool has no usable rows (see rejects.parquet)")
    k = max(1, round(budget * n)) if isinstance(budget, float) else budget
    if k > n:
        raise ConfigError(f"config: budget {budget} is larger than the pool ({n} usable rows)")
    return k
