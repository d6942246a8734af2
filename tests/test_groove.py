"""Timeshift judged on a corpus with real groove: drum performances in the Groove MIDI Dataset
layout.

No pinned PyPI distribution ships Groove MIDI Dataset files or other drum performances (checked:
the sdists of miditok 3.1.0, note-seq, magenta 2.1.3, muspy 0.5.0, mirdata 1.0.0, pretty_midi
0.2.11, groover 0.2.2; miditok's multitrack files hold sequenced pop drum parts, mostly on the
grid). So the tests write drum performances with a swing they know: 16th-note hi-hats whose every
second 16th is late by SWING of a 16th, a backbeat snare laid back by LAID_BACK, kick patterns
varied per bar, velocity accents and seeded timing jitter, each file at its own tempo, in
info.csv's layout.
"""

from __future__ import annotations

import io
import json
import sys
import time

import mido
import numpy as np
import pandas as pd
import pretty_midi
import pytest
import torch
from ruamel.yaml import YAML

from etude import grids, sources
from etude import params as P
from etude import variants as V
from etude.ingest import OK, QUARANTINED, ingest, usable
from etude.midi import write_notes
from etude.model_card import load_model
from etude.models import grid_vae
from etude.sequences import NoteSequences
from etude.training import TrainPaths, train
from etude.variants import variant_config
from tests.conftest import REPO, edit_params, make_project, run

TICKS_PER_BEAT = 960
SIXTEENTH = TICKS_PER_BEAT // 4
SWING = 0.25  # notes on every second 16th are late by a quarter of a 16th: timeshift 2 * 0.25 = 0.5
LAID_BACK = 0.1  # backbeat snares late by a tenth of a 16th: timeshift 0.2
JITTER = 0.02  # timing noise, standard deviation in 16ths: 0.04 in timeshift
KICK, SNARE, CLOSED_HAT, OPEN_HAT = 36, 38, 42, 46
KICK_PATTERNS = (
    [0, 8],
    [0, 8, 10],
    [0, 6, 8],
    [0, 7, 8],
    [0, 8, 11, 14],
)  # 16th steps of a 4/4 bar
BARS = 16
BPMS = (84, 92, 100, 108, 116, 124)
# 4-4 files by split; one more 3-4 file, one listed but absent, and one whose MIDI has no tempo
# event.
SPLIT_COUNTS = {"train": 12, "validation": 3, "test": 3}
WALTZ = "drummer2/session1/19_jazz_100_beat_3-4.mid"
ABSENT = "drummer2/session1/20_rock_100_beat_4-4.mid"


def corpus_path(number: int) -> tuple[str, float]:
    """(midi_filename, bpm) of the corpus's 4-4 file `number`, named as in the Groove MIDI
    Dataset."""
    bpm = BPMS[number % len(BPMS)]
    return f"drummer{1 + number % 2}/session1/{number}_funk_{bpm}_beat_4-4.mid", bpm


NO_TEMPO_EVENT, _ = corpus_path(2)


def drum_performance(
    bpm: float, seed: int, beats_per_bar: int = 4, tempo_event: bool = True
) -> bytes:
    """A MIDI drum performance on channel 10 with the module's swing, at `bpm`."""
    rng = np.random.default_rng(seed)
    steps = 4 * beats_per_bar
    hits = []  # (tick, pitch, velocity)
    for bar in range(BARS):
        kicks = KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))] if beats_per_bar == 4 else [0]
        for step in range(steps):
            grid_tick = (bar * steps + step) * SIXTEENTH
            swing = SWING if step % 2 else 0.0
            accent = 110 if step % 4 == 0 else 85 if step % 2 == 0 else 60
            hat = OPEN_HAT if bar % 2 and step == steps - 2 else CLOSED_HAT
            notes = [(hat, swing, accent), *([(KICK, swing, 100)] if step in kicks else [])]
            if step % 8 == 4:  # beats 2 and 4
                notes.append((SNARE, LAID_BACK, 105))
            for pitch, late, velocity in notes:
                tick = round(grid_tick + (late + rng.normal(0, JITTER)) * SIXTEENTH)
                hits.append(
                    (max(tick, 0), pitch, int(np.clip(velocity + rng.integers(-6, 7), 1, 127)))
                )
    messages = []
    for tick, pitch, velocity in hits:
        messages += [
            (tick, 1, mido.Message("note_on", channel=9, note=pitch, velocity=velocity)),
            (tick + SIXTEENTH // 4, 0, mido.Message("note_off", channel=9, note=pitch, velocity=0)),
        ]
    track = mido.MidiTrack()
    if tempo_event:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    track.append(mido.MetaMessage("time_signature", numerator=beats_per_bar, denominator=4))
    now = 0
    for tick, _, message in sorted(
        messages, key=lambda m: (m[0], m[1])
    ):  # offs before ons at one tick
        track.append(message.copy(time=tick - now))
        now = tick
    buffer = io.BytesIO()
    mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT, tracks=[track]).save(file=buffer)
    return buffer.getvalue()


