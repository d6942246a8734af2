"""Data sources: collect a corpus of MIDI files and their metadata into one table.

The table (`data/raw/midi.parquet`) holds each file's bytes beside its metadata, so DVC hashes one
file instead of thousands and ingest never touches the source again.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd

from etude.params import Data

# bpm and time_signature: what the source's metadata lists (groove), else empty.
RAW_COLUMNS = [
    "path",
    "split",
    "composer",
    "title",
    "year",
    "duration",
    "audio_path",
    "bpm",
    "time_signature",
    "sha256",
    "data",
]
SPLITS = ("train", "validation", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}  # as stored in the representations
MAESTRO_COLUMNS = {
    "canonical_composer",
    "canonical_title",
    "split",
    "year",
    "midi_filename",
    "audio_filename",
    "duration",
}
GROOVE_COLUMNS = {
    "midi_filename",
    "split",
    "bpm",
    "time_signature",
}  # of the Groove MIDI Dataset's info.csv
TIME_SIGNATURE = re.compile(r"\d+-[1-9]\d*")  # as info.csv writes it: 4-4, 6-8
MIDI_SUFFIXES = {".mid", ".midi"}


class SourceError(RuntimeError):
    """The source path or metadata is missing or malformed: nothing can be ingested."""


def cache_dir() -> Path:
    return Path(os.environ.get("ETUDE_CACHE", Path.home() / ".cache" / "etude"))


def collect(data: Data) -> pd.DataFrame:
    if data.source == "maestro-sample":
        frame = _maestro_sample(data)
    elif data.source == "maestro":
        frame = _maestro(Path(data.path))
    elif data.source == "groove":
        frame = _groove(Path(data.path))
    else:
        frame = _midi_dir(Path(data.path), data)
    frame["sha256"] = [hashlib.sha256(b).hexdigest() for b in frame["data"]]
    return frame[RAW_COLUMNS].sort_values("path", ignore_index=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_pinned(package: str, version: str, sha256: str, wheel: bool = False) -> Path:
    """A pinned distribution (source by default, else the wheel), downloaded once with pip and
    verified by sha256."""
    pattern = f"{package}-{version}-*.whl" if wheel else f"{package}-{version}.tar.gz"
    folder = cache_dir()
    for target in sorted(folder.glob(pattern)):
        if file_sha256(target) == sha256:
            return target
    folder.mkdir(parents=True, exist_ok=True)
    binary = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        *binary,
        "--no-deps",
        f"{package}=={version}",
        "-d",
        str(folder),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(pattern))
    if done.returncode != 0 or not found:
        raise SourceError(
            f"could not download {package}=={version} from PyPI into {folder}:\n"
            f"{done.stderr[-2000:]}"
        )
    for target in found:
        actual = file_sha256(target)
        if actual == sha256:
            return target
        target.unlink()
    raise SourceError(
        f"{found[0].name}: sha256 is {actual}, params.yaml pins {sha256}; file removed"
    )


def _maestro_sample(data: Data) -> pd.DataFrame:
    sample = data.sample
    sdist = fetch_pinned(sample.package, sample.version, sample.sha256)
    prefix = f"{sample.package}-{sample.version}/{sample.member_dir}/"
    split_of = dict.fromkeys(sample.validation, "validation") | dict.fromkeys(sample.test, "test")
    rows = []
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and name.startswith("Maestro_") and member.isfile():
                rows.append(
                    _row(
                        name,
                        split_of.get(name, "train"),
                        None,
                        Path(name).stem,
                        None,
                        None,
                        None,
                        tar.extractfile(member).read(),
                    )
                )
    missing = set(split_of) - {r["path"] for r in rows}
    if missing or not rows:
        raise SourceError(
            f"{sdist.name}: expected MAESTRO files under {prefix}; missing {sorted(missing)}"
        )
    return pd.DataFrame(rows)


def _row(
    path,
    split,
    composer,
    title,
    year,
    duration,
    audio_path,
    data,
    bpm=float("nan"),
    time_signature=None,
) -> dict:
    return {
        "path": path,
        "split": split,
        "composer": composer,
        "title": title,
        "year": year,
        "duration": duration,
        "audio_path": audio_path,
        "bpm": bpm,
        "time_signature": time_signature,
        "data": data,
    }


def maestro_metadata(root: Path) -> pd.DataFrame:
    """MAESTRO v2/v3 metadata (csv preferred, json accepted) with the columns ingest relies on."""
    if not root.is_dir():
        raise SourceError(f"data.path {root}: not a directory")
    candidates = sorted(root.glob("maestro-v*.csv")) or sorted(root.glob("maestro-v*.json"))
    if not candidates:
        raise SourceError(f"{root}: no maestro-v*.csv or maestro-v*.json metadata file")
    meta_path = candidates[-1]
    try:
        meta = pd.read_csv(meta_path) if meta_path.suffix == ".csv" else pd.read_json(meta_path)
    except Exception as err:
        raise SourceError(f"{meta_path}: unreadable metadata: {err}") from None
    _check_columns_and_splits(meta, meta_path, MAESTRO_COLUMNS)
    return meta


def _check_columns_and_splits(meta: pd.DataFrame, meta_path: Path, required: set[str]) -> None:
    missing = required - set(meta.columns)
    if missing:
        raise SourceError(f"{meta_path}: metadata lacks columns {sorted(missing)}")
    bad_split = set(meta["split"]) - set(SPLITS)
    if bad_split:
        raise SourceError(f"{meta_path}: unknown split values {sorted(map(str, bad_split))}")


def _maestro(root: Path) -> pd.DataFrame:
    meta = maestro_metadata(root)
    rows = []
    for rec in meta.itertuples(index=False):
        midi = root / rec.midi_filename
        audio = root / rec.audio_filename
        # A file listed but absent is kept as an empty payload: ingest quarantines it with its
        # reason.
        payload = midi.read_bytes() if midi.is_file() else b""
        rows.append(
            _row(
                rec.midi_filename,
                rec.split,
                rec.canonical_composer,
                rec.canonical_title,
                int(rec.year),
                float(rec.duration),
                str(audio) if audio.is_file() else None,
                payload,
            )
        )
    return pd.DataFrame(rows)


def groove_metadata(root: Path) -> pd.DataFrame:
    """The Groove MIDI Dataset's info.csv with the columns this source relies on, checked."""
    if not root.is_dir():
        raise SourceError(f"data.path {root}: not a directory")
    meta_path = root / "info.csv"
    if not meta_path.is_file():
        raise SourceError(f"{root}: no info.csv (the Groove MIDI Dataset's metadata file)")
    try:
        meta = pd.read_csv(meta_path, dtype={"time_signature": str})
    except Exception as err:
        raise SourceError(f"{meta_path}: unreadable metadata: {err}") from None
    _check_columns_and_splits(meta, meta_path, GROOVE_COLUMNS)
    bpm = pd.to_numeric(meta["bpm"], errors="coerce")
    bad_bpm = meta.loc[~(bpm > 0), "midi_filename"].tolist()
    if bad_bpm:
        raise SourceError(f"{meta_path}: bpm is not a positive number for {bad_bpm[:5]}")
    bad_meter = meta.loc[
        ~meta["time_signature"].fillna("").str.fullmatch(TIME_SIGNATURE), "midi_filename"
    ].tolist()
    if bad_meter:
        raise SourceError(f"{meta_path}: time_signature is not like 4-4 for {bad_meter[:5]}")
    return meta.assign(bpm=bpm.astype(float))


