"""Typed run configuration: one YAML file per run, `--set a.b=value` overrides, strict validation.

Every problem is reported before any work as one line naming the key, e.g.
``config: budget must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from delift_ray.errors import DeliftError, first_line

PLAIN_TEMPLATE = (
    "Instruction: Please generate a response to the following query.\n\n\nQuery: {query}\n"
)
# methods that score utilities with the model; delift-shuffled is the control that permutes
# the scored utilities over the same pairs before the kernel is built
SCORED_METHODS = ("delift", "delift-shuffled")
Method = Literal["delift", "delift-shuffled", "se", "random", "quota", "full"]
EXAMPLE_TEMPLATE = (
    "Instruction:\nUse the following example as a guide to answer the query in the same format "
    "and style, providing a clear and concise response.\n\n\n"
    "Example:\n{example_prompt}\n{example_response}\n\n\nQuery:\n{query}\n"
)


@dataclass
class DataConfig:
    """Where a set of examples lives and how its rows map to (prompt x, response y)."""

    path: str = ""
    format: Literal["alpaca", "messages"] = "alpaca"
    instruction_field: str = "instruction"
    input_field: str = "input"
    output_field: str = "output"
    messages_field: str = "messages"
    prompt_template: str = "Instruction: {instruction}\nInput: {input}\n"
    response_template: str = " {output}"


@dataclass
class ModelConfig:
    """The causal LM that scores utilities."""

    path: str = ""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    max_length: int | None = None


@dataclass
class TemplatesConfig:
    """Scoring prompts (SPEC §3). `{query}` is x_i; the example's fields are x_j and y_j."""

    plain: str = PLAIN_TEMPLATE
    with_example: str = EXAMPLE_TEMPLATE
    add_bos: Literal["auto", "always", "never"] = "auto"


@dataclass
class PairsConfig:
    """Which (target, demonstration) pairs are scored: all, or each target's k nearest + itself."""

    mode: Literal["dense", "knn"] = "dense"
    k: int = 64
    embedder: Literal["sentence", "self"] = "sentence"
    search_on_ray_from_rows: int = 50_000
    random_k: int = 0


@dataclass
class ScoringConfig:
    """Batching and the distance used for utilities."""

    distance: Literal["d", "cpmi"] = "d"
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    prefix_sharing: bool = True
    executor: Literal["ray", "local"] = "ray"
    actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    demos_per_block: int = 32
    targets_per_plain_block: int = 1024
    calibration_pairs: int = 32


@dataclass
class StoreConfig:
    """Where raw utility blocks live; empty uri = <output_dir>/store."""

    uri: str = ""


@dataclass
class SelectionConfig:
    """Kernel scaling and the greedy optimiser."""

    scaling: Literal["minmax", "clip"] = "minmax"
    optimizer: Literal["naive", "lazy", "stochastic"] = "lazy"
    stochastic_epsilon: float = 0.01
    eta: float = 1.0
    nu: float = 1.0
    distributed: Literal["auto", "central", "randgreedi"] = "auto"
    parts: int = 0
    central_max_nonzeros: int = 200_000_000
    quota_by: str = ""  # method quota: the row field whose values share the budget equally


@dataclass
class EmbedderConfig:
    """Sentence-embedding model for the `se` baseline; empty path = bundled all-MiniLM-L6-v2."""

    path: str = ""
    batch_size: int = 64


@dataclass
class TrainConfig:
    """Fine-tuning on Ray Train (SPEC §7); empty subset = the whole data.path pool ("full").

    `subset` is a subset file or a selection run's output_dir (its subset.jsonl/.parquet);
    `batch_size` is rows per step on each worker; empty storage_path = <output_dir>/train and
    empty output_model = <output_dir>/model (the merged model, loadable like any model).
    """

    subset: str = ""
    method: Literal["full", "lora"] = "full"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 8
    max_length: int = 512
    workers: int = 1
    use_gpu: bool = False
    storage_path: str = ""
    max_failures: int = 0
    seed: int = 0
    output_model: str = ""


@dataclass
class EvalConfig:
    """Held-out evaluation; empty model_path = the trained model (train.output_model)."""

    test: DataConfig | None = None
    model_path: str = ""
    max_new_tokens: int = 64
    batch_size: int = 16
    executor: Literal["ray", "local"] = "ray"
    actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    exact_match: bool = True


@dataclass
class RefreshConfig:
    """Scheduled refreshes: versioned runs under `root`, a `latest` pointer, a shared store."""

    root: str = "runs/refresh"
    mode: Literal["full", "continual"] = "full"


