"""Decoder-only Transformer over (pitch, step, duration) notes, and its cached sampler.

Beyond the documents' models (their future work): pitch is an embedding, not pitch/128; step and
duration enter as embeddings of their log-spaced bins or as a projection of their normalised values;
causal self-attention with rotary positions, so attention depends on how far back a note is, not
where the window began. Trained on every position of a window at once (one next-note prediction per
input note); evaluated, like the LSTMs, on the note after a full window. The task (windows, loss
terms, sampler, metrics, samples) is etude.models.next_note.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt, model_validator
from torch import nn

from etude.models.next_note.heads import timing_bin, timing_edges, timing_heads
from etude.models.next_note.task import (
    NextNoteConfig,
    NextNoteFamily,
    NextNoteNetwork,
    NoteBatch,
    draw_note,
    note_loss,
)


class NoteTransformerConfig(NextNoteConfig):
    d_model: PositiveInt
    layers: PositiveInt
    heads: PositiveInt
    ff_mult: PositiveInt  # feed-forward width: ff_mult x d_model
    rope_base: PositiveFloat  # rotary positions: wavelengths from 2 pi to 2 pi x rope_base
    timing_input: Literal[
        "bins", "linear"
    ]  # step/duration in: embeddings of timing_bins, or a projection

    @model_validator(mode="after")
    def _head_width(self):
        if self.d_model % (2 * self.heads):
            raise ValueError(
                f"d_model ({self.d_model}) must divide into `heads` ({self.heads}) "
                "heads of even width"
            )
        return self


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding of (B, H, T, D) queries or keys at absolute `positions` (T,)."""
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * frequencies
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, config: NoteTransformerConfig):
        super().__init__()
        self.heads, self.base, self.dropout = config.heads, config.rope_base, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: tuple | None, context: int):
        """Causal attention over the cached keys and these; returns the output and the new cache,
        holding at most the last `context` keys (a query sees as many notes as in training)."""
        batch, length, width = x.shape
        q, k, v = (
            self.qkv(x)
            .view(batch, length, 3, self.heads, width // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k = rotate(q, positions, self.base), rotate(k, positions, self.base)
        if cache is not None:
            k, v = (
                torch.cat([cache[0], k], dim=2)[:, :, -context:],
                torch.cat([cache[1], v], dim=2)[:, :, -context:],
            )
        # One query attends to every cached key; a whole window is causal from its first note.
        causal = cache is None and length > 1
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(batch, length, width)), (k, v)


class Block(nn.Module):
    """Pre-norm residual block: attention, then a GELU feed-forward layer."""

    def __init__(self, config: NoteTransformerConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.attention = SelfAttention(config)
        self.ff = nn.Sequential(
            nn.Linear(config.d_model, config.ff_mult * config.d_model),
            nn.GELU(),
            nn.Linear(config.ff_mult * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x, positions, cache, context):
        attended, cache = self.attention(self.norm1(x), positions, cache, context)
        x = x + attended
        return x + self.ff(self.norm2(x)), cache


class NoteTransformer(NextNoteNetwork):
    """Takes raw notes (B, T, 3). `forward` returns the heads at the last note (or at every note
    with all_positions) and a cache to continue from: one key and value per layer and note."""

    def __init__(self, config: NoteTransformerConfig, stats: dict[str, float]):
        super().__init__()
        self.context, self.vocab = config.seq_len, config.vocab_size
        self.pitch_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.timing_input = config.timing_input
        if self.timing_input == "bins":
            count = config.timing_bins.count
            self.register_buffer("input_edges", timing_edges(config.timing_bins), persistent=False)
            self.step_embedding = nn.Embedding(count, config.d_model)
            self.duration_embedding = nn.Embedding(count, config.d_model)
        else:
            self.register_buffer(
                "shift", torch.tensor([stats["step_mean"], stats["duration_mean"]])
            )
            self.register_buffer("scale", torch.tensor([stats["step_std"], stats["duration_std"]]))
            self.timing_projection = nn.Linear(2, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.pitch = nn.Linear(config.d_model, config.vocab_size)
        self.timing = timing_heads(config, config.d_model)

    def embed(self, notes: torch.Tensor) -> torch.Tensor:
        pitch = self.pitch_embedding(notes[..., 0].long().clamp(0, self.vocab - 1))
        if self.timing_input == "bins":
            edges = self.input_edges
            return (
                pitch
                + self.step_embedding(timing_bin(notes[..., 1], edges))
                + self.duration_embedding(timing_bin(notes[..., 2], edges))
            )
        return pitch + self.timing_projection((notes[..., 1:] - self.shift) / self.scale)

    def start(self, seeds: torch.Tensor):
        """The heads after the last seq_len notes of each seed window, and their cache."""
        return self(seeds[:, -self.context :])

    def forward(self, notes: torch.Tensor, cache: dict | None = None, all_positions: bool = False):
        if cache is not None and notes.shape[1] != 1:
            raise ValueError("a cached forward pass takes one note per row")
        start = 0 if cache is None else cache["next_position"]
        positions = torch.arange(start, start + notes.shape[1], device=notes.device)
        h = self.dropout(self.embed(notes))
        layers = []
        for i, block in enumerate(self.blocks):
            h, layer_cache = block(
                h, positions, None if cache is None else cache["layers"][i], self.context
            )
            layers.append(layer_cache)
        h = self.norm(h if all_positions else h[:, -1])
        new_cache = {"layers": layers, "next_position": start + notes.shape[1]}
        return self.pitch(h), *self.timing(h), new_cache


@torch.inference_mode()
def sample_uncached(
    model: NoteTransformer,
    seeds: torch.Tensor,
    temperatures: torch.Tensor,
    num_notes: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The draws of etude.models.next_note.task.sample with the whole window of the last seq_len
    notes re-run for every note, not cached (bench.generate's reference for the cache)."""
    model.eval()
    window, notes = seeds[:, -model.context :], []
    for _ in range(num_notes):
        *heads, _ = model(window)
        notes.append(draw_note(model.timing, heads, temperatures, generator, seeds.dtype))
        window = torch.cat([window, notes[-1][:, None]], dim=1)[:, -model.context :]
    return torch.stack(notes, dim=1)


class NoteTransformerFamily(NextNoteFamily):
    name = "note_transformer"
    Config = NoteTransformerConfig

    def build(self, config: NoteTransformerConfig, meta: dict) -> NoteTransformer:
        return NoteTransformer(config, meta["stats"])

    def loss(self, model, batch: NoteBatch, config, epoch: int | None) -> tuple[torch.Tensor, dict]:
        """Every note of the window after the first is a target: seq_len predictions per window."""
        inputs, target = batch
        notes = torch.cat([inputs, target[:, None]], dim=1)
        logits, step, duration, _ = model(notes[:, :-1], all_positions=True)
        flat = lambda x: x.flatten(0, 1)
        return note_loss(
            model, flat(logits), flat(step), flat(duration), flat(notes[:, 1:]), config.loss_weights
        )


FAMILY = NoteTransformerFamily()
