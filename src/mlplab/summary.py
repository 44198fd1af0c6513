"""A Keras-style model summary: layers, output shapes and parameter counts, named and counted
exactly as Keras names and counts them (BatchNorm's moving statistics are non-trainable
parameters, LayerNormalization has 2·H), so `mlplab summary seed` prints the numbers the course
notebook printed. The rows come from the same layer plan the engine builds (layers.plan), each
layer kind giving its own rows."""

from __future__ import annotations

from .config import RunConfig
from .group import GroupSettings
from .layers import LAYERS, Row, plan


def summary_rows(cfg: RunConfig) -> list[Row]:
    """(layer, output shape, params, non-trainable params, kernel initializer or '') per layer,
    named as Keras names them (dense, dense_1, ...)."""
    counters: dict[str, int] = {}

    def name(kind: str) -> str:
        i = counters.get(kind, 0)
        counters[kind] = i + 1
        return kind if i == 0 else f"{kind}_{i}"

    return [row for spec in plan(GroupSettings.of(cfg), cfg.dropout > 0)
            for row in LAYERS[spec.kind].summary(spec, cfg, name)]


def param_counts(cfg: RunConfig) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) exactly as Keras counts them (BN moving stats count)."""
    rows = summary_rows(cfg)
    total = sum(r[2] for r in rows)
    frozen = sum(r[3] for r in rows)
    return total, total - frozen, frozen
