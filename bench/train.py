"""Training throughput (samples/s) of the note RNN variants on CPU, batch size from params.yaml (64).

Runs etude's real training step (note_rnn.train_batches, note_rnn.loss, Adam, gradient clipping) on
data/tokens/notes.npz, for rnn_baseline and rnn_stacked; reports the median over blocks of batches.
Reference: 5,900 samples/s for a straightforward Keras implementation of rnn_baseline
(TensorFlow 2.21, same kind of 2-core CPU). Target: rnn_baseline >= 1.5x the reference.

    python -m bench.train
"""

import itertools
import statistics
import time
from pathlib import Path

import torch

from bench import machine_note, print_table
from etude import params as etude_params
from etude.models import family
from etude.pipeline import NOTE_SEQUENCES
from etude.training import seed_everything

KERAS_SAMPLES_PER_S = 5900.0
TARGET_RATIO = 1.5
CPU = torch.device("cpu")


def samples_per_s(params, variant: str, blocks: int, block_batches: int, warmup: int = 10):
    config = params.variant(variant)
    seed_everything(config.seed, config.threads)
    note_rnn = family(config.model)
    data = note_rnn.load_data(config, Path(NOTE_SEQUENCES))
    model = note_rnn.build(config, note_rnn.model_meta(config, data)).to(CPU).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Epoch after epoch, as the training loop draws them.
    batches = itertools.chain.from_iterable(
        note_rnn.train_batches(data, config, epoch, CPU) for epoch in itertools.count())

    def step():
        loss, _terms = note_rnn.loss(model, next(batches), config, 0)
        optimizer.zero_grad()
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(block_batches):
            step()
        rates.append(block_batches * config.batch_size / (time.perf_counter() - t0))
    return statistics.median(rates), config


def main() -> None:
    if not Path(NOTE_SEQUENCES).exists():
        raise SystemExit(f"{NOTE_SEQUENCES} is missing: run `dvc repro tokenize` first")
    params = etude_params.load()
    rows = []
    for variant, blocks, block_batches in (("rnn_baseline", 3, 50), ("rnn_stacked", 3, 15)):
        rate, config = samples_per_s(params, variant, blocks, block_batches)
        ratio = rate / KERAS_SAMPLES_PER_S
        verdict = ("met" if ratio >= TARGET_RATIO else "MISSED") if variant == "rnn_baseline" else "-"
        rows.append([variant, f"{config.seq_len}", "x".join(map(str, config.lstm_units)), f"{config.batch_size}",
                     f"{blocks}x{block_batches}", f"{rate:,.0f}", f"{ratio:.2f}x", verdict])
    print(f"{machine_note()}; torch {torch.__version__}, {torch.get_num_threads()} threads; Keras reference "
          f"{KERAS_SAMPLES_PER_S:,.0f} samples/s (rnn_baseline), target >= {TARGET_RATIO}x\n")
    print_table(["variant", "seq_len", "lstm", "batch", "batches", "samples/s", "vs Keras", "target"], rows)


if __name__ == "__main__":
    main()
