"""The Python API; the CLI and the Makefile are thin layers over these functions.

``build`` takes a module (or, with ``config.onnx``, no module: a QONNX file); ``build_config`` builds what a
``BuildConfig`` names: a zoo model, a user's model file or module (``source``), or a QONNX file (``onnx``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import backends, data, front, report, runner, sources, zoo
from .config import BuildConfig, check_identifier
from .errors import FlowError
from .resources import DEFAULT_OUT, shown
from .train import load_checkpoint, load_state, read_checkpoint

NO_MODULE_BACKENDS = ("hls4ml", "rtl")  # backends whose steps never touch state.module (finn runs torch)


def _inputs(input_shape: tuple[int, ...], n: int, data_path: str | None, images: np.ndarray | None,
            labels: np.ndarray | None, dataset: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, labels): see :func:`_dataset_inputs`."""
    x, y, _ = _dataset_inputs(input_shape, n, data_path, images, labels, dataset)
    return x, y


def _dataset_inputs(input_shape: tuple[int, ...], n: int, data_path: str | None, images: np.ndarray | None,
                    labels: np.ndarray | None, dataset: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """Explicit inputs, else the test images of ``dataset`` (default MNIST) for models taking their size (e.g.
    1x28x28, or flat (784,): the images reshaped) or, for one-channel square images, a grid of them
    average-pooled (e.g. (49,): 7x7, ``data.as_input``), else seeded random inputs in [0, 1).
    The third value names the data used (dataset, split, checksum), None for explicit or random inputs."""
    if images is not None:
        x = np.asarray(images, dtype=np.float32)
        if x.shape[1:] != tuple(input_shape):
            raise FlowError(f"images have shape {x.shape[1:]}, the model takes {tuple(input_shape)}")
        y = None if labels is None else np.asarray(labels)[:n] if n else np.asarray(labels)
        return (x[:n] if n else x), y, None
    ds = data.get(dataset)
    image_shape = DATASET_SHAPES.get(ds.name)
    if image_shape is None or _fits(image_shape, input_shape):
        split = data.load("test", data_path, ds.name)
        if _fits(tuple(data.to_unit(split.images[:1]).shape[1:]), input_shape):
            k = n or len(split.labels)
            if k > len(split.labels):
                raise FlowError(f"asked for {k} images, the test set has {len(split.labels)}")
            info = {"name": ds.name, "split": "test", "sha256": split.sha256, "images": k}
            return data.as_input(data.to_unit(split.images[:k]), input_shape), split.labels[:k], info
        if dataset:  # asked for by name: a shape that cannot take its images is an error, not random data
            raise FlowError(f"dataset {ds.name} has images of shape {data.to_unit(split.images[:1]).shape[1:]}; "
                            f"the model takes {tuple(input_shape)}")
    elif dataset:
        raise FlowError(f"dataset {ds.name} has images of shape {image_shape}; the model takes {tuple(input_shape)}")
    rng = np.random.default_rng(0)
    return rng.random((n or 1000, *input_shape), dtype=np.float32), None, None


DATASET_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # known sizes


def _fits(image_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> bool:
    return int(np.prod(input_shape)) == int(np.prod(image_shape)) or bool(data.pool_factor(image_shape,
                                                                                            tuple(input_shape)))


def _dataset_warning(checkpoint: dict | None, used: dict | None) -> str | None:
    """A checkpoint whose card names another dataset than the one verified on (cards before #14 are MNIST)."""
    card = (checkpoint or {}).get("card")
    if card is None or not used:
        return None
    trained = card.get("dataset", data.DEFAULT_DATASET)
    if trained != used["name"]:
        return (f"the checkpoint was trained on {trained} (its card) but this build verifies on {used['name']}: "
                "accuracy figures are not comparable with the card's")
    return None


def build(module: nn.Module | None, input_shape: tuple[int, ...], name: str = "model", out_dir: str | os.PathLike = "build",
          config: BuildConfig | None = None, images: np.ndarray | None = None, labels: np.ndarray | None = None,
          checkpoint: dict | None = None, start_step: str | None = None, stop_step: str | None = None,
          progress: bool = True, reverify: bool = False) -> dict:
    """Build and verify any supported Brevitas module with the configured backend; returns the report (also in
    ``out_dir/<name><backend suffix>/report.json``).

    Raises ``FlowError`` for anything the user can fix (unsupported layer, bad
    config, missing tool) and ``VerificationError`` if the hardware is not
    bit-exact; in both cases the previous build is kept.

    ``module=None`` with ``config.onnx`` set builds that QONNX file: its export step copies the file in and the
    golden is QONNX execution (no torch reference; the report says so).
    """
    check_identifier(name, "build name")
    cfg = config or BuildConfig(model=name)
    if module is None and not cfg.onnx:
        raise FlowError("build() needs a module, or config.onnx naming a QONNX file")
    backend = backends.get(cfg.backend)
    if module is None and backend.name not in NO_MODULE_BACKENDS:
        raise FlowError(f"--onnx (no torch module) is supported by the {', '.join(NO_MODULE_BACKENDS)} "
                        f"backend(s), not {backend.name}: its golden step runs a torch module")
    # absolute: a relative --out broke the csim step, which runs its binary from another folder (hls4ml/csim.py)
    out = Path(out_dir).resolve() / (name + backend.suffix)
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
    x, y, used = _dataset_inputs(tuple(input_shape), cfg.n_images, cfg.data_path, images, labels, cfg.dataset)
    source = _source(cfg, module)
    source["dataset"] = used
    warning = _dataset_warning(checkpoint, used)
    if warning:
        source["warnings"] = [warning]
        print(f"fpga-flow: warning: {warning}", file=sys.stderr)
    if module is None:  # the first step reads the user's file instead of exporting a module
        steps = [sources.step_export if s is front.step_export else s for s in steps]
    if steps[-1] is backend.steps[-1]:  # a complete run (or a re-verification): the report gets the per-layer
        # value ranges, and the effective config is recorded beside report.json
        steps += [report.step_value_ranges, step_save_config]
    state = runner.State(cfg=cfg, name=name + backend.suffix, module=None if module is None else module.eval(),
                         input_shape=tuple(input_shape),
                         out_dir=out, x=x, labels=y, checkpoint=checkpoint, progress=progress,
                         backend=backend.new_state(cfg), source=source)
    if module is None:
        state.log(sources.NO_MODULE_NOTE)
    # a re-verification starts mid-flow on the existing build: it resumes from it like --start-step
    if reverify:
        all_steps = [None, *steps]
    else:
        all_steps = [sources.step_export if s is front.step_export and module is None else s
                     for s in backend.steps] + [report.step_value_ranges, step_save_config]
    state = runner.run(state, steps, all_steps, restore=None if reverify else backend.restore)
    return state.report or {}


CONFIG_FILE = "config.toml"  # the effective BuildConfig beside report.json: `--config <build>/config.toml`


def step_save_config(state: runner.State) -> runner.State:
    """Write the effective configuration, so ``--config <out>/<model>/config.toml`` rebuilds this build."""
    state.path(CONFIG_FILE).write_text(state.cfg.to_toml())
    return state


def _source(cfg: BuildConfig, module: nn.Module | None) -> dict:
    """What report.json records of where the model came from."""
    if module is None:
        return {"kind": "onnx", "path": cfg.onnx, "golden": sources.NO_MODULE_NOTE}
    if cfg.source:
        return {"kind": "user", "spec": cfg.source}
    return {"kind": "zoo" if cfg.model in zoo.names() else "api", "model": cfg.model}


def build_config(cfg: BuildConfig, out_dir: str | os.PathLike | None = None, start_step: str | None = None,
                 stop_step: str | None = None, progress: bool = True, reverify: bool = False) -> dict:
    """Build what ``cfg`` names: ``cfg.onnx`` (a QONNX file), ``cfg.source`` (a user's model file or module,
    with ``cfg.checkpoint`` as its weights if given), else the zoo model ``cfg.model``."""
    kw = dict(out_dir=out_dir or DEFAULT_OUT, start_step=start_step, stop_step=stop_step, progress=progress,
              reverify=reverify)
    if cfg.onnx:
        model, _ = sources.read_onnx(cfg.onnx)
        shape = sources.onnx_input_shape(model)
        if cfg.input_shape and tuple(cfg.input_shape) != shape:
            raise FlowError(f"--input-shape {cfg.input_shape} differs from the ONNX graph's input {shape}")
        return build(None, shape, name=cfg.model, config=cfg, **kw)
    if cfg.source:
        module, shape, checkpoint, dataset = user_module(cfg)
        cfg = cfg.replace(dataset=cfg.dataset or dataset or data.DEFAULT_DATASET)
        return build(module, shape, name=cfg.model, config=cfg, checkpoint=checkpoint, **kw)
    return build_zoo(cfg, **kw)


def user_module(cfg: BuildConfig) -> tuple[nn.Module, tuple[int, ...], dict | None, str | None]:
    """(module, input shape, {"path", "card"} or None, the file's DATASET) of a user's ``--model file.py:ATTR``
    / ``pkg.mod:ATTR``, its weights from ``cfg.checkpoint`` when given (a plain state_dict or our format)."""
    um = sources.load_user_model(sources.parse_model(cfg.source), cfg.input_shape)
    if not cfg.checkpoint:
        return um.module, um.input_shape, None, um.dataset
    state_dict, card = read_checkpoint(cfg.checkpoint)
    load_state(um.module, state_dict, cfg.checkpoint, cfg.source)
    return um.module, um.input_shape, {"path": shown(Path(cfg.checkpoint)), "card": card}, um.dataset


def build_zoo(cfg: BuildConfig, out_dir: str | os.PathLike | None = None, start_step: str | None = None,
              stop_step: str | None = None, progress: bool = True, reverify: bool = False) -> dict:
    """Build a model of ``models/`` from its shipped (or given) checkpoint, on its ``DATASET`` unless
    ``cfg.dataset`` says otherwise."""
    module, input_shape, checkpoint = zoo_module(cfg)
    cfg = cfg.replace(dataset=cfg.dataset or getattr(zoo.load(cfg.model), "DATASET", None) or data.DEFAULT_DATASET)
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