def info_row(path: str, bpm: float, split: str, signature: str = "4-4") -> dict:
    drummer, session, name = path.split("/")
    return {
        "drummer": drummer,
        "session": f"{drummer}/{session}",
        "id": f"{drummer}/{session}/{name.split('_')[0]}",
        "style": name.split("_")[1],
        "bpm": bpm,
        "beat_type": "beat",
        "time_signature": signature,
        "midi_filename": path,
        "audio_filename": path.replace(".mid", ".wav"),
        "duration": 1.0,
        "split": split,
    }


def write_corpus(root) -> pd.DataFrame:
    """Groove MIDI Dataset layout under `root`: info.csv and drummer*/session*/*.mid; its
    metadata."""
    rows, number = [], 0
    for split, count in SPLIT_COUNTS.items():
        for _ in range(count):
            number += 1
            path, bpm = corpus_path(number)
            rows.append(info_row(path, bpm, split))
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(
                drum_performance(bpm, seed=number, tempo_event=path != NO_TEMPO_EVENT)
            )
    rows.append(info_row(WALTZ, 100, "train", "3-4"))
    (root / WALTZ).parent.mkdir(parents=True, exist_ok=True)
    (root / WALTZ).write_bytes(drum_performance(100, seed=99, beats_per_bar=3))
    rows.append(info_row(ABSENT, 100, "train"))
    meta = pd.DataFrame(rows)
    meta.to_csv(root / "info.csv", index=False)
    return meta


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("groove")
    return root, write_corpus(root)


@pytest.fixture(scope="module")
def groove_params(params) -> P.Params:
    """The default params on the groove source: drum notes kept, each file's own tempo."""
    tempo = params.grid.tempo.model_copy(update={"source": "file"})
    return params.model_copy(
        update={
            "ingest": params.ingest.model_copy(update={"include_drums": True, "workers": 1}),
            "grid": params.grid.model_copy(update={"tempo": tempo}),
        }
    )


@pytest.fixture(scope="module")
def ingested(corpus, groove_params):
    root, _ = corpus
    raw = sources.collect(
        groove_params.data.model_copy(update={"source": "groove", "path": str(root)})
    )
    notes, pieces = ingest(raw, groove_params.ingest, progress=False)
    return raw, notes, pieces


@pytest.fixture(scope="module")
def rhythm(ingested, groove_params) -> grids.GridSet:
    _, notes, pieces = ingested
    return grids.build(notes, pieces, groove_params.grid, "rhythm")


