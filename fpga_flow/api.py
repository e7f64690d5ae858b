"""The Python API; the CLI and the Makefile are thin layers over these two functions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import backends, data, runner, zoo
from .config import BuildConfig, check_identifier
from .errors import FlowError
from .resources import DEFAULT_OUT, shown
from .train import load_checkpoint


def _inputs(input_shape: tuple[int, ...], n: int, data_path: str | None, images: np.ndarray | None,
            labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Explicit inputs, else MNIST test images for models taking 784 values (1x28x28, or flat (784,): the images
    reshaped) or a square grid of them average-pooled (e.g. (49,): 7x7, ``data.as_input``), else seeded random
    inputs in [0, 1)."""
    if images is not None:
        x = np.asarray(images, dtype=np.float32)
        if x.shape[1:] != tuple(input_shape):
            raise FlowError(f"images have shape {x.shape[1:]}, the model takes {tuple(input_shape)}")
        return x[:n] if n else x, (None if labels is None else np.asarray(labels)[:n] if n else np.asarray(labels))
    if int(np.prod(input_shape)) == 28 * 28 or data.pool_factor((1, 28, 28), tuple(input_shape)):
        split = data.load("test", data_path)
        k = n or len(split.labels)
        if k > len(split.labels):
            raise FlowError(f"asked for {k} images, the test set has {len(split.labels)}")
        return data.as_input(data.to_unit(split.images[:k]), input_shape), split.labels[:k]
    rng = np.random.default_rng(0)
    return rng.random((n or 1000, *input_shape), dtype=np.float32), None


def build(module: nn.Module, input_shape: tuple[int, ...], name: str = "model", out_dir: str | os.PathLike = "build",
          config: BuildConfig | None = None, images: np.ndarray | None = None, labels: np.ndarray | None = None,
          checkpoint: dict | None = None, start_step: str | None = None, stop_step: str | None = None,
          progress: bool = True, reverify: bool = False) -> dict:
    """Build and verify any supported Brevitas module with the configured backend; returns the report (also in
    ``out_dir/<name><backend suffix>/report.json``).

    Raises ``FlowError`` for anything the user can fix (unsupported layer, bad
    config, missing tool) and ``VerificationError`` if the hardware is not
    bit-exact; in both cases the previous build is kept.
    """
    check_identifier(name, "build name")
    cfg = config or BuildConfig(model=name)
    backend = backends.get(cfg.backend)
    out = Path(out_dir).resolve() / (name + backend.suffix)  # absolute: tools run in other folders
    if reverify:
        if backend.reverify is None:
            raise FlowError(f"`csim` (re-verify an existing build) does not apply to the {backend.name} backend: "
                            f"build again with more images (`make hls MODEL={name} BACKEND={backend.name} N=...`)")
        if not (out / "report.json").is_file():
            raise FlowError(f"no build in {out} to re-verify: run `make hls MODEL={name}` first")
        steps = list(backend.reverify)
    else:
        steps = runner.select(list(backend.steps), start_step, stop_step)
        if start_step and steps[0] is not backend.steps[0] and backend.restore is None:
            raise FlowError(f"--start-step is not supported by the {backend.name} backend (its steps keep state in "
                            "memory that is not saved between them): run it from the start")
    backend.require()  # before any work: a missing tool is exit 2 with the install command
    x, y = _inputs(tuple(input_shape), cfg.n_images, cfg.data_path, images, labels)
    state = runner.State(cfg=cfg, name=name + backend.suffix, module=module.eval(), input_shape=tuple(input_shape),
                         out_dir=out, x=x, labels=y, checkpoint=checkpoint, progress=progress,
                         backend=backend.new_state(cfg))
    # a re-verification starts mid-flow on the existing build: it resumes from it like --start-step
    all_steps = list(backend.steps) if not reverify else [None, *steps]
    state = runner.run(state, steps, all_steps, restore=None if reverify else backend.restore)
    return state.report or {}


def build_zoo(cfg: BuildConfig, out_dir: str | os.PathLike | None = None, start_step: str | None = None,
              stop_step: str | None = None, progress: bool = True, reverify: bool = False) -> dict:
    """Build a model of ``models/`` from its shipped (or given) checkpoint."""
    module, input_shape, checkpoint = zoo_module(cfg)
    return build(module, input_shape, name=cfg.model, out_dir=out_dir or DEFAULT_OUT, config=cfg,
                 checkpoint=checkpoint, start_step=start_step, stop_step=stop_step, progress=progress,
                 reverify=reverify)


def zoo_module(cfg: BuildConfig) -> tuple[nn.Module, tuple[int, ...], dict]:
    """(quantized module loaded from its checkpoint, INPUT_SHAPE, {"path", "card"}) of a zoo model."""
    mod = zoo.load(cfg.model)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    module, card = load_checkpoint(cfg.model, cfg.checkpoint, cfg.weight_bits, cfg.act_bits, cfg.input_bits)
    path = Path(cfg.checkpoint) if cfg.checkpoint else zoo.checkpoint_path(cfg.model, cfg.weight_bits, cfg.act_bits)
    shown_path = shown(path) if cfg.checkpoint else f"{zoo.SHIPPED_PREFIX}{path.name}"
    return module, tuple(mod.INPUT_SHAPE), {"path": shown_path, "card": card}
