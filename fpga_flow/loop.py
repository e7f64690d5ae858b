"""The one training loop (QAT, distillation, the float teacher; CPU or GPU) and its schedule.

``run_epochs`` keeps the data on the training device and forms each batch there by indexing with a
permutation from a seeded generator; it knows nothing of quantization, checkpoints or cards, which
stay in :mod:`fpga_flow.train`. The GPU options (larger batches with a scaled lr, bfloat16 autocast,
``torch.compile``) are off by default, so the shipped recipe is what it was: docs/gpu.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch
from torch import nn

from . import data
from .errors import FlowError

REFERENCE_BATCH = 64  # the batch the shipped lr (2e-3) was tuned for: the linear scaling rule's base


def lr_at(step: int, total: int, lr: float) -> float:
    """Cosine decay from ``lr`` to 0 over the run, per step (stateless, so resume is trivial)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


LR_SCALING = ("none", "linear")


def effective_lr(lr: float, batch_size: int, lr_scaling: str = "none") -> float:
    """The peak lr a run uses. ``'none'``: ``lr`` as given (the shipped recipe). ``'linear'``: the linear
    scaling rule (Goyal et al., 2017, *Accurate, Large Minibatch SGD*): ``lr * batch_size / REFERENCE_BATCH``,
    so a k times larger batch, taking k times fewer steps, moves the weights about as far per epoch, with
    fewer, larger kernels (what a GPU needs). Its final accuracy is unmeasured here."""
    if lr_scaling not in LR_SCALING:
        raise FlowError(f"unknown lr scaling {lr_scaling!r}; valid: {', '.join(LR_SCALING)}")
    return lr * batch_size / REFERENCE_BATCH if lr_scaling == "linear" else lr


# One training step's forward: (inputs, labels) -> (loss, log-probabilities for the running accuracy, or None).
StepLoss = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def run_epochs(model: nn.Module, opt: torch.optim.Optimizer, step_loss: StepLoss, x_all: torch.Tensor,
               y_all: torch.Tensor, *, input_shape: tuple[int, ...], epochs: int, batch_size: int, lr: float,
               shuffle: torch.Generator, aug: nn.Module | None = None, start_epoch: int = 0,
               history: list | None = None, elapsed: float = 0.0, progress: bool = True, desc: str = "epoch",
               amp: bool = False, on_epoch_end: Callable[[int, list, float], None] | None = None
               ) -> tuple[list, float]:
    """The training loop of every recipe (QAT, distillation, the float teacher): returns (history, seconds).

    The data are already on the training device (``x_all`` [0, 1] images (N, 1, H, W), ``y_all`` labels):
    each epoch draws a permutation from the seeded CPU generator ``shuffle`` (so CPU and CUDA runs see the
    same order, and a resumed run the same as an uninterrupted one), moves it to the device, and forms
    every batch there by indexing; the augmentation runs on the device too. Nothing crosses to the host
    inside an epoch except the progress bar's reads (every 20 steps, only with ``progress``).
    lr: Adam's peak, decayed per step on a cosine to 0 (:func:`lr_at`). ``amp``: the forward and loss under
    ``torch.autocast`` in bfloat16 (no loss scaler needed; off by default, see docs/gpu.md).
    ``on_epoch_end(epoch, history, elapsed)``: e.g. the resume file."""
    device = x_all.device
    n = len(x_all)
    history = list(history or [])
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        model.train()
        perm = torch.randperm(n, generator=shuffle).to(device)
        t0 = time.perf_counter()
        seen = 0
        # Running sums stay on the device: reading them each step would sync a GPU.
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), device=device)
        with_accuracy = False
        bar = progress_bar(range(steps_per_epoch), progress, f"{desc} {epoch + 1}/{epochs}")
        for i in bar:
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x, y = x_all[idx], y_all[idx]
            if aug is not None:
                x = aug(x)
            x = data.as_input(x, input_shape)  # after the (image) augmentation
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + i, total_steps, lr)
            with _autocast(device.type, amp):
                loss, logp = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            if logp is not None:
                with_accuracy = True
                correct += (logp.argmax(1) == y).sum()
            loss_sum += loss.detach().float() * len(y)
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                post = {"loss": f"{float(loss_sum) / seen:.4f}"}
                if with_accuracy:
                    post["acc"] = f"{int(correct) / seen:.4f}"
                bar.set_postfix(**post)
        entry = {"epoch": epoch + 1, "train_loss": float(loss_sum) / seen}
        if with_accuracy:
            entry["train_accuracy"] = int(correct) / seen
        history.append(entry)
        elapsed += time.perf_counter() - t0  # after the reads above, which sync a GPU
        if on_epoch_end is not None:
            on_epoch_end(epoch, history, elapsed)
    return history, elapsed


def _autocast(device_type: str, amp: bool):
    """bfloat16 autocast when ``amp``; otherwise nothing at all (the default path stays the old code path)."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def maybe_compile(fn: Callable, compile_model: bool) -> Callable:
    """``torch.compile(fn)`` when asked (a module's forward, sharing its parameters; see docs/gpu.md for
    whether Brevitas' quantizers compile), else ``fn`` itself."""
    return torch.compile(fn) if compile_model else fn


def progress_bar(it: range, enabled: bool, desc: str):
    """A tqdm bar over ``it`` when ``enabled``, else ``it`` itself (tqdm imported only when shown)."""
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=True, dynamic_ncols=True)
