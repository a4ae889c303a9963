"""The config's sections: one dataclass per YAML section, each checking its own values.

`validate(key)` raises a one-line ConfigError naming `key.<field>` for a value that is wrong
whatever the data; `key` is where the section sits in the YAML (`data`, `eval.test`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from delift_ray import storage
from delift_ray.errors import ConfigError

PLAIN_TEMPLATE = (
    "Instruction: Please generate a response to the following query.\n\n\nQuery: {query}\n"
)
EXAMPLE_TEMPLATE = (
    "Instruction:\nUse the following example as a guide to answer the query in the same format "
    "and style, providing a clear and concise response.\n\n\n"
    "Example:\n{example_prompt}\n{example_response}\n\n\nQuery:\n{query}\n"
)
Method = str  # a selection method's name: a key of delift_ray.selection.methods.METHODS

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def show(value: Any) -> str:
    """A bounded repr for messages: a YAML value can be huge, or an alias bomb."""
    return _SHORT.repr(value)


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    """ConfigError unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(
            f"config: {key} must be one of {', '.join(map(str, choices))}; got {show(value)}"
        )


def check_at_least(section: object, key: str, names: tuple[str, ...], low: float) -> None:
    """ConfigError naming the first of `names` whose value in `section` is below `low`."""
    for name in names:
        if getattr(section, name) < low:
            raise ConfigError(f"config: {key}.{name} must be >= {low}")


def check_paths(section: object, key: str, names: tuple[str, ...]) -> None:
    """ConfigError naming the first of `names` in `section` that is a URI no filesystem takes."""
    for name in names:
        storage.check(getattr(section, name), f"{key}.{name}")


class Section:
    """A config section; subclasses check their own values."""

    def validate(self, key: str) -> None:
        """Raise ConfigError naming `key.<field>` for a wrong value (default: nothing to check)."""


@dataclass
class DataConfig(Section):
    """Where a set of examples lives and how its rows map to (prompt x, response y)."""

    path: str = ""
    format: Literal["alpaca", "messages"] = "alpaca"
    instruction_field: str = "instruction"
    input_field: str = "input"
    output_field: str = "output"
    messages_field: str = "messages"
    prompt_template: str = "Instruction: {instruction}\nInput: {input}\n"
    response_template: str = " {output}"

    def validate(self, key: str) -> None:
        """The path is given and exists (or is a URI); the response template shows the output."""
        if not self.path:
            raise ConfigError(f"config: {key}.path is required")
        check_paths(self, key, ("path",))
        if not storage.is_uri(self.path) and not Path(self.path).exists():
            raise ConfigError(f"config: {key}.path does not exist: {self.path}")
        if self.format == "alpaca" and "{" + self.output_field + "}" not in self.response_template:
            raise ConfigError(
                f"config: {key}.response_template must contain {{{self.output_field}}}"
            )


@dataclass
class ModelConfig(Section):
    """The causal LM that scores utilities. `device: auto` is the GPU when the process has one (a
    Ray actor has one when its pool reserves GPUs), else the CPU."""

    path: str = ""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    max_length: int | None = None

    def validate(self, key: str) -> None:
        """A context limit, if given, of at least 8 tokens; a URI path names a filesystem."""
        check_paths(self, key, ("path",))
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"config: {key}.max_length must be >= 8, got {self.max_length}")


@dataclass
class TemplatesConfig(Section):
    """Scoring prompts (SPEC §3). `{query}` is x_i; the example's fields are x_j and y_j."""

    plain: str = PLAIN_TEMPLATE
    with_example: str = EXAMPLE_TEMPLATE
    add_bos: Literal["auto", "always", "never"] = "auto"

    def validate(self, key: str) -> None:
        """Each template holds its placeholders."""
        if "{query}" not in self.plain:
            raise ConfigError(f"config: {key}.plain must contain {{query}}")
        for ph in ("{query}", "{example_prompt}", "{example_response}"):
            if ph not in self.with_example:
                raise ConfigError(f"config: {key}.with_example must contain {ph}")


