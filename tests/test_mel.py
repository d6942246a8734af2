"""Audio rendering and the mel stage, on real MAESTRO files and the pinned SoundFont; pieces it
cannot use."""

from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import symusic

from etude import audio, mel
from etude.ingest import OK
from etude.mel import MelSet


def _midi(notes, pedals=()) -> bytes:
    """A one-track MIDI file from (start_s, duration_s, pitch, velocity) and (start_s, duration_s)
    pedals."""
    score = symusic.Score(1000, ttype="second")
    track = symusic.Track(program=0, ttype="second")
    for start, duration, pitch, velocity in notes:
        track.notes.append(symusic.Note(start, duration, pitch, velocity, ttype="second"))
    for start, duration in pedals:
        track.pedals.append(symusic.Pedal(start, duration, ttype="second"))
    score.tracks.append(track)
    return score.dumps_midi()


def test_sustain_pedal_holds_notes_until_release_but_a_restruck_key_cuts_them():
    start = np.array([0.0, 1.0, 1.5, 5.0])
    end = np.array([0.5, 1.2, 1.7, 5.5])
    pitch = np.array([60, 64, 60, 60])
    held = audio.sustained_ends(
        start, end, pitch, pedal_down=np.array([0.2]), pedal_up=np.array([3.0])
    )
    # 60 is held by the pedal but re-struck at 1.5; 64 rings to the release; the note at 5 s is
    # unpedalled.
    assert held.tolist() == [1.5, 3.0, 3.0, 5.5]


def test_a_zero_length_note_is_switched_on_before_off(params):
    events = audio.note_events(_midi([(1.0, 0.0, 60, 90), (1.0, 0.5, 64, 90)]), params.audio)
    order = [(int(pitch), int(on)) for _, on, pitch, _ in events]
    assert order.index((60, 1)) < order.index((60, 0))


def test_rendered_note_has_its_pitch_and_is_deterministic(params):
    settings = params.audio
    soundfont = audio.soundfont_path(settings)
    midi = _midi([(0.1, 1.5, 69, 100)])  # A4, 440 Hz
    sr = params.mel.sample_rate
    first = audio.render(midi, settings, soundfont, sr)
    assert np.array_equal(first, audio.render(midi, settings, soundfont, sr))
    assert len(first) == pytest.approx((1.6 + settings.tail_s) * sr, abs=2)
    assert np.abs(first[: int(0.09 * sr)]).max() == 0  # silence before the onset
    spectrum = np.abs(np.fft.rfft(first[int(0.2 * sr) : int(1.2 * sr)]))
    assert np.fft.rfftfreq(sr, 1 / sr)[spectrum.argmax()] == pytest.approx(440, rel=0.02)


def test_mel_stage_streams_shards_and_normalises_on_training_segments_only(
    tmp_path, params, sample_midi
):
    names = ["Maestro_1.mid", "Maestro_3.mid", "Maestro_10.mid"]
    raw = pd.DataFrame(
        {
            "path": [*names, "silence.mid"],
            "data": [sample_midi[n] for n in names]
            + [_midi([(4.0, 1.0, 60, 80), (7.0, 1.0, 64, 80)])],
        }
    )
    pieces = pd.DataFrame(
        {
            "id": range(4),
            "path": raw["path"],
            "split": ["train", "train", "test", "train"],
            "audio_path": None,
            "status": OK,
        }
    )
    settings = params.mel.model_copy(
        update={"max_seconds_per_piece": 9.0, "shard_segments": 4, "workers": 2}
    )
    segments, table = mel.build(raw, pieces, params.audio, settings, tmp_path, progress=False)

    frames = mel.frames_per_segment(settings)
    assert frames == 259  # 3 s at 22050 Hz, hop 256: the reference's 128 x 259
    # Three 3-s segments per 9-s excerpt; the file that starts with 4 s of silence loses its first.
    assert table.set_index("path")["segments"].to_dict() == dict.fromkeys(names, 3) | {
        "silence.mid": 2
    }
    assert table.set_index("path").loc["silence.mid", "skipped_silent"] == 1
    assert set(table["audio"]) == {audio.rendered_label(params.audio)}
    shards = sorted(tmp_path.glob("shard_*.npy"))
    assert [np.load(s).shape[0] for s in shards] == [4, 4, 3]  # 11 segments in shards of 4
    assert np.load(shards[0]).dtype == np.float16

    data = MelSet(tmp_path)
    db = data.db(np.arange(len(segments)))
    assert db.shape == (11, 128, 259) and db.max() == 0 and db.min() >= -settings.top_db
    assert np.allclose(db.max(axis=(1, 2)), 0)  # 0 dB is each segment's maximum
    train = db[data.split_index("train")].astype(np.float64)
    assert np.allclose(data.mean, train.mean(axis=(0, 2)), atol=1e-3)
    assert np.allclose(data.std, train.std(axis=(0, 2)), atol=1e-3)
    assert not np.allclose(
        data.mean, db.astype(np.float64).mean(axis=(0, 2)), atol=1e-3
    )  # test data left out

    # Same shards with one worker: results are ordered, whatever the pool does.
    single = tmp_path / "single"
    mel.build(
        raw,
        pieces,
        params.audio,
        settings.model_copy(update={"workers": 1}),
        single,
        progress=False,
    )
    for a, b in zip(shards, sorted(single.glob("shard_*.npy"))):
        assert np.array_equal(np.load(a), np.load(b))


