"""Validated, frozen configuration of one training run (`RunConfig`): every key a suite may set,
its allowed values, the run id, and the group key that decides which runs train fused.

Suites (the TOML files that list runs) are in `suite.py`. Every key of a suite's experiment,
`[defaults]` or grid is a `RunConfig` field; unknown keys are rejected with the field path and
the allowed names.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal, NamedTuple

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from .choices import (  # noqa: F401  (re-exported: the allowed values of a run's settings)
    ACTIVATION_NAMES,
    DATA_SUFFIXES,
    DATASET_NAMES,
    DEFAULT_INIT,
    INITIALIZER_NAMES,
    LAYOUT_NAMES,
    NORM_NAMES,
    OPTIMIZER_NAMES,
    SCALED_INITIALIZERS,
    check_dataset_name,
    one_of,
    parse_architecture,
    plain_value,
)
from .errors import UserError
from .inputs import MAX_SEED, Frozen, explain

# What the members of a fused group share (shapes and code path), by RunConfig attribute: two
# runs train fused exactly when these are equal (`group_key`; group.GroupSettings names them).
SHARED = ("dataset", "validation", "val_size", "train_size", "widths", "activation", "norm",
          "norm_position", "residual", "bn_momentum", "bn_epsilon", "optimizer", "batch_size",
          "precision", "label_smoothing", "input_norm", "augmentation")


class Augmentation(NamedTuple):
    """On-device augmentation: maximum shift (pixels), rotation and shear (degrees), relative
    zoom, elastic distortion strength and smoothness (pixels)."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 0.0

    @property
    def on(self) -> bool:
        return any((self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha))


