"""Sampler speed (generated notes/s): etude's stateful batched samplers against re-running the
window.

LSTMs: the next-note task's sample, one LSTM step per note carrying the state, the whole generate
stage's batch (temperatures x num_samples from params.yaml) at once. Reference: the TensorFlow
tutorial's loop, one sample at a time, a full forward pass over the seq_len window for every note
(sample_by_window below). Target: ours >= 100x the reference.

Transformer: the same sampler, one cached forward step per note (each layer's keys and
values of the last seq_len notes kept), against note_transformer.sample_uncached, the same model
and batch re-run over the whole window for every note. The two draw the same notes while the
window fills (tests/test_note_transformer.py). Untrained weights: speed does not depend on them.

    python -m bench.generate
"""

from pathlib import Path

import numpy as np
import torch

from bench import machine_note, median_time, print_table
from etude import variants
from etude.batches import evenly_spaced
from etude.device import seed_everything
from etude.models import family_named, note_transformer
from etude.models.next_note.task import sample
from etude.pipeline import NOTE_SEQUENCES
from etude.variants import variant_config

TARGET_RATIO = 100.0


@torch.no_grad()
def sample_by_window(model, seed_window, temperature, num_notes, generator):
    """(num_notes, 3) raw notes, the tutorial's way: the whole (seq_len, 3) window through the model
    per note."""
    model.eval()
    window, notes = seed_window.clone(), []
    for _ in range(num_notes):
        logits, step, duration, _ = model(window[None])
        probs = torch.softmax(logits[0] / temperature, dim=-1)
        pitch = torch.multinomial(probs, 1, generator=generator)[0]
        note = torch.stack([pitch.to(window.dtype), step[0].clamp(min=0), duration[0].clamp(min=0)])
        notes.append(note)
        window = torch.cat([window[1:], note[None]])
    return torch.stack(notes)


def untrained_setup(params, variant: str):
    """The variant's untrained model and the generate stage's batch: seeds from test windows, one
    temperature per row."""
    config, settings = variant_config(params, variant), params.generate
    seed_everything(config.seed, config.threads)
    note_family = family_named(config.model)
    data = note_family.load_data(config, Path(NOTE_SEQUENCES))
    model = note_family.build(config, note_family.model_meta(data, config)).eval()
    batch = len(settings.temperatures) * settings.num_samples
    starts = evenly_spaced(data.window_starts("test", config.seq_len), batch)
    seeds = torch.from_numpy(data.features()[starts[:, None] + np.arange(config.seq_len)])
    temps = torch.tensor(settings.temperatures, dtype=torch.float32).repeat_interleave(
        settings.num_samples
    )
    return (
        config,
        model,
        seeds,
        temps,
        torch.Generator().manual_seed(config.seed),
        settings.num_notes,
    )


def measure(params, variant: str):
    config, model, seeds, temps, generator, n = untrained_setup(params, variant)
    ours_s = median_time(lambda: sample(model, seeds, temps, n, generator), repeats=5)
    window_s = median_time(
        lambda: sample_by_window(model, seeds[0], float(temps[0]), n, generator), repeats=3
    )
    return config, len(seeds), n, len(seeds) * n / ours_s, n / window_s


def measure_cache(params, variant: str):
    """Notes/s of the cached and the re-run Transformer sampler on the generate stage's batch."""
    config, model, seeds, temps, generator, n = untrained_setup(params, variant)
    cached_s = median_time(lambda: sample(model, seeds, temps, n, generator), repeats=3)
    rerun_s = median_time(
        lambda: note_transformer.sample_uncached(model, seeds, temps, n, generator),
        repeats=1,
        warmup=0,
    )
    return config, len(seeds), n, len(seeds) * n / cached_s, len(seeds) * n / rerun_s


def main() -> None:
    params = variants.load()
    print(
        f"{machine_note()}; {torch.get_num_threads()} torch threads; target >= {TARGET_RATIO:g}x\n"
    )
    rows = []
    for variant in ("rnn_baseline", "rnn_stacked"):
        config, batch, n, ours, ref = measure(params, variant)
        rows.append(
            [
                variant,
                config.seq_len,
                "x".join(map(str, config.lstm_units)),
                f"{batch}x{n}",
                f"{ours:,.0f}",
                f"1x{n}",
                f"{ref:,.0f}",
                f"{ours / ref:,.0f}x",
                "met" if ours / ref >= TARGET_RATIO else "MISSED",
            ]
        )
    print_table(
        [
            "variant",
            "seq_len",
            "lstm",
            "ours: batch x notes",
            "ours notes/s",
            "window: batch x notes",
            "window notes/s",
            "ratio",
            "target",
        ],
        rows,
    )
    print()
    rows = []
    for variant, entry in params.variants.items():
        if entry.get("model") == note_transformer.FAMILY.name:
            config, batch, n, cached, rerun = measure_cache(params, variant)
            rows.append(
                [
                    variant,
                    config.seq_len,
                    f"{config.layers}x{config.d_model}",
                    f"{batch}x{n}",
                    f"{cached:,.0f}",
                    f"{rerun:,.0f}",
                    f"{cached / rerun:.1f}x",
                ]
            )
    print_table(
        [
            "variant",
            "seq_len",
            "layers x width",
            "batch x notes",
            "cached notes/s",
            "re-run notes/s",
            "cache speed-up",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