def test_mel_params_are_checked(params):
    with pytest.raises(ValueError, match="fmax <= sample_rate / 2"):
        params.mel.model_validate(params.mel.model_dump() | {"fmax": 20000})
    with pytest.raises(ValueError, match="shorter than one FFT window"):
        params.mel.model_validate(params.mel.model_dump() | {"segment_s": 0.01})


def test_a_recording_on_disk_is_used_and_resampled(tmp_path, params):
    """MAESTRO's own audio wins over rendering: a 44.1 kHz wav of a 440 Hz tone comes out at 22,050
    Hz."""
    import soundfile

    sr = 44100
    t = np.arange(int(7 * sr)) / sr
    soundfile.write(tmp_path / "take.wav", 0.3 * np.sin(2 * np.pi * 440 * t), sr)
    raw = pd.DataFrame(
        {"path": ["a.mid"], "data": [_midi([(0.0, 2.0, 60, 80), (3.0, 2.0, 64, 80)])]}
    )
    pieces = pd.DataFrame(
        {
            "id": [0],
            "path": ["a.mid"],
            "split": ["train"],
            "audio_path": [str(tmp_path / "take.wav")],
            "status": [OK],
        }
    )
    segments, table = mel.build(
        raw,
        pieces,
        params.audio,
        params.mel.model_copy(update={"workers": 1}),
        tmp_path / "mel",
        progress=False,
    )
    assert table["audio"].tolist() == [audio.RECORDING] and table[
        "seconds"
    ].item() == pytest.approx(7, abs=1e-3)
    assert len(segments) == 2  # two whole 3-s segments in 7 s
    spectrum = MelSet(tmp_path / "mel").db(np.array([0])).mean(axis=2)[0]
    centres = librosa.mel_frequencies(
        params.mel.n_mels + 2, fmin=params.mel.fmin, fmax=params.mel.sample_rate / 2, htk=True
    )[1:-1]
    assert centres[spectrum.argmax()] == pytest.approx(440, rel=0.06)

    rendered = mel.build(
        raw,
        pieces,
        params.audio.model_copy(update={"use_recordings": False}),
        params.mel.model_copy(update={"workers": 1}),
        tmp_path / "rendered",
        progress=False,
    )[1]
    assert rendered["audio"].tolist() == [audio.rendered_label(params.audio)]


