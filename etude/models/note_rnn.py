"""Next-note LSTM over (pitch, step, duration): the TensorFlow tutorial model and its stacked
version.

This module holds the network; the task (windows, loss, sampler, metrics, samples) is
etude.models.next_note.
"""

from __future__ import annotations

import itertools
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from etude.diagnosis import Remedy, more_dropout
from etude.models.next_note.heads import timing_heads
from etude.models.next_note.task import NextNoteConfig, NextNoteFamily, NextNoteNetwork


class NoteRnnConfig(NextNoteConfig):
    lstm_units: Annotated[list[PositiveInt], Field(min_length=1)]
    # scalar: pitch / vocab_size, the documents' input; embedding: a learned vector per pitch
    pitch_input: Literal["scalar", "embedding"]
    pitch_embedding: PositiveInt  # its width (embedding only)


class NoteRNN(NextNoteNetwork):
    """LSTM stack with a pitch head and timing heads. Takes raw notes; normalises them itself.

    Normalisation lives in the model (buffers from the training split), so the sampler feeds back
    exactly what training saw: the tutorial's loop appended unscaled pitch to a pitch/128 window.
    """

    def __init__(self, config: NoteRnnConfig, stats: dict[str, float]):
        super().__init__()
        self.register_buffer(
            "shift", torch.tensor([0.0, stats["step_mean"], stats["duration_mean"]])
        )
        self.register_buffer(
            "scale",
            torch.tensor([float(config.vocab_size), stats["step_std"], stats["duration_std"]]),
        )
        self.embed = (
            nn.Embedding(config.vocab_size, config.pitch_embedding)
            if config.pitch_input == "embedding"
            else None
        )
        width = 2 + (config.pitch_embedding if self.embed is not None else 1)
        sizes = [width, *config.lstm_units]
        self.lstms = nn.ModuleList(
            nn.LSTM(i, o, batch_first=True) for i, o in itertools.pairwise(sizes)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.pitch = nn.Linear(sizes[-1], config.vocab_size)
        self.timing = timing_heads(config, sizes[-1])

    def forward(self, notes: torch.Tensor, state: list | None = None):
        """Heads at the last time step, and the LSTM state to continue from."""
        h = (notes - self.shift) / self.scale
        if self.embed is not None:
            pitch = notes[..., 0].long().clamp(0, self.embed.num_embeddings - 1)
            h = torch.cat([self.embed(pitch), h[..., 1:]], dim=-1)
        new_state = []
        for i, lstm in enumerate(self.lstms):
            if i:
                h = self.dropout(h)
            h, s = lstm(h, None if state is None else state[i])
            new_state.append(s)
        last = h[:, -1]
        return self.pitch(last), *self.timing(last), new_state


class NoteRnnFamily(NextNoteFamily):
    name = "note_rnn"
    Config = NoteRnnConfig

    def build(self, config: NoteRnnConfig, meta: dict) -> NoteRNN:
        return NoteRNN(config, meta["stats"])

    # Dropout acts only between stacked LSTM layers: a single layer has none to raise.
    remedies: ClassVar[dict[str, Remedy]] = NextNoteFamily.remedies | {
        "pitch_embedding": Remedy(
            "pitch as a learned embedding instead of pitch / 128",
            lambda c, r, v: {"pitch_input": "embedding"},
        ),
        "more_dropout": Remedy(
            "more dropout between the LSTM layers",
            lambda c, r, v: more_dropout(c, r, v) if len(c.lstm_units) > 1 else {},
        ),
    }


FAMILY = NoteRnnFamily()
