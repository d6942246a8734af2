"""The training loop shared by every model family.

Adam, optional LR schedule (plateau or step decay, both keeping the optimiser's state), gradient
clipping, early stopping on validation loss, per-epoch history, and checkpoints `last`, `best` and
every N epochs. Checkpoints of a run live under checkpoints/<variant>/<config hash>-<code hash>/, outside the
stage outputs that DVC and Snakemake delete before a run, so an interrupted training resumes where
it stopped: same batches, same dropout masks, same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from etude import tracking
from etude.params import LrSchedule, config_hash


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # CPU kernels are deterministic already (and the global flag costs ~35 us per sampling step);
        # warn_only: cuDNN's LSTM backward has no deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)


def evenly_spaced(index: np.ndarray, limit: int | None) -> np.ndarray:
    """A deterministic subset of at most `limit` items spread over the whole split."""
    if limit is None or len(index) <= limit:
        return index
    return index[np.linspace(0, len(index) - 1, limit).round().astype(np.int64)]


def shuffled_batches(index: np.ndarray, seed: int, epoch: int, samples_per_epoch: int | None,
                     batch_size: int) -> Iterator[np.ndarray]:
    """An epoch's training batches as sorted index arrays. The order depends on (seed, epoch) alone,
    so a resumed run draws the same batches; full batches only, as BatchNorm cannot train on one."""
    order = np.random.default_rng([seed, epoch]).permutation(index)[:samples_per_epoch]
    for i in range(0, len(order) - batch_size + 1, batch_size):
        yield np.sort(order[i : i + batch_size])


def evaluation_batches(index: np.ndarray, limit: int | None, batch_size: int, split: str,
                       what: str) -> Iterator[np.ndarray]:
    """At most `limit` items of a split, evenly spaced, in order, in batches; an empty split is an
    error naming what it lacks."""
    index = evenly_spaced(index, limit)
    if len(index) == 0:
        raise ValueError(f"the {split} split has no {what}")
    for i in range(0, len(index), batch_size):
        yield index[i : i + batch_size]


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: LrSchedule):
    if schedule.kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr)
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.every, gamma=schedule.factor)
    return None


@dataclass
class Progress:
    """What a checkpoint must hold, beyond weights, to continue a run exactly."""

    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = -1
    stale_epochs: int = 0
    stopped_early: bool = False
    run_id: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def _save(path: Path, model, optimizer, scheduler, progress: Progress, config: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "progress": progress.__dict__, "config": config, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def code_hash(family: ModuleType) -> str:
    """Hash of the code that decides what training computes: resume continues a run only if the
    code is the one that started it, never weights trained by an earlier version."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(family.__file__), Path(__file__).parent / "models" / "vae.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:8]


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
    """A saved scheduler state fits only a scheduler of its kind (load_state_dict does not check)."""
    key = "mode" if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else "step_size"
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
        raise ValueError(f"resume_from: {path} does not fit this variant's model: {str(err)[:500]}") from None
    except (KeyError, TypeError) as err:
        raise ValueError(f"resume_from: {path} is not a training checkpoint of etude ({err!r})") from None
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


