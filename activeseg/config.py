"""Simulation config: frozen dataclass defaults → TOML file → ``--key value`` flags."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from activeseg.train import TrainConfig


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulated active-learning run (names = TOML keys = CLI flags)."""

    dataset: str = "nuclei"
    task: str = "auto"
    model: str = "auto"
    strategy: str = "bald"
    seed: int = 0
    split_seed: int = 0
    rounds: int = 8
    query: int = 4
    initial: int = 8
    patch_size: int = 64
    max_pool: int | None = None
    val_size: int | None = None
    balanced_initial: bool = False
    score_subset: int | None = None
    no_delete: bool = False
    warm_start: bool = False
    estimator: str = "mc_dropout"
    mc_samples: int = 20
    members: int = 5
    prior_precision: float = 1.0
    consistent_masks: bool = False
    score_precision: str = "auto"
    compile_scoring: bool = False
    test_mc_samples: int = 0
    score_batch_size: int = 32
    reduction: str | None = None
    sampling: str | None = None
    temperature: float = 1.0
    candidates: int | None = None
    beta: float = 1.0
    alpha: float = 1.0
    mi_bins: int = 32
    depth: int = 3
    base_filters: int = 16
    dropout: float = 0.2
    residual: bool = False
    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_rule: str = "fixed"
    epochs: float | None = None
    min_steps: int = 50
    loss: str = "auto"
    eval_every: int = 25
    checkpoint: str = "best"
    train_precision: str = "float32"
    augment: bool = True
    reference: bool = True
    heatmaps: int = 4
    save_per_item: bool = True
    device: str = "auto"

    def train_config(self) -> TrainConfig:
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def replace(self, **changes) -> SimConfig:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, value, default_type: type):
    """Convert a TOML/flag value to the field's type with an error naming the key."""
    if value is None:
        return None
    try:
        if default_type is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return default_type(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key '{name}' = {value!r} is not a valid {default_type.__name__}") from None


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "int | None": int, "str | None": str,
          "float | None": float}


def load_config(path: str | Path | None = None, **overrides) -> SimConfig:
    """Defaults, then the TOML file (a flat table or a ``[simulate]`` table), then ``overrides``.

    Unknown keys raise an error listing the valid ones; ``None`` overrides are ignored.
    """
    values: dict = {}
    if path is not None:
        doc = tomllib.loads(Path(path).read_text())
        values.update(doc.get("simulate", doc))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(SimConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
    typed = {k: _coerce(k, v, _TYPES[str(known[k].type)]) for k, v in values.items()}
    return SimConfig(**typed)
