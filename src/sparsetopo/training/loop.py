"""The one training loop: minibatch SGD/Adam over in-memory tensors, periodic evaluation, atomic
checkpoints that resume bit for bit, divergence detection, and a progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm import tqdm

from sparsetopo.data import Dataset, Split
from sparsetopo.data.augment import augment_batch
from sparsetopo.desc.status import RunStatus
from sparsetopo.errors import UserError
from sparsetopo.fileio import atomic_path, atomic_write_text
from sparsetopo.training.hparams import DataHparams, TrainHparams
from sparsetopo.training.safeload import load_checkpoint_file

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = ("step", "model", "optimizer", "callbacks", "metrics", "wall_seconds", "loss_sum", "loss_count",
                   "torch_rng")
METRICS = "metrics.jsonl"
EVAL_BATCH = 1000


class Callback(Protocol):
    """Hooks into the loop (gradual pruning uses them). Each has a ``name``, unique in the run: its state is
    saved in the checkpoint under that name, so adding or removing another callback on resume loses none."""

    name: str

    def on_step_end(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(model: nn.Module, th: TrainHparams) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if th.optimizer == "adam":
        return torch.optim.Adam(params, lr=th.lr, weight_decay=th.weight_decay)
    return torch.optim.SGD(params, lr=th.lr, momentum=th.momentum, nesterov=th.nesterov, weight_decay=th.weight_decay)


def lr_at(step: int, total: int, th: TrainHparams) -> float:
    """The learning rate in force for step ``step`` (0-based) of ``total``: a pure function of the step."""
    if th.schedule == "cosine":
        return 0.5 * th.lr * (1.0 + math.cos(math.pi * step / total))
    if th.schedule == "step":
        passed = sum(step >= round(float(m) * total) for m in th.milestones.split(","))
        return th.lr * th.gamma**passed
    return th.lr


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy as a fraction) over ``split``."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(split), EVAL_BATCH):
        x = split.images[start:start + EVAL_BATCH]
        y = split.labels[start:start + EVAL_BATCH]
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return loss_sum / len(split), correct / len(split)


def evaluation(model: nn.Module, data: Dataset, step: int, steps_per_epoch: int,
               train_loss: float | None = None) -> dict[str, Any]:
    """One ``metrics.jsonl`` record: the test (and validation) loss and accuracy at ``step``."""
    test_loss, test_acc = evaluate(model, data.test)
    record: dict[str, Any] = {"step": step, "epoch": round(step / steps_per_epoch, 4)}
    if train_loss is not None:
        record["train_loss"] = train_loss
    record.update({"test_loss": test_loss, "test_accuracy": test_acc})
    if data.validation is not None:
        record["val_loss"], record["val_accuracy"] = evaluate(model, data.validation)
    return record


AUGMENT_STREAM = 7_919_000_000  # keeps the augmentation's seeds apart from the epochs' order seeds


def epoch_order(n: int, data_seed: int, epoch: int) -> torch.Tensor:
    """The order of training examples in ``epoch``: a pure function of the seed and epoch (resume-safe)."""
    generator = torch.Generator().manual_seed(data_seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


@dataclass
class LoopState:
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    cpu_seconds: float = 0.0  # CPU time of the process (all threads) in the loop, over every resume
    eval_cpu_seconds: float = 0.0  # the part of it spent in evaluations (what a cost estimate splits off)


@dataclass
class LoopResult:
    status: RunStatus  # completed or diverged
    steps: int
    metrics: list[dict[str, Any]]
    wall_seconds: float
    diverged_step: int | None = None
    cpu_seconds: float = 0.0
    eval_cpu_seconds: float = 0.0

    @property
    def final_test_accuracy(self) -> float | None:
        return self.metrics[-1]["test_accuracy"] if self.metrics else None

    @property
    def best_test_accuracy(self) -> float | None:
        return max((m["test_accuracy"] for m in self.metrics), default=None)


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, state: LoopState,
                    callbacks: list[Callback]) -> None:
    """The one checkpoint schema (``CHECKPOINT_KEYS``); a run that trains nothing (one-shot pruning) saves
    no optimiser state."""
    payload = {
        "step": state.step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "callbacks": {cb.name: cb.state_dict() for cb in callbacks},
        "metrics": state.metrics,
        "wall_seconds": state.wall_seconds,
        "cpu_seconds": state.cpu_seconds,
        "eval_cpu_seconds": state.eval_cpu_seconds,
        "loss_sum": state.loss_sum,
        "loss_count": state.loss_count,
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def restore_structures(payload: dict[str, Any], model: nn.Module) -> None:
    """Put the saved connection structure back into every sparse layer whose structure changes during a
    run (gradual pruning, dynamic sparse training) before the weights, and the optimiser that holds them,
    are made and loaded."""
    from sparsetopo.nn.layers import sparse_layers

    state = payload["model"]
    for name, layer in sparse_layers(model):
        prefix = f"{name}." if name else ""
        if prefix + "mask" in state:
            mask: Any = state[prefix + "mask"].bool()
        elif prefix + "weight_indptr" in state:
            indptr = state[prefix + "weight_indptr"].numpy()
            indices = state[prefix + "weight_indices"].numpy()
            mask = sp.csr_array((np.ones(indices.size, dtype=bool), indices, indptr), shape=(layer._rows, layer._cols))
            if len(layer.weight_shape) == 4:
                mask = mask.toarray().reshape(layer.weight_shape)
        else:
            continue
        layer.set_mask(mask)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    callbacks: list[Callback], payload: dict[str, Any] | None = None) -> LoopState:
    payload = payload if payload is not None else load_checkpoint_file(path, CHECKPOINT_KEYS)
    saved = payload["callbacks"]
    if not isinstance(saved, dict):
        raise UserError(f"{path}: callback states are not stored by name (an older checkpoint); move it away "
                        "to start the run again")
    for cb in callbacks:
        state = saved.get(cb.name)
        if state is None and cb.state_dict():
            raise UserError(f"{path}: holds no state for '{cb.name}', which this run has; resume with the options "
                            "the run started with, or move the checkpoint away to start again")
        if state is not None:
            cb.load_state_dict(state)
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: does not fit this run's model ({str(exc).splitlines()[0][:200]}); move it away "
                        "to start the run again") from None
    torch.set_rng_state(payload["torch_rng"])
    return LoopState(payload["step"], payload["metrics"], payload["wall_seconds"], payload["loss_sum"],
                     payload["loss_count"], float(payload.get("cpu_seconds", 0.0)),
                     float(payload.get("eval_cpu_seconds", 0.0)))


def write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))


def train(
    model: nn.Module,
    data: Dataset,
    dh: DataHparams,
    th: TrainHparams,
    *,
    seed: int,
    out: Path | None = None,
    callbacks: list[Callback] | None = None,
    checkpoint_every: int | None = None,
    quiet: bool = False,
) -> LoopResult:
    """Train ``model`` on ``data``; resume from ``out/checkpoint.pt`` when it exists.

    ``checkpoint_every`` (steps) defaults to checkpointing at every evaluation.
    """
    callbacks = list(callbacks or [])
    names = [cb.name for cb in callbacks]
    if len(set(names)) != len(names):
        raise ValueError(f"callback names must be unique, got {names}")
    n = len(data.train)
    steps_per_epoch = math.ceil(n / dh.batch_size)
    total = th.total_steps(steps_per_epoch)
    eval_every = th.eval_every or steps_per_epoch
    data_seed = seed if dh.data_seed is None else dh.data_seed
    ckpt = out / CHECKPOINT if out is not None else None
    payload = load_checkpoint_file(ckpt, CHECKPOINT_KEYS) if ckpt is not None and ckpt.exists() else None
    if payload is not None and any(getattr(cb, "changes_structure", False) for cb in callbacks):
        restore_structures(payload, model)  # before the optimiser takes the (sparse backend's) parameters
    optimizer = make_optimizer(model, th)
    state = LoopState()
    if payload is not None:
        state = load_checkpoint(ckpt, model, optimizer, callbacks, payload)  # type: ignore[arg-type]
    model.train()

    def checkpoint() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, model, optimizer, state, callbacks)
            write_metrics(out / METRICS, state.metrics)  # type: ignore[operator]

    bar = tqdm(total=total, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
               disable=quiet or not sys.stderr.isatty(), leave=False)
    started = time.perf_counter() - state.wall_seconds
    cpu_started = time.process_time() - state.cpu_seconds

    def clock() -> None:
        state.wall_seconds = time.perf_counter() - started
        state.cpu_seconds = time.process_time() - cpu_started

    order, order_epoch = None, -1
    current_lr = None
    status, diverged_step = RunStatus.COMPLETED, None
    # On the CPU each step's loss is read at once (a NaN stops the run before its update). On an accelerator
    # reading it would wait for the device every step: the losses stay there, and are read (and checked)
    # at each evaluation and checkpoint; a divergence is then found at that point, at its exact step.
    on_device = next(iter(model.parameters())).device.type != "cpu"
    pending: list[torch.Tensor] = []

    def flush() -> bool:
        """Add the losses kept on the device; False (and the divergence recorded) if one is not finite."""
        nonlocal status, diverged_step
        if not pending:
            return True
        values = torch.stack(pending).double().cpu()
        start = state.step - len(pending)
        pending.clear()
        bad = torch.nonzero(~torch.isfinite(values)).reshape(-1)
        if bad.numel():
            status, diverged_step = RunStatus.DIVERGED, start + int(bad[0]) + 1
            return False
        state.loss_sum += float(values.sum())
        return True

    while state.step < total:
        epoch, index = divmod(state.step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(n, data_seed, epoch), epoch
        batch = order[index * dh.batch_size:(index + 1) * dh.batch_size]  # type: ignore[index]
        lr = lr_at(state.step, total, th)
        if lr != current_lr:
            for group in optimizer.param_groups:
                group["lr"] = lr
            current_lr = lr
        images = data.train.images[batch]
        if dh.augment != "none":  # drawn from the data seed and the step: a resumed run draws the same
            images = augment_batch(images, dh.augment, data_seed * 1_000_003 + state.step + AUGMENT_STREAM)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, data.train.labels[batch])
        if on_device:
            pending.append(loss.detach())
        else:
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                status, diverged_step = RunStatus.DIVERGED, state.step + 1
                break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step += 1
        if not on_device:
            state.loss_sum += loss_value
        state.loss_count += 1
        for cb in callbacks:
            cb.on_step_end(state.step, model, optimizer)
        bar.update(1)
        if state.step % eval_every == 0 or state.step == total:
            if not flush():
                break
            eval_started = time.process_time()
            record = evaluation(model, data, state.step, steps_per_epoch,
                                train_loss=state.loss_sum / max(state.loss_count, 1))
            state.eval_cpu_seconds += time.process_time() - eval_started
            test_acc = record["test_accuracy"]
            state.metrics.append(record)
            state.loss_sum, state.loss_count = 0.0, 0
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", acc=f"{test_acc:.4f}")
            clock()
            if checkpoint_every is None:
                checkpoint()
        if checkpoint_every is not None and state.step % checkpoint_every == 0:
            if not flush():
                break
            clock()
            checkpoint()
    bar.close()
    flush()
    clock()
    if status == RunStatus.COMPLETED and state.step == total:
        checkpoint()
    return LoopResult(status, state.step, state.metrics, state.wall_seconds, diverged_step, state.cpu_seconds,
                      state.eval_cpu_seconds)
