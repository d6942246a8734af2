"""`etude doctor`: every verdict's remedy tried as a DVC experiment, judged against the noise of
other seeds, escalated up its ladder while it does not cure.

The parent is the workspace's run (or a named DVC experiment). Each variant with verdicts gets
`doctor.seeds` re-runs of the parent under other seeds, the noise floor, and one experiment per
distinct remedy (verdicts with the same remedy share it). When the queue has run, each remedy is
compared with its parent on the verdict's own measure and on the variant's headline metrics; a
change is real only beyond `doctor.noise_factor` x the seeds' spread. A verdict not cleared climbs
its ladder (etude.diagnosis.Judge.prescribe) from the remedied run, up to `doctor.max_rounds`.
Experiments are found again by name: a second run reuses every finished one, and with nothing new
to try says so without queueing anything.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from etude.device import JOBS_ENV
from etude.diagnosis import Verdict, literal, setting_of, variant_key
from etude.errors import EtudeError
from etude.models import family_named
from etude.params import Params
from etude.pipeline import EVAL_METRICS, MUSIC_METRICS, TRAIN_METRICS, path_for
from etude.variants import load, load_text, variant_config

DOCTOR_JSON = Path("metrics/doctor.json")
EPOCH_LINE = re.compile(r"train@\S+ epoch (\d+)/(\d+)")


class DoctorError(EtudeError):
    """The doctor cannot start or go on: no verdicts to read, a failed DVC command."""


# ---- DVC and git, as a user would call them ------------------------------------------------------
def _call(cmd: list[str], root: Path, check: bool = True, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, env=os.environ | env if env else None
    )
    if check and done.returncode != 0:
        raise DoctorError(
            f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-800:]}"
        )
    return done.stdout


def head(root: Path) -> str:
    return _call(["git", "rev-parse", "HEAD"], root).strip()


def finished(root: Path) -> dict[str, str]:
    """Experiments of the current commit that finished, by name: their commits."""
    base = head(root)
    prefix = f"refs/exps/{base[:2]}/{base[2:]}/"
    lines = _call(["git", "for-each-ref", "--format=%(refname) %(objectname)", prefix], root)
    return {
        ref.removeprefix(prefix): sha
        for ref, sha in (line.split() for line in lines.splitlines())
        if "/" not in ref.removeprefix(prefix)
    }


def start_workers(root: Path, jobs: int) -> None:
    """`dvc queue start -j N`, its workers told the job count (ETUDE_JOBS). The workers it starts
    keep its output open, so it writes to a file, not a pipe that would be read until they end."""
    with tempfile.TemporaryFile("w+") as log:
        done = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {JOBS_ENV: str(jobs)},
        )
        if done.returncode != 0:
            log.seek(0)
            raise DoctorError(f"`dvc queue start -j {jobs}` failed: {log.read().strip()[-800:]}")


def queue_status(root: Path) -> dict[str, str]:
    """Queued, running, failed experiments by name (`dvc queue status`)."""
    status = {}
    for line in _call(["dvc", "queue", "status"], root).splitlines()[1:]:
        words = line.split()
        if len(words) >= 4 and not line.startswith("Worker"):
            status[words[1]] = words[-1]
    return status


def active_workers(root: Path) -> int:
    """How many queue workers run a task now (`dvc queue status`: "Worker status: N active")."""
    found = re.search(r"Worker status: (\d+) active", _call(["dvc", "queue", "status"], root))
    return int(found.group(1)) if found else 0


def show(root: Path, sha: str, path: str) -> str | None:
    done = subprocess.run(
        ["git", "show", f"{sha}:{path}"], cwd=root, capture_output=True, text=True
    )
    return done.stdout if done.returncode == 0 else None


# ---- what the doctor compares --------------------------------------------------------------------
@dataclass
class Run:
    """One trained variant as the doctor compares it: the parent, a seed re-run, a remedy."""

    measures: dict[str, dict[str, Any]]  # verdict -> value, limit, better, fired (train.json)
    verdicts: dict[str, Verdict]  # the fired ones
    headline: dict[str, tuple[float, str]]  # metric -> (value, better)
    config: Any

    @classmethod
    def read(cls, text_of: Callable[[str], str | None], params: Params, variant: str) -> Run:
        """From a workspace or an experiment's commit; `text_of(path)` reads a file there."""
        train = json.loads(text_of(path_for(TRAIN_METRICS, variant)) or "{}")
        if "measures" not in train:
            raise DoctorError(
                f"{path_for(TRAIN_METRICS, variant)}: no measures to compare; the training is "
                "older than the doctor: run `dvc repro` first"
            )
        evaluation = json.loads(text_of(path_for(EVAL_METRICS, variant)) or "{}")
        music = json.loads(text_of(path_for(MUSIC_METRICS, variant)) or "{}")
        config = variant_config(params, variant)
        family = family_named(config.model)
        headline = {"best_val_loss": (train["best_val_loss"], "lower")}
        model = evaluation.get("model", {})
        headline |= {
            f"test_{name}": (model[name], better)
            for name, better in family.headline_metrics.items()
            if name in model
        }
        headline |= {
            f"oa_{group}": (row["oa_mean"], "higher")
            for group, row in music.get("groups", {}).items()
            if "oa_mean" in row
        }
        verdicts = {v["name"]: Verdict.from_dict(v) for v in train.get("diagnosis", [])}
        return cls(train["measures"], verdicts, headline, config)

    def values(self) -> dict[str, float]:
        """Every compared number: verdict measures and headline metrics."""
        found = {f"measure.{k}": m["value"] for k, m in self.measures.items()}
        return found | {k: v for k, (v, _) in self.headline.items()}


