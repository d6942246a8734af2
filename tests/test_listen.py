"""MP3 previews of samples: rendering, drums, and playback of the report's players in a real
headless Chromium."""

import io
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

from etude import audio, listen
from etude.figures import audio_players

CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds its own automation flags; these keep Chromium off the network (none here) and off
# the GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def _write_midi(
    path: Path, piano: list[tuple[float, float, int]], drums: list[tuple[float, int]] = ()
) -> Path:
    """A MIDI file of piano notes (start_s, end_s, pitch) and General MIDI drum hits (start_s,
    pitch)."""
    pm = pretty_midi.PrettyMIDI()
    if piano:
        track = pretty_midi.Instrument(program=0)
        track.notes = [pretty_midi.Note(90, pitch, start, end) for start, end, pitch in piano]
        pm.instruments.append(track)
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        kit.notes = [pretty_midi.Note(100, pitch, start, start + 0.1) for start, pitch in drums]
        pm.instruments.append(kit)
    pm.write(str(path))
    return path


def _arpeggio(seconds: float) -> list[tuple[float, float, int]]:
    """C major broken chords, a note every quarter second."""
    return [
        (t, t + 0.4, 60 + (0, 4, 7, 12)[i % 4]) for i, t in enumerate(np.arange(0, seconds, 0.25))
    ]


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-30))


@pytest.fixture(scope="module")
def soundfont(params) -> Path:
    return audio.soundfont_path(params.audio)


def test_midi_renders_to_a_deterministic_mp3_of_its_length(tmp_path, params, soundfont):
    preview = params.report.audio
    midi = _write_midi(tmp_path / "t1_s0.mid", _arpeggio(3.0))
    mp3 = listen.render_file(midi, params.audio, preview, soundfont)
    assert mp3 == tmp_path / "t1_s0.mp3"
    first = mp3.read_bytes()
    assert listen.render_file(midi, params.audio, preview, soundfont).read_bytes() == first

    decoded, rate = soundfile.read(mp3)
    assert rate == preview.sample_rate and decoded.ndim == 1
    expected_s = 2.75 + 0.4 + params.audio.tail_s  # last note's end, then the release tail
    assert len(decoded) / rate == pytest.approx(expected_s, abs=0.1)  # MP3 pads to whole frames
    assert _rms_db(decoded) > -40
    # Constant bitrate: the size is bitrate x length (40 kbps at the defaults, see params.yaml
    # report.audio).
    assert len(first) / expected_s == pytest.approx(5000, rel=0.1)


def test_a_clip_stops_at_max_seconds(tmp_path, params, soundfont):
    preview = params.report.audio.model_copy(update={"max_seconds": 2.0})
    mp3 = listen.render_file(
        _write_midi(tmp_path / "long.mid", _arpeggio(10.0)), params.audio, preview, soundfont
    )
    assert soundfile.info(mp3).duration == pytest.approx(2.0, abs=0.1)


def test_drums_play_on_the_soundfont_kit(tmp_path, params, soundfont):
    hits = [
        (t, (36, 42, 38, 42)[i % 4]) for i, t in enumerate(np.arange(0, 2.0, 0.25))
    ]  # kick, hat, snare, hat
    midi = _write_midi(tmp_path / "drums.mid", [], hits).read_bytes()
    rendered = audio.render(midi, params.audio, soundfont, 22050)
    assert _rms_db(rendered) > -40
    mp3 = io.BytesIO()
    listen.encode_mp3(rendered, 22050, mp3, params.report.audio)
    decoded, _ = soundfile.read(io.BytesIO(mp3.getvalue()))
    assert _rms_db(decoded) > -40
    # Every drum at once exceeds full scale: the MP3 is scaled down rather than clipped by the
    # player.
    dense = [(t, pitch) for t in np.arange(0, 2.0, 0.125) for pitch in (36, 38, 42, 49)]
    loud = audio.render(
        _write_midi(tmp_path / "dense.mid", [], dense).read_bytes(), params.audio, soundfont, 22050
    )
    assert np.abs(loud).max() > 1
    listen.encode_mp3(loud, 22050, tmp_path / "dense.mp3", params.report.audio)
    assert (
        np.abs(soundfile.read(tmp_path / "dense.mp3")[0]).max() < 1.1
    )  # MP3's ringing overshoots a little
    # With piano beside them, the drums are added to the piano's sound and do not replace it. Not to
    # the last bit: TinySoundFont steps envelopes per 64-sample block of each generate call, and the
    # drums' events split those calls elsewhere.
    both = audio.render(
        _write_midi(tmp_path / "both.mid", _arpeggio(2.0), hits).read_bytes(),
        params.audio,
        soundfont,
        22050,
    )
    piano = audio.render(
        _write_midi(tmp_path / "piano.mid", _arpeggio(2.0)).read_bytes(),
        params.audio,
        soundfont,
        22050,
    )
    n = min(len(both), len(piano), len(rendered))
    assert np.abs(both[:n] - piano[:n] - rendered[:n]).max() < 1e-3


def test_players_load_and_play_in_headless_chromium(tmp_path, params, soundfont):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make install` (the dev extra) installs it")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (as root)")

    piano = listen.render_file(
        _write_midi(tmp_path / "t1_s0.mid", _arpeggio(3.0)),
        params.audio,
        params.report.audio,
        soundfont,
    )
    drums = listen.render_file(
        _write_midi(tmp_path / "drums.mid", [], [(0.0, 36), (0.5, 38), (1.0, 42)]),
        params.audio,
        params.report.audio,
        soundfont,
    )
    page_file = tmp_path / "page.html"
    page_file.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>players</title></head><body>"
        + audio_players(
            {"temperature 1.0": [("t1_s0", piano)], "drums": [("drums", drums)]}, "Audio"
        )
        + "</body></html>"
    )

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(page_file.as_uri(), wait_until="load")
            assert page.title() == "players"
            players = page.locator("audio")
            assert players.count() == 2
            assert players.first.get_attribute("src").startswith("data:audio/mpeg;base64,")

            first = players.first.element_handle()
            refused = first.evaluate(
                "a => a.play().then(() => null, err => `${err.name}: ${err.message}`)"
            )
            assert refused is None, f"play() refused: {refused}"
            page.wait_for_function(
                "a => a.currentTime > 0.2 || a.error !== null", arg=first, timeout=10_000
            )
            state = first.evaluate(
                "a => ({time: a.currentTime, duration: a.duration, paused: a.paused,"
                " error: a.error && a.error.message})"
            )
            assert state["error"] is None, state
            assert not state["paused"] and state["time"] > 0.2, state
            # A finite duration that matches the clip's: the browser decoded the data URI.
            assert state["duration"] == pytest.approx(soundfile.info(piano).duration, abs=0.1), (
                state
            )
            assert not errors
        finally:
            browser.close()
