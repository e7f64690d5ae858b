"""Quantization-aware training of a zoo model on MNIST, and loading its checkpoint.

A checkpoint is ``{'state_dict': ..., 'card': {...}}`` at
``models/checkpoints/<name>_w{W}a{A}.pt`` with the card as JSON beside it; both
are written atomically. The card records what produced the weights (bits,
schedule, seed, data hash, package versions) and the measured test accuracy.

Brevitas detail this module depends on: the activation quantizers
(``Uint8ActPerTensorFixedPoint``: ``ParameterFromRuntimeStatsScaling``) keep
their scale in a Python ``counter`` plus a ``buffer`` that ``state_dict()``
leaves out. For the first ``collect_stats_steps`` (300) training forwards the
scale is a running percentile held in ``buffer``; then it becomes the learned
parameter ``value`` (log2 domain). ``state_dict()`` always exports the scale as
``value`` (log2 of ``buffer`` while still collecting), and loading ``value``
ends collection (``counter = steps + 1``), so a fresh model loaded with
``strict=True`` computes exactly what the saved one computed in eval mode. What a
state_dict cannot carry is an *unfinished* collection (counter, buffer): the
end-of-epoch resume file stores those separately so that a resumed run equals
an uninterrupted one.

The float-scaled ``Uint8ActPerTensorFloat`` (Brevitas' default) is the same
``ParameterFromRuntimeStatsScaling`` with ``value`` in the linear domain (its
restriction is the identity, so ``value`` is ``buffer`` itself while collecting):
everything above holds for it unchanged. BatchNorm running statistics are
ordinary buffers and travel in the state_dict.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data, distill, zoo
from . import prune as pruning
from .errors import FlowError
from .loop import effective_lr, maybe_compile, run_epochs

DEFAULTS = dict(epochs=20, batch_size=64, lr=2e-3)  # the shipped convnet_w4a4 recipe


def _random_affine() -> nn.Module:
    import kornia.augmentation as K

    # Small geometric jitter only: MNIST digits are not mirror-symmetric, so no flips.
    return K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=1.0)


# Augmentation policies by name; they run batch-wise on the training device.
AUGMENTATIONS: dict[str, Callable[[], nn.Module]] = {"default": _random_affine}


def make_augmentation(name: str | None) -> nn.Module | None:
    """The policy called ``name``; ``None`` (or ``'none'``) means no augmentation."""
    if name is None or name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise FlowError(f"unknown augmentation {name!r}; valid: {', '.join(sorted(AUGMENTATIONS))}, none")
    return AUGMENTATIONS[name]()


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed every RNG and force deterministic kernels, restoring the global flag after."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    # warn_only: an op without a deterministic kernel warns instead of aborting a long run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _runtime_stats_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Brevitas modules that collect runtime statistics (scale or zero point) in training."""
    return {n: m for n, m in model.named_modules()
            if all(hasattr(m, a) for a in ("collect_stats_steps", "counter", "buffer", "value"))}


def _stats_state(model: nn.Module) -> dict[str, dict[str, Any]]:
    # ``value`` too: state_dict() replaces it by the buffer while collecting, and at the
    # end of collection Brevitas folds the buffer into the *initial* value in place.
    return {n: {"counter": int(m.counter), "buffer": m.buffer.detach().cpu().clone(),
                "value": m.value.detach().cpu().clone()}
            for n, m in _runtime_stats_modules(model).items()}


def _restore_stats_state(model: nn.Module, state: dict[str, dict[str, Any]]) -> None:
    for n, m in _runtime_stats_modules(model).items():
        if n in state:
            m.counter = int(state[n]["counter"])
            with torch.no_grad():
                m.buffer.copy_(state[n]["buffer"].to(m.buffer.device))
                m.value.copy_(state[n]["value"].to(m.value.device))


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def card_path(ckpt: Path) -> Path:
    return Path(ckpt).with_suffix(".json")


def partial_path(ckpt: Path) -> Path:
    return Path(ckpt).with_name(Path(ckpt).name + ".partial")


