"""The training loop shared by every model family.

Adam, optional LR schedule (plateau or step decay, both keeping the optimiser's state), gradient
clipping, early stopping on validation loss, per-epoch history, and checkpoints `last`, `best` and
the newest `keep_checkpoints` of every `checkpoint_every` epochs (etude.checkpoints), so an
interrupted training resumes where it stopped: same batches, same dropout masks, same weights as an
uninterrupted run. Checkpoints alone hold optimiser, scheduler and RNG state; the published model is
etude.model_card's.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from etude import diagnosis, serving, tracking
from etude.checkpoints import RunCheckpoints, run_folder
from etude.device import pick_device, seed_everything, share_cores
from etude.errors import TrainingError
from etude.family import Family
from etude.model_card import save_model
from etude.params import Diagnosis, Generate, LrSchedule
from etude.variants import config_hash


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel: one pass over all parameters instead of a dozen ops per tensor
    (about 10 % of the LSTM baseline's CPU step; the same numbers run to run)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule):
    if schedule.kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr
        )
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=schedule.every, gamma=schedule.factor
        )
    return None


@dataclass
class Progress:
    """What a checkpoint must hold, beyond weights, to continue a run exactly."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = -1
    stale_epochs: int = 0
    stopped_early: bool = False
    diverged: bool = False  # a non-finite loss ended the run; the best finite epoch is published
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return state


def _restore(path: Path, model, optimizer, scheduler) -> Progress:
    """Everything an interrupted run needs to go on exactly as if it had not stopped."""
    saved = load_weights(path, model)
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler and _same_kind(scheduler, saved["scheduler"]):
        scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return Progress(**saved["progress"])


def _same_kind(scheduler, state: dict | None) -> bool:
    """A saved scheduler state fits only a scheduler of its kind (load_state_dict does not
    check)."""
    key = (
        "mode" if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else "step_size"
    )
    return state is not None and key in state


def _continue_from(path: Path, ckpt_dir: Path, model, optimizer, scheduler, config) -> Progress:
    """A new run that continues `path`: weights, optimiser moments, scheduler counters, epoch count,
    history and best validation loss carry over; lr, schedule settings, loss weights and the epoch
    budget are this configuration's. Its best.pt starts as the source run's best."""
    if not path.is_file():
        raise FileNotFoundError(f"resume_from: {path} does not exist")
    try:
        state = _restore(path, model, optimizer, scheduler)
    except RuntimeError as err:  # a state_dict of another architecture
        raise TrainingError(
            f"resume_from: {path} does not fit this variant's model: {str(err)[:500]}"
        ) from None
    except (KeyError, TypeError) as err:
        raise TrainingError(
            f"resume_from: {path} is not a training checkpoint of etude ({err!r})"
        ) from None
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = config.lr
    _apply_schedule(scheduler, config.lr_schedule, config.lr)
    state.run_id, state.stopped_early, state.stale_epochs = None, False, 0
    best = path.with_name("best.pt")
    shutil.copyfile(best if best.exists() else path, ckpt_dir / "best.pt")
    return state


def _apply_schedule(scheduler, schedule: LrSchedule, lr: float) -> None:
    """This configuration's schedule settings over a restored scheduler's counters."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.factor, scheduler.patience = schedule.factor, schedule.patience
        scheduler.min_lrs = [schedule.min_lr] * len(scheduler.min_lrs)
        scheduler._last_lr = [lr] * len(scheduler.min_lrs)
    elif isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
        scheduler.step_size, scheduler.gamma = schedule.every, schedule.factor
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        scheduler._last_lr = [lr] * len(scheduler.base_lrs)


@dataclass(frozen=True)
class TrainPaths:
    """Where a variant's training reads and writes."""

    data: Path  # the representation it reads
    model_dir: Path  # stage output: weights and model card
    history: Path  # stage output: one row per epoch
    summary: Path  # stage output: train.json
    run_link: Path  # stage output: names the MLflow run
    root: Path  # the project root: checkpoints/ and `resume_from` paths lie under it