# ---- (a) the source ------------------------------------------------------------------------------
def test_groove_source_reads_the_layout_splits_and_tempo(corpus, ingested):
    _, meta = corpus
    raw, notes, pieces = ingested
    by_path = pieces.set_index("path")
    assert raw["split"].tolist() == meta.sort_values("midi_filename")["split"].tolist()
    assert (
        by_path.loc[ABSENT, "status"] == QUARANTINED
        and by_path.loc[ABSENT, "error"] == "empty file"
    )
    assert by_path.loc[WALTZ, "time_signature"] == "3-4" and by_path.loc[WALTZ, "status"] == OK
    listed = meta.set_index("midi_filename")["bpm"]
    ok = usable(by_path)
    np.testing.assert_allclose(ok["metadata_bpm"], listed[ok.index])
    # Every file's tempo: from its tempo event, or from info.csv where the MIDI has none.
    np.testing.assert_allclose(ok["file_tempo_bpm"], listed[ok.index], rtol=1e-6)
    assert notes["is_drum"].all()
    # The file without a tempo event is timed at its listed tempo: its first backbeat snare on beat
    # 2.
    payload = raw.set_index("path").loc[NO_TEMPO_EVENT, "data"]
    assert not any(m.type == "set_tempo" for m in mido.MidiFile(file=io.BytesIO(payload)).tracks[0])
    no_tempo = int(by_path.loc[NO_TEMPO_EVENT, "id"])
    snares = notes[(notes["piece"] == no_tempo) & (notes["pitch"] == SNARE)]["start"]
    beat = 60 / listed[NO_TEMPO_EVENT]
    assert abs(snares.min() - (1 + LAID_BACK / 4) * beat) < 4 * JITTER * beat / 4


def _write_info(root, rows: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "info.csv", index=False)


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"midi_filename": "a.mid", "time_signature": "4-4", "style": "funk"}],
            "info.csv: metadata lacks columns ['bpm', 'split']",
        ),
        (
            [info_row("d1/s1/1_funk_90_beat_4-4.mid", 90, "dev")],
            "info.csv: unknown split values ['dev']",
        ),
        (
            [info_row("d1/s1/1_funk_90_beat_4-4.mid", 0, "train")],
            "bpm is not a positive number for ['d1/s1/1_funk_90",
        ),
        (
            [info_row("d1/s1/1_funk_90_beat_4-4.mid", 90, "train", "4/4")],
            "time_signature is not like 4-4 for ['d1/s1",
        ),
        (None, "no info.csv (the Groove MIDI Dataset's metadata file)"),
    ],
)
def test_groove_source_errors_name_the_file_and_what_is_wrong(tmp_path, params, rows, message):
    root = tmp_path / "gmd"
    if rows is None:
        root.mkdir()
    else:
        _write_info(root, rows)
    with pytest.raises(sources.SourceError) as err:
        sources.collect(params.data.model_copy(update={"source": "groove", "path": str(root)}))
    assert message in str(err.value) and str(root) in str(err.value)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {
                "data": {"source": "groove", "path": "/data/groove"},
                "ingest": {"include_drums": False},
            },
            "data.source 'groove' is a drum corpus, but ingest.include_drums is false",
        ),
        (
            {"grid": {"rhythm": {"drum_pitches": [36, 38, 42]}}},
            "drum_pitches has 3 entries; band_edges define 9 lanes",
        ),
        (
            {"grid": {"rhythm": {"drum_pitches": [36, 38, 42, 46, 45, 48, 50, 39, 128]}}},
            "grid.rhythm.drum_pitches.8: Input should be less than or equal to 127",
        ),
        (
            {"grid": {"rhythm": {"drum_pitches": [38, 36, 42, 46, 45, 48, 50, 39, 51]}}},
            "drum_map maps to the same lane; not so for lane 0: 38, lane 1: 36",
        ),
    ],
)
def test_groove_and_drum_pitch_params_are_checked(tmp_path, override, message):
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    edit_params(target, override)
    with pytest.raises(P.ParamsError) as err:
        V.load(target)
    assert message in str(err.value)


