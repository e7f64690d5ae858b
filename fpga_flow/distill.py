"""Knowledge distillation: a float teacher (the seed model, seed normalisation) for quantized students.

The teacher is ``models/<name>.py``'s ``float_model()`` trained on
``data.to_normalized`` inputs, exactly as the seed example trains it. Wrapped in
:class:`Normalized` it takes the students' input (pixels in [0, 1]), so one batch
(augmented or not) feeds both. The loss is Hinton et al.'s:

    alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * NLL(log_softmax(s), y)

(T^2 keeps the soft term's gradient scale independent of T).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import data, loop, zoo
from .errors import FlowError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Temperature-scaled distillation loss (batch mean). Teacher logits may be log-probabilities:
    softmax is shift-invariant, so ``log_softmax`` output works as well as raw logits."""
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise FlowError(f"kd_temperature must be > 0 and kd_alpha in [0, 1] (got {temperature}, {alpha})")
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.nll_loss(F.log_softmax(student_logits, dim=1), labels)
    return alpha * soft + (1.0 - alpha) * hard


class Normalized(nn.Module):
    """The float model on [0, 1] pixels: applies the seed normalisation ``(x - mean) / std`` first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - data.MEAN) / data.STD)


def float_checkpoint_path(model_name: str) -> Path:
    return zoo.checkpoint_path(model_name, 32, 32).with_name(f"{model_name}_float.pt")


def train_float(model_name: str = "convnet", epochs: int = 20, batch_size: int = 64, lr: float = 2e-3,
                seed: int = 0, device: str | None = None, data_path: str | os.PathLike | None = None,
                augment: str | None = None, limit: int | None = None, out: str | os.PathLike | None = None,
                progress: bool = True) -> dict:
    """Train the float seed model (Adam, cosine lr, seed normalisation); returns its card.

    Same schedule, seeding and checkpoint format as :func:`fpga_flow.train.train`
    (``{'state_dict', 'card'}`` + JSON card), default path ``<name>_float.pt``.
    """
    from . import train as qat

    mod = zoo.load(model_name)
    device = device or qat.default_device()
    aug = qat.make_augmentation(augment)
    path = Path(out) if out is not None else float_checkpoint_path(model_name)
    tr, te = data.load("train", data_path), data.load("test", data_path)
    images, labels = (tr.images, tr.labels) if limit is None else (tr.images[:limit], tr.labels[:limit])
    n = len(images)
    with qat._deterministic(seed):
        net = mod.float_model()
        model = Normalized(net).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        if aug is not None:
            aug = aug.to(device)
        x_all = qat._to_unit_tensor(images).to(device)
        y_all = torch.from_numpy(labels).to(device)
        # the seed model ends in log_softmax; no running accuracy in the float card (None)
        history, elapsed = loop.run_epochs(model, opt, lambda x, y: (F.nll_loss(model(x), y), None), x_all, y_all,
                                          input_shape=mod.INPUT_SHAPE, epochs=epochs, batch_size=batch_size, lr=lr,
                                          shuffle=shuffle, aug=aug, progress=progress, desc="float epoch")
    model = model.to("cpu").eval()
    acc = qat.evaluate(model, te.images, te.labels, input_shape=mod.INPUT_SHAPE)
    card = dict(model=model_name, kind="float", epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                augment=augment, limit=limit, data_sha256=tr.sha256, test_accuracy=acc,
                test_images=len(te.images), train_images=n, train_seconds=round(elapsed, 3), device=device,
                threads=torch.get_num_threads(), history=history, versions=qat._versions())
    qat.save_checkpoint(net.cpu(), card, path)
    return card


def load_teacher(model_name: str, path: str | os.PathLike | None = None) -> nn.Module:
    """The trained float model wrapped in :class:`Normalized` (eval mode, CPU)."""
    path = Path(path) if path is not None else float_checkpoint_path(model_name)
    if not path.is_file():
        raise FlowError(f"teacher checkpoint not found: {path}. Train it with "
                        f"`python -m fpga_flow train --model {model_name} --float`.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt["card"].get("kind") != "float":
            raise FlowError(f"{path} is not a float (teacher) checkpoint")
        net = zoo.load(model_name).float_model()
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except FlowError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt file, wrong model
        raise FlowError(f"cannot load teacher {path}: {type(e).__name__}: {e}") from e
    return Normalized(net).eval()
