"""The course notebook's model in Keras 3, written as the notebook writes it: hidden
`Dense(w, activation="relu", kernel_initializer=RandomNormal(stddev=...))` layers, each followed by
BatchNormalization (and Dropout), and a `Dense(10, activation="softmax")` output layer with Keras'
default initializer (glorot_uniform); Adam() and categorical cross-entropy on one-hot labels.

Shared by bench.py (speed) and fidelity.py (learning curves). Runs on the torch backend.
"""

from __future__ import annotations

import os


def keras():
    """Keras 3 on the torch backend (the `bench` extra: pip install -e ".[bench]")."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras as k

    return k


def build(widths: tuple[int, ...], dropout: float, stddevs=(0.039, 0.55)):
    """widths (784, ..., 10) -> a compiled keras.Sequential: the notebook's model."""
    k = keras()
    net = k.Sequential([k.Input((widths[0],))])
    for i, w in enumerate(widths[1:-1]):
        std = stddevs[min(i, len(stddevs) - 1)]
        net.add(k.layers.Dense(w, activation="relu",
                               kernel_initializer=k.initializers.RandomNormal(mean=0.0, stddev=std)))
        net.add(k.layers.BatchNormalization())
        if dropout:
            net.add(k.layers.Dropout(dropout))
    net.add(k.layers.Dense(widths[-1], activation="softmax"))  # default initializer, as the notebook
    net.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return net


def one_hot(y, classes: int = 10):
    """int labels [N] (numpy) -> float32 one-hot [N, classes], as the notebook's to_categorical."""
    import numpy as np

    return np.eye(classes, dtype="float32")[y]
