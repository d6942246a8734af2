"""Benchmark scripts. Run each from the repository root: `python -m bench.<name>`.

ingest     ingest throughput (symusic in a thread pool) vs a serial pretty_midi loop
train      training samples/s on CPU: the PyTorch models beside the tutorial's Keras model, same run
generate   sampler notes/s (LSTM state, Transformer key/value cache) vs re-running the window
           per note
dvc_noop   `dvc repro` and `dvc status` when nothing changed
music      music.json's OA/KLD vs mgeval's procedure (gaussian_kde + quad) on the same distances
mel        the mel stage and spectral-VAE training on maestro-bench rendered audio, with peak memory
scale      the whole DAG on a MAESTRO directory stage by stage, projected to full MAESTRO and
           N nodes
serve      the served generator: /invocations p50/p95 for 120 notes beside in-process predict
"""

import statistics
import time


def median_time(fn, repeats=3, warmup=1):
    """Median wall-clock seconds of fn() over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(header, rows):
    """An aligned table: first column left-aligned, the others right-aligned."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine_note():
    """One line on the CPU's load, printed first: other processes on the cores make figures low."""
    import os

    load, cores = os.getloadavg()[0], os.cpu_count()
    note = f"{cores} cores, 1-min load average {load:.2f} before this run"
    if load > 0.5:
        note += " -- WARNING: other processes may be busy; figures may be low and noisy"
    return note