@dataclass
class CompareConfig:
    """`compare`: each method's subset fine-tuned per `train` and evaluated on `eval.test`.

    Lists are comma-separated strings. `seeds` is a count n (training seeds train.seed, +1, ...)
    or a list of seeds ("0,3"; quote a single one: "7"); random and quota draw `random_subsets`
    subsets (selection seeds seed, +1, ...), each trained with every seed (`draw_seeds: all`) or
    draw k with the k-th seed, cycling (`draw_seeds: one`: as many runs as draws, every seed
    used once draws >= seeds); empty `budgets` = `budget`.
    """

    methods: str = "random,se,delift,full"
    seeds: int | str = 1
    random_subsets: int = 1
    draw_seeds: Literal["all", "one"] = "all"
    budgets: str | int | float = ""

    def method_list(self) -> list[Method]:
        """The methods to compare, in order; DeliftError if one is unknown or repeated."""
        known = typing.get_args(Method)
        names = _items(self.methods, "compare.methods")
        for name in names:
            if name not in known:
                raise DeliftError(
                    f"config: compare.methods has unknown method {_show(name)} "
                    f"(known: {', '.join(known)})"
                )
        return typing.cast(list[Method], names)

    def seed_list(self, first: int) -> list[int]:
        """The training seeds: `seeds` of them from `first`, or the listed ones."""
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise DeliftError(f"config: compare.seeds must be >= 1, got {self.seeds}")
            return list(range(first, first + self.seeds))
        seeds = [_number(s, "compare.seeds") for s in _items(self.seeds, "compare.seeds")]
        if any(not isinstance(s, int) or s < 0 for s in seeds):
            raise DeliftError(f"config: compare.seeds must be integers >= 0, got {self.seeds!r}")
        return [int(s) for s in seeds]

    def budget_list(self, default: int | float) -> list[int | float]:
        """The budgets: `budgets` parsed (fractions in (0, 1] or counts >= 1), else [default]."""
        text = str(self.budgets)
        if not text.strip():
            return [default]
        budgets = [_number(b, "compare.budgets") for b in _items(text, "compare.budgets")]
        for b in budgets:
            if b <= 0 or (isinstance(b, float) and b > 1):
                raise DeliftError(
                    f"config: compare.budgets must be fractions in (0, 1] or counts >= 1, got {b}"
                )
        return budgets


@dataclass
class Config:
    """One selection run. Methods: delift; delift-shuffled (control: the same pairs, their
    utilities permuted); se; random; quota (control: random within each value of
    selection.quota_by, the budget shared equally); full."""

    data: DataConfig = field(default_factory=DataConfig)
    target: DataConfig | None = None
    existing: DataConfig | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Method = "delift"
    stage: Literal["instruction", "task", "continual"] = "instruction"
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