@dataclass
class PairsConfig(Section):
    """Which (target, demonstration) pairs are scored: all, or each target's k nearest + itself."""

    mode: Literal["dense", "knn"] = "dense"
    k: int = 64
    embedder: Literal["sentence", "self"] = "sentence"
    search_on_ray_from_rows: int = 50_000
    random_k: int = 0
    ann_from_rows: int = 200_000  # candidate sets this large get faiss HNSW, smaller ones exact
    ann_m: int = 32  # HNSW graph degree
    ann_ef_construction: int = 64
    ann_ef_search: int = 128  # HNSW search beam: higher = better recall, slower
    recall_sample: int = 1000  # targets whose exact top-k measures the approximate recall@k

    def validate(self, key: str) -> None:
        """k >= 1 neighbours, random_k >= 0 extra candidates, positive HNSW settings."""
        if self.random_k < 0:
            raise ConfigError(f"config: {key}.random_k must be >= 0, got {self.random_k}")
        if self.k < 1:
            raise ConfigError(f"config: {key}.k must be >= 1, got {self.k}")
        ann = ("ann_from_rows", "ann_ef_construction", "ann_ef_search", "recall_sample")
        check_at_least(self, key, ann, 1)
        check_at_least(self, key, ("ann_m",), 2)


@dataclass
class ActorPoolConfig(Section):
    """Where a stage's model work runs: in-process (local) or on a pool of Ray actors."""

    executor: Literal["ray", "local"] = "ray"
    actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    cpus_must_be_positive: ClassVar[bool] = False  # else 0 = the actor reserves no CPU

    def validate(self, key: str) -> None:
        """At least one actor; CPUs and GPUs per actor not negative (CPUs > 0 where required)."""
        if self.actors < 1:
            raise ConfigError(f"config: {key}.actors must be >= 1")
        positive = self.cpus_must_be_positive
        if self.cpus_per_actor < 0 or (positive and self.cpus_per_actor == 0):
            raise ConfigError(
                f"config: {key}.cpus_per_actor must be {'> 0' if positive else '>= 0'}"
            )
        if self.gpus_per_actor < 0:
            raise ConfigError(f"config: {key}.gpus_per_actor must be >= 0")


@dataclass
class ScoringConfig(ActorPoolConfig):
    """Batching, the distance used for utilities, and the scoring actors."""

    distance: Literal["d", "cpmi"] = "d"
    max_batch_tokens: int = 8192
    max_batch_size: int = 64
    prefix_sharing: bool = True
    packed_row_tokens: int = 1024  # one packed row's tokens; its attention grows with their square
    demos_per_block: int = 32
    targets_per_plain_block: int = 1024
    calibration_pairs: int = 32

    def validate(self, key: str) -> None:
        """Batch and block sizes >= 1, then the actor pool."""
        sizes = (
            "max_batch_tokens",
            "max_batch_size",
            "packed_row_tokens",
            "demos_per_block",
            "targets_per_plain_block",
        )
        check_at_least(self, key, sizes, 1)
        super().validate(key)


@dataclass
class StoreConfig(Section):
    """Where raw utility blocks live; empty uri = <output_dir>/store."""

    uri: str = ""

    def validate(self, key: str) -> None:
        """A URI, if given, names a filesystem."""
        check_paths(self, key, ("uri",))


# DELIFT as SPEC §4-5 fixes it: global min-max scaling, no per-target normalisation, no
# sharpening, no modular term, eta = nu = 1. `selection.preset: paper` applies these.
PAPER_SELECTION: dict[str, Any] = {
    "scaling": "minmax",
    "normalize": "none",
    "sharpen": 1.0,
    "modular": 0.0,
    "eta": 1.0,
    "nu": 1.0,
}