def spread(runs: list[Run]) -> dict[str, float]:
    """Per compared number, max - min over the parent and its seed re-runs: the noise floor."""
    keys = set.intersection(*(set(r.values()) for r in runs))
    return {
        k: float(max(r.values()[k] for r in runs) - min(r.values()[k] for r in runs))
        for k in sorted(keys)
    }


def redefines_loss(overrides: dict[str, Any], loss_settings: list[str]) -> bool:
    """Whether `variants.<V>.<setting>` overrides change one of `loss_settings` or a key inside
    one: best validation loss is then another quantity."""
    return any(
        setting == loss or setting.startswith(f"{loss}.")
        for setting in map(setting_of, overrides)
        for loss in loss_settings
    )


def gain(before: float, after: float, better: str) -> float:
    """How far `after` moved to the healthy side of `before` (negative: away from it)."""
    return after - before if better == "higher" else before - after


# ---- the plan ------------------------------------------------------------------------------------
@dataclass
class Experiment:
    name: str
    variant: str
    overrides: dict[str, Any]  # every -S of the experiment: the parent's and the remedy's
    round: int
    treats: dict[str, str] = field(default_factory=dict)  # verdict -> rung (the remedy's name)
    parent: str = "parent"  # the run the verdicts were read from
    seed: int | None = None

    def command(self, stages: list[str]) -> list[str]:
        sets = [arg for k, v in self.overrides.items() for arg in ("-S", f"++{k}={literal(v)}")]
        return ["dvc", "exp", "run", "--queue", "-n", self.name, *sets, *stages]


def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def params_diff(parent: dict, workspace: dict) -> dict[str, Any]:
    """The overrides that turn the workspace's params.yaml into a parent experiment's."""
    mine, theirs = flat(workspace), flat(parent)
    return {k: v for k, v in theirs.items() if mine.get(k, object()) != v}


