"""Run settings: frozen dataclass defaults → TOML file → ``--key value`` flags.

:class:`TrainConfig` holds one round's training settings; :class:`SimConfig` extends it with everything
else that defines a simulated run (data, model, uncertainty method, strategy, rounds). Each field carries
its help text (``help_of``), which the command line shows. This module imports no torch, so
``activeseg --help`` starts without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


def _f(default, help: str):  # noqa: A002 - the field's help text
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of one round."""

    steps: int = _f(1200, "most optimizer steps of a round (with --epochs: the cap of the schedule)")
    batch_size: int = _f(8, "training batch size")
    lr: float = _f(2e-3, "peak learning rate")
    weight_decay: float = _f(1e-4, "weight decay (decoupled for adamw, Adam's L2 term for adam)")
    weight_decay_rule: str = _f("fixed", "fixed, or per_item: weight_decay / N (Gal et al.: 0.25 / N)")
    weight_decay_on: str = _f("all", "all: every weight layer (AdamW: not norms or biases); hidden_dense: the hidden "
                              "dense layer's weights only (the Gal et al. CNN, as its Keras reference code)")
    epochs: float | None = _f(40.0, "steps = epochs × training items / batch size, within [min_steps, steps]; "
                              "none: always --steps")
    epoch_rule: str = _f("items", "items: --epochs counts items, batches drawn with replacement; passes: shuffled "
                         "passes over the labelled set in batches of --batch-size, the last one short, "
                         "epochs × ceil(N / batch) steps (Keras' fit)")
    min_steps: int = _f(300, "the fewest steps a round takes under --epochs")
    optimizer: str = _f("adamw", "adamw, or adam (the fixed schedule of the committed studies)")
    lr_schedule: str = _f("cosine", "cosine: linear warm-up then cosine decay to 0; constant: the same lr throughout")
    warmup: float = _f(0.05, "fraction of the steps spent warming the lr up (cosine schedule)")
    ema_decay: float = _f(0.99, "decay of the exponential moving average of the weights that is kept as the "
                          "trained model (0: no average)")
    loss: str = _f("auto", "auto (dice+wce for segmentation, ce for classification), dice, wce, dice+wce or ce")
    eval_every: int = _f(0, "validate every this many steps (0: only at the end)")
    eval_over: str = _f("items", "segmentation scores of the validation and test sets: items (the mean of each "
                        "item's score) or volume (the items taken together as one region, per source: for the "
                        "tiles of one held-out volume, as a volume's Dice is reported)")
    augment: bool = _f(True, "augment the training batches (see --augment-style)")
    augment_style: str = _f("dihedral", "dihedral: flips, 90° rotations and gamma; affine: shift/rotation/flip/zoom "
                            "(the committed studies)")
    checkpoint: str = _f("last", "last: the final (averaged) weights; best: the weights with the best validation "
                         "score (the committed studies)")
    channels_last: bool = _f(True, "train with channels-last tensors (NHWC / NDHWC), which oneDNN and cuDNN convolve "
                             "faster than channels-first; the trained model is handed back channels-first")
    train_precision: str = _f("float32", "float32, or mixed precision: bfloat16 (faster on CPUs with AVX512-BF16/AMX "
                              "and on recent GPUs) or float16 (CUDA, with loss scaling)")

    def steps_for(self, n: int) -> int:
        """Adam steps for ``n`` training items: ``steps``, or the ``epochs`` schedule clipped to
        ``[min_steps, steps]`` so a round with few labels is not over-trained and one with many is capped."""
        if self.epochs is None:
            return self.steps
        if self.epoch_rule == "passes":
            return int(min(self.steps, max(self.min_steps, math.ceil(self.epochs) * math.ceil(n / self.batch_size))))
        return int(min(self.steps, max(self.min_steps, math.ceil(self.epochs * n / self.batch_size))))

    def weight_decay_for(self, n: int) -> float:
        """The L2 coefficient for ``n`` training items.

        ``per_item`` divides ``weight_decay`` by N, the rule of Gal et al. (2017, §5.3) for dropout
        networks: (1 - p) l² / N with p = 0.5 and l² = 0.5 gives ``weight_decay = 0.25``. It is applied as
        Adam's (coupled) L2 term ``decay · w`` added to the gradient: a Keras ``l2(c)`` regulariser adds
        ``c · Σ w²`` to the loss, whose gradient is ``2c · w``, so Keras' ``l2(3.5 / N)`` is
        ``weight_decay = 7`` here.
        """
        if self.weight_decay_rule == "fixed":
            return self.weight_decay
        if self.weight_decay_rule == "per_item":
            return self.weight_decay / max(n, 1)
        raise ValueError(f"weight_decay_rule '{self.weight_decay_rule}' is not one of fixed, per_item")

    def train_config(self) -> TrainConfig:
        """Only the training settings (a plain :class:`TrainConfig`)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


@dataclass(frozen=True)
class SimConfig(TrainConfig):
    """Everything that defines one simulated active-learning run (names = TOML keys = CLI flags)."""

    dataset: str = _f("nuclei", "'nuclei', 'nuclei3', 'scratch', 'mnist' or a folder with images/ and masks/")
    classes: int | None = _f(None, "classes C of a folder's label maps (else classes.json in masks/, else inferred)")
    ignore_index: int = _f(255, "mask value meaning 'not labelled': the loss and the metrics skip those pixels")
    source_weighting: str = _f("equal", "equal: the test score is the mean over sources of each source's mean; "
                               "items: the mean over test items (the committed studies)")
    task: str = _f("auto", "auto (from the dataset), segmentation or classification; a mismatch is an error")
    model: str = _f("auto", "auto (unet for segmentation, gal_cnn for classification), unet or gal_cnn")
    strategy: str = _f("bald", "strategy name; simulate takes a comma-separated list (e.g. random,bald,std_edt)")
    seed: int = _f(0, "first seed (with --seeds N: seed .. seed+N-1)")
    split_seed: int = _f(0, "seed of the train/val/test split (kept fixed across runs)")
    rounds: int = _f(8, "rounds, each = train, evaluate, score, select")
    query: int = _f(4, "items labelled per round")
    query_schedule: str | None = _f(None, "items per round as 'QxR,...,Q': e.g. '2x4,4' labels 2 a round for "
                                    "4 rounds, then 4 (overrides --query)")
    initial: int = _f(8, "labelled items at the start")
    initial_source: str | None = _f(None, "draw the initial set from this source only (the item-id prefix, e.g. "
                                    "stardist): the pool then mixes sources the model has not seen")
    patch_size: int = _f(64, "side of the square patches")
    max_pool: int | None = _f(None, "keep at most this many pool items (random subset) to bound each round's cost")
    val_size: int | None = _f(None, "validation items for a dataset with a standard test set (mnist; Gal et al.: 100)")
    balanced_initial: bool = _f(False, "draw the initial set with equal counts per class (classification)")
    score_subset: int | None = _f(None, "score only a random subset of this many pool items each round "
                                  "(Gal et al.: 2000)")
    no_delete: bool = _f(False, "NoDelete: leave queried items in the pool; a re-pick duplicates it in training")
    region_size: int = _f(128, "region strategies (cereals, entropy_regions, random_regions): window side in pixels, "
                          "a cube's side in volumes (CEREALS: 128; an image smaller than it is one window of its "
                          "shorter side)")
    region_stride: int = _f(0, "region strategies: step of the window grid (0: half the window)")
    region_iou_max: float = _f(0.0, "region strategies: the largest IoU a picked window may have with another of its "
                               "image (0: disjoint)")
    region_labelled: str = _f("exclude", "region strategies: exclude (a window holding a labelled pixel is never "
                              "picked) or zero (labelled pixels count 0; only fully labelled windows are barred)")
    cost_tolerance: float = _f(1.0, "click cost of a region in simulation: Douglas-Peucker tolerance in pixels of the "
                               "simplified outlines whose vertices are counted")
    warm_start: bool = _f(False, "fine-tune the previous round's weights instead of training from scratch")
    estimator: str = _f("mc_dropout", "uncertainty method: mc_dropout, deterministic, or a committee: ensemble, "
                        "bootstrap, svgd (Nath et al.)")
    mc_samples: int = _f(20, "MC-dropout passes K")
    members: int = _f(5, "committee size K of ensemble / bootstrap / svgd (Nath et al.: 5)")
    prior_precision: float = _f(1e-4, "svgd: precision λ of the Gaussian prior on the weights, "
                                "log p(θ) = -λ/2 ‖θ‖² (not on biases or normalisation layers)")
    svgd_objective: str = _f("loss", "svgd log-likelihood: loss (-N × the training loss: Dice + cross-entropy), "
                             "or nath_log_dice (Nath et al.'s per-image log soft Dice; prior on every parameter)")
    svgd_kernel: str = _f("function", "svgd kernel: function (RBF on the members' softmax outputs, D'Angelo & "
                          "Fortuin 2021) or weight (RBF on the flattened weights, Nath et al.)")
    consistent_masks: bool = _f(False, "MC dropout draws K masks once per round and reuses them for every item "
                                "(faster)")
    score_precision: str = _f("auto", "compute dtype of MC-dropout scoring: float32, bfloat16, float16 (CUDA) "
                              "or auto")
    compile_scoring: bool = _f(False, "torch.compile the stochastic part of the network for scoring (pays on "
                               "large pools)")
    test_mc_samples: int = _f(0, "0: evaluate val/test with dropout off (weight scaling); K > 0: the mean of K "
                              "MC passes")
    score_batch_size: int = _f(32, "images per forward pass when scoring")
    reduction: str | None = _f(None, "override the strategy's map-to-score reduction (sum, mean, max, "
                               "topq_mean, ...)")
    sampling: str | None = _f(None, "sample the batch from an uncertainty score instead of top-k: power, "
                              "softmax or rank")
    temperature: float = _f(1.0, "temperature of --sampling (→ 0: top-k)")
    candidates: int | None = _f(None, "max_cover: uncertain candidates (default 16, at least 2 × query); "
                                "batchbald: BALD pre-filter")
    beta: float = _f(1.0, "density_weighted: exponent of the mean similarity to the pool")
    alpha: float = _f(1.0, "entropy_mi: weight α of α·minmax(entropy) − minmax(MI)/α (Nath et al.: 1)")
    mi_bins: int = _f(32, "entropy_mi: intensity bins of the image joint histograms (32; fewer for small images)")
    strategy_options: dict = field(default_factory=dict, metadata={
        "help": "any setting of the strategy by its own name (the [strategy] table of a TOML file); "
                "get_strategy checks them", "flag": False})
    gal_kernel: int = _f(4, "gal_cnn: convolution kernel side (the paper 4; its Keras reference code 3)")
    gal_pool: int = _f(2, "gal_cnn: max-pool side (the paper 2; its Keras reference code 5)")
    gal_hidden: int = _f(128, "gal_cnn: units of the hidden dense layer (128)")
    depth: int = _f(3, "U-Net levels")
    base_filters: int = _f(16, "U-Net filters of the first level (doubled per level)")
    dropout: float = _f(0.2, "U-Net dropout rate after every max-pool")
    residual: bool = _f(False, "U-Net residual blocks")
    norm: str = _f("batch", "U-Net normalisation: batch, or group (GroupNorm; at 8 filters it lost the boundary "
                   "class of nuclei3 for one initialisation in three set sizes, benchmarks/results/training_noise.md)")
    reference: bool = _f(True, "train one full-pool reference model per seed (the target of 'annotations to 95%')")
    reference_epochs: float | None = _f(40.0, "the full-pool reference's own budget in epochs over the pool (at least "
                                        "the rounds' schedule), so it is trained to convergence; none: the rounds' "
                                        "schedule")
    heatmaps: int = _f(4, "overlays saved per round (picked items)")
    save_per_item: bool = _f(True, "store per-item val/test metrics in the ledger (needed for Wilcoxon tests)")
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda, cuda:1, ...")

    def reference_config(self, n: int) -> SimConfig:
        """The settings that train the full-pool reference on ``n`` items: ``reference_epochs`` epochs (at least
        the rounds' schedule for ``n``), a fixed number of steps."""
        if self.reference_epochs is None:
            return self
        steps = max(self.steps_for(n), math.ceil(self.reference_epochs * n / self.batch_size))
        return self.replace(steps=steps, min_steps=steps, epochs=None)

    def query_at(self, round_: int) -> int:
        """Items picked at the end of round ``round_`` (1-based): ``query``, or what ``query_schedule`` says."""
        if not self.query_schedule:
            return self.query
        left = round_
        parts = [p.strip() for p in self.query_schedule.split(",") if p.strip()]
        for i, part in enumerate(parts):
            q, _, reps = part.lower().partition("x")
            try:
                q, reps = int(q), (int(reps) if reps else None)
            except ValueError:
                raise ValueError(f"query_schedule '{self.query_schedule}': '{part}' is not Q or QxR "
                                 "(e.g. '2x4,4')") from None
            if reps is None and i < len(parts) - 1:
                raise ValueError(f"query_schedule '{self.query_schedule}': only the last part may omit xR")
            if reps is None or left <= reps:
                return q
            left -= reps
        return q  # past the listed rounds: the last size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    def replace(self, **changes) -> SimConfig:
        return dataclasses.replace(self, **changes)


SVGD_SETTINGS = ("prior_precision", "svgd_objective", "svgd_kernel")
"""Settings only the ``svgd`` estimator reads: a run with another estimator does not depend on them."""


def unread_settings(estimator: str, augment: bool = True, reference: bool = True) -> tuple[str, ...]:
    """The settings a run with ``estimator`` (and ``augment``, ``reference`` as set) does not read: their
    values may differ between its configs, e.g. a run without augmentation never reads ``augment_style``."""
    return ((SVGD_SETTINGS if estimator != "svgd" else ()) + (() if augment else ("augment_style",))
            + (() if reference else ("reference_epochs",)))

LEGACY = {"optimizer": "adam", "lr_schedule": "constant", "ema_decay": 0.0, "augment_style": "affine",
          "norm": "batch", "source_weighting": "items", "classes": None, "ignore_index": 255, "warmup": 0.05,
          "query_schedule": None, "initial_source": None, "reference_epochs": None,
          "svgd_objective": "nath_log_dice", "svgd_kernel": "weight", "channels_last": False,
          "eval_over": "items"}
"""What a config saved before these keys existed meant: the fixed schedule of the committed studies
(constant-lr Adam, batch norm, affine augmentation, checkpoint picking, the mean over test items)."""

LEGACY_TRAINING = {"steps": 150, "lr": 1e-3, "weight_decay": 0.0, "epochs": None, "min_steps": 50,
                   "eval_every": 25, "checkpoint": "best", **LEGACY}
"""Every training setting of the committed studies' fixed schedule (``--schedule fixed`` in benchmarks)."""


def saved_config_defaults() -> dict:
    """Defaults for reading a saved ``config.json``: today's defaults, with :data:`LEGACY` for the keys a
    config saved before them lacks."""
    return {**dataclasses.asdict(SimConfig()), **LEGACY}


def from_saved(saved: dict, **overrides) -> SimConfig:
    """The config of a saved ``config.json`` as it ran: keys it lacks take their :data:`LEGACY` meaning, and
    a run saved before the spatial split of ``nuclei`` used the old grouping (``nuclei_grouped``)."""
    values = {**LEGACY, **saved}
    if "source_weighting" not in saved and values.get("dataset") == "nuclei":
        values["dataset"] = "nuclei_grouped"
    known = {f.name for f in fields(SimConfig)}
    return typed_config({**{k: v for k, v in values.items() if k in known}, **overrides})


def strategy_list(value: str) -> list[str]:
    """The strategy names of a comma-separated ``strategy`` setting (``"random, bald"``)."""
    return [s.strip() for s in str(value).split(",") if s.strip()]


def help_of(f: dataclasses.Field) -> str:
    """The help text of a config field."""
    return f.metadata.get("help", "")


def _coerce(name: str, value, default_type: type):
    """Convert a TOML/flag value to the field's type with an error naming the key."""
    if value is None:
        return None
    try:
        if default_type is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
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
          "float | None": float, "dict": dict}