def save_checkpoint(model: nn.Module, card: dict, path: Path) -> Path:
    """Save ``{'state_dict', 'card'}`` to ``path`` and the card as JSON beside it."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda p: torch.save({"state_dict": state, "card": card}, p))
    _atomic_write(card_path(path), lambda p: p.write_text(json.dumps(card, indent=2) + "\n"))
    return path


def _save_partial(path: Path, payload: dict) -> None:
    _atomic_write(path, lambda p: torch.save(payload, p))


def _to_unit_tensor(images: np.ndarray, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """uint8 images -> [0, 1] tensor (N, 1, H, W), or reshaped to a model's ``input_shape`` (``data.as_input``)."""
    x = torch.from_numpy(data.to_unit(images))
    return x if input_shape is None else data.as_input(x, input_shape)


@torch.no_grad()
def evaluate(model: nn.Module, images_uint8: np.ndarray, labels: np.ndarray,
             device: str = "cpu", batch: int = 1000, input_shape: tuple[int, ...] | None = None) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode; the model's mode is restored.
    ``input_shape``: the model's ``INPUT_SHAPE`` when it is not the image's (e.g. (784,))."""
    was_training = model.training
    model.eval()
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    correct = 0
    try:
        for i in range(0, len(images_uint8), batch):
            x = _to_unit_tensor(images_uint8[i:i + batch], input_shape).to(device)
            pred = model(x).argmax(dim=1).cpu()
            correct += int((pred == labels_t[i:i + batch]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(images_uint8), 1)


def _versions() -> dict[str, str]:
    import brevitas

    out = {"torch": str(torch.__version__), "brevitas": str(brevitas.__version__)}
    with contextlib.suppress(Exception):
        import kornia

        out["kornia"] = str(kornia.__version__)
    return out


def train(model_name: str, weight_bits: int = 4, act_bits: int = 4, input_bits: int = 8,
          epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], seed: int = 0, device: str | None = None,
          data_path: str | os.PathLike | None = None, augment: str | None = "default",
          limit: int | None = None, out: str | os.PathLike | None = None,
          progress: bool = True, resume: bool = False, init: str | os.PathLike | None = None,
          prune: str | None = None, prune_amount: float = 0.0, prune_scope: str = "layer",
          shrink: bool = True, teacher: nn.Module | str | os.PathLike | None = None, dataset: str | None = None,
          kd_temperature: float = 2.0, kd_alpha: float = 0.5, lr_scaling: str = "none", amp: bool = False,
          compile_model: bool = False) -> dict:
    """Quantization-aware training of ``models/<model_name>.py``'s quant model; returns the card.

    model_name      a zoo model (``models/<name>.py``).
    weight_bits, act_bits, input_bits
                    passed to ``quant_model``; the checkpoint name carries W and A.
    epochs, batch_size, lr
                    Adam, lr decayed per step on a cosine to 0 over all epochs.
    lr_scaling      'none' (default: ``lr`` as given) or 'linear': peak lr ``lr * batch_size / 64``
                    (:func:`effective_lr`), for larger batches on a GPU.
    amp             bfloat16 autocast of the forward (off by default; its effect on the quantized
                    model is unmeasured, see docs/gpu.md).
    compile_model   ``torch.compile`` the training forward (off by default; not the distillation path;
                    see docs/gpu.md).
    seed            seeds Python, NumPy and torch (shuffle, dropout, augmentation);
                    with deterministic kernels a CPU run is reproducible bit for bit
                    (same thread count); CUDA has no deterministic max-pool backward,
                    so there torch only warns.
    device          'cuda' when available, else 'cpu'; the test accuracy in the card is
                    always measured on the CPU in eval mode.
    data_path       MNIST IDX folder (see ``fpga_flow.data``).
    augment         name in ``AUGMENTATIONS`` ('default': small random affine) or None.
    limit           train on the first ``limit`` training images only (tests, smoke runs).
    out             checkpoint path; default ``zoo.output_checkpoint_path(name, W, A)`` (build/checkpoints/).
    progress        tqdm bar per epoch with loss and running accuracy.
    resume          continue from ``<out>.partial`` (written after each epoch) when it
                    exists and was made with the same settings.
    init            start from this checkpoint instead of random weights: fine-tuning, e.g. after
                    pruning; one of other bit widths, or a float one (``--float``), gives only its conv/linear
                    weights and BatchNorm state (``init_from``).
    prune, prune_amount, prune_scope
                    ``'unstructured'`` (L1) or ``'structured'`` (whole output channels):
                    see :mod:`fpga_flow.prune`. Masks are applied before the first step,
                    kept during training and made permanent before saving.
    shrink          after structured pruning, delete the zeroed channels (narrower
                    layers, checked to compute the same outputs); the card records the
                    widths so :func:`load_checkpoint` rebuilds the shape.
    teacher, kd_temperature, kd_alpha
                    knowledge distillation from a float teacher (a module on [0, 1]
                    pixels, or a float checkpoint path from :func:`train_float`);
                    loss :func:`fpga_flow.distill.kd_loss`.
    The default checkpoint name gains a tag for these (``_p50u``, ``_p25s``, ``_kd``) so
    a pruned or distilled run never overwrites the plain one.
    """
    mod = zoo.load(model_name)
    device = device or default_device()
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise FlowError(f"epochs ({epochs}) and batch_size ({batch_size}) must be >= 1 and lr ({lr}) > 0")
    peak_lr = effective_lr(lr, batch_size, lr_scaling)
    aug = make_augmentation(augment)
    pruning.check_args(prune, prune_amount, prune_scope)
    tag = ""
    if prune is not None:
        tag += f"_p{round(prune_amount * 100)}{prune[0]}"
    if teacher is not None:
        tag += "_kd"
    dataset = data.get(dataset or getattr(zoo.load(model_name), "DATASET", None)).name
    if dataset != data.DEFAULT_DATASET:  # the default path carries the dataset: an MNIST checkpoint is kept
        tag += f"_{dataset.replace('-', '_')}"
    path = Path(out) if out is not None else zoo.output_checkpoint_path(model_name, weight_bits, act_bits, tag)
    partial = partial_path(path)
    train_split = data.load("train", data_path, dataset)
    test_split = data.load("test", data_path, dataset)
    images, labels = train_split.images, train_split.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    n = len(images)
    if n == 0:
        raise FlowError(f"no training images (limit={limit})")
    settings = dict(model=model_name, weight_bits=weight_bits, act_bits=act_bits,
                    input_bits=input_bits, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, augment=augment, limit=limit, data_sha256=train_split.sha256)
    # Only the options in use join the settings, so cards and resume files of plain runs are unchanged.
    settings["dataset"] = dataset  # a card without "dataset" is MNIST (the cards made before #14)
    if init is not None:
        settings["init"] = str(init)
    if prune is not None:
        settings.update(prune=prune, prune_amount=prune_amount, prune_scope=prune_scope, shrink=shrink)
    if lr_scaling != "none":
        settings.update(lr_scaling=lr_scaling, peak_lr=peak_lr)
    if amp:
        settings["amp"] = "bfloat16"
    if compile_model:
        settings["compile"] = True
    teacher_module, teacher_accuracy = None, None
    if teacher is not None:
        distill.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.int64),
                        kd_temperature, kd_alpha)  # validates T and alpha before any work
        teacher_module = teacher if isinstance(teacher, nn.Module) else distill.load_teacher(model_name, teacher)
        teacher_module = teacher_module.eval()
        teacher_accuracy = evaluate(teacher_module, test_split.images, test_split.labels,
                                    input_shape=mod.INPUT_SHAPE)
        settings.update(teacher=str(teacher) if not isinstance(teacher, nn.Module) else type(teacher).__name__,
                        kd_temperature=kd_temperature, kd_alpha=kd_alpha)

    with _deterministic(seed):
        model = mod.quant_model(weight_bits, act_bits, input_bits)
        if init is not None:
            init_from(model, model_name, init, weight_bits, act_bits, input_bits)
        if prune is not None:
            pruning.apply(model, prune, prune_amount, prune_scope)
        shuffle = torch.Generator().manual_seed(seed)
        start_epoch, elapsed, history, state = 0, 0.0, [], None
        if resume and partial.exists():
            state = _load_partial(partial, settings)
            model.load_state_dict(state["state_dict"])
            _restore_stats_state(model, state["stats"])
        model = model.to(device)
        # Only now: Brevitas rebuilds its quantizers (new scale Parameters) inside
        # load_state_dict, so an optimizer made earlier would update orphans.
        opt = torch.optim.Adam(model.parameters(), lr=peak_lr)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            shuffle.set_state(state["shuffle_rng"])
            torch.set_rng_state(state["torch_rng"])
            if device.startswith("cuda") and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"])
            start_epoch, elapsed, history = state["epoch"], state["elapsed"], list(state["history"])
        if aug is not None:
            aug = aug.to(device)
        if teacher_module is not None:
            teacher_module = teacher_module.to(device)
        x_all = _to_unit_tensor(images).to(device)
        y_all = torch.from_numpy(labels).to(device)
        forward = maybe_compile(getattr(model, "forward_log_softmax", None)
                                or (lambda x: F.log_softmax(model(x), dim=1)), compile_model)

        def step_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if teacher_module is None:
                logp = forward(x)
                return F.nll_loss(logp, y), logp
            logits = model.logits(x) if hasattr(model, "logits") else model(x)  # forward may end in log_softmax
            with torch.no_grad():
                t_logits = teacher_module(x)
            return distill.kd_loss(logits, t_logits, y, kd_temperature, kd_alpha), F.log_softmax(logits, dim=1)

        def save_partial(epoch: int, hist: list, seconds: float) -> None:
            _save_partial(partial, {
                "settings": settings, "epoch": epoch + 1, "elapsed": seconds, "history": hist,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "stats": _stats_state(model), "optimizer": opt.state_dict(),
                "shuffle_rng": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
            })

        try:
            history, elapsed = run_epochs(model, opt, step_loss, x_all, y_all, input_shape=mod.INPUT_SHAPE,
                                          epochs=epochs, batch_size=batch_size, lr=peak_lr, shuffle=shuffle,
                                          aug=aug, start_epoch=start_epoch, history=history, elapsed=elapsed,
                                          progress=progress, desc="epoch", amp=amp, on_epoch_end=save_partial)
        except Exception as e:
            if not compile_model or isinstance(e, FlowError):
                raise
            raise FlowError(f"torch.compile of {model_name}'s training forward failed ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); with brevitas 0.13.4 and torch 2.13 "
                            "Dynamo cannot trace Brevitas' quantizers (docs/gpu.md): train without compile") from e

    model = model.to("cpu").eval()
    extra: dict[str, Any] = {}
    if prune is not None:
        pruning.make_permanent(model)
        if prune == "structured" and shrink:
            model = pruning.shrink(model.eval(), _to_unit_tensor(test_split.images[:64], mod.INPUT_SHAPE)).eval()
            extra["widths"] = pruning.widths(model)
        extra["sparsity"] = pruning.sparsity(model)
    if teacher_module is not None:
        extra["teacher_accuracy"] = teacher_accuracy
    accuracy = evaluate(model, test_split.images, test_split.labels, device="cpu", input_shape=mod.INPUT_SHAPE)
    card = dict(settings, test_accuracy=accuracy, test_images=len(test_split.images),
                train_images=n, train_seconds=round(elapsed, 3),
                train_samples_per_s=round(n * epochs / elapsed, 1) if elapsed > 0 else None,
                device=device, threads=torch.get_num_threads(), history=history,
                versions=_versions(), **extra)
    save_checkpoint(model, card, path)
    print(f"checkpoint written to {path} (and its card {path.with_suffix('.json')})", file=sys.stderr)
    _check_round_trip(model, model_name, path, test_split.images[:1000], (weight_bits, act_bits, input_bits))
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    return card


@torch.no_grad()
def _check_round_trip(model: nn.Module, model_name: str, path: Path, images: np.ndarray,
                      bits: tuple[int, int, int]) -> None:
    """The saved file must reproduce the trained model exactly, or it is not shipped quietly."""
    x = _to_unit_tensor(images, zoo.load(model_name).INPUT_SHAPE)
    loaded, _ = load_checkpoint(model_name, path, *bits)
    if not torch.equal(model.eval()(x), loaded(x)):
        raise FlowError(f"checkpoint {path} does not reproduce the trained model's outputs "
                        "(a quantizer state was not saved); please report this")


def _load_partial(partial: Path, settings: dict) -> dict:
    try:
        state = torch.load(partial, map_location="cpu", weights_only=True)
        saved = state["settings"]
    except Exception as e:  # noqa: BLE001 - any failure here means the file is unusable
        raise FlowError(f"cannot resume from {partial}: {type(e).__name__}: {e}. "
                        "Delete it to start over.") from e
    if saved != settings:
        diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        raise FlowError(f"cannot resume from {partial}: it was made with other settings "
                        f"(saved, requested): {diff}. Delete it or train without resume.")
    return state


def init_from(model: nn.Module, model_name: str, path: str | os.PathLike, weight_bits: int, act_bits: int,
              input_bits: int) -> str:
    """Start ``model`` from checkpoint ``path``: all of it when the bit widths agree ("full"), else only the
    float weights and biases of its conv/linear layers and the state of its BatchNorm layers ("weights"),
    so the new activation quantizers calibrate from data (e.g. W2A2 initialised from the trained W4A4).

    A float checkpoint (``train --float``, card ``kind: float``) gives the same "weights" part of the
    zoo's ``float_model()``, matched by layer name. That model was trained on normalised pixels
    (``distill.Normalized``) while the quant model sees [0, 1]: a BatchNorm right after the first layer
    absorbs the difference (its batch statistics while training); without one, the first layer starts
    shifted."""
    try:
        card = torch.load(Path(path), map_location="cpu", weights_only=True)["card"]
    except Exception:  # noqa: BLE001 - load_checkpoint below gives the precise error
        card = None
    if isinstance(card, dict) and card.get("kind") == "float":
        _copy_weights(distill.load_teacher(model_name, path).model, model, path)
        return "weights"
    try:
        bits = (int(card["weight_bits"]), int(card["act_bits"]), int(card["input_bits"]))
    except Exception:  # noqa: BLE001 - load_checkpoint below gives the precise error
        bits = (weight_bits, act_bits, input_bits)
    src, _ = load_checkpoint(model_name, path, *bits)
    if bits == (weight_bits, act_bits, input_bits):
        model.load_state_dict(src.state_dict())
        return "full"
    _copy_weights(src, model, path)
    return "weights"


def _copy_weights(src: nn.Module, model: nn.Module, path: str | os.PathLike) -> None:
    """Copy conv/linear weights and biases, and BatchNorm affine parameters and running statistics, from
    ``src`` into the layers of ``model`` with the same names; quantizer state is left alone."""
    layers = dict(model.named_modules())
    with torch.no_grad():
        for name, m in src.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                dst = layers.get(name)
                if dst is None or dst.weight.shape != m.weight.shape:
                    raise FlowError(f"cannot initialise {name} from {path}: the layers differ")
                dst.weight.copy_(m.weight)
                if m.bias is not None:
                    dst.bias.copy_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                dst = layers.get(name)
                if not isinstance(dst, nn.modules.batchnorm._BatchNorm) or dst.num_features != m.num_features:
                    raise FlowError(f"cannot initialise {name} from {path}: the layers differ")
                dst.load_state_dict(m.state_dict())


# card fields other code reads as numbers (report.md formats them as percentages)
CARD_FRACTIONS = ("test_accuracy", "float_accuracy")


def check_card(card: dict, path: str | os.PathLike) -> None:
    """The card fields read after loading have the types their readers assume (a crafted card used to end in
    an AttributeError/ValueError/IndexError far from the file); the error names the file and the field."""
    for k in CARD_FRACTIONS:
        v = card.get(k)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
            raise FlowError(f"checkpoint {path}: card field {k!r} must be a fraction in [0, 1], got {v!r}")
    for k in ("train_seconds",):
        v = card.get(k)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise FlowError(f"checkpoint {path}: card field {k!r} must be a number, got {v!r}")


def check_widths(widths, model: nn.Module, path: str | os.PathLike) -> None:
    """Card field 'widths' ({layer: kept output channels}, from structured pruning) names layers of ``model``
    other than the last, each with 1..its width channels."""
    layers = dict(pruning.prunable_layers(model)[:-1])
    if not isinstance(widths, dict):
        raise FlowError(f"checkpoint {path}: card field 'widths' must map layer names to channel counts, "
                        f"got a {type(widths).__name__}")
    for name, k in widths.items():
        if name not in layers:
            raise FlowError(f"checkpoint {path}: card field 'widths' names layer {name!r}, which is not a "
                            f"prunable layer of the model (those are {', '.join(layers) or 'none'})")
        m = layers[name]
        full = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= full):
            raise FlowError(f"checkpoint {path}: card field 'widths' gives layer {name!r} {k!r} channels; "
                            f"it has 1..{full}")


def read_checkpoint(path: str | os.PathLike, remedy: str = "") -> tuple[dict, dict | None]:
    """(state_dict, card or None) of ``path``: our ``{'state_dict', 'card'}`` format, or a plain
    ``torch.save(model.state_dict())`` (no card). Loaded with ``weights_only=True``: no code is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FlowError(f"checkpoint not found: {path}.{remedy}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, not a torch file, or a pickled module
        raise FlowError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}. A checkpoint is "
                        f"torch.save(model.state_dict()) or fpga_flow's {{'state_dict', 'card'}}.{remedy}") from e
    if isinstance(ckpt, dict) and {"state_dict", "card"} <= set(ckpt):
        card = ckpt["card"]
        if not isinstance(card, dict):
            raise FlowError(f"checkpoint {path}: field 'card' is a {type(card).__name__}, not a dict;{remedy}")
        check_card(card, path)
        if not _is_state_dict(ckpt["state_dict"]):
            raise FlowError(f"checkpoint {path}: field 'state_dict' is not a mapping of names to tensors")
        return ckpt["state_dict"], card
    if _is_state_dict(ckpt):
        return ckpt, None
    keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise FlowError(f"checkpoint {path} is neither a state_dict (names -> tensors) nor an fpga_flow checkpoint "
                    f"(keys 'state_dict' and 'card'); found {keys}")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items())