def train(
    name: str,
    config: Any,
    family: Family,
    experiment: str,
    paths: TrainPaths,
    settings: Diagnosis,
    generate: Generate,
    progress_bar: bool = True,
) -> Progress:
    """Train variant `name`, resuming from its checkpoint if one exists; write its outputs and the
    verdicts on its history (`settings`: their thresholds); log the published model, which answers
    with `generate`'s velocity, program and grid offset (etude.serving)."""
    seed_everything(config.seed, config.threads)
    device = pick_device(config.device)
    data = family.load_data(config, paths.data)
    family.check_data(data, config, name)
    meta = family.model_meta(data, config)
    model = family.build(config, meta).to(device)
    optimizer = make_optimizer(model, config.lr)
    scheduler = make_scheduler(optimizer, config.lr_schedule)
    run = RunCheckpoints(run_folder(paths.root, name, config, family), config.keep_checkpoints)
    state = _start(name, config, run, paths.root, model, optimizer, scheduler)

    with tracking.start_run(
        experiment,
        "train",
        name,
        paths.run_link,
        params=config.model_dump(mode="json"),
        config_hash=config_hash(config),
        resume_run_id=state.run_id,
    ) as mlflow_run:
        import mlflow

        state.run_id = mlflow_run.info.run_id
        if state.epoch == 0:
            mlflow.log_param("parameter_count", sum(p.numel() for p in model.parameters()))
        while state.epoch < config.epochs and not (state.stopped_early or state.diverged):
            threads = share_cores(config.threads)
            row, samples_per_s = _run_epoch(
                model, optimizer, family, data, config, state.epoch, device, progress_bar
            )
            improved = _bookkeeping(name, state, row, optimizer, scheduler, config, run)
            # Throughput and threads go to MLflow only: the history file must not change between
            # identical runs.
            mlflow.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}
                | {"train_samples_per_s": samples_per_s, "threads": threads},
                step=int(row["epoch"]),
            )
            # Saved after the bookkeeping: best.pt, like last.pt, continues after the epoch it
            # holds.
            run.save(
                model,
                optimizer,
                scheduler,
                state.__dict__,
                state.epoch,
                improved,
                periodic=state.epoch % config.checkpoint_every == 0,
            )
            print(
                f"train@{name} epoch {state.epoch}/{config.epochs} "
                + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
                flush=True,
            )
        history = pd.DataFrame(state.history)
        judge = family.judge(config, settings, name)
        verdicts = diagnosis.training_verdicts(history, summary(state), judge)
        verdicts += family.verdicts(history, judge)
        _publish(family, config, meta, run.best, state, paths, verdicts)
        serving.log(paths.model_dir, name, config, generate)
    return state


def _start(
    name: str, config, run: RunCheckpoints, root: Path, model, optimizer, scheduler
) -> Progress:
    """A fresh run, the interrupted run in this folder resumed, or the run `resume_from`
    continued."""
    if run.last.exists():
        state = _restore(run.last, model, optimizer, scheduler)
        print(f"train@{name}: resuming after epoch {state.epoch} from {run.last}")
        return state
    if config.resume_from:
        source = root / config.resume_from  # relative paths: from the project root
        state = _continue_from(source, run.folder, model, optimizer, scheduler, config)
        print(
            f"train@{name}: continuing after epoch {state.epoch} from {source} "
            f"(lr {config.lr:g}, best validation loss so far {state.best_val:.6g})"
        )
        return state
    return Progress()


def _bookkeeping(
    name: str, state: Progress, row: dict, optimizer, scheduler, config, run: RunCheckpoints
) -> bool:
    """After an epoch: LR schedule, best loss, early stopping, history. Whether the epoch
    improved."""
    row["lr"] = optimizer.param_groups[0]["lr"]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(row["val_loss"])
    elif scheduler:
        scheduler.step()
    state.diverged = not (math.isfinite(row["val_loss"]) and math.isfinite(row["train_loss"]))
    if state.diverged:
        if state.best_epoch < 0:
            raise TrainingError(
                f"train@{name}: epoch {state.epoch + 1}: the loss is {row['train_loss']} (train), "
                f"{row['val_loss']} (validation) before any finite epoch: "
                "training diverged at once; "
                f"lower variants.{name}.lr (now {config.lr:g})"
            )
        print(
            f"WARNING: train@{name}: epoch {state.epoch + 1}: non-finite loss; "
            "training stops and publishes "
            f"epoch {state.best_epoch + 1}, the best finite one",
            flush=True,
        )
    improved = row["val_loss"] < state.best_val - config.min_delta
    if improved:
        state.best_val, state.best_epoch, state.stale_epochs = row["val_loss"], state.epoch, 0
    else:
        state.stale_epochs += 1
    state.history.append(row)
    state.epoch += 1
    state.stopped_early = config.patience is not None and state.stale_epochs >= config.patience
    return improved


