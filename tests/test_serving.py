"""The served generator, for real: a model logged as MLflow pyfunc answers requests with MIDI that
symusic reads, the same seed with the same bytes; it loads in a process where etude is installed
from its wheel and no checkout is on the path, and `mlflow models serve` answers /invocations."""

import base64
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import symusic
import torch

from etude import model_card, serving, tracking
from etude.errors import DataError
from etude.grids import FEATURES, num_rows
from etude.models import family_named
from etude.variants import variant_config
from tests.conftest import REPO, env, free_port, wait_for_http

PIP = [sys.executable, "-m", "pip"]
SERVE = [sys.executable, "-m", "mlflow", "models", "serve", "--host", "127.0.0.1", "-m"]
PRIMER = [[60, 0.0, 0.4], [64, 0.5, 0.4], [67, 0.5, 0.4], [72, 0.5, 0.8]]


@pytest.fixture(scope="module")
def logged(tmp_path_factory, params):
    """An (untrained) rnn_baseline and rhythm_vae logged as the train stage logs them."""
    root = tmp_path_factory.mktemp("serving")
    previous = os.environ.get("DVC_ROOT")
    os.environ["DVC_ROOT"] = str(root)
    saved = tracking.USER_TRACKING_URI
    tracking.USER_TRACKING_URI = None
    stats = {"step_mean": 0.1, "step_std": 0.2, "duration_mean": 0.3, "duration_std": 0.4}
    grid = params.grid
    metas = {
        "rnn_baseline": {"stats": stats},
        "rhythm_vae": {
            "shape": [
                len(FEATURES["rhythm"]),
                num_rows(grid, "rhythm"),
                grid.bars * grid.beats_per_bar * grid.steps_per_beat,
            ],
            "duration_range": [grid.duration_min, grid.duration_max],
            "grid": grid.model_dump(mode="json"),
            "drum_lanes": False,
            "unit_s": 0.125,
        },
    }
    uris = {}
    for variant, meta in metas.items():
        config = variant_config(params, variant)
        family = family_named(config.model)
        torch.manual_seed(0)
        model_card.save_model(
            root / "models" / variant, family, config, meta, family.build(config, meta)
        )
        with tracking.start_run("serving-test", "train", variant, root / f"{variant}.json"):
            model_id = serving.log(root / "models" / variant, variant, config, params.generate)
        uris[variant] = f"models:/{model_id}"
    yield root, uris
    tracking.USER_TRACKING_URI = saved
    if previous is None:
        os.environ.pop("DVC_ROOT")
    else:
        os.environ["DVC_ROOT"] = previous
    mlflow.set_tracking_uri(None)


def midi_of(answer: dict) -> symusic.Score:
    return symusic.Score.from_midi(base64.b64decode(answer["midi"]), ttype="second")


def test_a_next_note_model_continues_a_primer_with_the_same_bytes_for_a_seed(logged, sample_midi):
    _, uris = logged
    model = mlflow.pyfunc.load_model(uris["rnn_baseline"])
    request = {"primer": PRIMER, "n_notes": 40, "temperature": 1.0, "seed": 7}
    (answer,) = model.predict(request)
    assert len(answer["notes"]) == 40
    assert sum(len(t.notes) for t in midi_of(answer).tracks) == 40
    (again,) = model.predict(request)
    assert again["midi"] == answer["midi"]
    (other,) = model.predict(request | {"seed": 8})
    assert other["midi"] != answer["midi"]

    # Several requests in one call; a MIDI file as the primer (base64 over the wire).
    answers = model.predict(
        [request | {"n_notes": 8}, {"primer": PRIMER, "n_notes": 3, "temperature": 1.2, "seed": 1}]
    )
    assert [len(a["notes"]) for a in answers] == [8, 3]
    primer_midi = base64.b64encode(next(iter(sample_midi.values()))).decode()
    (from_midi,) = model.predict(
        {"primer_midi": primer_midi, "n_notes": 8, "temperature": 0.8, "seed": 1}
    )
    assert len(from_midi["notes"]) == 8