def load_state(model: nn.Module, state_dict: dict, path: str | os.PathLike, what: str) -> None:
    """``strict`` loading (what makes Brevitas' runtime-stats scales the saved ones, see the module docstring);
    a mismatch names a few of the missing and unexpected keys."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except Exception as e:  # noqa: BLE001 - missing/unexpected keys, shape mismatch
        raise FlowError(f"checkpoint {path} does not fit {what}: {_key_mismatch(model, state_dict) or e}") from e
    # Loading a scale ends Brevitas' statistics phase; a module still in it got no scale
    # (possible despite strict=True when BREVITAS_IGNORE_MISSING_KEYS is set).
    unset = [n for n, m in _runtime_stats_modules(model).items() if m.counter <= m.collect_stats_steps]
    if unset:
        raise FlowError(f"checkpoint {path} has no activation scale for {', '.join(unset)}")


def _key_mismatch(model: nn.Module, state_dict: dict) -> str:
    """A few missing and unexpected keys, as Brevitas' own loading counts them (its runtime-stats scales may
    be absent from a fresh model's state_dict and still load), on a copy; '' if the keys agree."""
    try:
        res = copy.deepcopy(model).load_state_dict(state_dict, strict=False)
    except Exception:  # noqa: BLE001 - a shape mismatch: the caller's message says it
        return ""
    few = lambda ks: ", ".join(ks[:5]) + (f" ... ({len(ks)} in all)" if len(ks) > 5 else "")  # noqa: E731
    return "; ".join(([f"missing keys: {few(res.missing_keys)}"] if res.missing_keys else [])
                     + ([f"unexpected keys: {few(res.unexpected_keys)}"] if res.unexpected_keys else []))


