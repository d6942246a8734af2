"""The served generator's latency: one /invocations request for 120 notes to `mlflow models serve`,
p50 and p95 over many requests, beside the same request to the loaded pyfunc in process (what
the HTTP server, JSON and base64 add).

The variant's trained model (models/<variant>/, from `dvc repro`) is logged into a scratch MLflow
store as train@V logs it, so the project's store is left alone.

    python -m bench.serve                              # note_transformer, 120 notes, 50 requests
    python -m bench.serve --variant rnn_baseline --requests 100
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine_note, print_table

ROOT = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, "-m", "mlflow", "models", "serve", "-m"]
PRIMER = [[60, 0.0, 0.4], [64, 0.5, 0.4], [67, 0.5, 0.4], [72, 0.5, 0.8]]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * len(ordered)))]


def _row(p50: float, p95: float, notes: int) -> list[str]:
    return [f"{p50 * 1e3:.0f}", f"{p95 * 1e3:.0f}", f"{notes / p50:.0f}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--variant", default="note_transformer")
    parser.add_argument("--notes", type=int, default=120)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    print(machine_note())
    model_dir = ROOT / "models" / args.variant
    if not (model_dir / "model.json").exists():
        sys.exit(f"NOT BENCHMARKED: {model_dir} has no trained model: `dvc repro` first")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        os.environ["DVC_ROOT"] = scratch  # the scratch store: mlruns/ under it
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        import mlflow
        import requests

        from etude import serving, tracking
        from etude.model_card import load_model
        from etude.variants import load

        params = load(ROOT / "params.yaml")
        config, _, _ = load_model(model_dir)
        with tracking.start_run("bench-serve", "train", args.variant, Path(scratch) / "link.json"):
            uri = f"models:/{serving.log(model_dir, args.variant, config, params.generate)}"
        request = {"primer": PRIMER, "n_notes": args.notes, "temperature": 1.0, "seed": 1}

        model = mlflow.pyfunc.load_model(uri)
        model.predict(request)  # warm-up
        local = []
        for seed in range(args.requests):
            t0 = time.perf_counter()
            model.predict(request | {"seed": seed})
            local.append(time.perf_counter() - t0)

        port = free_port()
        server = subprocess.Popen(
            [*SERVE, uri, "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            env=os.environ | {"MLFLOW_TRACKING_URI": tracking.tracking_uri()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            t0 = time.perf_counter()
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.2)
                if time.perf_counter() - t0 > 180:
                    sys.exit("NOT BENCHMARKED: mlflow models serve did not answer /ping in 180 s")
            ready = time.perf_counter() - t0
            url = f"http://127.0.0.1:{port}/invocations"
            requests.post(url, json={"dataframe_records": [request]}, timeout=120)  # warm-up
            served = []
            for seed in range(args.requests):
                t0 = time.perf_counter()
                answer = requests.post(
                    url, json={"dataframe_records": [request | {"seed": seed}]}, timeout=120
                )
                served.append(time.perf_counter() - t0)
                answer.raise_for_status()
        finally:
            server.terminate()
            server.wait(timeout=30)

    (lp50, lp95), (sp50, sp95) = percentiles(local), percentiles(served)
    print(
        f"{args.variant}: {args.notes} notes a request, {args.requests} requests; "
        f"server ready in {ready:.1f} s"
    )
    print_table(
        ["path", "p50 ms", "p95 ms", "notes/s at p50"],
        [
            ["pyfunc predict, in process", *_row(lp50, lp95, args.notes)],
            ["POST /invocations", *_row(sp50, sp95, args.notes)],
        ],
    )
    print(f"HTTP, JSON and base64 add {(sp50 - lp50) * 1e3:.0f} ms at p50 ({sp50 / lp50:.2f}x)")


if __name__ == "__main__":
    main()