@dataclass
class SelectionConfig(Section):
    """Kernel scaling, the selection variants, and the greedy optimiser.

    The variants (kernels reduced from scored utilities only: delift, delift-shuffled; se's
    cosine kernel is left as the paper's):

    - `normalize`: none = the global `scaling` (SPEC §4); row_rank / row_minmax / row_z
      normalise each target row over that row's scored pairs instead, replacing the global
      scaling (unscored pairs stay 0): row_rank = (average rank in the row, 0-based) /
      (pairs - 1), 0.5 for a row whose pairs all tie (one pair included); row_minmax =
      (u - min) / (max - min), 0 for a constant row; row_z = max(z-score in the row, 0)
      (population std; 0 for a constant row). With a normalisation, scaling must stay minmax.
    - `sharpen` p >= 1: every kernel value raised to the power p after scaling.
    - `modular` lambda >= 0: the objective gains lambda * sum_{j in A} m_j, where m_j is the
      mean pool-kernel value of demonstration j over the targets it was scored against, its
      own self pair left out (0 if none). The same term is added to FL, FLMI and FLCG (m_j
      always from the pool kernel K); it is modular and >= 0, so greedy stays exact.
    - `preset`: default = the keys as given; paper = DELIFT as SPEC §4-5 (PAPER_SELECTION:
      minmax, none, 1, 0, eta = nu = 1). With paper, a key left at its default takes the
      paper's value, and one set to a value that is neither is a config error. Method
      delift-paper always runs with paper, whatever these keys say.

    The defaults are the paper's DELIFT (the product default is a one-line change here).
    """

    scaling: Literal["minmax", "clip"] = "minmax"
    normalize: Literal["none", "row_rank", "row_minmax", "row_z"] = "none"
    sharpen: float = 1.0
    modular: float = 0.0
    preset: Literal["default", "paper"] = "default"
    optimizer: Literal["naive", "lazy", "stochastic"] = "lazy"
    stochastic_epsilon: float = 0.01
    eta: float = 1.0
    nu: float = 1.0
    distributed: Literal["auto", "central", "randgreedi"] = "auto"
    parts: int = 0
    central_max_nonzeros: int = 200_000_000
    quota_by: str = ""  # method quota: the row field whose values share the budget equally
    exclude_by: str = ""  # method clean: comma-separated row fields; a truthy one excludes a row

    def exclude_fields(self) -> list[str]:
        """The fields of exclude_by, in order."""
        return [f.strip() for f in self.exclude_by.split(",") if f.strip()]

    def resolved(self, preset: str | None = None) -> SelectionConfig:
        """The section with `preset` (default: its own) applied: paper's values for paper."""
        if (preset or self.preset) != "paper":
            return self
        return dataclasses.replace(self, preset="paper", **PAPER_SELECTION)

    def variant(self) -> dict[str, Any]:
        """The variant keys' values (what a manifest records of the kernel and objective)."""
        return {"preset": self.preset, **{k: getattr(self, k) for k in PAPER_SELECTION}}

    def validate(self, key: str) -> None:
        """parts >= 0, epsilon in (0, 1), eta, nu and modular >= 0, sharpen >= 1, minmax under a
        normalisation, and no key contradicting preset paper."""
        if self.parts < 0:
            raise ConfigError(f"config: {key}.parts must be >= 0 (0 = automatic)")
        if not 0 < self.stochastic_epsilon < 1:
            raise ConfigError(f"config: {key}.stochastic_epsilon must be in (0, 1)")
        check_at_least(self, key, ("eta", "nu", "modular"), 0)
        check_at_least(self, key, ("sharpen",), 1)
        if self.normalize != "none" and self.scaling != "minmax":
            raise ConfigError(
                f"config: {key}.normalize: {self.normalize} replaces the global scaling; "
                f"leave {key}.scaling at minmax (got {self.scaling})"
            )
        if self.preset == "paper":
            defaults = SelectionConfig()
            for name, paper in PAPER_SELECTION.items():
                value = getattr(self, name)
                if value != paper and value != getattr(defaults, name):
                    raise ConfigError(
                        f"config: {key}.{name}: {show(value)} contradicts {key}.preset: paper "
                        f"(the paper's is {paper}); drop one of them"
                    )


@dataclass
class EmbedderConfig(Section):
    """Sentence-embedding model for the `se` baseline; empty path = bundled all-MiniLM-L6-v2."""

    path: str = ""
    batch_size: int = 64


# Hugging Face Trainer's learning-rate schedules that need no other setting.
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)


