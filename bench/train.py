"""Training throughput (samples/s) on CPU: etude's PyTorch next-note models beside the TensorFlow
music-generation tutorial's Keras model, all measured in this one run on the same training windows.

PyTorch rows (rnn_baseline, rnn_stacked, note_transformer where params.yaml has it): etude's real
training step (family.train_batches, family.loss, Adam, gradient clipping) on data/tokens/notes.npz.

Keras rows: the tutorial's model for rnn_baseline's settings (seq_len, LSTM units, loss weights,
positive pressure, lr from params.yaml): Input (seq_len, 3), pitch scaled by 1/vocab_size in the
model, LSTM, three Dense heads, SparseCategoricalCrossentropy for pitch and the tutorial's
mse_with_positive_pressure for step and duration, Adam, no gradient clipping (the tutorial has
none). It trains on the very batches that rnn_baseline's PyTorch row draws (family.train_batches,
handed over as numpy arrays), in two ways, and the faster one is the reference:

    train_on_batch        the tutorial's model.compile(...) and Keras' own train step (the one that
                          model.fit runs per batch), default compile options (no XLA on CPU)
    tf.function XLA       a custom GradientTape train step compiled with
                          tf.function(jit_compile=True)

Each row is warmed up first (Keras traces and compiles there), then timed in blocks of batches taken
in turn across the rows, so that other load on the machine falls on every row alike; the median over
a row's blocks is reported. Both frameworks use every core: torch's intra-op threads
(torch.get_num_threads(); params.yaml threads: 0) and TensorFlow's defaults (0: one per core).
Run it on an idle machine (the first line printed gives the load): with more busy processes than
cores, torch's OpenMP threads wait on each other at every op, and a PyTorch step was seen to take
100x longer, while TensorFlow's thread pool slows down gently. The PyTorch LSTM has one bias
vector more per layer than Keras' (params). Target: rnn_baseline in PyTorch >= 2x the faster Keras
way. The last row times rnn_baseline's LSTM layer alone (forward and backward through oneDNN's
kernels, without heads, loss or optimiser): the ceiling of any PyTorch training step built on
nn.LSTM.

    python -m bench.train                          # the full run, about a minute on an idle machine
    python -m bench.train --blocks 1 --batches 2   # a smoke run

Without TensorFlow (`pip install -e .[bench]`), the PyTorch rows alone are measured.
"""

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from bench import machine_note, print_table
from etude import variants
from etude.device import seed_everything
from etude.models import family_named
from etude.pipeline import NOTE_SEQUENCES
from etude.training import make_optimizer
from etude.variants import variant_config

TARGET_RATIO = 2.0
CPU = torch.device("cpu")
KERAS_VARIANT = (
    "rnn_baseline"  # the variant whose settings the Keras model takes, and the one judged
)
# Batches per timed block for each PyTorch variant, fewer for the heavier ones; the Keras rows take
# KERAS_VARIANT's.
TORCH_VARIANTS = {"rnn_baseline": 50, "rnn_stacked": 15, "note_transformer": 15}


@dataclass
class Row:
    variant: str
    framework: str
    config: BaseModel  # the variant's effective configuration
    size: int  # trainable parameters
    block_batches: int
    step: Callable[[], None]  # one training step on the next batch
    rates: list[float] = field(default_factory=list)  # samples/s of each timed block

    def time_block(self) -> None:
        t0 = time.perf_counter()
        for _ in range(self.block_batches):
            self.step()
        self.rates.append(self.block_batches * self.config.batch_size / (time.perf_counter() - t0))

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def endless_batches(note_family, data, config):
    """Epoch after epoch, as the training loop draws them."""
    return itertools.chain.from_iterable(
        note_family.train_batches(data, config, epoch, CPU) for epoch in itertools.count()
    )


def load(config):
    note_family = family_named(config.model)
    return note_family, note_family.load_data(config, Path(NOTE_SEQUENCES))


def torch_setup(params, variant: str):
    """A variant's configuration, family, freshly built model and endless training batches."""
    config = variant_config(params, variant)
    seed_everything(config.seed, config.threads)
    note_family, data = load(config)
    model = note_family.build(config, note_family.model_meta(data, config)).to(CPU).train()
    return config, note_family, model, endless_batches(note_family, data, config)


def torch_row(params, variant: str, block_batches: int) -> Row:
    config, note_family, model, batches = torch_setup(params, variant)
    optimizer = make_optimizer(model, config.lr)

    def step():
        loss, _terms = note_family.loss(model, next(batches), config, 0)
        optimizer.zero_grad()
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

    size = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Row(variant, "PyTorch", config, size, block_batches, step)


def lstm_layer_row(params, block_batches: int) -> Row:
    """KERAS_VARIANT's LSTM layer alone, forward and backward (oneDNN's kernels), on the same
    batches: no heads, loss or optimiser. No training step built on nn.LSTM can be faster than this
    row."""
    config, _family, model, batches = torch_setup(params, KERAS_VARIANT)
    (lstm,) = model.lstms

    def step():
        inputs, _ = next(batches)
        lstm.zero_grad()
        lstm((inputs - model.shift) / model.scale)[0].sum().backward()

    return Row(
        KERAS_VARIANT,
        "PyTorch, LSTM layer alone",
        config,
        sum(p.numel() for p in lstm.parameters()),
        block_batches,
        step,
    )


