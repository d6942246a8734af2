"""`etude doctor` through real DVC experiments on tiny data: a remedy that cures is recorded as
cleared, one that does nothing as not cleared and escalated up its ladder; a second run reuses
what finished."""

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from etude.doctor import redefines_loss
from tests.conftest import edit_params, env, make_project, run

STOPPED: dict[str, str] = {}  # what the first test saw finish before it stopped the doctor

# A bigram next-note family with two known switches: its validation loss rises epoch by epoch
# while dropout is below 0.2 (overfitting, cured by `more_dropout`), and its own verdict
# `stubborn` fires whatever the settings (no remedy can clear it).
TOY_FAMILY = '''
"""A pitch-bigram next-note network with a known overfitting switch and an incurable verdict."""

from typing import ClassVar

from pydantic import PositiveInt
from torch import nn

from etude.models.next_note.heads import timing_heads
from etude.models.next_note.task import NextNoteConfig, NextNoteFamily, NextNoteNetwork


class SwitchConfig(NextNoteConfig):
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


class Switches(NextNoteFamily):
    name = "switches"
    Config = SwitchConfig
    headline_metrics: ClassVar[dict[str, str]] = {"pitch_cross_entropy": "lower"}

    def build(self, config, meta):
        model = Bigram(config, meta["stats"])
        model.epochs_trained = 0
        return model

    def loss(self, model, batch, config, epoch):
        total, terms = super().loss(model, batch, config, epoch)
        if epoch is not None:
            model.epochs_trained = epoch + 1
        elif config.dropout < 0.2:  # validation: a model that "overfits" more every epoch
            total = total + 0.5 * model.epochs_trained
        return total, terms

    def verdicts(self, history, judge):
        return [judge("stubborn", True, "always", 1.0, 0.5, "lower")]


FAMILY = Switches()
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("doctor"))
    (project / "etude/models/switches.py").write_text(textwrap.dedent(TOY_FAMILY))
    edit_params(
        project / "params.yaml",
        {
            "models": {
                "switches": {
                    "seq_len": 8,
                    "vocab_size": 128,
                    "embedding": 16,
                    "loss_weights": {"pitch": 1.0, "step": 1.0, "duration": 1.0},
                    "timing_head": "bins",
                    "timing_bins": {
                        "count": 16,
                        "min_s": 0.01,
                        "max_s": 4.0,
                        "soft_label_width": 1.0,
                    },
                    "positive_pressure": 10.0,
                    "transpose_semitones": 0,
                    "diagnostic_notes": 8,
                    "dropout": 0.0,
                    "val_batch_size": 1024,
                    "baselines": {"smoothing": 1.0, "interpolation": [0.6, 0.3, 0.1]},
                }
            },
            "variants": {
                "toy": {
                    "model": "switches",
                    "lr": 0.01,
                    "epochs": 5,
                    "samples_per_epoch": 1024,
                    "batch_size": 256,
                    "threads": 1,
                }
            },
            "diagnosis": {
                "ladders": {"overfitting": ["more_dropout"], "stubborn": ["higher_lr", "lower_lr"]}
            },
            "doctor": {"seeds": 1, "max_rounds": 2, "steps_per_remedy": 1, "poll_seconds": 1},
        },
    )
    run(["python", "-m", "etude.pipeline"], project)
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "toy"], project)
    run(["dvc", "repro", "evaluate@toy", "generate@toy"], project)
    return project


def test_a_remedy_that_reweights_the_loss_is_not_judged_on_validation_loss():
    loss_settings = ["loss", "kl", "spectral_weight"]
    assert redefines_loss({"variants.v.loss.timeshift": 2.67}, loss_settings)
    assert redefines_loss({"variants.v.kl": {"beta": 0.1}}, loss_settings)
    assert redefines_loss({"variants.v.lr": 0.1, "variants.v.kl.beta": 0.1}, loss_settings)
    # a prefix of a name is not the setting: loss_weights is not loss
    assert not redefines_loss({"variants.v.loss_weights.pitch": 1.0}, loss_settings)
    assert not redefines_loss({"variants.v.onset_threshold": 0.4}, loss_settings)


def stages_running_in(project: Path) -> list[str]:
    """Command lines of stage processes whose working directory lies in `project` (the queue runs
    experiments in copies under .dvc/tmp/exps)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = (proc / "cwd").resolve()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd.is_relative_to(project) and "-m stages." in cmdline:
            found.append(cmdline)
    return found


def test_stopping_the_doctor_stops_its_trainings(project):
    """SIGTERM once the first experiment finished: the running one is killed with its training,
    no stage process is left behind, and the finished experiment stays."""
    doctor = subprocess.Popen(
        ["python", "-m", "etude", "doctor", "--variant", "toy", "--jobs", "1"],
        cwd=project,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in doctor.stdout:
        seen.append(line)
        if line.startswith("doctor: ") and line.rstrip().endswith(": finished"):
            STOPPED["finished"] = line.split(": ")[1]
            break
    assert STOPPED, "no experiment finished"
    # Live progress: the running experiment's epochs showed before it finished.
    assert any(": running, epoch " in line for line in seen), seen
    doctor.send_signal(signal.SIGTERM)
    assert doctor.wait(timeout=120) == 130, doctor.stdout.read()
    deadline = time.monotonic() + 10
    while stages_running_in(project) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stages_running_in(project) == []
    listed = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    assert STOPPED["finished"] in listed
    assert "toy-stubborn-r2" not in listed  # stopped before the second round


def test_a_cure_is_cleared_and_a_remedy_that_does_nothing_escalates(project):
    train = json.loads((project / "metrics/toy/train.json").read_text())
    assert {v["name"] for v in train["diagnosis"]} == {"overfitting", "stubborn"}

    done = run(
        ["python", "-m", "etude", "doctor", "--variant", "toy", "--jobs", "2"],
        project,
        timeout=1200,
    )
    # What finished before the doctor was stopped is reused, not queued again.
    assert f"doctor: queued {STOPPED['finished']}:" not in done.stdout
    result = json.loads((project / "metrics/doctor.json").read_text())
    toy = result["variants"]["toy"]
    assert toy["seed_runs"] == ["toy-seed1338"]
    assert "measure.overfitting" in toy["noise"] and "test_pitch_cross_entropy" in toy["noise"]

    overfitting = toy["verdicts"]["overfitting"]
    (cure,) = overfitting["rounds"]
    assert cure["overrides"] == {"variants.toy.dropout": 0.2}
    assert cure["after"] < cure["before"] - toy["noise"]["measure.overfitting"]
    assert cure["cleared"] and not cure["still_fires"]
    assert overfitting["cleared"] and overfitting["keep"] == "dvc exp apply toy-overfitting-r1"

    stubborn = toy["verdicts"]["stubborn"]
    first, second = stubborn["rounds"]
    assert (first["remedy"], first["overrides"]) == ("higher_lr", {"variants.toy.lr": 0.02})
    assert not first["cleared"] and first["still_fires"]
    # Stepped once (steps_per_remedy 1): the next remedy on the ladder, from the remedied run.
    assert (second["remedy"], second["round"]) == ("lower_lr", 2)
    assert second["overrides"] == {"variants.toy.lr": 0.004}
    assert not stubborn["cleared"] and stubborn["keep"] is None

    listed = run(["dvc", "exp", "list", "--name-only"], project).stdout.split()
    assert {"toy-seed1338", "toy-overfitting-r1", "toy-stubborn-r1", "toy-stubborn-r2"} <= set(
        listed
    )
    report = "\n".join(done.stdout.splitlines()[-6:])
    assert "| toy | overfitting |" in report and "`dvc exp apply toy-overfitting-r1`" in report

    # The report's section: one row per remedy tried, the one worth keeping with its command.
    from etude.report import Page, remedies_tried

    page = Page()
    remedies_tried(page, project / "metrics/doctor.json")
    (section,) = page.markdown
    assert section.startswith("## Remedies tried (etude doctor on the workspace's run")
    rows = [line for line in section.splitlines() if line.startswith("| toy")]
    assert len(rows) == 3 and sum("dvc exp apply toy-overfitting-r1" in row for row in rows) == 1

    # MLflow holds the same comparison: the remedied runs are tagged with parent and verdict.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    tagged = mlflow.search_runs(
        experiment_names=["etude"],
        filter_string="tags.dvc_exp_name = 'toy-overfitting-r1' and tags.stage = 'train'",
    )
    assert list(tagged["tags.doctor.verdicts"]) == ["overfitting"]
    assert list(tagged["tags.doctor.parent"]) == ["workspace"]
    assert tagged["tags.doctor.parent_run"].iloc[0]

    # Nothing new to try: the finished experiments are read again, nothing is queued.
    start = time.monotonic()
    again = run(["python", "-m", "etude", "doctor", "--variant", "toy"], project)
    assert "queued" not in again.stdout and time.monotonic() - start < 60
    assert (
        json.loads((project / "metrics/doctor.json").read_text())["variants"] == result["variants"]
    )


def test_the_doctor_treats_a_named_experiment(project):
    """`--exp NAME`: the verdicts are the experiment's, and every run starts from its params."""
    from ruamel.yaml import YAML

    from etude.doctor import finished, show

    parent = "toy-overfitting-r1"  # dropout 0.2: cured of overfitting, still stubborn
    run(
        ["python", "-m", "etude", "doctor", "--variant", "toy", "--exp", parent, "--jobs", "2"],
        project,
        timeout=1200,
    )
    result = json.loads((project / "metrics/doctor.json").read_text())
    assert result["parent"] == parent
    toy = result["variants"]["toy"]
    assert toy["seed_runs"] == [f"{parent}-toy-seed1338"]
    assert set(toy["verdicts"]) == {"stubborn"}
    first = toy["verdicts"]["stubborn"]["rounds"][0]
    assert first["experiment"] == f"{parent}-toy-stubborn-r1"
    # the parent's own dropout is in every run, not counted as a remedy
    assert first["overrides"] == {"variants.toy.lr": 0.02}
    done = finished(project)
    for name in (f"{parent}-toy-seed1338", first["experiment"]):
        variant = YAML(typ="safe").load(show(project, done[name], "params.yaml"))["variants"]["toy"]
        assert variant["dropout"] == 0.2, name
