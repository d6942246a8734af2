"""Skip records: what every stage after ingest keeps of the usable pieces it cannot use.

Every later stage follows the same rule for the usable pieces: a piece it cannot use raises
`Unusable` with the reason, which the stage records in its own output (`skipped`: piece, path,
reason), prints, and goes on. When nothing is left, a representation stage writes its output empty
(skip records kept) and prints why (`empty_warning`): the DAG goes on, and only a variant reading it
stops, at configure (`empty_error`), naming the file, the cause and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SKIPPED_COLUMNS = ("piece", "path", "reason")
ONLY_DRUM_NOTES = (
    "only drum notes"  # how every stage's reason for a piece of drum notes alone begins
)
# A stage whose statistics need training data names the settings that decide the split.
TRAINING_SPLIT_HINT = (
    "statistics come from the training split: give it usable pieces through data.midi_dir_split "
    "(midi_dir source), data.sample.validation/test (maestro-sample) or the metadata's split "
    "column (maestro)"
)


class Unusable(ValueError):
    """A piece that a stage after ingest cannot use; the message is the reason it records."""


def one_line(reason: str) -> str:
    """A reason as one line: an exception's message may span several, and a stage prints one per
    piece."""
    return " ".join(reason.split())


def skipped_table(pieces: pd.DataFrame, reasons: dict[int, str]) -> pd.DataFrame:
    """piece, path and reason of each skipped piece id, in id order."""
    ids = sorted(int(i) for i in reasons)
    path_of = dict(zip(pieces["id"], pieces["path"]))
    return pd.DataFrame(
        {
            "piece": np.array(ids, dtype=np.int32),
            "path": [str(path_of[i]) for i in ids],
            "reason": [one_line(reasons[i]) for i in ids],
        },
        columns=list(SKIPPED_COLUMNS),
    )


def skipped_arrays(skipped: pd.DataFrame) -> dict[str, np.ndarray]:
    """The skip records as npz arrays: fixed-width unicode, so no pickle and the same bytes for the
    same records."""
    return {
        "skipped_piece": skipped["piece"].to_numpy(np.int32),
        "skipped_path": skipped["path"].to_numpy(str),
        "skipped_reason": skipped["reason"].to_numpy(str),
    }


def skipped_from(arrays) -> pd.DataFrame:
    """The skip records of an npz written with `skipped_arrays`."""
    return pd.DataFrame(
        {
            "piece": arrays["skipped_piece"],
            "path": arrays["skipped_path"].tolist(),
            "reason": arrays["skipped_reason"].tolist(),
        },
        columns=list(SKIPPED_COLUMNS),
    )


def skip_counts(skipped: pd.DataFrame, most: int = 5) -> str:
    """'3 pieces skipped (2: reason; 1: reason)': the reasons counted, most common first."""
    counts = skipped["reason"].value_counts()
    # Most common first, ties by text: the same message for the same corpus.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = "; ".join(f"{n}: {reason}" for reason, n in ranked[:most])
    more = f"; and {len(ranked) - most} other reasons" if len(ranked) > most else ""
    plural = "piece" if len(skipped) == 1 else "pieces"
    return f"{len(skipped)} {plural} skipped ({shown}{more})"


def nothing_left(what: str, skipped: pd.DataFrame, most: int = 5) -> str:
    """Why a stage has no output:
    'no rhythm window in any piece: 3 pieces skipped (2: reason; 1: reason)'."""
    if skipped.empty:
        return f"no {what}: the pieces table has no usable piece"
    return f"no {what} in any piece: {skip_counts(skipped, most)}"


def drum_skips(skipped: pd.DataFrame) -> int:
    """How many pieces were skipped for holding drum notes alone (every stage's reason starts
    alike)."""
    return int(skipped["reason"].str.startswith(ONLY_DRUM_NOTES).sum()) if len(skipped) else 0


def why_empty(what: str, skipped: pd.DataFrame) -> str:
    """Why a representation holds no `what`, in one line: the cause, then the reasons counted."""
    if skipped.empty:
        return nothing_left(what, skipped)
    drums = drum_skips(skipped)
    if drums == len(skipped):
        return f"no piece has pitched notes (a drum corpus?): {skip_counts(skipped)}"
    if drums:
        return (
            f"every piece skipped, {drums} for holding drum notes alone (a drum corpus?): "
            f"{skip_counts(skipped)}"
        )
    return nothing_left(what, skipped)


def empty_warning(stage: str, target: str, what: str, skipped: pd.DataFrame) -> str:
    """The line a stage prints when it writes an empty representation instead of failing: the DAG
    goes on, and only the variants that read it stop, at configure (`empty_error`)."""
    return (
        f"{stage}: WARNING: {why_empty(what, skipped)}: {target} holds no {what}; "
        "variants reading it will stop at configure"
    )


def empty_error(variant: str, target: str, what: str, skipped: pd.DataFrame) -> str:
    """Why a variant cannot train on an empty representation, and the two ways out."""
    other = (
        "a corpus with pitched notes" if drum_skips(skipped) else "a corpus with pieces it can use"
    )
    return (
        f"variant {variant}: {target} holds no {what}: {why_empty(what, skipped)}; "
        f"remove {variant} from "
        f"`variants:` in params.yaml (then run `python -m etude.pipeline`) or use {other}"
    )


class SkipRecords:
    """What a representation that keeps skip records has: `skipped`, `source` (the file it was
    loaded from, if any), `what` (one element, in messages) and `empty`; and why a variant cannot
    read it."""

    skipped: pd.DataFrame
    source: Path | None
    what: str
    set_name: str  # names it in messages when it was not loaded from a file
    empty: bool

    def empty_error(self, variant: str) -> str:
        """Why `variant` cannot read this set (the file, the cause, the fix); "" when it holds
        any."""
        if not self.empty:
            return ""
        return empty_error(variant, str(self.source or self.set_name), self.what, self.skipped)
