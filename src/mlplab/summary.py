"""A Keras-style model summary: layers, output shapes and parameter counts, named and counted
exactly as Keras names and counts them (BatchNorm's moving statistics are non-trainable
parameters), so `mlplab summary seed` prints the numbers the course notebook printed."""

from __future__ import annotations

from .config import RunConfig


def summary_rows(cfg: RunConfig) -> list[tuple[str, str, int, int, str]]:
    """(layer, output shape, params, non-trainable params, kernel initializer or '') per layer,
    named as Keras names them."""
    rows, counters = [], {"dense": 0, "batch_normalization": 0, "activation": 0, "dropout": 0}

    def name(kind):
        i = counters[kind]
        counters[kind] += 1
        return kind if i == 0 else f"{kind}_{i}"

    w, inits = cfg.widths, cfg.layer_inits()
    for i in range(len(w) - 1):
        last = i == len(w) - 2
        init, std = inits[i]
        rows.append((f"{name('dense')} (Dense)", f"(None, {w[i + 1]})", w[i] * w[i + 1] + w[i + 1], 0,
                     init if std is None else f"{init}(stddev={std:g})"))
        if last:
            break
        bn = (f"{name('batch_normalization')} (BatchNormalization)", f"(None, {w[i + 1]})",
              4 * w[i + 1], 2 * w[i + 1], "")
        act = (f"{name('activation')} (Activation: {cfg.activation})", f"(None, {w[i + 1]})", 0, 0, "")
        if cfg.batch_norm and cfg.bn_position == "before":
            rows.append(bn)
        rows.append(act)
        if cfg.batch_norm and cfg.bn_position == "after":
            rows.append(bn)
        if cfg.dropout > 0:
            rows.append((f"{name('dropout')} (Dropout {cfg.dropout:g})", f"(None, {w[i + 1]})", 0, 0, ""))
    return rows


def param_counts(cfg: RunConfig) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) exactly as Keras counts them (BN moving stats count)."""
    rows = summary_rows(cfg)
    total = sum(r[2] for r in rows)
    frozen = sum(r[3] for r in rows)
    return total, total - frozen, frozen