def train(name: str, config: Any, family: ModuleType, experiment: str, out_dir: Path,
          history_path: Path, run_link: Path, checkpoint_root: Path, progress_bar: bool = True) -> Progress:
    """Train variant `name`, resuming from its checkpoint if one exists; write best/last and history."""
    seed_everything(config.seed, config.threads)
    device = pick_device(config.device)
    data = family.load_data(config)
    model = family.build(config, data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = make_scheduler(optimizer, config.lr_schedule)
    digest = config_hash(config)
    ckpt_dir = checkpoint_root / name / f"{digest}-{code_hash(family)}"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    config_dict = config.model_dump(mode="json")

    state = Progress()
    if (ckpt_dir / "last.pt").exists():
        state = _restore(ckpt_dir / "last.pt", model, optimizer, scheduler)
        print(f"train@{name}: resuming after epoch {state.epoch} from {ckpt_dir / 'last.pt'}")
    elif config.resume_from:
        source = checkpoint_root.parent / config.resume_from  # relative paths: from the project root
        state = _continue_from(source, ckpt_dir, model, optimizer, scheduler, config)
        print(f"train@{name}: continuing after epoch {state.epoch} from {source} "
              f"(lr {config.lr:g}, best validation loss so far {state.best_val:.6g})")

    with tracking.start_run(experiment, "train", name, run_link, params=config_dict, config_hash=digest,
                            resume_run_id=state.run_id) as run:
        import mlflow

        state.run_id = run.info.run_id
        if state.epoch == 0:
            mlflow.log_param("parameter_count", sum(p.numel() for p in model.parameters()))
        while state.epoch < config.epochs and not state.stopped_early:
            row, samples_per_s = _run_epoch(model, optimizer, family, data, config, state.epoch, device, progress_bar)
            row["lr"] = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(row["val_loss"])
            elif scheduler:
                scheduler.step()
            if not math.isfinite(row["val_loss"]):
                raise ValueError(f"train@{name}: epoch {state.epoch + 1}: validation loss is {row['val_loss']}: training "
                                 f"diverged (lower lr?); the last good checkpoint is {ckpt_dir / 'last.pt'}")
            improved = row["val_loss"] < state.best_val - config.min_delta
            if improved:
                state.best_val, state.best_epoch, state.stale_epochs = row["val_loss"], state.epoch, 0
            else:
                state.stale_epochs += 1
            state.history.append(row)
            state.epoch += 1
            state.stopped_early = config.patience is not None and state.stale_epochs >= config.patience
            # Throughput goes to MLflow only: the history file must not change between identical runs.
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"} | {"train_samples_per_s": samples_per_s},
                               step=int(row["epoch"]))
            # Saved after the bookkeeping: best.pt, like last.pt, continues after the epoch it holds.
            if improved:
                _save(ckpt_dir / "best.pt", model, optimizer, scheduler, state, config_dict)
            _save(ckpt_dir / "last.pt", model, optimizer, scheduler, state, config_dict)
            if state.epoch % config.checkpoint_every == 0:
                shutil.copyfile(ckpt_dir / "last.pt", ckpt_dir / f"epoch_{state.epoch:04d}.pt")
            print(f"train@{name} epoch {state.epoch}/{config.epochs} "
                  + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"), flush=True)

        out_dir.mkdir(parents=True, exist_ok=True)
        for kind in ("best", "last"):
            shutil.copyfile(ckpt_dir / f"{kind}.pt", out_dir / f"{kind}.pt")
        history_path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(state.history).to_csv(history_path, index=False)
        mlflow.log_metrics({"best_val_loss": state.best_val, "best_epoch": state.best_epoch,
                            "epochs_run": state.epoch, "stopped_early": float(state.stopped_early)})
        mlflow.log_artifact(str(history_path))
    return state


def _run_epoch(model, optimizer, family, data, config, epoch: int, device,
               progress_bar: bool) -> tuple[dict[str, float], float]:
    model.train()
    sums: dict[str, float] = {}
    batches = 0
    started = time.perf_counter()
    total = config.samples_per_epoch // config.batch_size if config.samples_per_epoch else None
    for batch in tqdm(family.train_batches(data, config, epoch, device), total=total, leave=False,
                      desc=f"epoch {epoch + 1}", disable=None if progress_bar else True):
        loss, terms = family.loss(model, batch, config, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        for key, value in {"loss": loss, **{f"{k}_loss": v for k, v in terms.items()}}.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        batches += 1
    if batches == 0:
        raise ValueError("no training batch: fewer training windows than batch_size")
    samples_per_s = batches * config.batch_size / (time.perf_counter() - started)
    row = {"epoch": float(epoch)} | {f"train_{k}": v / batches for k, v in sums.items()}
    row |= validate(model, family, data, config, epoch, device)
    if hasattr(family, "diagnostics"):
        row |= family.diagnostics(model, data, config, epoch, device)
    return row, samples_per_s


@torch.no_grad()
def validate(model, family, data, config, epoch: int, device) -> dict[str, float]:
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


@dataclass
class Trained:
    """A trained variant, ready for evaluation or sampling."""

    config: Any
    family: ModuleType
    data: Any
    model: torch.nn.Module
    device: torch.device


def load_trained(config: Any, family: ModuleType, checkpoint: Path) -> Trained:
    seed_everything(config.seed, config.threads)
    device = pick_device(config.device)
    data = family.load_data(config)
    model = family.build(config, data)
    load_weights(checkpoint, model)
    return Trained(config, family, data, model.to(device).eval(), device)