def load_checkpoint(model_name: str, path: str | os.PathLike | None = None, weight_bits: int = 4,
                    act_bits: int = 4, input_bits: int = 8) -> tuple[nn.Module, dict | None]:
    """The trained quant model (eval mode, CPU) and its card (None for a plain state_dict); any defect is a
    FlowError.

    Loading is ``strict``: with Brevitas' runtime-stats quantizers this is what
    makes the scales the saved ones (see the module docstring).
    """
    mod = zoo.load(model_name)
    path = Path(path) if path is not None else zoo.checkpoint_path(model_name, weight_bits, act_bits)
    state_dict, card = read_checkpoint(path, f" Re-create it with `make train MODEL={model_name}`.")
    if card is not None:
        want = {"model": model_name, "weight_bits": weight_bits, "act_bits": act_bits, "input_bits": input_bits}
        got = {k: card.get(k) for k in want}
        if got != want:
            raise FlowError(f"checkpoint {path} was trained as {got}, but {want} was requested")
    model = mod.quant_model(weight_bits, act_bits, input_bits)
    if card is not None and card.get("widths"):  # structured pruning shrank the layers
        check_widths(card["widths"], model, path)
        model = pruning.narrow(model, card["widths"])
    load_state(model, state_dict, path, f"models/{model_name}.py (W{weight_bits}A{act_bits} input {input_bits})")
    return model.eval(), card