def summary(state: Progress) -> dict[str, Any]:
    return {
        "best_val_loss": state.best_val,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "diverged": state.diverged,
    }


def _publish(
    family: Family,
    config,
    meta: dict,
    best: Path,
    state: Progress,
    paths: TrainPaths,
    verdicts: list[diagnosis.Verdict],
) -> None:
    """The stage outputs (best weights and model card, history, summary with the verdicts), also
    logged to MLflow, the verdicts as tags."""
    import mlflow

    model = family.build(config, meta)
    load_weights(best, model)
    save_model(paths.model_dir, family, config, meta, model)
    paths.history.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(state.history).to_csv(paths.history, index=False)
    sick = diagnosis.fired(verdicts)
    result = summary(state) | {
        "diagnosis": [v.to_dict() for v in sick],
        "measures": diagnosis.measures(verdicts),
    }
    paths.summary.write_text(json.dumps(result, indent=2) + "\n")
    mlflow.log_metrics({k: float(v) for k, v in summary(state).items()})
    tracking.tag_verdicts(sick)
    mlflow.log_artifact(str(paths.history))
    for verdict in sick:
        print(f"train@{paths.model_dir.name}: {verdict.line()}", flush=True)


def _run_epoch(
    model, optimizer, family: Family, data, config, epoch: int, device, progress_bar: bool
) -> tuple[dict[str, float], float]:
    model.train()
    sums: dict[str, float] = {}
    grad_norms: list[float] = []
    batches, first_loss = 0, math.nan
    started = time.perf_counter()
    total = config.samples_per_epoch // config.batch_size if config.samples_per_epoch else None
    for batch in tqdm(
        family.train_batches(data, config, epoch, device),
        total=total,
        leave=False,
        desc=f"epoch {epoch + 1}",
        disable=None if progress_bar else True,
    ):
        loss, terms = family.loss(model, batch, config, epoch)
        if not torch.isfinite(
            loss
        ):  # the weights are lost from here on: the epoch ends as diverged
            sums = dict.fromkeys(("loss", *(f"{k}_loss" for k in terms)), math.nan)
            batches = max(batches, 1)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The norm before clipping (inf: measure only), the evidence of exploding gradients.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
        grad_norms.append(float(norm))
        optimizer.step()
        for key, value in {"loss": loss, **{f"{k}_loss": v for k, v in terms.items()}}.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        if batches == 0:
            first_loss = float(loss.detach())
        batches += 1
    if batches == 0:
        raise TrainingError("no training batch: fewer training windows than batch_size")
    samples_per_s = batches * config.batch_size / (time.perf_counter() - started)
    row = {"epoch": float(epoch)} | {f"train_{k}": v / batches for k, v in sums.items()}
    # The loss before this epoch's first step: for epoch 0, the untrained model's, the reference for
    # a spike.
    row["train_loss_first_batch"] = first_loss
    row |= {
        "grad_norm": float(np.median(grad_norms)) if grad_norms else math.nan,
        "grad_norm_max": float(np.max(grad_norms)) if grad_norms else math.nan,
    }
    if not math.isfinite(row["train_loss"]):  # diverged: nothing to validate or diagnose
        return row | {"val_loss": math.nan}, samples_per_s
    row |= validate(model, family, data, config, device)
    row |= family.epoch_measures(model, data, config, epoch, device)
    return row, samples_per_s


@torch.no_grad()
def validate(model, family: Family, data, config, device) -> dict[str, float]:
    """Validation loss at the loss schedules' final weights (epoch=None): an annealed KL weight
    would make it rise while the model improves, and trip early stopping within a few epochs."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in family.eval_batches(data, config, "validation", config.val_max_windows, device):
        loss, terms = family.loss(model, batch, config, epoch=None)
        n = len(batch[0])
        for key, value in {"loss": loss, **{f"{k}_loss": v for k, v in terms.items()}}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        count += n
    return {f"val_{k}": v / count for k, v in sums.items()}
