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
from typing import Any

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
                "progress": progress.__dict__, "config": config, "torch_rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def code_hash(family: ModuleType) -> str:
    """Hash of the code that decides what training computes: resume continues a run only if the
    code is the one that started it, never weights trained by an earlier version."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(family.__file__)):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:8]


def load_weights(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return state


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
        saved = load_weights(ckpt_dir / "last.pt", model)
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        state = Progress(**saved["progress"])
        print(f"train@{name}: resuming after epoch {state.epoch} from {ckpt_dir / 'last.pt'}")

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
            if row["val_loss"] < state.best_val - config.min_delta:
                state.best_val, state.best_epoch, state.stale_epochs = row["val_loss"], state.epoch, 0
                _save(ckpt_dir / "best.pt", model, optimizer, scheduler, state, config_dict)
            else:
                state.stale_epochs += 1
            state.history.append(row)
            state.epoch += 1
            state.stopped_early = config.patience is not None and state.stale_epochs >= config.patience
            # Throughput goes to MLflow only: the history file must not change between identical runs.
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"} | {"train_samples_per_s": samples_per_s},
                               step=int(row["epoch"]))
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