# ---------------------------------------------------------------------------------------------
# loading


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply `key.sub=value` overrides, validate; raise DeliftError if bad."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DeliftError(f"config: file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DeliftError(f"config: {p} is not UTF-8 text (byte {e.start})") from None
        except RecursionError:
            raise DeliftError(f"config: {p} is nested too deeply") from None
        except (yaml.YAMLError, ValueError) as e:  # ValueError: e.g. an int over Python's limit
            raise DeliftError(f"config: {p} is not valid YAML: {first_line(e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise DeliftError(f"config: {p} must hold a mapping at the top level")
        raw = loaded
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data (for manifests)."""
    return dataclasses.asdict(cfg)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _show(value: Any) -> str:
    """A bounded repr for messages: a YAML value can be huge, or an alias bomb."""
    return _SHORT.repr(value)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise DeliftError(f"config: --set expects key=value, got {item!r}")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise DeliftError(f"config: --set has an empty key in {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise DeliftError(f"config: cannot set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise DeliftError(f"config: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise DeliftError(
            f"config: unknown key {prefix}{unknown[0]} (known keys: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except DeliftError as e:
                errors.append(str(e))
        raise DeliftError(
            errors[0] if len(errors) == 1 else f"config: {key} has a bad value {_show(value)}"
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise DeliftError(
                f"config: {key} must be one of {', '.join(map(str, choices))}; got {_show(value)}"
            )
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DeliftError(f"config: {key} must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise DeliftError(f"config: {key} must be a finite number, got {value}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DeliftError(f"config: {key} must be an integer, got {_show(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise DeliftError(f"config: {key} must be true or false, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise DeliftError(f"config: {key} must be a string, got {_show(value)}")
        return value
    raise DeliftError(f"config: {key} has an unsupported type")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# validation that needs no data


def validate(cfg: Config) -> None:
    """Check values that are wrong whatever the data; raise DeliftError naming the key."""
    b = cfg.budget
    if b <= 0:
        raise DeliftError(f"config: budget must be > 0, got {b}")
    if isinstance(b, float) and b > 1:
        raise DeliftError(
            f"config: budget {b} is a fraction > 1; use a fraction in (0, 1] or an integer count"
        )
    if cfg.seed < 0:
        raise DeliftError(f"config: seed must be >= 0, got {cfg.seed}")
    _check_data(cfg.data, "data")
    if cfg.stage == "task":
        if cfg.target is None:
            raise DeliftError("config: stage task needs target.path (the target set D_T)")
        _check_data(cfg.target, "target")
    if cfg.stage == "continual":
        if cfg.existing is None:
            raise DeliftError("config: stage continual needs existing.path (data already learned)")
        _check_data(cfg.existing, "existing")
    if cfg.method in SCORED_METHODS and not cfg.model.path:
        raise DeliftError(f"config: method {cfg.method} needs model.path")
    if cfg.method == "quota" and not cfg.selection.quota_by.strip():
        raise DeliftError("config: method quota needs selection.quota_by (a field of the rows)")
    if cfg.model.max_length is not None and cfg.model.max_length < 8:
        raise DeliftError(f"config: model.max_length must be >= 8, got {cfg.model.max_length}")
    for key in (
        "max_batch_tokens",
        "max_batch_size",
        "actors",
        "demos_per_block",
        "targets_per_plain_block",
    ):
        if getattr(cfg.scoring, key) < 1:
            raise DeliftError(f"config: scoring.{key} must be >= 1")
    for key in ("cpus_per_actor", "gpus_per_actor"):
        if getattr(cfg.scoring, key) < 0:
            raise DeliftError(f"config: scoring.{key} must be >= 0")
    if cfg.pairs.random_k < 0:
        raise DeliftError(f"config: pairs.random_k must be >= 0, got {cfg.pairs.random_k}")
    if cfg.pairs.k < 1:
        raise DeliftError(f"config: pairs.k must be >= 1, got {cfg.pairs.k}")
    if cfg.selection.parts < 0:
        raise DeliftError("config: selection.parts must be >= 0 (0 = automatic)")
    if not 0 < cfg.selection.stochastic_epsilon < 1:
        raise DeliftError("config: selection.stochastic_epsilon must be in (0, 1)")
    for key in ("eta", "nu"):
        if getattr(cfg.selection, key) < 0:
            raise DeliftError(f"config: selection.{key} must be >= 0")
    if "{query}" not in cfg.templates.plain:
        raise DeliftError("config: templates.plain must contain {query}")
    for ph in ("{query}", "{example_prompt}", "{example_response}"):
        if ph not in cfg.templates.with_example:
            raise DeliftError(f"config: templates.with_example must contain {ph}")
    if not cfg.output_dir:
        raise DeliftError("config: output_dir must not be empty")
    for key in ("epochs", "batch_size", "workers", "lora_r"):
        if getattr(cfg.train, key) < 1:
            raise DeliftError(f"config: train.{key} must be >= 1")
    if cfg.train.max_length < 8:
        raise DeliftError(f"config: train.max_length must be >= 8, got {cfg.train.max_length}")
    for key in ("lr", "lora_alpha"):
        if getattr(cfg.train, key) <= 0:
            raise DeliftError(f"config: train.{key} must be > 0")
    if not 0 <= cfg.train.lora_dropout < 1:
        raise DeliftError("config: train.lora_dropout must be in [0, 1)")
    if cfg.train.max_failures < -1:
        raise DeliftError("config: train.max_failures must be >= 0 (or -1 = retry forever)")
    for key in ("max_new_tokens", "batch_size", "actors"):
        if getattr(cfg.eval, key) < 1:
            raise DeliftError(f"config: eval.{key} must be >= 1")
    if cfg.eval.cpus_per_actor <= 0 or cfg.eval.gpus_per_actor < 0:
        raise DeliftError("config: eval.cpus_per_actor must be > 0 and eval.gpus_per_actor >= 0")
    if cfg.eval.test is not None:
        _check_data(cfg.eval.test, "eval.test")
    cfg.compare.method_list()
    cfg.compare.seed_list(cfg.train.seed)
    cfg.compare.budget_list(cfg.budget)
    if cfg.compare.random_subsets < 1:
        raise DeliftError("config: compare.random_subsets must be >= 1")


def _items(text: str, key: str) -> list[str]:
    """The comma-separated items of `text`; DeliftError if none or one repeats."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise DeliftError(f"config: {key} must list at least one item")
    if len(set(items)) < len(items):
        raise DeliftError(f"config: {key} lists an item twice: {text!r}")
    return items


def _number(text: str, key: str) -> int | float:
    """An int, or failing that a float, from `text`; DeliftError if neither."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    raise DeliftError(f"config: {key} has a bad number {_show(text)}")


def _check_data(d: DataConfig, key: str) -> None:
    if not d.path:
        raise DeliftError(f"config: {key}.path is required")
    if "://" not in d.path and not Path(d.path).exists():
        raise DeliftError(f"config: {key}.path does not exist: {d.path}")
    if d.format == "alpaca" and "{" + d.output_field + "}" not in d.response_template:
        raise DeliftError(f"config: {key}.response_template must contain {{{d.output_field}}}")


def store_uri(cfg: Config) -> str:
    """The block store location: store.uri, or <output_dir>/store."""
    return cfg.store.uri or str(Path(cfg.output_dir) / "store")


def resolve_budget(budget: float | int, n: int) -> int:
    """Turn a fraction or a count into a count for a pool of n; DeliftError if impossible."""
    if n == 0:
        raise DeliftError("data: the pool has no usable rows (see rejects.parquet)")
    k = max(1, round(budget * n)) if isinstance(budget, float) else budget
    if k > n:
        raise DeliftError(f"config: budget {budget} is larger than the pool ({n} usable rows)")
    return k