class RunConfig(Frozen):
    """Everything that determines one training run, seed included. Its hash is the run id.

    Strict types: a whole number where one is needed (not true, 2.0 or "2"), a number where a
    number is (an int is fine: TOML writes lr = 1 as one), true/false for switches, text for
    names. A bad value raises UserError (from Python too) naming the field and what is allowed."""

    # strict: no lax coercion (batch_size = true is not 1, lr = "0.01" is not a number); ints
    # are still accepted where a float is, and stored as floats (so run ids are unchanged)
    model_config = ConfigDict(strict=True)

    name: str = "run"
    # data
    dataset: str = "mnist"
    validation: Literal["split", "test"] = "split"
    val_size: int = Field(10_000, gt=0)
    train_size: int | None = Field(None, gt=0, description="use only the first N training images")
    # model
    architecture: str = "784-512-256-10"
    # input width (pixels) and classes of the dataset, for images other than 28x28 / 10 classes:
    # the architecture is written in full with them ("560-64-3") or as hidden sizes ("64")
    inputs: int = Field(784, gt=0, le=1 << 24)
    classes: int = Field(10, ge=2, le=1000)
    activation: str = "relu"
    # the norm layer of every hidden block: none, batch (BatchNorm) or layer (LayerNorm);
    # batch_norm = true/false and bn_position are synonyms of norm = "batch"/"none" and
    # norm_position, kept in step with them (older suites and stored runs use them)
    norm: Literal["none", "batch", "layer"] = "none"
    norm_position: Literal["before", "after"] = "after"  # relative to the activation
    batch_norm: StrictBool = False  # true/false only: "yes" or 1 are typos, not settings
    bn_position: Literal["before", "after"] = "after"
    bn_momentum: float = Field(0.99, gt=0, lt=1)  # Keras convention: moving = m*moving + (1-m)*batch
    bn_epsilon: float = Field(1e-3, gt=0)  # the norm layer's epsilon (batch or layer; Keras' 1e-3)
    # BatchNorm statistics used to evaluate: "keras" (the moving averages, as Keras) or "precise"
    # (recomputed over the training split with the final weights, PreciseBN; precise_bn.py).
    # No effect without BatchNorm; not a group setting (only the evaluation differs)
    bn_eval: Literal["keras", "precise"] = "keras"
    residual: StrictBool = False  # identity skip around every hidden block of equal widths
    dropout: float = Field(0.0, ge=0, lt=1)
    init: str | None = None  # hidden layers; None: chosen by activation (DEFAULT_INIT, else glorot_uniform)
    # random_normal/uniform scale; a list gives one per dense layer (the output layer's entry is used
    # only when output_init takes a stddev), its last value repeating
    init_stddev: list[float] | float = 0.05
    output_init: str = "glorot_uniform"  # the output layer's: Keras' default for Dense, as in the notebook
    # optimizer
    optimizer: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # for optimizer momentum/nesterov
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-7, gt=0)  # Keras default
    rho: float = Field(0.9, gt=0, lt=1)  # rmsprop decay
    # recipes
    lr_schedule: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    warmup_epochs: int = Field(0, ge=0)  # linear warm-up to lr over these epochs (any schedule)
    lr_step_epochs: int = Field(10, gt=0)  # step: multiply by lr_gamma every this many epochs
    lr_gamma: float = Field(0.1, gt=0, le=1)
    lr_min_factor: float = Field(0.0, ge=0, le=1)  # cosine/onecycle floor, as a fraction of lr
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    max_norm: float | None = Field(None, gt=0)  # cap on each unit's incoming weight norm
    input_norm: Literal["scale", "standardize"] = "scale"  # x/255, or (x/255 - mean) / std
    # augmentation on the training device, per sample (off by default)
    aug_shift: float = Field(0.0, ge=0, le=14)  # max translation, pixels
    aug_rotate: float = Field(0.0, ge=0, le=180)  # max rotation, degrees
    aug_scale: float = Field(0.0, ge=0, lt=1)  # max relative zoom in/out
    aug_shear: float = Field(0.0, ge=0, le=45)  # max shear, degrees
    aug_elastic_alpha: float = Field(0.0, ge=0)  # elastic distortion strength, pixels
    aug_elastic_sigma: float = Field(5.0, gt=0)  # smoothness of the elastic field, pixels
    # loop
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: matmuls in bf16, the rest fp32 (opt-in)
    batch_size: int = Field(128, gt=0)
    epochs: int = Field(10, gt=0)
    patience: int | None = Field(None, gt=0, description="early stopping on val_loss; None = off")
    restore_best: StrictBool = True
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="before")
    @classmethod
    def _synonyms(cls, data: Any) -> Any:
        """norm <-> batch_norm and norm_position <-> bn_position: one meaning, both spellings
        filled in; a contradiction is an error, not a guess. numpy scalars (a grid built with
        np.linspace) become the Python numbers they hold."""
        if not isinstance(data, dict):
            return data
        data = {k: plain_value(v) for k, v in data.items()}
        bn, norm = data.get("batch_norm"), data.get("norm")
        if isinstance(bn, bool):  # anything else: StrictBool says what is wrong
            if norm is None:
                norm = "batch" if bn else "none"
            elif bn != (norm == "batch"):
                raise ValueError(f"batch_norm = {str(bn).lower()} contradicts norm = {norm!r}; "
                                 "set norm alone (none, batch or layer)")
        if norm is not None:
            data["norm"] = norm
            if isinstance(norm, str) and isinstance(bn, bool | None):
                data["batch_norm"] = norm == "batch"
        pos, bpos = data.get("norm_position"), data.get("bn_position")
        if pos is not None and bpos is not None and pos != bpos:
            raise ValueError(f"bn_position = {bpos!r} contradicts norm_position = {pos!r}; set "
                             "norm_position alone")
        if pos is not None or bpos is not None:
            data["norm_position"] = data["bn_position"] = pos if pos is not None else bpos
        return data

    @field_validator("architecture")
    @classmethod
    def _arch(cls, v: str) -> str:
        parse_architecture(v)
        return v

    @field_validator("activation")
    @classmethod
    def _act(cls, v: str) -> str:
        return one_of("activation", v, ACTIVATION_NAMES)

    @field_validator("optimizer")
    @classmethod
    def _opt(cls, v: str) -> str:
        return one_of("optimizer", v, OPTIMIZER_NAMES)

    @field_validator("init")
    @classmethod
    def _init(cls, v: str | None) -> str | None:
        return None if v is None else one_of("init", v, INITIALIZER_NAMES)

    @field_validator("output_init")
    @classmethod
    def _output_init(cls, v: str) -> str:
        return one_of("output_init", v, INITIALIZER_NAMES)

    @field_validator("init_stddev", mode="before")
    @classmethod
    def _stddev(cls, v):
        values = v if isinstance(v, list) else [v]
        if not values or any(isinstance(s, bool) or not isinstance(s, int | float)
                             or not math.isfinite(s) or s <= 0 for s in values):
            raise ValueError("init_stddev must be a positive number or a non-empty list of them")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return check_dataset_name(v)

    @model_validator(mode="after")
    def _residual(self) -> RunConfig:
        if self.residual and not self.residual_blocks():
            raise ValueError(
                f"residual = true needs a hidden layer as wide as its input (an identity skip "
                f"adds the two), and {self.architecture} has none; e.g. 784-512-512-512-10 "
                "(skips around the 2nd and 3rd hidden layers)")
        return self

    # derived values -------------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, ...]:
        return parse_architecture(self.architecture, self.inputs, self.classes)

    def residual_blocks(self) -> list[int]:
        """Hidden blocks (0-based) whose input and output widths match: where a skip can go."""
        w = self.widths
        return [i for i in range(len(w) - 2) if w[i] == w[i + 1]]

    @property
    def init_name(self) -> str:
        return self.init or DEFAULT_INIT.get(self.activation, "glorot_uniform")

    def stddevs(self) -> list[float]:
        """The stddev for each dense layer (a short list repeats its last value)."""
        values = self.init_stddev if isinstance(self.init_stddev, list) else [self.init_stddev]
        n = len(self.widths) - 1
        return [values[min(i, len(values) - 1)] for i in range(n)]

    def layer_inits(self) -> list[tuple[str, float | None]]:
        """(initializer, stddev or None when it takes none) for each dense layer: `init` for the
        hidden layers, `output_init` for the last one, as a Keras model states them per layer."""
        names = [self.init_name] * (len(self.widths) - 2) + [self.output_init]
        return [(n, s if n in SCALED_INITIALIZERS else None)
                for n, s in zip(names, self.stddevs(), strict=True)]

    @property
    def run_id(self) -> str:
        """12 hex digits of the sha256 of the canonical JSON of the non-default fields: same
        config, same id; and a field added later with a default that keeps the old behaviour
        leaves existing ids (and so resume) intact."""
        values = self.model_dump(mode="json", exclude_defaults=True)
        # Runs stored before `output_init` existed drew the output layer like the hidden layers.
        # The id names output_init only where it differs from that, so an unchanged meaning keeps
        # its id and a changed one (the new glorot_uniform default after He or random_normal
        # hidden layers) gets a new id instead of resuming from the old weights' results.
        values.pop("output_init", None)
        if self.output_init != self.init_name:
            values["output_init"] = self.output_init
        # Before `norm` existed, batch_norm/bn_position said it all: ids keep that spelling, and
        # name norm/norm_position only for what they alone can say (layer norm)
        values.pop("norm", None)
        values.pop("norm_position", None)
        if self.norm == "layer":
            values["norm"] = "layer"
            values.pop("bn_position", None)
            if self.norm_position != "after":
                values["norm_position"] = self.norm_position
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def group_key(self) -> tuple:
        """Members with equal keys train as one fused group: same shapes, same code path (SHARED).
        Everything else (seed, lr, weight decay, dropout rate, init, epochs, patience) may differ:
        a member with dropout 0 draws masks of ones, so it trains exactly as it would alone."""
        return tuple(getattr(self, name) for name in SHARED)

    @property
    def augmentation(self) -> Augmentation:
        """The augmentation settings by name (elastic sigma counts only with an alpha)."""
        return Augmentation(self.aug_shift, self.aug_rotate, self.aug_scale, self.aug_shear,
                            self.aug_elastic_alpha,
                            self.aug_elastic_sigma if self.aug_elastic_alpha else 0.0)

    @property
    def augments(self) -> bool:
        return self.augmentation.on


RUN_FIELDS = tuple(RunConfig.model_fields)


def validate_run(values: dict[str, Any], where: str) -> RunConfig:
    """A RunConfig from plain values, or a UserError naming `where`, the field and what is allowed."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as e:
        raise UserError(f"{where}: {explain(e, RUN_FIELDS)}") from None