@dataclass
class TrainConfig(Section):
    """Fine-tuning with Hugging Face Trainer on Ray Train (SPEC §7); empty subset = the whole
    data.path pool ("full").

    `subset` is a subset file or a selection run's output_dir (its subset.jsonl/.parquet);
    `batch_size` is rows per step on each worker (times `gradient_accumulation_steps` per
    optimizer step); `warmup_steps` is a step count, or a fraction < 1 of all steps;
    `mixed_precision` (bf16/fp16) and `fsdp` (FSDP2 sharding: full_shard = parameters too,
    shard_grad_op = gradients and optimizer state; `fsdp_offload` = to CPU memory) need GPUs;
    `report_to` lists Trainer's trackers, comma-separated ("none" = none); empty
    storage_path = <output_dir>/train and empty output_model = <output_dir>/model (the merged
    model, loadable like any model).
    """

    subset: str = ""
    method: Literal["full", "lora"] = "full"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    epochs: int = 1
    lr: float = 1e-4
    lr_scheduler: str = "constant"
    warmup_steps: int | float = 0
    weight_decay: float = 0.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    fsdp: Literal["no", "full_shard", "shard_grad_op"] = "no"
    fsdp_offload: bool = False
    report_to: str = "none"
    max_length: int = 512
    workers: int = 1
    use_gpu: bool = False
    storage_path: str = ""
    max_failures: int = 0
    seed: int = 0
    output_model: str = ""

    def trackers(self) -> list[str]:
        """The trackers Trainer reports to (report_to's items; none for "none")."""
        names = [n.strip() for n in self.report_to.split(",") if n.strip()]
        return [] if names == ["none"] else names

    def validate(self, key: str) -> None:
        """Counts >= 1, lr and lora_alpha > 0, dropout in [0, 1), max_failures >= -1, URIs that
        name a filesystem, a known schedule with a warmup it uses, and precision and FSDP only
        on GPUs."""
        check_paths(self, key, ("subset", "storage_path", "output_model"))
        counts = ("epochs", "batch_size", "gradient_accumulation_steps", "workers", "lora_r")
        check_at_least(self, key, counts, 1)
        if self.max_length < 8:
            raise ConfigError(f"config: {key}.max_length must be >= 8, got {self.max_length}")
        for name in ("lr", "lora_alpha"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config: {key}.{name} must be > 0")
        check_at_least(self, key, ("weight_decay",), 0)
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"config: {key}.lora_dropout must be in [0, 1)")
        if self.max_failures < -1:
            raise ConfigError(f"config: {key}.max_failures must be >= 0 (or -1 = retry forever)")
        self._validate_schedule(key)
        self._validate_hardware(key)
        if not self.trackers() and self.report_to.strip() != "none":
            raise ConfigError(f"config: {key}.report_to must list trackers or be none")

    def _validate_schedule(self, key: str) -> None:
        """A known scheduler; warmup a step count >= 0 or a fraction in [0, 1) that it uses."""
        check_choice(f"{key}.lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        w = self.warmup_steps
        if w < 0 or (isinstance(w, float) and w >= 1):
            raise ConfigError(
                f"config: {key}.warmup_steps must be a step count >= 0 or a fraction in [0, 1), "
                f"got {w}"
            )
        if w and self.lr_scheduler == "constant":
            raise ConfigError(
                f"config: {key}.warmup_steps needs a scheduler with warmup "
                f"({key}.lr_scheduler: constant_with_warmup, linear, cosine, ...)"
            )

    def _validate_hardware(self, key: str) -> None:
        """Mixed precision and FSDP only on GPUs (Accelerate ignores FSDP on CPUs)."""
        if self.fsdp_offload and self.fsdp == "no":
            raise ConfigError(f"config: {key}.fsdp_offload needs {key}.fsdp")
        if self.use_gpu:
            return
        if self.mixed_precision != "no":
            raise ConfigError(
                f"config: {key}.mixed_precision: {self.mixed_precision} needs GPUs "
                f"({key}.use_gpu: true); a CPU gang trains in the model's dtype"
            )
        if self.fsdp != "no":
            raise ConfigError(f"config: {key}.fsdp needs GPUs ({key}.use_gpu: true)")


@dataclass
class EvalConfig(ActorPoolConfig):
    """Held-out evaluation; empty model_path = the trained model (train.output_model)."""

    test: DataConfig | None = None
    model_path: str = ""
    max_new_tokens: int = 64
    batch_size: int = 16
    exact_match: bool = True
    cpus_must_be_positive: ClassVar[bool] = True  # a generator needs a CPU of its own

    def validate(self, key: str) -> None:
        """Token and batch counts >= 1, the actor pool, and the test set if given."""
        check_at_least(self, key, ("max_new_tokens", "batch_size"), 1)
        check_paths(self, key, ("model_path",))
        super().validate(key)
        if self.test is not None:
            self.test.validate(f"{key}.test")


@dataclass
class RefreshConfig(Section):
    """Scheduled refreshes: versioned runs under `root`, a `latest` pointer, a shared store."""

    root: str = "runs/refresh"
    mode: Literal["full", "continual"] = "full"

    def validate(self, key: str) -> None:
        """The root, if a URI, names a filesystem."""
        check_paths(self, key, ("root",))


@dataclass
class CompareConfig(Section):
    """`compare`: each method's subset fine-tuned per `train` and evaluated on `eval.test`.

    Lists are comma-separated strings. `seeds` is a count n (training seeds train.seed, +1, ...)
    or a list of seeds ("0,3"; quote a single one: "7"); random and quota draw `random_subsets`
    subsets (selection seeds seed, +1, ...), each trained with every seed (`draw_seeds: all`) or
    draw k with the k-th seed, cycling (`draw_seeds: one`: as many runs as draws, every seed
    used once draws >= seeds); empty `budgets` = `budget`. `epochs_by_budget` and
    `lr_by_budget` ("0.1=20,0.3=10,1.0=3") give a budget's runs their own train.epochs / train.lr
    (budget 1.0 = full data); a budget not listed keeps train's. `pair_modes` ("knn,dense"): the
    methods that score utilities (delift, delift-paper, delift-shuffled) run once per listed
    mode, labelled `<method>@<mode>` when several are listed (one listed mode replaces
    pairs.mode for them; empty = pairs.mode), sharing one block store.
    """

    methods: str = "random,se,delift,full"
    seeds: int | str = 1
    random_subsets: int = 1
    draw_seeds: Literal["all", "one"] = "all"
    budgets: str | int | float = ""
    epochs_by_budget: str = ""
    lr_by_budget: str = ""
    pair_modes: str = ""

    def recipe(self, budget: int | float) -> dict[str, int | float]:
        """The train settings this budget's runs override (epochs, lr), if any are listed."""
        out: dict[str, int | float] = {}
        for name, text in (("epochs", self.epochs_by_budget), ("lr", self.lr_by_budget)):
            value = _by_budget(text, f"compare.{name}_by_budget").get(float(budget))
            if value is not None:
                out[name] = value
        return out

    def pair_mode_list(self) -> list[str]:
        """The listed pair modes, in order (empty: pairs.mode only); ConfigError if one is
        unknown or repeated."""
        if not self.pair_modes.strip():
            return []
        modes = _items(self.pair_modes, "compare.pair_modes")
        for mode in modes:
            check_choice("compare.pair_modes", mode, ("dense", "knn"))
        return modes

    def method_list(self) -> list[Method]:
        """The methods to compare, in order; ConfigError if one is unknown or repeated."""
        from delift_ray.selection.methods import METHODS  # the table imports this module

        names = _items(self.methods, "compare.methods")
        for name in names:
            if name not in METHODS:
                raise ConfigError(
                    f"config: compare.methods has unknown method {show(name)} "
                    f"(known: {', '.join(METHODS)})"
                )
        return names

    def seed_list(self, first: int) -> list[int]:
        """The training seeds: `seeds` of them from `first`, or the listed ones."""
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise ConfigError(f"config: compare.seeds must be >= 1, got {self.seeds}")
            return list(range(first, first + self.seeds))
        seeds = [_number(s, "compare.seeds") for s in _items(self.seeds, "compare.seeds")]
        if any(not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError(f"config: compare.seeds must be integers >= 0, got {self.seeds!r}")
        return [int(s) for s in seeds]

    def budget_list(self, default: int | float) -> list[int | float]:
        """The budgets: `budgets` parsed (fractions in (0, 1] or counts >= 1), else [default]."""
        text = str(self.budgets)
        if not text.strip():
            return [default]
        budgets = [_number(b, "compare.budgets") for b in _items(text, "compare.budgets")]
        for b in budgets:
            if b <= 0 or (isinstance(b, float) and b > 1):
                raise ConfigError(
                    f"config: compare.budgets must be fractions in (0, 1] or counts >= 1, got {b}"
                )
        return budgets

    def validate(self, key: str) -> None:
        """Known methods, valid seeds and budgets, at least one random draw."""
        self.method_list()
        self.pair_mode_list()
        self.seed_list(0)
        self.budget_list(1.0)
        if self.random_subsets < 1:
            raise ConfigError(f"config: {key}.random_subsets must be >= 1")
        epochs = _by_budget(self.epochs_by_budget, f"{key}.epochs_by_budget")
        if any(not isinstance(e, int) or e < 1 for e in epochs.values()):
            raise ConfigError(f"config: {key}.epochs_by_budget must give integers >= 1")
        if any(lr <= 0 for lr in _by_budget(self.lr_by_budget, f"{key}.lr_by_budget").values()):
            raise ConfigError(f"config: {key}.lr_by_budget must give learning rates > 0")


def _by_budget(text: str, key: str) -> dict[float, int | float]:
    """`budget=value` items ("0.1=20,1.0=3") as {budget: value}; ConfigError if malformed."""
    if not text.strip():
        return {}
    out: dict[float, int | float] = {}
    for item in _items(text, key):
        budget, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"config: {key} items must be budget=value, got {item!r}")
        b = float(_number(budget.strip(), key))
        if b in out:
            raise ConfigError(f"config: {key} lists budget {budget.strip()} twice")
        out[b] = _number(value.strip(), key)
    return out


def _items(text: str, key: str) -> list[str]:
    """The comma-separated items of `text`; ConfigError if none or one repeats."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"config: {key} must list at least one item")
    if len(set(items)) < len(items):
        raise ConfigError(f"config: {key} lists an item twice: {text!r}")
    return items


def _number(text: str, key: str) -> int | float:
    """An int, or failing that a float, from `text`; ConfigError if neither."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    raise ConfigError(f"config: {key} has a bad number {show(text)}")
