"""Knowledge distillation: a float teacher (the seed model, its dataset's normalisation) for quantized students.

The teacher is ``models/<name>.py``'s ``float_model()`` trained on
inputs normalised with its training dataset's mean and std (``data.Dataset.mean/std``: for MNIST the seed
example's ``data.MEAN``, ``data.STD``; its card records which). Wrapped in
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
    """The float model on [0, 1] pixels: applies ``(x - mean) / std`` first, per channel, with the statistics
    of the dataset it is trained on (``data.get(name).mean/std``; MNIST's, the seed's, by default)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...] = (data.MEAN,),
                 std: tuple[float, ...] = (data.STD,)) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise FlowError(f"normalisation: {len(mean)} means but {len(std)} stds")
        self.model = model
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.mean) == 1:  # one channel (or a flat input): the scalars, as the seed example applies them
            return self.model((x - self.mean[0]) / self.std[0])
        if x.dim() != 4 or x.shape[1] != len(self.mean):
            raise FlowError(f"normalisation has {len(self.mean)} channels; the input has shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return self.model((x - mean) / std)


def float_checkpoint_path(model_name: str, dataset: str | None = None) -> Path:
    """``<name>_float.pt``; another dataset than MNIST adds its name, so an MNIST teacher is never replaced."""
    name = data.get(dataset).name
    tag = "" if name == data.DEFAULT_DATASET else f"_{name.replace('-', '_')}"
    return zoo.output_checkpoint_path(model_name, 32, 32).with_name(f"{model_name}_float{tag}.pt")


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
        mean, std = normalisation(ckpt["card"])
    except FlowError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt file, wrong model
        raise FlowError(f"cannot load teacher {path}: {type(e).__name__}: {e}") from e
    return Normalized(net, mean, std).eval()


def normalisation(card: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a float checkpoint was trained with: its card's, else its dataset's (a card without
    ``dataset``, from before #14, is MNIST's)."""
    if "norm_mean" in card and "norm_std" in card:
        return tuple(card["norm_mean"]), tuple(card["norm_std"])
    ds = data.get(card.get("dataset"))
    return ds.mean, ds.std
