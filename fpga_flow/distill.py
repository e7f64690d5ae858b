"""Knowledge distillation: a float teacher (the seed model, seed normalisation) for quantized students.

The teacher is ``models/<name>.py``'s ``float_model()`` trained on
inputs normalised with the seed's mean and std (``data.MEAN``, ``data.STD``), exactly as the seed example
trains it. Wrapped in
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

from . import data, zoo
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
    return zoo.output_checkpoint_path(model_name, 32, 32).with_name(f"{model_name}_float.pt")


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
