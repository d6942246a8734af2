"""Model families as plug-ins: declared code, registry, and a new family added with one module."""

import ast
import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from etude.family import SHARED_CODE
from etude.models import families
from etude.pipeline import render_dvc
from tests.conftest import REPO, edit_params, make_project, run

# Modules a family may import without declaring them: they cannot change what a variant computes.
NOT_RESULT_CODE = {
    "etude/params.py": "validation only: its effect on a variant reaches configs/<variant>.json",
    "etude/tracking.py": "logs to MLflow",
    "etude/ingest.py": (
        "builds the notes table; representations reach a variant as DVC dependencies"
    ),
    "etude/sources.py": "collects the corpus, as above; names the splits",
    "etude/figures.py": "draws the report",
    "etude/music.py": "judges samples in the generate stage, which depends on it",
    "etude/diagnosis.py": (
        "judges a finished training: train depends on it, and a change only re-judges"
    ),
    "etude/listen.py": "renders MP3 previews in the generate and report stages, which depend on it",
    "etude/variants.py": "validation only, as params.py",
    "etude/errors.py": "exception classes",
    "etude/skips.py": "skip records of the representation stages, as ingest.py",
}


def etude_imports(rel: str) -> set[str]:
    """Source files of the etude modules that `rel` imports, at any depth and anywhere in the
    file."""
    seen, todo = set(), [rel]
    while todo:
        current = todo.pop()
        for node in ast.walk(ast.parse((REPO / current).read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            for name in names:
                if name.startswith("etude"):
                    path = name.replace(".", "/")
                    found = next(
                        (p for p in (f"{path}.py", f"{path}/__init__.py") if (REPO / p).exists()),
                        None,
                    )
                    if found and found not in seen:
                        seen.add(found)
                        todo.append(found)
    return seen


@pytest.mark.parametrize("name", sorted(families()))
def test_declared_code_covers_every_module_the_family_imports(name):
    family = families()[name]
    imported = etude_imports(family.own_code()[0]) - {
        "etude/models/__init__.py",
        "etude/__init__.py",
        "etude/models/next_note/__init__.py",
    }
    undeclared = imported - set(family.code_files()) - set(NOT_RESULT_CODE)
    assert not undeclared, f"{name}: imports {sorted(undeclared)} without declaring them in `code`"
    assert set(SHARED_CODE) <= set(family.code_files())


def test_stage_table_and_checkpoint_hash_read_the_same_declaration(params, tmp_path):
    dvc = render_dvc(params)
    for name, family in families().items():
        for path in family.own_code():
            assert f": {path}" in dvc, f"{path} of {name} is not a dependency in dvc.yaml"
    # Editing a declared file changes the checkpoint folder's name.
    family = families()["note_rnn"]
    before = family.code_hash()
    target = REPO / "etude/midi.py"
    original = target.read_text()
    try:
        target.write_text(original + "\n# touched\n")
        assert family.code_hash() != before
    finally:
        target.write_text(original)
    assert family.code_hash() == before


def rendered_changes(project) -> list[str]:
    """Render dvc.yaml, then the files that adding a family touched: git's view of the project."""
    run(["python", "-m", "etude.pipeline"], project)
    changed = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True
    ).stdout
    return sorted(line[3:] for line in changed.splitlines())


TOY_FAMILY = '''
"""A pitch-bigram next-note network: the last pitch's embedding predicts the next pitch, step and
duration. It reuses the next-note task (its timing heads and sampler too) and brings only its
model."""

from pydantic import PositiveInt
from torch import nn

from etude.models.next_note.heads import timing_heads
from etude.models.next_note.task import NextNoteConfig, NextNoteFamily, NextNoteNetwork


class BigramConfig(NextNoteConfig):
    embedding: PositiveInt


class Bigram(NextNoteNetwork):
    def __init__(self, config, stats):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.embedding)
        self.pitch = nn.Linear(config.embedding, config.vocab_size)
        self.timing = timing_heads(config, config.embedding)

    def forward(self, notes, state=None):
        last = self.embed(notes[:, -1, 0].long().clamp(0, self.embed.num_embeddings - 1))
        return self.pitch(last), *self.timing(last), None


class PitchBigram(NextNoteFamily):
    name = "pitch_bigram"
    Config = BigramConfig

    def build(self, config, meta):
        return Bigram(config, meta["stats"])


FAMILY = PitchBigram()
'''


def test_a_new_family_is_one_module_and_params_entries(tmp_path):
    project = make_project(tmp_path)
    (project / "etude/models/pitch_bigram.py").write_text(textwrap.dedent(TOY_FAMILY))
    edit_params(
        project / "params.yaml",
        {
            "models": {
                "pitch_bigram": {
                    "seq_len": 8,
                    "vocab_size": 128,
                    "embedding": 16,
                    "loss_weights": {"pitch": 1.0, "step": 1.0, "duration": 1.0},
                    "timing_head": "bins",
                    "timing_bins": {
                        "count": 32,
                        "min_s": 0.01,
                        "max_s": 4.0,
                        "soft_label_width": 1.0,
                    },
                    "positive_pressure": 10.0,
                    "transpose_semitones": 0,
                    "diagnostic_notes": 16,
                    "dropout": 0.0,
                    "val_batch_size": 1024,
                    "baselines": {"smoothing": 1.0, "interpolation": [0.6, 0.3, 0.1]},
                }
            },
            "variants": {
                "bigram": {
                    "model": "pitch_bigram",
                    "lr": 0.02,
                    "epochs": 3,
                    "samples_per_epoch": 16384,
                    "batch_size": 256,
                }
            },
        },
    )
    assert rendered_changes(project) == ["dvc.yaml", "etude/models/pitch_bigram.py", "params.yaml"]

    repro = run(["dvc", "repro", "generate@bigram", "evaluate@bigram"], project)
    assert "Running stage 'train@bigram'" in repro.stdout
    evaluation = json.loads((project / "metrics/bigram/eval.json").read_text())
    # A bigram model knows the last pitch: it beats unigram frequencies on the test split.
    assert (
        evaluation["model"]["pitch_cross_entropy"] < evaluation["baseline"]["pitch_cross_entropy"]
    )
    written = sorted(p.name for p in (project / "samples/bigram").glob("*.mid"))
    assert written == ["t1_s0.mid", "t2_s0.mid", "test_s0.mid"]
    card = json.loads((project / "models/bigram/model.json").read_text())
    assert card["family"] == "pitch_bigram" and card["config"]["embedding"] == 16

    # Its module is a code dependency of its own stages only: editing it re-runs them.
    module = project / "etude/models/pitch_bigram.py"
    module.write_text(module.read_text() + "\n# a change\n")
    status = run(["dvc", "status", "train@bigram"], project).stdout
    assert (
        "modified:           etude/models/pitch_bigram.py" in status or "pitch_bigram.py" in status
    )
    dvc = (project / "dvc.yaml").read_text()
    assert (
        dvc.count("code_0: etude/models/pitch_bigram.py") == 4
    )  # configure, train, evaluate, generate


TOY_VAE_FAMILY = '''
"""A one-hidden-layer grid VAE whose onset loss weighs the rare onset cells up. It reuses the grid
VAE family (grids, batches, KL, evaluation, samples, verdicts) and brings its network and loss."""

import math

import torch
import torch.nn.functional as F
from pydantic import PositiveFloat, PositiveInt
from torch import nn

from etude.grids import FEATURES
from etude.models.grid_vae import GridVAE, GridVaeConfig, GridVaeFamily


class ShallowConfig(GridVaeConfig):
    hidden: PositiveInt
    onset_pos_weight: PositiveFloat


class Shallow(nn.Module):
    def __init__(self, config, shape, duration_range):
        super().__init__()
        self.features = FEATURES[config.representation]
        self.shape, self.duration_range = shape, duration_range
        cells = math.prod(shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(cells, config.hidden), nn.ReLU())
        self.mu = nn.Linear(config.hidden, config.latent_dim)
        self.logvar = nn.Linear(config.hidden, config.latent_dim)
        self.decoder = nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.ReLU(),
                                     nn.Linear(config.hidden, cells))

    activate = GridVAE.activate

    def encode(self, grids):
        h = self.encoder(grids)
        return self.mu(h), self.logvar(h)

    def decode_raw(self, z):
        return self.decoder(z).view(len(z), *self.shape)

    def forward(self, grids):
        mu, logvar = self.encode(grids)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return self.decode_raw(z), mu, logvar


class ShallowFamily(GridVaeFamily):
    name = "shallow_grid_vae"
    Config = ShallowConfig

    def build(self, config, meta):
        return Shallow(config, tuple(meta["shape"]), tuple(meta["duration_range"]))

    def reconstruction(self, model, x, output, config):
        terms = super().reconstruction(model, x, output, config)
        weight = torch.tensor(config.onset_pos_weight)
        bce = F.binary_cross_entropy_with_logits(
            output[:, 0], x[:, 0], pos_weight=weight, reduction="none"
        )
        return terms | {"onset": bce.flatten(1).sum(1)}


FAMILY = ShallowFamily()
'''


def test_a_new_vae_family_on_grids_is_one_module_of_network_and_loss_and_params_entries(tmp_path):
    project = make_project(tmp_path)
    (project / "etude/models/shallow_grid_vae.py").write_text(textwrap.dedent(TOY_VAE_FAMILY))
    grid_section = YAML(typ="safe").load((REPO / "params.yaml").read_text())["models"]["grid_vae"]
    edit_params(
        project / "params.yaml",
        {
            "models": {"shallow_grid_vae": grid_section | {"hidden": 32, "onset_pos_weight": 4.0}},
            "variants": {
                "shallow": {
                    "model": "shallow_grid_vae",
                    "epochs": 2,
                    "samples_per_epoch": 256,
                    "batch_size": 32,
                }
            },
        },
    )
    assert rendered_changes(project) == [
        "dvc.yaml",
        "etude/models/shallow_grid_vae.py",
        "params.yaml",
    ]
    dvc = (project / "dvc.yaml").read_text()
    assert dvc.count("code_0: etude/models/shallow_grid_vae.py") == 4
    # Its base classes' modules are its code too: a change to the grid VAE family re-runs it.
    assert "code_1: etude/models/grid_vae.py" in dvc and "code_2: etude/models/vae.py" in dvc

    repro = run(["dvc", "repro", "generate@shallow", "evaluate@shallow"], project)
    assert "Running stage 'train@shallow'" in repro.stdout
    history = (project / "metrics/shallow/history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 and "train_kl_loss" in history[0] and "val_onset_f1" in history[0]
    evaluation = json.loads((project / "metrics/shallow/eval.json").read_text())
    assert (
        0 < evaluation["model"]["onset_recall"] <= 1 and evaluation["baseline"]["onset_f1"] == 0.0
    )
    assert (project / "samples/shallow/prior.mid").exists()
    card = json.loads((project / "models/shallow/model.json").read_text())
    assert card["family"] == "shallow_grid_vae" and card["config"]["hidden"] == 32


def test_models_section_is_checked_against_the_registry(params, tmp_path):
    from etude import params as P
    from etude import variants

    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    edit_params(target, {"models": {"note_rn": {"seq_len": 3}}})
    with pytest.raises(
        P.ParamsError, match=r"models\.note_rn: no such model family; did you mean 'note_rnn'"
    ):
        variants.load(target)
    target.write_text((REPO / "params.yaml").read_text())
    edit_params(target, {"models": {"grid_vae": {"latent_dm": 2}}})
    with pytest.raises(
        P.ParamsError, match=r"models\.grid_vae\.latent_dm: unknown key; did you mean 'latent_dim'"
    ):
        variants.load(target)


def test_an_empty_split_fails_at_configure_naming_the_split_and_setting(tmp_path):
    project = make_project(tmp_path, {"variants": {"rnn_stacked": {"seq_len": 20000}}})
    failed = run(["dvc", "repro", "configure@rnn_stacked"], project, check=False)
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert re.search(r"the (train|validation|test) split has no window of 20001 notes", message)
    assert "variants.rnn_stacked.seq_len" in message and "Traceback" not in message
    assert not Path(project / "models/rnn_stacked").exists()