class Doctor:
    def __init__(
        self,
        root: Path,
        variants: Iterable[str] | None,
        jobs: int | None,
        parent_exp: str | None,
        out: Callable[[str], None] | None = None,
    ):
        self.root = root
        self.out = out or (lambda line: print(line, flush=True))
        self.workspace_text = (root / "params.yaml").read_text()
        self.params = load(root / "params.yaml")
        self.settings = self.params.doctor
        self.jobs = jobs or self.settings.jobs or _cores()
        self.parent_exp = parent_exp
        self.base: dict[str, Any] = {}
        if parent_exp:
            sha = finished(root).get(parent_exp)
            if sha is None:
                raise DoctorError(f"--exp {parent_exp}: no finished experiment of that name")
            text = show(root, sha, "params.yaml") or ""
            yaml = YAML(typ="safe")
            self.base = params_diff(yaml.load(text), yaml.load(self.workspace_text))
            self.parent_params = self.params_of(text, f"{parent_exp}:params.yaml")
            self.parent_read = lambda path: show(root, sha, path)
        else:
            self.parent_params = self.params
            self.parent_read = lambda path: (
                (root / path).read_text() if (root / path).exists() else None
            )
        self.variants = list(variants or self.parent_params.variants)
        self.prefix = f"{parent_exp}-" if parent_exp else ""

    # ---- naming and running -------------------------------------------------------------------
    def seed_runs(self, variant: str) -> list[Experiment]:
        seed = variant_config(self.parent_params, variant).seed
        return [
            Experiment(
                f"{self.prefix}{variant}-seed{seed + i}",
                variant,
                self.base | {variant_key(variant, "seed"): seed + i},
                0,
                seed=seed + i,
            )
            for i in range(1, self.settings.seeds + 1)
        ]

    def remedies(
        self,
        variant: str,
        config,
        measures: dict[str, dict[str, Any]],
        base: dict[str, Any],
        round_: int,
        chains: dict[str, list[str]],
    ) -> list[Experiment]:
        """One experiment per distinct remedy of the verdicts in `measures`, on top of `base`;
        `chains`: per verdict, the rungs tried so far (one tried `steps_per_remedy` times is
        skipped: the next remedy on the ladder is tried instead)."""
        judge = family_named(config.model).judge(config, self.params.diagnosis, variant)
        by_overrides: dict[str, Experiment] = {}
        for name, measure in sorted(measures.items()):
            tried = chains.get(name, [])
            skip = {r for r in tried if tried.count(r) >= self.settings.steps_per_remedy}
            value = measure.get("remedy_value", measure.get("value"))
            rung, _, overrides = judge.prescribe(name, value, skip)
            if not overrides:
                continue
            key = json.dumps(overrides, sort_keys=True, default=str)
            exp = by_overrides.setdefault(key, Experiment("", variant, base | overrides, round_))
            exp.treats[name] = rung
        for exp in by_overrides.values():
            exp.name = self.remedy_name(exp)
        return list(by_overrides.values())

    def remedy_name(self, exp: Experiment) -> str:
        """<variant>-<verdicts it treats>-r<round>, after the parent experiment if one is named."""
        return f"{self.prefix}{exp.variant}-{'+'.join(sorted(exp.treats))}-r{exp.round}"

    def shared(self, following: list[tuple]) -> list[tuple]:
        """Verdicts escalating to the same overrides share one experiment."""
        merged: dict[str, tuple] = {}
        for exp, before, chains in following:
            key = json.dumps(exp.overrides, sort_keys=True, default=str)
            if key in merged:
                kept, _, kept_chains = merged[key]
                kept.treats |= exp.treats
                kept_chains |= chains
                kept.name = self.remedy_name(kept)
            else:
                merged[key] = (exp, before, dict(chains))
        return list(merged.values())

    def run_queue(self, planned: list[Experiment]) -> dict[str, str]:
        """Queue what has not finished, run the queue, follow it; the finished commits by name."""
        done = finished(self.root)
        todo = [e for e in planned if e.name not in done]
        if not todo:
            return done
        status = queue_status(self.root)
        # "Running" with no worker active: a task killed as it started, which no worker will end.
        stale = "Running" in status.values() and active_workers(self.root) == 0
        for exp in todo:
            state = status.get(exp.name)
            if state == "Queued" or (state == "Running" and not stale):
                continue
            if state == "Running":
                _call(["dvc", "queue", "kill", exp.name], self.root, check=False)
            if state is not None:  # failed, killed or stale: queued afresh
                _call(["dvc", "queue", "remove", exp.name], self.root, check=False)
            _call(exp.command([f"evaluate@{exp.variant}", f"generate@{exp.variant}"]), self.root)
            self.out(f"doctor: queued {exp.name}: {_overrides_words(exp.overrides)}")
        start_workers(self.root, self.jobs)
        names = {e.name for e in todo}
        previous: dict[str, str] = {}
        with _stops_queue(self.root, names):
            while True:
                status = queue_status(self.root)
                done = finished(self.root)
                lines = {n: self._progress(n, status.get(n), n in done) for n in sorted(names)}
                for n, line in lines.items():
                    if previous.get(n) != line:
                        self.out(f"doctor: {n}: {line}")
                previous = lines
                if all(n in done or status.get(n) in {"Failed", "Success"} for n in names):
                    break
                time.sleep(self.settings.poll_seconds)
        failed = sorted(n for n in names if n not in done)
        if failed:
            self.out(f"doctor: failed: {', '.join(failed)} (see `dvc queue logs NAME`)")
        return done

    def _progress(self, name: str, status: str | None, done: bool) -> str:
        if done:
            return "finished"
        if status != "Running":
            return (status or "unknown").lower()
        logs = _call(["dvc", "queue", "logs", name], self.root, check=False)
        epochs = EPOCH_LINE.findall(logs)
        return f"running, epoch {epochs[-1][0]}/{epochs[-1][1]}" if epochs else "running"

    def read(self, sha: str, variant: str) -> Run:
        text = show(self.root, sha, "params.yaml") or ""
        return Run.read(lambda p: show(self.root, sha, p), self.params_of(text, sha), variant)

    def params_of(self, text: str, source: str) -> Params:
        """An experiment's params, its `doctor:` section the workspace's: no stage reads that
        section, and an experiment made before a doctor setting existed still loads."""
        yaml = YAML(typ="safe")
        tree = yaml.load(text) or {}
        tree["doctor"] = yaml.load(self.workspace_text).get("doctor")
        out = io.StringIO()
        yaml.dump(tree, out)
        return load_text(out.getvalue(), source)

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        parents = {v: Run.read(self.parent_read, self.parent_params, v) for v in self.variants}
        sick = {v: r for v, r in parents.items() if r.verdicts}
        if not sick:
            self.out("doctor: no verdicts to treat" + _for(self.variants))
            return self.write({})
        seeds = {v: self.seed_runs(v) for v in sick}
        # A step: an experiment, the run whose verdicts it treats, and each verdict's rungs so far.
        frontier = [
            (exp, run, {})
            for v, run in sick.items()
            for exp in self.remedies(
                v, run.config, {n: run.measures[n] for n in run.verdicts}, self.base, 1, {}
            )
        ]
        done = self.run_queue([e for v in sick for e in seeds[v]] + [e for e, _, _ in frontier])
        noise = {v: self.noise(v, parents[v], seeds[v], done) for v in sick}
        outcomes: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_ in range(1, self.settings.max_rounds + 1):
            following = []
            for exp, before, chains in frontier:
                v = exp.variant
                if exp.name not in done:
                    for name in exp.treats:
                        outcomes.setdefault((v, name), []).append(_failed(exp))
                    continue
                after = self.read(done[exp.name], v)
                for name, rung in exp.treats.items():
                    outcome = self.judge(name, exp, before, after, parents[v], noise[v], rung)
                    outcomes.setdefault((v, name), []).append(outcome)
                    if outcome["cleared"] or round_ == self.settings.max_rounds:
                        continue
                    tried = {name: [*chains.get(name, []), rung]}
                    measure = {name: after.measures.get(name, before.measures[name])}
                    for nxt in self.remedies(
                        v, after.config, measure, exp.overrides, round_ + 1, tried
                    ):
                        following.append((nxt, after, tried))
            frontier = self.shared(following)
            if not frontier:
                break
            done = self.run_queue([e for e, _, _ in frontier])
        result = self.summarise(parents, sick, noise, outcomes)
        self.tag(outcomes)
        return self.write(result)

    def noise(
        self, variant: str, parent: Run, seeds: list[Experiment], done: dict[str, str]
    ) -> dict[str, Any]:
        """The parent and its seed re-runs: each number's spread, and in how many each verdict
        fires."""
        names = [e.name for e in seeds if e.name in done]
        runs = [parent] + [self.read(done[n], variant) for n in names]
        return {
            "runs": names,
            "spread": spread(runs),
            "fires": {
                name: sum(bool(r.measures.get(name, {}).get("fired")) for r in runs)
                for name in parent.verdicts
            },
            "of": len(runs),
            "fired_anywhere": set().union(*(set(r.verdicts) for r in runs)),
        }

    def judge(
        self,
        name: str,
        exp: Experiment,
        before: Run,
        after: Run,
        parent: Run,
        noise: dict[str, Any],
        rung: str,
    ) -> dict[str, Any]:
        """A remedy's outcome: its verdict's measure before -> after against the noise, and its
        side effects (new verdicts, headline metrics worse beyond noise)."""
        factor, floor = self.settings.noise_factor, noise["spread"]
        measure = before.measures[name]
        now = after.measures.get(name, {})
        value = now.get("value")
        moved = gain(measure["value"], value, measure["better"]) if value is not None else 0.0
        beyond = moved > factor * floor.get(f"measure.{name}", 0.0)
        cleared = bool(not now.get("fired", True) and beyond)
        overrides = {k: v for k, v in exp.overrides.items() if k not in self.base}
        # A remedy that reweights the loss makes best_val_loss another quantity: not a side effect.
        compared = set(parent.headline) - (
            {"best_val_loss"} if redefines_loss(overrides, self.settings.loss_settings) else set()
        )
        worse = {
            metric: [before_value, after.headline[metric][0]]
            for metric, (before_value, better) in parent.headline.items()
            if metric in compared
            and metric in after.headline
            and -gain(before_value, after.headline[metric][0], better)
            > factor * floor.get(metric, 0.0)
        }
        new = sorted(set(after.verdicts) - set(parent.verdicts) - noise["fired_anywhere"])
        return {
            "round": exp.round,
            "experiment": exp.name,
            "remedy": rung,
            "overrides": overrides,
            "loss_redefined": "best_val_loss" not in compared,
            "before": measure["value"],
            "after": value,
            "limit": measure["limit"],
            "better": measure["better"],
            "noise": floor.get(f"measure.{name}", 0.0),
            "still_fires": bool(now.get("fired", False)),
            "beyond_noise": bool(beyond),
            "cleared": cleared,
            "side_effects": {"new_verdicts": new, "worse": worse},
            "headline": {
                m: [parent.headline[m][0], after.headline[m][0]]
                for m in parent.headline
                if m in after.headline
            },
            "apply": f"dvc exp apply {exp.name}",
        }

    def summarise(self, parents, sick, noise, outcomes) -> dict[str, Any]:
        variants = {}
        for v in sick:
            verdicts = {}
            for name, verdict in sorted(sick[v].verdicts.items()):
                rounds = outcomes.get((v, name), [])
                kept = next((r for r in rounds if _keeps(r)), None)
                verdicts[name] = {
                    "evidence": verdict.evidence,
                    "before": parents[v].measures[name]["value"],
                    "limit": parents[v].measures[name]["limit"],
                    "better": parents[v].measures[name]["better"],
                    "fires_in_seeds": f"{noise[v]['fires'][name]}/{noise[v]['of']}",
                    "noise": noise[v]["spread"].get(f"measure.{name}", 0.0),
                    "cleared": kept is not None,
                    "keep": kept["apply"] if kept else None,
                    "rounds": rounds,
                }
            variants[v] = {
                "seed_runs": noise[v]["runs"],
                "noise": noise[v]["spread"],
                "verdicts": verdicts,
            }
        return variants

    def tag(self, outcomes: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        """Each doctor experiment's MLflow runs, tagged with the parent and the verdicts it
        treats."""
        from etude import tracking

        treated: dict[str, dict[str, Any]] = {}
        for (variant, name), rounds in outcomes.items():
            for r in rounds:
                entry = treated.setdefault(
                    r["experiment"], {"variant": variant, "round": r["round"], "verdicts": []}
                )
                entry["verdicts"].append(name)
        tracking.tag_doctor_runs(self.params.tracking.experiment, treated, self.parent_exp or "")

    def write(self, variants: dict[str, Any]) -> dict[str, Any]:
        """metrics/doctor.json; the results of variants not treated this time are kept when they
        were judged on the same parent (`--variant` one at a time adds up), each with the commit
        it was judged on (`baseline_rev`; the experiments belong to that commit)."""
        path = self.root / DOCTOR_JSON
        parent, rev = self.parent_exp or "workspace", head(self.root)
        kept = {}
        if path.exists():
            before = json.loads(path.read_text())
            if before.get("parent") == parent:
                kept = {
                    k: {"baseline_rev": before.get("baseline_rev")} | v
                    for k, v in before["variants"].items()
                    if k not in self.variants
                }
        result = {
            "parent": parent,
            "baseline_rev": rev,
            "jobs": self.jobs,
            "settings": self.settings.model_dump(mode="json"),
            "variants": kept | {k: {"baseline_rev": rev} | v for k, v in variants.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        return result


# ---- small helpers -------------------------------------------------------------------------------
def _cores() -> int:
    from etude.device import cores

    return cores()


def _for(variants: list[str]) -> str:
    return f" (variants: {', '.join(variants)})"


def _overrides_words(overrides: dict[str, Any]) -> str:
    return ", ".join(
        f"{setting_of(k) if k.startswith('variants.') else k}={v}" for k, v in overrides.items()
    )


def _failed(exp: Experiment) -> dict[str, Any]:
    return {"round": exp.round, "experiment": exp.name, "failed": True, "cleared": False}


def _keeps(outcome: dict[str, Any]) -> bool:
    """A remedy worth keeping: it cleared its verdict without new verdicts or worse metrics."""
    effects = outcome.get("side_effects", {})
    return bool(outcome["cleared"] and not effects.get("new_verdicts") and not effects.get("worse"))


class _stops_queue:
    """Ctrl-C or SIGTERM while the queue runs: kill the doctor's running experiments and stop the
    workers (each stage ends with the dvc process that ran it: etude.device.stop_with_parent)."""

    def __init__(self, root: Path, names: set[str]):
        self.root, self.names = root, names

    def __enter__(self):
        self.previous = signal.signal(signal.SIGTERM, self._stop)
        return self

    def _stop(self, *_):
        raise KeyboardInterrupt

    def __exit__(self, kind, *_):
        signal.signal(signal.SIGTERM, self.previous)
        if kind is KeyboardInterrupt:
            running = [
                n for n, s in queue_status(self.root).items() if n in self.names and s == "Running"
            ]
            if running:
                _call(["dvc", "queue", "kill", *running], self.root, check=False)
            _call(["dvc", "queue", "stop"], self.root, check=False)
            print("doctor: stopped; finished experiments are kept and reused", file=sys.stderr)
        return False


# ---- the result in words -------------------------------------------------------------------------
COLUMNS = (
    "variant",
    "verdict",
    "fires in seeds",
    "round",
    "remedy",
    "measure",
    "cleared",
    "side effects",
    "keep",
)


def summary_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per remedy tried (and one per verdict with nothing to try), as the report shows
    them."""
    rows = []
    for variant, entry in result.get("variants", {}).items():
        for name, verdict in entry["verdicts"].items():
            common = {
                "variant": variant,
                "verdict": name,
                "fires in seeds": verdict["fires_in_seeds"],
            }
            if not verdict["rounds"]:
                rows.append(common | {"remedy": "nothing left to try on its ladder"})
            for r in verdict["rounds"]:
                if r.get("failed"):
                    rows.append(
                        common | {"round": str(r["round"]), "remedy": f"{r['experiment']} failed"}
                    )
                    continue
                effects = r["side_effects"]
                words = (
                    [f"new {', '.join(effects['new_verdicts'])}"] if effects["new_verdicts"] else []
                )
                words += [f"{m} {a:.4g} -> {b:.4g}" for m, (a, b) in effects["worse"].items()]
                side = "; ".join(words) or "none"
                if r.get("loss_redefined"):
                    side += " (loss reweighted: val loss not compared)"
                after = "n/a" if r["after"] is None else f"{r['after']:.3g}"
                rows.append(
                    common
                    | {
                        "round": str(r["round"]),
                        "remedy": _overrides_words(r["overrides"]),
                        "measure": f"{r['before']:.3g} -> {after} (noise {r['noise']:.2g}, "
                        f"limit {r['limit']:.3g})",
                        "cleared": "yes" if r["cleared"] else "no",
                        "side effects": side,
                        "keep": f"`{r['apply']}`" if _keeps(r) else "",
                    }
                )
    return [{c: row.get(c, "") for c in COLUMNS} for row in rows]


def summary_markdown(result: dict[str, Any]) -> str:
    rows = summary_rows(result)
    if not rows:
        return "doctor: nothing to treat"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c].replace("|", "/") for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
