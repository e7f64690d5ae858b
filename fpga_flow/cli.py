"""`fpga-flow`: the command line over :mod:`fpga_flow.api`. Errors print without a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from . import __version__, api, backends, data, resources, sources
from .config import BuildConfig
from .errors import FlowError

DEFAULTS = BuildConfig()  # every default of a build flag is read from here (one place)

EPILOG = """\
examples:
  fpga-flow hls --model convnet                 build, verify on 1000 MNIST test images, report
  fpga-flow hls --model convnet -n all          verify on all 10,000 test images
  fpga-flow csim --model convnet -n 5000        re-verify the existing project (no re-generation)
  fpga-flow hls --model mlp_tiny --backend rtl  our own Verilog, Verilator == golden, yosys counts
  fpga-flow hls --model convnet --out /tmp/b    build somewhere else than ./build
  fpga-flow train --model convnet               quantization-aware training -> build/checkpoints/
  fpga-flow models                              list the shipped models

exit codes: 0 verified; 1 usage or input error; 2 missing tool; 3 NOT bit-exact.
outputs: <out>/<model>[_finn|_rtl]/ (default out: ./build): the project, report.{json,md,png}.
caches: compiled simulators in the user cache folder ($FPGA_FLOW_CACHE or --cache-dir overrides it).
data: MNIST IDX files from --data, $FPGA_FLOW_DATA, or ../shared/data/mnist.
"""


def _n(value: str) -> int:
    if value == "all":
        return 0
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'all', got {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("the number of images must be positive (or 'all')")
    return n


# flag dest -> BuildConfig field, for the flags a config file (or a build's recorded config) can also give
FLAG_FIELDS = {"images": "n_images", "weight_bits": "weight_bits", "act_bits": "act_bits",
               "input_bits": "input_bits", "checkpoint": "checkpoint", "backend": "backend", "io_type": "io_type",
               "part": "part", "allow_unknown_part": "allow_unknown_part", "clock_ns": "clock_ns",
               "reuse_factor": "reuse_factor", "fuse": "fuse", "stock_check": "stock_check_images",
               "workers": "workers", "device": "device", "data": "data_path", "dataset": "dataset", "fit": "fit"}


def _build_args(p: argparse.ArgumentParser, steps: bool, backend: bool = True, layered: bool = False) -> None:
    """The build flags. ``layered``: their defaults are ``None`` so that :func:`_config` can tell a flag given
    explicitly (which wins) from one left out (then a ``--config`` file, a build's recorded config, or
    ``BuildConfig``'s default decides)."""
    d = DEFAULTS
    u = (lambda v: None) if layered else (lambda v: v)  # noqa: E731 - the argparse default of a flag
    p.add_argument("--model", "-m", default=u(d.model),
                   help=f"a shipped model (fpga-flow models; default {d.model}), or your own: path/to/file.py:NAME "
                        "or package.module:NAME (an nn.Module class or zero-argument factory; docs/byom.md)")
    p.add_argument("-n", "--images", type=_n, default=u(d.n_images), metavar="N",
                   help=f"MNIST test images to verify, or 'all' (default: {d.n_images})")
    p.add_argument("--weight-bits", type=int, default=u(d.weight_bits), help=f"weight bit width, 2..8 (default {d.weight_bits})")
    p.add_argument("--act-bits", type=int, default=u(d.act_bits), help=f"activation bit width, 2..8 (default {d.act_bits})")
    p.add_argument("--input-bits", type=int, default=u(d.input_bits), help=f"input quantizer bit width (default {d.input_bits})")
    p.add_argument("--checkpoint", help="checkpoint to build from (default: the shipped one for the bit widths); "
                   "fpga_flow's format or a plain torch.save(model.state_dict()), loaded weights-only")
    if layered:
        p.add_argument("--onnx", metavar="FILE", help="build a QONNX (or QCDQ) ONNX file exported elsewhere; there is "
                       "no torch module: the golden is QONNX execution (docs/byom.md)")
        p.add_argument("--input-shape", metavar="C,H,W", help="one sample's shape for --model FILE.py:NAME when the "
                       "file has no INPUT_SHAPE, e.g. 1,28,28")
        p.add_argument("--config", metavar="FILE", help="a TOML build config (any BuildConfig field, [layers.<name>] "
                       "overrides); flags given explicitly win; every build saves its own as <build>/config.toml")
    if backend:
        p.add_argument("--backend", default=u(d.backend), choices=backends.names(),
                       help=f"hardware backend (default {d.backend}); finn needs `make venv-finn`; "
                            "builds land in <out>/<model>[_finn|_rtl]/")
        p.add_argument("--target-fps", type=int, default=None, metavar="FPS",
                       help="finn and rtl backends: throughput target for the folding, images/s (finn default 10000; "
                            "rtl default: the fastest folding that fits --part)")
    p.add_argument("--io-type", default=u(d.io_type), choices=("io_stream", "io_parallel"),
                   help=f"hls4ml I/O style (default {d.io_type}, for conv models)")
    p.add_argument("--part", default=u(d.part), help=f"FPGA part (default: PYNQ-Z2 {d.part}; known parts: "
                   "fpga_flow/parts.py)")
    p.add_argument("--allow-unknown-part", action="store_true", default=u(False),
                   help="accept a part that is not in the parts table (no utilisation figures then)")
    p.add_argument("--clock-ns", type=float, default=u(d.clock_ns), help=f"target clock period in ns (default {d.clock_ns:g})")
    p.add_argument("--reuse-factor", type=int, default=u(d.reuse_factor), help=f"hls4ml reuse factor (default {d.reuse_factor})")
    p.add_argument("--fit", action="store_true", default=u(d.fit),
                   help="hls4ml: choose each layer's reuse factor so the estimate fits --part, fastest first; finn: "
                        "the highest fps whose FINN estimate fits --part (default: off; report.md says if it fits)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", default=u(True),
                   help="keep hls4ml's separate Conv2D and ReLU layers (default: fuse conv + ReLU + requantization "
                        "into one kernel, and pool after the ReLU)")
    p.add_argument("--stock-check", type=int, default=u(d.stock_check_images), metavar="K",
                   help=f"also run the first K images through hls4ml's unmodified csim (default {d.stock_check_images}; 0 = off)")
    p.add_argument("--workers", type=int, default=u(d.workers), help="parallel csim processes (default: one per core)")
    p.add_argument("--device", default=u(d.device), choices=("auto", "cpu", "cuda"),
                   help="torch reference devices: auto = CPU, plus CUDA when available")
    p.add_argument("--data", help="folder with the dataset's files (MNIST: the four IDX files)")
    p.add_argument("--dataset", choices=list(data.DATASETS), help="images to verify on (default: the model file's "
                   "DATASET, else mnist): " + "; ".join(f"{k}: {v.about}" for k, v in data.DATASETS.items()))
    p.add_argument("--out", default=str(resources.DEFAULT_OUT), metavar="DIR",
                   help="folder the build goes into, as DIR/<model>[suffix]/ (default: ./build)")
    p.add_argument("--cache-dir", metavar="DIR", help="cache of compiled simulators (default: the user cache folder, "
                   f"or ${resources.CACHE_ENV})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    if steps:
        p.add_argument("--start-step", metavar="STEP", help="resume from this step (the partial build in "
                       "<out>/<model>.partial/, else the build itself, gives the earlier artifacts)")
        p.add_argument("--stop-step", metavar="STEP", help="stop after this step; the result goes to "
                       "<out>/<model>.partial/ and never replaces the build")


def _flags(a: argparse.Namespace) -> dict:
    """The BuildConfig fields given explicitly on the command line (a flag left out is ``None``)."""
    got = {f: getattr(a, dest) for dest, f in FLAG_FIELDS.items() if getattr(a, dest, None) is not None}
    if getattr(a, "model", None) is not None:
        ref = sources.parse_model(a.model)
        got.update(model=ref.name, source=None if ref.kind == "zoo" else ref.spec, onnx=None)
    if getattr(a, "onnx", None):
        if getattr(a, "model", None) is not None:
            raise FlowError("--onnx and --model exclude each other: give one")
        got.update(model=sources.onnx_name(a.onnx), onnx=a.onnx, source=None)
    if getattr(a, "input_shape", None):
        got["input_shape"] = sources.parse_shape(a.input_shape)
    return got


def _config(a: argparse.Namespace, recorded: dict | None = None, **extra) -> BuildConfig:
    """BuildConfig's defaults < ``recorded`` (a build's own config, for csim) < ``--config`` < explicit flags."""
    values = dict(recorded or {})
    if getattr(a, "config", None):
        values.update(BuildConfig.from_toml(a.config).to_json())
    values.update(_flags(a))
    backend = values.get("backend", DEFAULTS.backend)
    if getattr(a, "target_fps", None):
        if backend not in ("finn", "rtl"):
            raise FlowError("--target-fps sets the folding of the finn and rtl backends: use --backend finn or rtl")
        if values.get("fit") and backend == "finn":
            raise FlowError("--fit searches the fps that fits --part; --target-fps sets it: give one")
        extra["target_fps"] = a.target_fps
    if extra:
        values["extra"] = {**values.get("extra", {}), **extra}
    if a.cache_dir:
        os.environ[resources.CACHE_ENV] = str(Path(a.cache_dir).resolve())
    return BuildConfig.from_dict(values, where="--config" if getattr(a, "config", None) else "the command line")


def recorded_config(build: Path) -> dict | None:
    """The effective config a build saved (config.toml; report.json's ``config`` for builds made before it),
    so that ``csim`` re-verifies with the build's own checkpoint, dataset and settings, never the defaults."""
    if (build / api.CONFIG_FILE).is_file():
        return BuildConfig.from_toml(build / api.CONFIG_FILE).to_json()
    try:
        rec = json.loads((build / "report.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    known = {f.name for f in dataclasses.fields(BuildConfig)}
    return {k: v for k, v in rec.items() if k in known and v is not None}


def _build(cfg: BuildConfig, a: argparse.Namespace, reverify: bool = False) -> int:
    t0 = time.perf_counter()
    rep = api.build_config(cfg, out_dir=a.out, start_step=getattr(a, "start_step", None),
                           stop_step=getattr(a, "stop_step", None), progress=not a.quiet, reverify=reverify)
    if rep:
        backend = backends.get(cfg.backend)
        print(backend.summary(rep))
        if (rep.get("source") or {}).get("golden"):
            print(f"note: {rep['source']['golden']}")
        where = resources.shown(Path(a.out) / (cfg.model + backend.suffix) / "report.md")
        print(f"report: {where} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_hls(a: argparse.Namespace) -> int:
    return _build(_config(a), a)


def cmd_csim(a: argparse.Namespace) -> int:
    """Re-verify with the build's recorded config; flags given explicitly (e.g. ``-n``) still win."""
    first = _config(a)
    build = Path(a.out) / (first.model + backends.get(first.backend).suffix)
    return _build(_config(a, recorded=recorded_config(build)), a, reverify=True)


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from . import train
    torch.set_num_threads(a.threads)
    augment = None if a.augment == "none" else a.augment
    if a.float:
        from . import distill, zoo
        dataset = a.dataset or getattr(zoo.load(a.model), "DATASET", None)
        out = Path(a.out) if a.out else distill.float_checkpoint_path(a.model, dataset)
        card = train.train_float(a.model, epochs=a.epochs, seed=a.seed, device=a.device, data_path=a.data,
                                 augment=augment, progress=not a.quiet, out=out, dataset=dataset)
        print(f"{a.model} float: test accuracy {card['test_accuracy']:.2%} in {card['train_seconds']:.0f} s; "
              f"checkpoint written to {out}")
        return 0
    extra = {}
    if a.lr is not None:
        extra["lr"] = a.lr
    if a.batch_size is not None:
        extra["batch_size"] = a.batch_size
    if a.prune:
        extra.update(prune=a.prune, prune_amount=a.prune_amount, prune_scope=a.prune_scope, shrink=not a.no_shrink)
    if a.teacher:
        extra.update(teacher=a.teacher, kd_temperature=a.kd_temperature, kd_alpha=a.kd_alpha)
    card = train.train(a.model, weight_bits=a.weight_bits, act_bits=a.act_bits, input_bits=a.input_bits,
                       epochs=a.epochs, seed=a.seed, device=a.device, data_path=a.data,
                       augment=augment, resume=a.resume, progress=not a.quiet, init=a.init,
                       out=a.out, lr_scaling=a.lr_scaling, amp=a.amp, compile_model=a.compile,
                       dataset=a.dataset, **extra)
    print(f"{a.model} W{a.weight_bits}A{a.act_bits}: test accuracy {card['test_accuracy']:.2%} "
          f"in {card['train_seconds']:.0f} s")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from . import zoo
    for name in zoo.names():
        print(name)
    return 0


def cmd_synth(a: argparse.Namespace) -> int:
    from .backends.hls4ml import report, synth  # `synth` is Vitis HLS synthesis of an hls4ml project
    root = a.build_dir or synth.DEFAULT_BUILD
    vendor = synth.synthesize(a.model, root, part=a.part, clock_ns=a.clock_ns, vivado=a.vivado,
                              progress=not a.quiet)
    report.add_vendor(Path(root) / a.model, vendor)
    print(synth.summary(a.model, vendor))
    print(f"report: build/{a.model}/report.json (hw.vendor); logs in build/{a.model}/{synth.SYNTH_DIR}/")
    return 0


def cmd_rtl(a: argparse.Namespace) -> int:
    """`rtl` = `hls --backend rtl` with that backend's options."""
    a.backend = "rtl"
    folding = {}
    for item in a.folding or []:
        layer, _, ps = item.partition("=")
        try:
            pe, simd = (int(v) for v in ps.split(","))
        except ValueError:
            raise FlowError(f"--folding {item!r}: expected LAYER=PE,SIMD (e.g. Conv_0=4,8)") from None
        folding[layer] = [pe, simd]
    if a.pnr_timeout is not None and not 0 <= a.pnr_timeout < float("inf"):
        raise FlowError(f"--pnr-timeout {a.pnr_timeout:g}: give a finite number of seconds >= 0 (0: no limit)")
    opts = dict(rtl_mode=a.mode, synth=a.synth, fault="default" if a.inject_fault else None,
                synth_timeout_s=a.synth_timeout)
    if a.mode == "da4ml":
        opts.update(jobs=a.jobs, mapper="abc9" if a.yosys_abc9 else "abc")
    else:
        opts.update(pnr=a.pnr, **({"folding": folding} if folding else {}),
                    **({} if a.pnr_timeout is None else {"pnr_timeout_s": a.pnr_timeout}),
                    **({} if a.router is None else {"pnr_router": a.router}))
    cfg = _config(a, **opts)
    return _build(cfg, a)


def cmd_bench(a: argparse.Namespace) -> int:
    from .backends.hls4ml import bench  # `bench` times the hls4ml flow (its csim and steps), by definition
    return bench.main(a)


def cmd_bench_accuracy(a: argparse.Namespace) -> int:
    from . import bench_accuracy
    return bench_accuracy.main(a)


def cmd_sweep(a: argparse.Namespace) -> int:
    from . import sweep  # imports Ray only when a sweep runs
    return sweep.main(a)


def cmd_fuzz(a: argparse.Namespace) -> int:
    from . import fuzz
    outcomes, summary = fuzz.fuzz(a.n, seed=a.seed, n_images=a.images, stock_check=a.stock_check,
                                  data_path=a.data, progress=not a.quiet, log=a.log, journal=a.journal)
    print(summary)
    bad = {o.status for o in outcomes} - {"exact", "refused"}
    if bad and a.log:
        print(f"specs and errors of the other models: {a.log}")
    return 3 if bad & {"silently_wrong", "not_exact"} else 1 if bad else 0


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (the README's "usage or input error"), not argparse's 2 ("missing tool" here)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fpga-flow", description="Quantization-aware PyTorch (Brevitas) models to "
                                "FPGA hardware (hls4ml / Vitis HLS), proven bit-exact in C simulation.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"fpga-flow {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error (before COMMAND)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)
    h = sub.add_parser("hls", help="export, convert, generate the hardware with --backend, verify it ==, report",
                       description="Backends: " + "; ".join(f"{n}: {backends.get_about(n)}" for n in backends.names()))
    _build_args(h, steps=True, layered=True)
    h.set_defaults(func=cmd_hls)
    c = sub.add_parser("csim", help="re-verify an existing project on N images (no re-generation)")
    _build_args(c, steps=False, layered=True)
    c.set_defaults(func=cmd_csim, start_step=None, stop_step=None)
    t = sub.add_parser("train", help="quantization-aware training on MNIST; writes build/checkpoints/")
    t.add_argument("--model", "-m", default="convnet")
    t.add_argument("--weight-bits", type=int, default=4)
    t.add_argument("--act-bits", type=int, default=4)
    t.add_argument("--input-bits", type=int, default=8)
    t.add_argument("--epochs", type=int, default=20, help="epochs (default 20: the shipped recipe)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--augment", default="none",
                   help="augmentation policy: none (default: the shipped recipe) | default (small affine)")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: float sums, hence weights, depend on the thread count; "
                        "the shipped checkpoint was trained with 1)")
    t.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument("--data", help="folder with the dataset's files (MNIST: the four IDX files)")
    t.add_argument("--dataset", choices=list(data.DATASETS), help="training data (default: the model file's "
                   "DATASET); the card records it, and the default checkpoint path carries it")
    t.add_argument("--quiet", "-q", action="store_true")
    t.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    t.add_argument("--batch-size", type=int, help="batch size (default 64: the shipped recipe); on a "
                   "GPU larger batches keep it busy (docs/gpu.md)")
    t.add_argument("--lr-scaling", default="none", choices=("none", "linear"),
                   help="linear: peak lr x batch/64 (the linear scaling rule for larger batches)")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast (off by default; docs/gpu.md)")
    t.add_argument("--compile", action="store_true", help="torch.compile the training forward (fails on the conv "
                   "models with Brevitas 0.13.4: docs/gpu.md)")
    t.add_argument("--out", help="checkpoint path (default build/checkpoints/<model>_w<W>a<A>[tag].pt; a shipped "
                   "checkpoint is never overwritten)")
    t.add_argument("--init", help="start from this checkpoint (fine-tuning, e.g. with --prune)")
    t.add_argument("--prune", choices=("unstructured", "structured"),
                   help="L1 weights | L2 whole output channels of every Conv/Linear (masks kept while training, "
                        "made permanent before saving)")
    t.add_argument("--prune-amount", type=float, default=0.2, help="fraction pruned (default 0.2)")
    t.add_argument("--prune-scope", default="layer", choices=("layer", "global"),
                   help="per layer (default) or global over all layers (unstructured only)")
    t.add_argument("--no-shrink", action="store_true", help="structured: keep zeroed channels instead of removing them")
    t.add_argument("--teacher", help="float teacher checkpoint for knowledge distillation (see --float)")
    t.add_argument("--kd-temperature", type=float, default=2.0)
    t.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the soft (teacher) loss (default 0.5)")
    t.add_argument("--float", action="store_true",
                   help="train the float seed model instead (the KD teacher) -> <model>_float.pt")
    t.set_defaults(func=cmd_train)
    b = sub.add_parser("bench", help="measure step wall times and csim/torch throughput; writes --doc-dir tables")
    _build_args(b, steps=False, backend=False)
    b.add_argument("--repeat", type=int, default=1, help="timed repetitions of the warm build")
    b.add_argument("--doc-dir", default=str(resources.DEFAULT_OUT / "bench"),
                   help="where the tables go (default build/bench; `make bench` writes the committed docs/bench)")
    b.add_argument("--fusion", action="store_true",
                   help="instead: build the model fused and with --no-fuse, compare kernels, streams and csim "
                        "images/s; adds its row to docs/bench/fusion.md")
    b.add_argument("--hls4ml-native", action="store_true",
                   help="instead: stock hls4ml (QONNX path, its default precisions) on the model, logits against "
                        "Brevitas' float forward beside fpga_flow's build/<model>; adds its row to "
                        "docs/bench/hls4ml_native.md")
    b.add_argument("--build-dir", help="with --hls4ml-native: folder holding fpga_flow's <model>/ build to contrast "
                   "(default: build/)")
    b.set_defaults(func=cmd_bench)
    s = sub.add_parser("synth", help="vendor C synthesis (needs Vitis HLS); exit 2 without it",
                       description="Vitis HLS C synthesis (and with --vivado, Vivado logic synthesis) of the project "
                       "`make hls` generated in build/<model>/hls; figures go to report.json hw.vendor, scripts and "
                       "logs to build/<model>/synth/. Without Vitis HLS: exit 2, nothing is run.")
    s.add_argument("--model", "-m", default="convnet")
    s.add_argument("--part", help="FPGA part (default: the project's, as generated by `make hls`: xc7z020clg400-1 "
                   "unless --part was given there)")
    s.add_argument("--clock-ns", type=float, help="target clock period in ns (default: the project's; make hls: 10)")
    s.add_argument("--vivado", action="store_true", help="also run Vivado logic synthesis on the RTL (needs vivado)")
    s.add_argument("--build-dir", help="folder holding <model>/ (default: build/ in the repository)")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_synth)
    r = sub.add_parser("rtl", help="the rtl backend with its own flags (= hls --backend rtl): our Verilog, "
                       "Verilator == golden, yosys counts, nextpnr Fmax",
                       description="Our own Verilog, simulated with Verilator on N images and compared with == "
                       "against the golden, counted by yosys synth_xilinx for --part and placed and routed by "
                       "nextpnr-ecp5 on an ECP5-85F. --mode stream (default): the folded streaming dataflow for "
                       "conv and dense models, folding from --target-fps or the fastest that fits --part; "
                       "--mode da4ml: dense models fully unrolled (da4ml). Output: <out>/<model>_rtl/ "
                       "(report.json hw.rtl, report.md, verilog/).")
    _build_args(r, steps=True, backend=False, layered=True)
    r.add_argument("--mode", default="stream", choices=("stream", "da4ml"), help="stream (default) or da4ml")
    r.add_argument("--target-fps", type=int, metavar="FPS",
                   help="stream: the smallest folding reaching FPS images/s at --clock-ns (default: the fastest "
                        "folding whose cost fits --part)")
    r.add_argument("--folding", action="append", metavar="LAYER=PE,SIMD",
                   help="stream: set one layer's folding by hand (repeatable)")
    r.add_argument("--no-pnr", dest="pnr", action="store_false", help="stream: skip nextpnr place and route")
    r.add_argument("--no-synth", dest="synth", action="store_false", help="skip yosys (simulate and compare only)")
    r.add_argument("--synth-timeout", type=float, help="give up yosys after this many seconds")
    r.add_argument("--pnr-timeout", type=float, metavar="S",
                   help="stream: stop yosys synth_ecp5 + nextpnr after S seconds (default 3600; 0: no limit); the "
                        "build still lands, its report saying the Fmax was not measured")
    r.add_argument("--router", choices=("auto", "router1", "router2"),  # measure.ROUTER_CHOICES (kept light)
                   help="stream: nextpnr's router (default auto: router1, the better clock where both finish, up to "
                        "40,000 LUT4 + 2 x CCU2C cells after synth_ecp5, router2 above, which finishes the large, "
                        "congested designs router1 does not, and router2 again where router1 has not finished in "
                        "20 minutes; docs/design-choices.md)")
    r.add_argument("--jobs", type=int, help="da4ml: Verilator build jobs (default: one per core)")
    r.add_argument("--yosys-abc9", action="store_true",
                   help="da4ml: LUT mapping by abc9 (synth_xilinx unchanged; much slower) instead of classic abc")
    r.add_argument("--inject-fault", action="store_true",
                   help="testing: put one wrong weight into the Verilog; verification must fail (exit 3)")
    r.set_defaults(func=cmd_rtl)
    f = sub.add_parser("fuzz", help="random small Brevitas models through the whole flow: exact or refused")
    f.add_argument("-n", type=int, default=50, help="number of random models (default 50)")
    f.add_argument("--seed", type=int, default=0, help="random seed of the model generator (default 0)")
    f.add_argument("--images", type=int, default=32, help="inputs verified per model (default 32)")
    f.add_argument("--stock-check", type=int, default=4, metavar="K",
                   help="of which K also go through hls4ml's unmodified csim (default 4)")
    f.add_argument("--log", help="append the spec and error of every model neither exact nor refused (JSON lines)")
    f.add_argument("--journal", metavar="FILE",
                   help="append every model's outcome here as it ends; if FILE exists (same seed, images, "
                        "stock check) its models are not rebuilt: a long run can be stopped and resumed")
    f.add_argument("--data", help="folder with the MNIST IDX files")
    f.add_argument("--quiet", "-q", action="store_true")
    f.set_defaults(func=cmd_fuzz)
    ba = sub.add_parser("bench-accuracy", help="MNIST accuracy of float/W8A8/W4A4/W2A2 (+KD), pruned, augmented "
                        "recipes; writes docs/bench/accuracy.md")
    from .bench_accuracy import add_args as _bench_accuracy_args
    _bench_accuracy_args(ba)
    ba.set_defaults(func=cmd_bench_accuracy)
    from .sweep import DESCRIPTION as _SWEEP_ABOUT, EPILOG as _SWEEP_EPILOG, add_args as _sweep_args
    sw = sub.add_parser("sweep", help="design-space search on Ray Tune: train, build, verify ==, cost; Pareto "
                        "table, plot and report (docs/sweep.md)", description=_SWEEP_ABOUT, epilog=_SWEEP_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _sweep_args(sw)
    sw.set_defaults(func=cmd_sweep)
    m = sub.add_parser("models", help="list the models in models/")
    m.set_defaults(func=cmd_models)
    return p


def _quiet_libraries() -> None:
    """Warnings of the libraries we drive that say nothing to our users."""
    import warnings
    warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def os_error_line(e: OSError) -> str:
    """An operating-system error as one line: the file, the system's words, what to do."""
    import errno
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f) or "(no file named)"
    what = {errno.ENOSPC: "no space left on the device: free some space and run again",
            errno.EDQUOT: "disk quota exceeded: free some space and run again",
            errno.EACCES: "permission denied: check the file's and its folder's permissions",
            errno.EPERM: "operation not permitted: check the file's permissions and attributes (chattr)",
            errno.EROFS: "read-only file system: choose another --out"}.get(e.errno, e.strerror or str(e))
    return (f"{where}: {what} (a build in progress was discarded; the previous build is untouched; "
            "--debug before the command shows the traceback)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except FlowError as e:
        if args.debug:
            raise
        print(f"fpga-flow: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # disk full, permissions, ...: one line naming the file (#15 item 10); --debug: traceback
        if args.debug:
            raise
        print(f"fpga-flow: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fpga-flow: interrupted; the previous build is untouched", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
