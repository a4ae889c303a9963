"""Typed run configuration: one YAML file per run, `--set a.b=value` overrides, strict validation.

Every problem is reported before any work as one line naming the key, e.g.
``config: budget must be > 0, got -1``.

Modules: `sections` (one dataclass per YAML section, each with its own `validate(key)`),
`run` (`Config`, the top-level keys, which sections each command checks), `load` (YAML,
overrides, coercion to the dataclasses).

Unknown keys and wrongly typed values stop every command, whatever section they are in.
Value rules are checked only for the sections the command uses: `load_config(path, overrides,
command)` looks the command up in `COMMAND_SECTIONS` (None, the default, checks them all):

    select   run data model templates pairs scoring store selection embedder
    refresh  the same + refresh
    train    data model templates train
    eval     data model templates embedder eval
    compare  select's + train eval compare

`run` is the top-level keys: a known method and stage, the stage's target or existing set, what
the method needs (model.path, selection.quota_by), budget and seed; output_dir is always
checked. So a bad train.lora_dropout stops `train` and `compare` but not `select`.
"""

from delift_ray.config.load import load_config
from delift_ray.config.run import (
    COMMAND_SECTIONS,
    Config,
    config_to_dict,
    resolve_budget,
    sections_of,
    store_uri,
    validate,
)
from delift_ray.config.sections import (
    EXAMPLE_TEMPLATE,
    PLAIN_TEMPLATE,
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
)

__all__ = [
    "COMMAND_SECTIONS",
    "EXAMPLE_TEMPLATE",
    "PLAIN_TEMPLATE",
    "ActorPoolConfig",
    "CompareConfig",
    "Config",
    "DataConfig",
    "EmbedderConfig",
    "EvalConfig",
    "Method",
    "ModelConfig",
    "PairsConfig",
    "RefreshConfig",
    "ScoringConfig",
    "SelectionConfig",
    "StoreConfig",
    "TemplatesConfig",
    "TrainConfig",
    "config_to_dict",
    "load_config",
    "resolve_budget",
    "sections_of",
    "store_uri",
    "validate",
]
