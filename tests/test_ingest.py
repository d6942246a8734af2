"""Ingest on the real embedded MAESTRO files, and every kind of bad file the issue names."""

import io
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pretty_midi
import pytest

from etude import ingest as ingest_module
from etude import sources
from etude.ingest import OK, QUARANTINED, NoUsableFiles, ingest, parse_midi, usable
from etude.params import Ingest

SETTINGS = Ingest(workers=2, min_notes=1, max_duration_s=14400, include_drums=False)


def raw_table(files: dict[str, bytes]) -> pd.DataFrame:
    rows = [
        {
            "path": name,
            "split": "train",
            "composer": None,
            "title": name,
            "year": None,
            "duration": None,
            "audio_path": None,
            "bpm": float("nan"),
            "time_signature": None,
            "sha256": "",
            "data": data,
        }
        for name, data in files.items()
    ]
    return pd.DataFrame(rows)


def bad_files(real: bytes) -> dict[str, bytes]:
    header_only = real[:14] + b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"  # valid MIDI, one empty track
    return {
        "empty.mid": b"",
        "truncated.mid": real[: len(real) // 2],
        "random.mid": np.random.default_rng(0).bytes(4096),
        "text.mid": b"this is a text file, not MIDI\n" * 20,
        "no_notes.mid": header_only,
    }


def test_real_files_match_pretty_midi(sample_midi):
    notes, pieces = ingest(raw_table(sample_midi), SETTINGS, progress=False)
    assert (pieces["status"] == OK).all() and len(notes) == 101_901
    name = "Maestro_1.mid"
    pm = pretty_midi.PrettyMIDI(io.BytesIO(sample_midi[name]))
    expected = sorted(
        (n.start, n.pitch, n.velocity, n.end) for i in pm.instruments for n in i.notes
    )
    piece = int(pieces.loc[pieces["path"] == name, "id"].iloc[0])
    ours = notes[notes["piece"] == piece].sort_values(["start", "pitch"])
    got = list(zip(ours["start"], ours["pitch"], ours["velocity"], ours["end"]))
    assert len(got) == len(expected)
    for (s1, p1, v1, e1), (s2, p2, v2, e2) in zip(sorted(got), expected):
        assert (p1, v1) == (p2, v2) and abs(s1 - s2) < 1e-3 and abs(e1 - e2) < 1e-3


def test_bad_files_are_quarantined_and_the_run_goes_on(sample_midi):
    real = sample_midi["Maestro_1.mid"]
    files = {"good.mid": real, **bad_files(real)}
    notes, pieces = ingest(raw_table(files), SETTINGS, progress=False)
    status = dict(zip(pieces["path"], pieces["status"]))
    errors = dict(zip(pieces["path"], pieces["error"]))
    assert status.pop("good.mid") == OK
    assert set(status.values()) == {QUARANTINED}
    assert errors["empty.mid"] == "empty file"
    assert "Invalid chunk length" in errors["truncated.mid"]
    assert errors["random.mid"] == errors["text.mid"] == "not a MIDI file (no MThd header)"
    assert errors["no_notes.mid"].startswith("0 notes")
    good = int(pieces.loc[pieces["path"] == "good.mid", "id"].iloc[0])
    assert set(notes["piece"]) == {good}


HEADER = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"  # format 0, one track, 480 ticks a beat


@pytest.mark.parametrize(
    "payload",
    [
        b"MThd",
        HEADER[:10],
        b"MThd" + np.random.default_rng(1).bytes(200),
        HEADER + b"MTrk\xff\xff\xff\xff",
        HEADER + b"MTrk\x00\x00\x00\x04\x00\x90",
    ],
    ids=["tag-only", "short-header", "garbage", "absurd-track-length", "truncated-track"],
)
def test_a_malformed_file_behind_the_header_is_quarantined(payload):
    """symusic raises RuntimeError for each of these: the one class parse_midi turns into a
    reason."""
    parsed = parse_midi(payload, SETTINGS)
    assert parsed.notes is None and parsed.error.startswith("unreadable MIDI: ")


def test_a_bug_while_parsing_stops_ingest_instead_of_quarantining_every_file(
    sample_midi, monkeypatch
):
    def broken(payload, ttype):
        raise TypeError("a bug in etude, not a bad file")

    monkeypatch.setattr(
        ingest_module, "symusic", SimpleNamespace(Score=SimpleNamespace(from_midi=broken))
    )
    real = sample_midi["Maestro_1.mid"]
    with pytest.raises(TypeError, match="a bug in etude"):
        ingest(raw_table({"a.mid": real, "b.mid": real}), SETTINGS, progress=False)


def drum_midi(pitched: int = 0) -> bytes:
    """A real MIDI file: 16 GM drum hits on channel 10, then `pitched` piano notes."""
    pm = pretty_midi.PrettyMIDI()
    kit = pretty_midi.Instrument(program=0, is_drum=True)
    kit.notes = [
        pretty_midi.Note(100, 36 if i % 2 == 0 else 38, i * 0.25, i * 0.25 + 0.1) for i in range(16)
    ]
    piano = pretty_midi.Instrument(program=0)
    piano.notes = [pretty_midi.Note(80, 60 + i, i * 0.5, i * 0.5 + 0.4) for i in range(pitched)]
    pm.instruments = [kit, piano] if pitched else [kit]
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def test_a_drum_only_file_is_quarantined_naming_the_setting():
    parsed = parse_midi(drum_midi(), SETTINGS)
    assert (
        parsed.notes is None and parsed.error == "only drum notes (ingest.include_drums is false)"
    )
    mixed = parse_midi(drum_midi(pitched=3), SETTINGS)
    assert (
        mixed.error is None and not mixed.notes["is_drum"].any() and len(mixed.notes["pitch"]) == 3
    )
    kept = parse_midi(drum_midi(), SETTINGS.model_copy(update={"include_drums": True}))
    assert kept.error is None and kept.notes["is_drum"].all() and len(kept.notes["pitch"]) == 16


def test_usable_pieces_are_those_not_quarantined(sample_midi):
    _, pieces = ingest(
        raw_table({"good.mid": sample_midi["Maestro_1.mid"], "drums.mid": drum_midi()}),
        SETTINGS,
        progress=False,
    )
    assert usable(pieces)["path"].tolist() == ["good.mid"]


def test_absurd_length_is_quarantined(sample_midi):
    short = Ingest(workers=1, min_notes=1, max_duration_s=60, include_drums=False)
    parsed = parse_midi(sample_midi["Maestro_1.mid"], short)
    assert parsed.notes is None and "more than ingest.max_duration_s=60" in parsed.error


def test_no_usable_file_fails_naming_each_reason(sample_midi):
    with pytest.raises(NoUsableFiles, match=r"empty\.mid: empty file"):
        ingest(raw_table(bad_files(sample_midi["Maestro_1.mid"])), SETTINGS, progress=False)


def test_midi_dir_source_hash_split_is_stable(tmp_path, sample_midi, params):
    for name, data in sample_midi.items():
        (tmp_path / "a" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / name).write_bytes(data)
    (tmp_path / "b.midi").write_bytes(b"")
    data = params.data.model_copy(update={"source": "midi_dir", "path": str(tmp_path)})
    raw = sources.collect(data)
    assert len(raw) == 11 and set(raw["split"]) <= {"train", "validation", "test"}
    again = sources.collect(data)
    assert raw["split"].tolist() == again["split"].tolist()
    assert raw.loc[raw["path"] == "b.midi", "data"].iloc[0] == b""


def test_maestro_source_reads_metadata_and_official_split(tmp_path, sample_midi, params):
    (tmp_path / "2004").mkdir()
    rows = []
    for i, (name, data) in enumerate(sorted(sample_midi.items())[:3]):
        (tmp_path / "2004" / name).write_bytes(data)
        rows.append(
            {
                "canonical_composer": "C",
                "canonical_title": f"T{i}",
                "split": ["train", "validation", "test"][i],
                "year": 2004,
                "midi_filename": f"2004/{name}",
                "audio_filename": f"2004/{name}.wav",
                "duration": 1.0,
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "maestro-v3.0.0.csv", index=False)
    raw = sources.collect(
        params.data.model_copy(update={"source": "maestro", "path": str(tmp_path)})
    )
    assert raw.set_index("title")["split"].to_dict() == {
        "T0": "train",
        "T1": "validation",
        "T2": "test",
    }
    assert raw["audio_path"].isna().all()  # no recordings on disk


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "no maestro-v*.csv or maestro-v*.json metadata file"),
        (
            lambda root: (root / "maestro-v3.0.0.csv").write_text("a,b\n1,2\n"),
            "metadata lacks columns",
        ),
    ],
)
def test_maestro_source_missing_or_malformed_metadata(tmp_path, params, setup, message):
    setup(tmp_path)
    with pytest.raises(sources.SourceError, match=re.escape(message)):
        sources.collect(params.data.model_copy(update={"source": "maestro", "path": str(tmp_path)}))


def test_missing_source_path(params):
    with pytest.raises(sources.SourceError, match="not a directory"):
        sources.collect(
            params.data.model_copy(update={"source": "midi_dir", "path": "/nonexistent/x"})
        )