def test_pieces_without_a_usable_segment_are_skipped_with_their_reason(
    tmp_path, params, sample_midi
):
    """Too short, silent, without notes, a missing and a corrupt recording: each skipped and
    recorded, the rest used; with nothing left the stage fails naming why."""
    (tmp_path / "garbage.wav").write_text("not audio at all")
    empty = symusic.Score(1000, ttype="second")
    empty.tracks.append(symusic.Track(program=0, ttype="second"))
    files = {
        "real.mid": sample_midi["Maestro_1.mid"],
        "short.mid": _midi([(0.0, 0.5, 60, 80), (0.5, 0.5, 64, 80)]),
        "quiet.mid": _midi([(i * 0.5, 0.4, 60, 1) for i in range(24)]),
        "empty.mid": empty.dumps_midi(),
        "missing.mid": _midi([(0.0, 5.0, 60, 80)]),
        "garbage.mid": _midi([(0.0, 5.0, 60, 80)]),
    }
    raw = pd.DataFrame({"path": list(files), "data": list(files.values())})
    pieces = pd.DataFrame(
        {
            "id": range(6),
            "path": list(files),
            "split": "train",
            "status": OK,
            "audio_path": [
                None,
                None,
                None,
                None,
                str(tmp_path / "missing.wav"),
                str(tmp_path / "garbage.wav"),
            ],
        }
    )
    settings = params.mel.model_copy(update={"max_seconds_per_piece": 12.0, "workers": 2})
    segments, table = mel.build(
        raw, pieces, params.audio, settings, tmp_path / "mel", progress=False
    )

    reasons = table.set_index("path")["reason"]
    assert reasons.drop(["real.mid"]).to_dict() == {
        "short.mid": "audio shorter than one mel segment (mel.segment_s=3 s)",
        "quiet.mid": "silent: every segment of its first 12 s (mel.max_seconds_per_piece) is below "
        "mel.min_level_db=-60 dB",
        "empty.mid": "no notes to render",
        "missing.mid": f"[Errno 2] No such file or directory: '{tmp_path / 'missing.wav'}'",
        "garbage.mid": "NoBackendError",
    }  # an exception without a message: its name
    assert pd.isna(reasons["real.mid"]) and set(segments["piece"]) == {0} and len(segments) == 4
    assert table["piece"].tolist() == list(range(6))  # every usable piece has its row, in id order
    data = MelSet(tmp_path / "mel")
    assert data.pieces["path"].tolist() == ["real.mid"]
    assert data.skipped.columns.tolist() == ["piece", "path", "reason"]
    assert data.skipped.set_index("path")["reason"].to_dict() == reasons.dropna().to_dict()

    single = settings.model_copy(update={"workers": 1})
    with pytest.raises(ValueError) as err:
        mel.build(
            raw,
            pieces[pieces["id"].isin([1, 2])],
            params.audio,
            single,
            tmp_path / "none",
            progress=False,
        )
    assert str(err.value) == (
        "no non-silent mel segment in any piece: 2 pieces skipped (1: audio shorter than one "
        "mel segment (mel.segment_s=3 s); 1: silent: every segment of its first 12 s "
        "(mel.max_seconds_per_piece) is below mel.min_level_db=-60 dB)"
    )
    with pytest.raises(
        ValueError,
        match=r"^the training split has no non-silent mel segment; .*data\.midi_dir_split",
    ):
        mel.build(
            raw,
            pieces.assign(split=["test"] + ["train"] * 5).iloc[:3],
            params.audio,
            single,
            tmp_path / "test",
            progress=False,
        )


def _unreadable(folder):
    (folder / "empty.wav").write_bytes(b"")  # the stdlib decoders librosa falls back to: EOFError
    return str(folder / "empty.wav")


def _not_finite(folder):
    import soundfile

    soundfile.write(
        folder / "nan.wav", np.full(22050 * 4, np.nan, np.float32), 22050, subtype="FLOAT"
    )
    return str(folder / "nan.wav")


@pytest.mark.parametrize(
    "recording, reason",
    [
        (_unreadable, "EOFError"),
        (_not_finite, "Audio buffer is not finite everywhere"),
        (lambda folder: str(folder), "[Errno 21] Is a directory: '{folder}'"),
    ],
    ids=["empty-file", "not-finite", "a-directory"],
)
def test_a_recording_that_cannot_be_read_costs_its_piece(tmp_path, params, recording, reason):
    job = mel._Job(7, b"", recording(tmp_path))
    result = mel._worker((job, params.audio, params.mel, Path()))
    assert (
        result.piece == 7
        and len(result.mel) == 0
        and result.reason == reason.format(folder=tmp_path)
    )


def test_a_bug_in_the_per_piece_path_stops_the_stage_instead_of_skipping_every_piece(
    tmp_path, params, monkeypatch
):
    """Only what a bad piece raises is a skip: a TypeError from etude's own code must reach the
    caller."""
    import soundfile

    sr = params.mel.sample_rate
    soundfile.write(
        tmp_path / "take.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(7 * sr) / sr), sr
    )
    raw = pd.DataFrame({"path": ["a.mid"], "data": [_midi([(0.0, 2.0, 60, 80)])]})
    pieces = pd.DataFrame(
        {
            "id": [0],
            "path": ["a.mid"],
            "split": ["train"],
            "audio_path": [str(tmp_path / "take.wav")],
            "status": [OK],
        }
    )

    def broken(samples, settings):
        raise TypeError("a bug in etude, not a bad piece")

    monkeypatch.setattr(mel, "segment", broken)
    with pytest.raises(TypeError, match="a bug in etude"):
        mel.build(
            raw,
            pieces,
            params.audio,
            params.mel.model_copy(update={"workers": 1}),
            tmp_path / "mel",
            progress=False,
        )