def test_a_bad_request_is_named(logged):
    _, uris = logged
    model = mlflow.pyfunc.load_model(uris["rnn_baseline"])
    with pytest.raises(DataError, match=r"primer: pitches must lie in 0\.\.127"):
        model.predict({"primer": [[200, 0.0, 0.5]], "n_notes": 4, "temperature": 1.0, "seed": 1})
    with pytest.raises(DataError, match="request primer_midi: not a MIDI file"):
        model.predict(
            {
                "primer_midi": base64.b64encode(b"hello").decode(),
                "n_notes": 4,
                "temperature": 1.0,
                "seed": 1,
            }
        )


def test_a_grid_vae_decodes_latent_points_at_a_tempo(logged):
    _, uris = logged
    model = mlflow.pyfunc.load_model(uris["rhythm_vae"])
    z = [[0.0, 0.0], [1.5, -1.0]]
    (answer,) = model.predict({"z": z, "bpm": 120.0, "onset_threshold": 0.05})
    assert len(answer["grids"]) == 2
    notes = answer["notes"]
    assert notes and max(n["start"] for n in notes) < 2 * 2 * 4 * 0.5 + 0.5  # two 2-bar windows
    assert sum(len(t.notes) for t in midi_of(answer).tracks) == len(notes)
    (slower,) = model.predict({"z": z, "bpm": 60.0, "onset_threshold": 0.05})
    assert max(n["start"] for n in slower["notes"]) > max(n["start"] for n in notes)


def test_the_model_loads_from_the_installed_wheel_without_a_checkout(logged, tmp_path):
    """pip install of etude's wheel into a fresh environment (dependencies from this one), then
    load and predict in a process whose path holds no checkout."""
    root, uris = logged
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    for package in ("etude", "stages"):  # built from a copy: setuptools writes build/ beside it
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__py*"))
    shutil.copy2(REPO / "pyproject.toml", source)
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # This environment's packages behind the new one's (a path in a .pth file: its own .pth
    # files, the editable install of the checkout among them, are not read).
    (new_site,) = venv.glob("lib/python*/site-packages")
    (new_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    (wheel,) = wheels.glob("etude-*.whl")
    subprocess.run(
        [venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    script = (
        "import json, sys, mlflow, etude\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "(answer,) = model.predict(json.loads(sys.argv[2]))\n"
        "print(json.dumps({'etude': etude.__file__, 'midi': answer['midi']}))\n"
    )
    request = {"primer": PRIMER, "n_notes": 12, "temperature": 1.0, "seed": 3}
    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    done = subprocess.run(
        [venv / "bin/python", "-c", script, uris["rnn_baseline"], json.dumps(request)],
        cwd=tmp_path,
        env=env() | {"MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert Path(found["etude"]).is_relative_to(venv) and not Path(found["etude"]).is_relative_to(
        REPO
    )
    (here,) = mlflow.pyfunc.load_model(uris["rnn_baseline"]).predict(request)
    assert found["midi"] == here["midi"]


def test_mlflow_models_serve_answers_invocations_with_midi(logged):
    import requests

    root, uris = logged
    port = free_port()
    store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    server = subprocess.Popen(
        [*SERVE, uris["rnn_baseline"], "--env-manager", "local", "--port", str(port)],
        env=env() | {"MLFLOW_TRACKING_URI": store},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping")
        request = {"primer": PRIMER, "n_notes": 120, "temperature": 1.0, "seed": 5}
        answered = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": [request]},
            timeout=60,
        )
        assert answered.status_code == 200, answered.text
        (answer,) = answered.json()["predictions"]
        assert sum(len(t.notes) for t in midi_of(answer).tracks) == 120
        (local,) = mlflow.pyfunc.load_model(uris["rnn_baseline"]).predict(request)
        assert answer["midi"] == local["midi"]
    finally:
        server.terminate()
        server.wait(timeout=30)