def read_toml(path: str | Path, what: str = "config file", hint: str = "") -> dict:
    """A TOML file as a dict; a missing file or bad TOML is an error naming the file (and ``hint``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found{hint}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None


def read_toml_settings(path: str | Path) -> dict:
    """The run settings of a TOML file: a flat table or a ``[simulate]`` table, plus an optional
    ``[strategy]`` table (the strategy's own settings, stored as ``strategy_options``)."""
    doc = read_toml(path)
    nested = isinstance(doc.get("simulate"), dict)
    values = dict(doc["simulate"]) if nested else dict(doc)
    table = doc.get("strategy") if nested else None
    if isinstance(values.get("strategy"), dict):  # a flat file's [strategy] table (the name stays default)
        table = values.pop("strategy")
    if table is not None:
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [strategy] must be a table of the strategy's settings, e.g. beta = 2.0")
        values["strategy_options"] = {**values.get("strategy_options", {}), **table}
    return values


def load_config(path: str | Path | None = None, **overrides) -> SimConfig:
    """Defaults, then the TOML file (see :func:`read_toml_settings`), then ``overrides``.

    Unknown keys raise an error listing the valid ones; ``None`` overrides are ignored.
    """
    values: dict = read_toml_settings(path) if path is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return typed_config(values)


def typed_config(values: dict) -> SimConfig:
    """A :class:`SimConfig` from settings by name (``None`` kept; the string ``"none"`` means None for an
    optional setting); unknown keys raise an error listing the valid ones."""
    known = {f.name: f for f in fields(SimConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(known))}")
    typed = {}
    for k, v in values.items():
        kind = str(known[k].type)
        none = kind.endswith("| None") and isinstance(v, str) and v.lower() == "none"
        typed[k] = None if none else _coerce(k, v, _TYPES[kind])
    return SimConfig(**typed)