def _groove(root: Path) -> pd.DataFrame:
    rows = []
    for rec in groove_metadata(root).to_dict("records"):
        midi = root / rec["midi_filename"]
        audio = root / rec["audio_filename"] if isinstance(rec.get("audio_filename"), str) else None
        duration = rec.get("duration")
        # A file listed but absent is kept as an empty payload: ingest quarantines it with its
        # reason.
        payload = midi.read_bytes() if midi.is_file() else b""
        # The drummer stands as composer: a drum performance has no other author.
        rows.append(
            _row(
                rec["midi_filename"],
                rec["split"],
                rec.get("drummer"),
                Path(rec["midi_filename"]).stem,
                None,
                None if pd.isna(duration) else float(duration),
                str(audio) if audio is not None and audio.is_file() else None,
                payload,
                rec["bpm"],
                rec["time_signature"],
            )
        )
    return pd.DataFrame(rows)


def _midi_dir(root: Path, data: Data) -> pd.DataFrame:
    if not root.is_dir():
        raise SourceError(f"data.path {root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"data.path {root}: no .mid or .midi files")
    rows = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        rows.append(
            _row(rel, hash_split(rel, data), None, path.stem, None, None, None, path.read_bytes())
        )
    return pd.DataFrame(rows)


def hash_split(relative_path: str, data: Data) -> str:
    """Deterministic split of a file, stable when other files are added or removed."""
    u = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") / 2**64
    fractions = data.midi_dir_split
    if u < fractions.test:
        return "test"
    if u < fractions.test + fractions.validation:
        return "validation"
    return "train"