def import_tensorflow():
    """TensorFlow, or None where the bench extra is not installed. Its C++ info lines are
    silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def keras_model(tf, config):
    """The tutorial's model; its dataset's pitch / vocab_size scaling is the model's first
    operation."""
    keras = tf.keras
    (units,) = config.lstm_units
    inputs = keras.Input((config.seq_len, 3))
    scaled = inputs * np.array([1 / config.vocab_size, 1, 1], dtype=np.float32)
    x = keras.layers.LSTM(units)(scaled)
    outputs = {
        name: keras.layers.Dense(size, name=name)(x)
        for name, size in (("pitch", config.vocab_size), ("step", 1), ("duration", 1))
    }
    return keras.Model(inputs, outputs)


def keras_losses(tf, config) -> dict:
    def mse_with_positive_pressure(y_true, y_pred):
        return tf.reduce_mean(
            (y_true - y_pred) ** 2 + config.positive_pressure * tf.maximum(-y_pred, 0.0)
        )

    return {
        "pitch": tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "step": mse_with_positive_pressure,
        "duration": mse_with_positive_pressure,
    }


def train_on_batch(tf, model, config):
    """The tutorial's compile and Keras' own train step, fed one batch at a time."""
    model.compile(
        loss=keras_losses(tf, config),
        loss_weights=config.loss_weights.model_dump(),
        optimizer=tf.keras.optimizers.Adam(learning_rate=config.lr),
    )
    return lambda inputs, targets: model.train_on_batch(
        inputs, {"pitch": targets[:, 0], "step": targets[:, 1], "duration": targets[:, 2]}
    )


def xla_train_step(tf, model, config):
    """The same loss and optimizer in a GradientTape step compiled by XLA."""
    losses, weights = keras_losses(tf, config), config.loss_weights.model_dump()
    optimizer = tf.keras.optimizers.Adam(learning_rate=config.lr)

    @tf.function(jit_compile=True)
    def train_step(inputs, targets):
        labels = {"pitch": targets[:, 0], "step": targets[:, 1:2], "duration": targets[:, 2:3]}
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = tf.add_n(
                [weights[head] * losses[head](labels[head], outputs[head]) for head in losses]
            )
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )

    return train_step


def keras_row(tf, params, way: str, make_step, block_batches: int) -> Row:
    config = variant_config(params, KERAS_VARIANT)
    tf.keras.utils.set_random_seed(config.seed)
    note_family, data = load(config)
    model = keras_model(tf, config)
    train = make_step(tf, model, config)
    batches = endless_batches(note_family, data, config)

    def step():
        inputs, targets = next(batches)
        train(inputs.numpy(), targets.numpy())

    return Row(KERAS_VARIANT, f"Keras {way}", config, model.count_params(), block_batches, step)


def thread_note(tf) -> str:
    note = f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads"
    if tf is None:
        return note + "; TensorFlow not installed"
    cores = len(os.sched_getaffinity(0))
    intra, inter = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    return (
        note + f"; TensorFlow {tf.__version__} (Keras {tf.keras.__version__}): "
        f"intra-op {intra}, inter-op "
        f"{inter} (0: one thread per core, {cores} here), oneDNN "
        + ("off" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "on")
    )


def table_row(row: Row, keras: float | None) -> list:
    return [
        f"{row.variant} ({row.framework})",
        row.config.seq_len,
        f"{row.size:,}",
        row.config.batch_size,
        f"{len(row.rates)}x{row.block_batches}",
        f"{row.rate:,.0f}",
        f"{row.rate / keras:.2f}x" if keras else "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--blocks", type=int, default=5, help="timed blocks per row; the median is reported"
    )
    parser.add_argument(
        "--batches", type=int, help="batches per block for every row (default: each row's own)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed batches per row before the blocks"
    )
    args = parser.parse_args()
    if not Path(NOTE_SEQUENCES).exists():
        raise SystemExit(f"{NOTE_SEQUENCES} is missing: run `dvc repro tokenize` first")
    params = variants.load()
    load_note = machine_note()
    tf = import_tensorflow()
    if tf is None:
        print(
            "TensorFlow is not installed: `pip install -e .[bench]` for the Keras rows; "
            "PyTorch rows only\n"
        )

    keras_rows = []
    if tf is not None:
        keras_rows = [
            keras_row(tf, params, way, make_step, args.batches or TORCH_VARIANTS[KERAS_VARIANT])
            for way, make_step in (
                ("train_on_batch", train_on_batch),
                ("tf.function XLA", xla_train_step),
            )
        ]
    torch_rows = []
    for variant, block_batches in TORCH_VARIANTS.items():
        if variant in params.variants:
            torch_rows.append(torch_row(params, variant, args.batches or block_batches))
        else:
            print(f"{variant}: no such variant in params.yaml; its row is skipped\n")

    layer_row = lstm_layer_row(params, args.batches or TORCH_VARIANTS[KERAS_VARIANT])
    rows = keras_rows + torch_rows + [layer_row]
    for row in rows:
        for _ in range(args.warmup):
            row.step()
    for _ in range(args.blocks):
        for row in rows:
            row.time_block()

    keras = max((row.rate for row in keras_rows), default=None)
    print(f"{load_note}\n{thread_note(tf)}\n")
    print_table(
        ["variant (framework)", "seq_len", "params", "batch", "batches", "samples/s", "vs Keras"],
        [table_row(row, keras) for row in rows],
    )
    if keras:
        ratio = next(row.rate for row in torch_rows if row.variant == KERAS_VARIANT) / keras
        print(
            f"\nTarget: {KERAS_VARIANT} in PyTorch >= {TARGET_RATIO}x the faster Keras way: "
            f"{ratio:.2f}x, " + ("met" if ratio >= TARGET_RATIO else "MISSED")
        )
        print(
            f"Ceiling: its LSTM layer alone (forward and backward, nothing else) runs at "
            f"{layer_row.rate / keras:.2f}x Keras; no training step on nn.LSTM can be faster here."
        )


if __name__ == "__main__":
    main()