def test_groove_source_loads_with_drums_included(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    edit_params(
        target,
        {"data": {"source": "groove", "path": "/data/groove"}, "ingest": {"include_drums": True}},
    )
    assert V.load(target).data.source == "groove"


# ---- (b) grids on the file's tempo ---------------------------------------------------------------
def test_swung_notes_land_at_the_known_timeshift(rhythm, ingested, groove_params):
    _, _, pieces = ingested
    by_path = pieces.set_index("path")
    assert rhythm.drum_lanes and (rhythm.tempo["source"] == "file").all()
    assert rhythm.skipped.to_dict("records") == [
        {
            "piece": int(by_path.loc[WALTZ, "id"]),
            "path": WALTZ,
            "reason": "time signature 3-4: 3 quarter notes a bar, not grid.beats_per_bar=4",
        }
    ]
    lanes = groove_params.grid.rhythm.drum_map
    onset, timeshift = rhythm.grids[:, 0] > 0.5, rhythm.grids[:, -1]
    odd = np.zeros(onset.shape, dtype=bool)
    odd[..., 1::2] = True
    backbeat = np.zeros(onset.shape, dtype=bool)
    backbeat[:, lanes[SNARE], 4::8] = True
    swung = timeshift[onset & odd]
    on_grid = timeshift[onset & ~odd & ~backbeat]
    laid_back = timeshift[onset & backbeat]
    jitter = 2 * JITTER  # in timeshift units
    assert abs(swung.mean() - 2 * SWING) < 0.01 and abs(swung.std() - jitter) < 0.01
    assert abs(on_grid.mean()) < 0.01 and abs(laid_back.mean() - 2 * LAID_BACK) < 0.01
    assert np.abs(swung - 2 * SWING).max() < 5 * jitter
    # Every second 16th of the hats, in every window of every file, at its own tempo.
    hats = onset[:, lanes[CLOSED_HAT]] | onset[:, lanes[OPEN_HAT]]
    assert hats.all()


# ---- (c) decoding to drums -----------------------------------------------------------------------
def test_decoded_drum_samples_are_gm_drum_notes_on_channel_10(rhythm, groove_params, tmp_path):
    grid = rhythm.grid
    window, start, unit = rhythm.grids[0], float(rhythm.start[0]), float(rhythm.unit[0])
    notes = grids.decode(window, start, unit, grid, "rhythm", drum_lanes=rhythm.drum_lanes)
    assert notes["is_drum"].all() and set(notes["pitch"]) <= set(grid.rhythm.drum_pitches)
    assert len(notes) == int((window[0] > 0.5).sum())
    # Each decoded drum note encodes back to the row it came from.
    rows, _ = np.nonzero(window[0] > 0.5)
    assert sorted(grid.rhythm.drum_map[int(p)] for p in notes["pitch"]) == sorted(rows)
    path = tmp_path / "drums.mid"
    write_notes(notes, path, program=0, is_drum=True)
    (instrument,) = pretty_midi.PrettyMIDI(str(path)).instruments
    assert instrument.is_drum and {n.pitch for n in instrument.notes} <= set(
        grid.rhythm.drum_pitches
    )
    channels = {m.channel for m in mido.MidiFile(str(path)).tracks[-1] if m.type == "note_on"}
    assert channels == {9}  # channel 10, counted from 1
    pitched = grids.decode(window, start, unit, grid, "rhythm")
    assert not pitched["is_drum"].any() and set(pitched["pitch"]) <= set(
        grids.lane_pitches(grid, "rhythm")
    )


# ---- (d) the measure: rhythm_vae against the mean ------------------------------------------------
EPOCHS = 40


def test_rhythm_vae_beats_the_mean_timeshift_on_swung_drums(
    rhythm, groove_params, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the MLflow store goes under the working directory
    monkeypatch.delenv("DVC_ROOT", raising=False)
    data = tmp_path / "rhythm.npz"
    rhythm.save(data)
    config = variant_config(groove_params, "rhythm_vae").model_copy(
        update={
            "epochs": EPOCHS,
            "batch_size": 16,
            "threads": 1,
            "device": "cpu",
            "patience": None,
            "samples_per_epoch": None,
            "val_max_windows": None,
            "checkpoint_every": EPOCHS,
        }
    )
    paths = TrainPaths(
        data=data,
        model_dir=tmp_path / "model",
        history=tmp_path / "history.csv",
        summary=tmp_path / "train.json",
        run_link=tmp_path / "run.json",
        root=tmp_path,
    )
    started = time.perf_counter()
    train(
        "rhythm_vae",
        config,
        grid_vae.FAMILY,
        "groove-test",
        paths,
        groove_params.diagnosis,
        groove_params.generate,
        progress_bar=False,
    )
    seconds = time.perf_counter() - started
    _, family, model = load_model(paths.model_dir)
    gridset = grids.GridSet.load(data)
    device = torch.device("cpu")
    result = family.evaluate(
        model,
        gridset,
        config,
        groove_params.evaluate.model_copy(update={"prior_samples": 64}),
        device,
    )
    ts_model, ts_mean = result["model"]["timeshift_mae"], result["baseline"]["timeshift_mae"]
    ratio = result["model"]["timeshift_std_ratio"]
    print(
        f"\nswung drums, {EPOCHS} epochs in {seconds:.0f} s "
        f"({len(gridset.split_index('train'))} training "
        f"windows): test timeshift MAE model {ts_model:.4f} vs mean {ts_mean:.4f}; "
        f"decoded/true sigma {ratio:.3f}; "
        f"onset F1 {result['model']['onset_f1']:.3f}"
    )
    assert ts_model < 0.5 * ts_mean
    assert 0.7 < ratio < 1.3
    verdicts = {v["name"] for v in json.loads(paths.summary.read_text())["diagnosis"]}
    assert not verdicts & {"timeshift_collapse", "posterior_collapse"}, verdicts

    generate = groove_params.generate.model_copy(update={"num_samples": 4, "interpolations": 1})
    table, _ = family.generate(model, gridset, config, generate, tmp_path / "samples", device)
    assert table["is_drum"].all() and set(table["pitch"]) <= set(gridset.grid.rhythm.drum_pitches)
    (instrument,) = pretty_midi.PrettyMIDI(str(tmp_path / "samples" / "prior.mid")).instruments
    assert instrument.is_drum
    # The prior's samples swing: their odd 16ths are late as the training data's.
    prior = np.load(tmp_path / "samples" / "grids.npz")["prior"]
    onsets = prior[:, 0] > config.onset_threshold
    swung = prior[:, -1][:, :, 1::2][onsets[:, :, 1::2]]
    print(f"prior samples: odd-16th timeshift {swung.mean():.3f} (data {2 * SWING})")
    assert abs(swung.mean() - 2 * SWING) < 0.15


def test_an_untrained_timeshift_head_is_diagnosed_as_collapsed(
    rhythm, groove_params, tmp_path, monkeypatch
):
    """Timeshift weight 0: the head outputs what its initialisation gives, near constants (the
    documents' "constant grid offsets"); the verdict names it with the remedy as a command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    data = tmp_path / "rhythm.npz"
    rhythm.save(data)
    base = variant_config(groove_params, "rhythm_vae")
    config = base.model_copy(
        update={
            "epochs": 6,
            "batch_size": 16,
            "threads": 1,
            "device": "cpu",
            "patience": None,
            "samples_per_epoch": None,
            "val_max_windows": None,
            "checkpoint_every": 6,
            "loss": base.loss.model_copy(update={"timeshift": 0.0}),
            "kl": base.kl.model_copy(update={"anneal_epochs": 0}),
        }
    )
    paths = TrainPaths(
        data=data,
        model_dir=tmp_path / "model",
        history=tmp_path / "history.csv",
        summary=tmp_path / "train.json",
        run_link=tmp_path / "run.json",
        root=tmp_path,
    )
    train(
        "rhythm_vae",
        config,
        grid_vae.FAMILY,
        "groove-test",
        paths,
        groove_params.diagnosis,
        groove_params.generate,
        progress_bar=False,
    )
    verdicts = {v["name"]: v for v in json.loads(paths.summary.read_text())["diagnosis"]}
    collapse = verdicts["timeshift_collapse"]
    assert "x the data's" in collapse["evidence"]
    # The first remedy on its ladder: a timeshift weight, from 0 to at least the documents' 2.0.
    weight = groove_params.diagnosis.remedies.timeshift_min
    assert collapse["command"] == f"dvc exp run -S ++variants.rhythm_vae.loss.timeshift={weight:g}"


# ---- (e) the real pipeline on the drum corpus ----------------------------------------------------
def keep_only_variants(path, keep: dict) -> None:
    """params.yaml's `variants:` reduced to `keep`'s names, each with its overrides merged in."""
    yaml = YAML()  # round-trip, as edit_params
    data = yaml.load(path.read_text())
    for name in [n for n in data["variants"] if n not in keep]:
        del data["variants"][name]
    with path.open("w") as f:
        yaml.dump(data, f)
    edit_params(path, {"variants": keep})


def test_dvc_repro_on_a_drum_corpus_trains_rhythm_vae_and_leaves_the_pitched_representations_empty(
    corpus, tmp_path
):
    root, meta = corpus
    project = make_project(
        tmp_path / "project",
        {
            "data": {"source": "groove", "path": str(root)},
            "ingest": {"include_drums": True},
            "grid": {"tempo": {"source": "file"}},
        },
    )
    keep_only_variants(
        project / "params.yaml",
        {
            "rhythm_vae": {
                "epochs": EPOCHS,
                "batch_size": 16,
                "samples_per_epoch": None,
                "val_max_windows": None,
                "patience": None,
                "checkpoint_every": EPOCHS,
                "threads": 1,
            }
        },
    )
    run([sys.executable, "-m", "etude.pipeline"], project)  # dvc.yaml's foreach: rhythm_vae alone
    assert "rnn_baseline" not in (project / "dvc.yaml").read_text()
    started = time.perf_counter()
    repro = run(["dvc", "repro"], project)
    seconds = time.perf_counter() - started
    lines = repro.stdout.splitlines()
    # The pitched representations are written empty, each with one line saying why; the DAG goes on.
    usable = len(meta) - 1  # every listed file but the absent one
    assert (
        "tokenize: WARNING: no piece has pitched notes (a drum corpus?): "
        f"{usable} pieces skipped ({usable}: only drum notes (tokenize keeps pitched notes only)): "
        "data/tokens/notes.npz holds no pitched note; variants reading it will stop at configure"
    ) in lines
    melody = [line for line in lines if line.startswith("grids: WARNING: ")]
    assert len(melody) == 1 and melody[0].startswith(
        f"grids: WARNING: every piece skipped, {usable - 1} for holding drum notes alone "
        "(a drum corpus?): "
    )
    assert melody[0].endswith(
        "data/tokens/melody.npz holds no melody window; variants reading it will stop at configure"
    )
    assert NoteSequences.load(project / "data/tokens/notes.npz").empty
    assert grids.GridSet.load(project / "data/tokens/melody.npz").empty

    assert (project / "reports/index.html").is_file()
    evaluation = json.loads((project / "metrics/rhythm_vae/eval.json").read_text())
    ts_model, ts_mean = (
        evaluation["model"]["timeshift_mae"],
        evaluation["baseline"]["timeshift_mae"],
    )
    print(
        f"\ndvc repro on the drum corpus in {seconds:.0f} s: "
        f"test timeshift MAE model {ts_model:.4f} vs mean "
        f"{ts_mean:.4f}"
    )
    assert ts_model < ts_mean
    written = sorted((project / "samples/rhythm_vae").glob("*.mid"))
    assert written
    drum_pitches = set(V.load(project / "params.yaml").grid.rhythm.drum_pitches)
    for path in written:
        instruments = pretty_midi.PrettyMIDI(str(path)).instruments
        assert instruments and all(i.is_drum for i in instruments), path.name
        assert {n.pitch for i in instruments for n in i.notes} <= drum_pitches, path.name
    # The report lists every piece the pitched representations could not use, with the stage's
    # reason.
    gathered = run(
        [
            sys.executable,
            "-c",
            "from stages.report import skipped_pieces; "
            "print(skipped_pieces().to_json(orient='records'))",
        ],
        project,
    ).stdout
    by_stage = pd.DataFrame(json.loads(gathered))["stage"].value_counts().to_dict()
    assert by_stage["tokenize"] == usable and by_stage["grids (melody)"] == usable