def train_float(model_name: str = "convnet", epochs: int = 20, batch_size: int = 64, lr: float = 2e-3,
                seed: int = 0, device: str | None = None, data_path: str | os.PathLike | None = None,
                augment: str | None = None, limit: int | None = None, out: str | os.PathLike | None = None,
                progress: bool = True, dataset: str | None = None) -> dict:
    """Train the float seed model (Adam, cosine lr) on inputs normalised with the dataset's own mean and std
    (``data.Dataset``; recorded in the card); returns its card.

    Same schedule, seeding and checkpoint format as :func:`fpga_flow.train.train`
    (``{'state_dict', 'card'}`` + JSON card), default path ``<name>_float[_<dataset>].pt``.
    """
    mod = zoo.load(model_name)
    device = device or default_device()
    aug = make_augmentation(augment)
    ds = data.get(dataset or getattr(mod, "DATASET", None))
    path = Path(out) if out is not None else distill.float_checkpoint_path(model_name, ds.name)
    tr, te = data.load("train", data_path, ds.name), data.load("test", data_path, ds.name)
    images, labels = (tr.images, tr.labels) if limit is None else (tr.images[:limit], tr.labels[:limit])
    n = len(images)
    with _deterministic(seed):
        net = mod.float_model()
        model = distill.Normalized(net, ds.mean, ds.std).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        if aug is not None:
            aug = aug.to(device)
        x_all = _to_unit_tensor(images).to(device)
        y_all = torch.from_numpy(labels).to(device)
        # the seed model ends in log_softmax; no running accuracy in the float card (None)
        history, elapsed = run_epochs(model, opt, lambda x, y: (F.nll_loss(model(x), y), None), x_all, y_all,
                                          input_shape=mod.INPUT_SHAPE, epochs=epochs, batch_size=batch_size, lr=lr,
                                          shuffle=shuffle, aug=aug, progress=progress, desc="float epoch")
    model = model.to("cpu").eval()
    acc = evaluate(model, te.images, te.labels, input_shape=mod.INPUT_SHAPE)
    card = dict(model=model_name, kind="float", epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                augment=augment, limit=limit, dataset=ds.name, norm_mean=list(ds.mean),
                norm_std=list(ds.std), data_sha256=tr.sha256, test_accuracy=acc,
                test_images=len(te.images), train_images=n, train_seconds=round(elapsed, 3), device=device,
                threads=torch.get_num_threads(), history=history, versions=_versions())
    save_checkpoint(net.cpu(), card, path)
    return card
