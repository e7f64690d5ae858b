"""Random small Brevitas models through the whole flow: each verifies with ``==`` or is refused up front.

One generator serves both the property-based tests (hypothesis draws the
choices, and shrinks them) and ``fpga-flow fuzz`` (a seeded ``numpy`` RNG draws
them). Every model is classified:

- ``exact``: the build verified, and an independent check (our own Brevitas
  forward vs the csim outputs the build saved) agrees with ``==``;
- ``refused``: a ``FlowError`` raised before conversion (export, clean, check);
- ``not_exact``: the build failed verification loudly (``VerificationError``);
- ``silently_wrong``: the build said "verified" but the outputs differ (must never happen);
- ``crashed``: any other error, or a ``FlowError`` after the check step (a gap
  in ``CheckSupported``: it should have refused the graph up front).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import FlowError, VerificationError

# choose(label, options) -> one of options. Labels make hypothesis' shrinking and the RNG draw the same choices.
Choose = Callable[[str, Sequence], object]

BIAS_QUANTS = ("Int32Bias", "Int32Bias", "Int16Bias")
REFUSE_STEPS = ("export", "clean", "check")


@dataclass(frozen=True)
class LayerSpec:
    out: int  # features (dense) or channels (conv)
    weight_bits: int
    act_bits: int
    bias: str | None  # a brevitas.quant bias quantizer name, or None for bias=False
    act: str  # relu (QuantReLU) | signed (QuantIdentity, signed) | none (float accumulator: last layer only)
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    pool: str = "none"  # none | max | avg (conv only)
    batchnorm: bool = False
    depthwise: bool = False
    per_channel: bool = False  # per-channel (non-uniform) power-of-two weight scales


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # dense | conv
    input_shape: tuple[int, ...]
    input_bits: int
    input_signed: bool
    layers: tuple[LayerSpec, ...]
    head: str  # conv models: linear (flatten + QuantLinear) | none (end at the last conv)
    io_type: str = "io_stream"
    seed: int = 0
    mnist: bool = False  # MNIST test images (flattened to 784 for a (784,) input), else seeded random inputs

    def expected_refusal(self) -> str | None:
        """What the flow must refuse in this spec (None: it must verify exactly). BatchNorm, per-channel
        weight scales and non-power-of-two scales go through LowerFloatScales and must verify too."""
        for ly in self.layers:  # a depthwise conv (groups=channels, multiplier 1) is supported: it must verify
            if ly.pool == "avg":
                return "AveragePool"
            if ly.batchnorm and ly.act == "none":
                return "no output quantizer"
        if self.kind == "dense" and len(self.input_shape) == 3:
            return "image input"
        return None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["layers"] = tuple(LayerSpec(**ly) for ly in d["layers"])
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


RARE = ("no_bias", "signed_act", "per_channel", "depthwise", "batchnorm", "avgpool", "image_input")


def random_spec(choose: Choose, rare: bool = True) -> ModelSpec:
    """Draw a valid spec. At most one feature the flow refuses today (``RARE``) is put in, in about half
    the models, so the other half exercise the exact path; ``rare=False`` leaves them out."""
    feature = choose("rare", ("none",) * len(RARE) + RARE) if rare else "none"
    kind = choose("kind", ("dense", "conv"))
    mnist = bool(choose("mnist", (False, True)))
    if kind == "dense":  # MNIST for a dense net: flattened images (or the image, flattened after the input quantizer)
        shape = ((1, 28, 28) if feature == "image_input" else (784,)) if mnist else \
            (int(choose("n_in", (4, 9, 16, 30))),)
    else:
        shape = (1, 28, 28) if mnist else (int(choose("c_in", (1, 2, 3))), int(choose("hw", (5, 8, 11))),
                                           int(choose("hw", (5, 8, 11))))
    head = "linear" if kind == "dense" else choose("head", ("linear", "none"))
    # a conv net has at least one conv layer before its (optional) QuantLinear head
    n_layers = int(choose("n_layers", (2, 3, 4) if kind == "conv" and head == "linear" else (1, 2, 3, 4)))
    at = int(choose("rare_layer", range(n_layers)))  # the layer that gets the rare feature
    layers = []
    c, h, w = (shape[0], shape[1], shape[2]) if len(shape) == 3 else (0, 0, 0)
    for i in range(n_layers):
        last, here = i == n_layers - 1, i == at
        wb, ab = int(choose("weight_bits", range(2, 9))), int(choose("act_bits", range(2, 9)))
        bias = None if here and feature == "no_bias" else choose("bias", BIAS_QUANTS)
        act = "signed" if here and feature == "signed_act" else \
            choose("act", ("relu",) * 2 + (("none",) if last else ()))
        per_channel = here and feature == "per_channel"
        if kind == "dense" or (last and head == "linear"):  # a QuantLinear (after flatten, for conv nets)
            layers.append(LayerSpec(int(choose("features", (2, 3, 8, 10, 16))), wb, ab, bias, act,
                                    per_channel=per_channel))
            continue
        out = int(choose("channels", (1, 2, 4, 8)))
        k = int(choose("kernel", (1, 2, 3, 5)))
        s = int(choose("stride", (1, 1, 2)))
        p = int(choose("pad", (0, 0, 1)))
        k = min(k, h + 2 * p, w + 2 * p)
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        pool = "avg" if here and feature == "avgpool" else choose("pool", ("none", "max"))
        if pool != "none" and min(h, w) >= 2:
            h, w = h // 2, w // 2
        else:
            pool = "none"
        depthwise = here and feature == "depthwise" and c > 1
        if depthwise:
            out = c
        bn = here and feature == "batchnorm"
        layers.append(LayerSpec(out, wb, ab, bias, act, k, s, p, pool, bn, depthwise, per_channel))
        c = out
    # io_parallel conv designs on 28x28 images take minutes of g++; keep them to the small inputs
    io_type = choose("io_type", ("io_stream", "io_stream", "io_parallel")) \
        if kind == "dense" or not mnist else "io_stream"
    return ModelSpec(kind, shape, int(choose("input_bits", range(2, 9))), bool(choose("input_signed", (False, True))),
                     tuple(layers), head, io_type, int(choose("seed", range(1000))), mnist)


def rng_choose(rng: np.random.Generator) -> Choose:
    return lambda _label, options: list(options)[int(rng.integers(len(options)))]


# ---------------------------------------------------------------------------------------------- models

def make_module(spec: ModelSpec, calib: np.ndarray):
    """The Brevitas module of ``spec``, its activation scales initialised on ``calib`` (train-mode passes)."""
    import torch
    from brevitas import nn as qnn
    from brevitas import quant
    from torch import nn

    torch.manual_seed(spec.seed)
    in_q = quant.Int8ActPerTensorFixedPoint if spec.input_signed else quant.Uint8ActPerTensorFixedPoint
    mods: list = [qnn.QuantIdentity(act_quant=in_q, bit_width=spec.input_bits, return_quant_tensor=True)]
    c, shape = spec.input_shape[0], tuple(spec.input_shape)
    flat = False
    for i, ly in enumerate(spec.layers):
        wq = quant.Int8WeightPerChannelFixedPointMSE if ly.per_channel else quant.Int8WeightPerTensorFixedPoint
        bias_kw = dict(bias=ly.bias is not None, bias_quant=getattr(quant, ly.bias) if ly.bias else None)
        is_linear = spec.kind == "dense" or (spec.head == "linear" and i == len(spec.layers) - 1)
        if is_linear:
            if not flat:
                mods.append(nn.Flatten())
                flat = True
            n_in = int(np.prod(shape))
            mods.append(qnn.QuantLinear(n_in, ly.out, weight_quant=wq, weight_bit_width=ly.weight_bits,
                                        return_quant_tensor=False, **bias_kw))
            shape = (ly.out,)
        else:
            groups = c if ly.depthwise else 1
            mods.append(qnn.QuantConv2d(c, ly.out, ly.kernel, stride=ly.stride, padding=ly.pad, groups=groups,
                                        weight_quant=wq, weight_bit_width=ly.weight_bits,
                                        return_quant_tensor=False, **bias_kw))
            if ly.batchnorm:
                mods.append(nn.BatchNorm2d(ly.out))
            c = ly.out
            h, w = ((d + 2 * ly.pad - ly.kernel) // ly.stride + 1 for d in shape[1:])
            shape = (c, h // 2, w // 2) if ly.pool != "none" else (c, h, w)
        if ly.act == "relu":
            mods.append(qnn.QuantReLU(act_quant=quant.Uint8ActPerTensorFixedPoint, bit_width=ly.act_bits,
                                      return_quant_tensor=True))
        elif ly.act == "signed":
            mods.append(qnn.QuantIdentity(act_quant=quant.Int8ActPerTensorFixedPoint, bit_width=ly.act_bits,
                                          return_quant_tensor=True))
        if ly.pool == "max":
            mods.append(nn.MaxPool2d(2))
        elif ly.pool == "avg":
            mods.append(nn.AvgPool2d(2))
    net = nn.Sequential(*mods)
    net.train()
    x = torch.from_numpy(np.asarray(calib, dtype=np.float32))
    with torch.no_grad():
        for _ in range(3):
            for i in range(0, len(x), 16):
                net(x[i:i + 16])
    return net.eval()


def inputs(spec: ModelSpec, n: int, data_path: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """MNIST test images for 1x28x28 specs (random if MNIST is missing), else seeded random inputs + extremes."""
    if spec.mnist:
        from . import data
        try:
            split = data.load("test", data_path)
            start = spec.seed % (len(split.labels) - n)
            x = data.to_unit(split.images[start:start + n])
            return data.as_input(x, spec.input_shape), split.labels[start:start + n]
        except FlowError:
            pass
    rng = np.random.default_rng(spec.seed)
    lo = -1.0 if spec.input_signed else 0.0
    x = rng.uniform(lo, 1.0, (max(n, 3), *spec.input_shape)).astype(np.float32)
    x[0], x[1], x[2] = 1.0, lo, 0.0  # the input range's ends drive the accumulators to theirs
    return x[:max(n, 3)], None


# ---------------------------------------------------------------------------------------------- running

@dataclass
class Outcome:
    status: str  # exact | refused | not_exact | silently_wrong | crashed
    reason: str = ""
    step: str | None = None
    seconds: float = 0.0
    spec: dict = field(default_factory=dict)
    message: str = ""
    fused: int = 0  # conv + ReLU pairs built as one fused kernel (FuseConvRelu)


def _failing_step(e: BaseException) -> str | None:
    steps = [f.name.removeprefix("step_") for f in traceback.extract_tb(e.__traceback__) if f.name.startswith("step_")]
    return steps[-1] if steps else None


def refusal_reason(msg: str) -> str:
    """A short, countable name for a refusal message."""
    import re
    m = re.search(r"\((\w+)\) is not supported", msg)
    if m:
        return f"unsupported op {m.group(1)}"
    for key, reason in (("grouped convolution", "grouped (non-depthwise) conv"),
                        ("no output quantizer", "BatchNorm on a last layer without quantizer"),
                        ("input is not quantized", "unquantized input"),
                        ("must be followed by a quantizer", "float ReLU"), ("zero point", "non-zero zero point"),
                        ("rounding mode", "rounding mode"), ("QONNX export", "export failed"),
                        ("image input before any convolution", "image input flattened before any conv"),
                        ("ends at this convolution's output without an output quantizer",
                         "float-scaled model ending at a conv without output quantizer")):
        if key in msg:
            return reason
    return msg.splitlines()[0][:80]


def run_one(spec: ModelSpec, out_dir: Path, name: str, n_images: int = 16, stock_check: int = 4,
            data_path: str | None = None, keep: bool = False) -> Outcome:
    """Build ``spec`` through :func:`fpga_flow.api.build` and classify what happened."""
    from . import api, golden
    from .config import BuildConfig

    t0 = time.perf_counter()
    out = Outcome("crashed", spec=spec.to_json())
    try:
        x, y = inputs(spec, n_images, data_path)
        module = make_module(spec, x)
        cfg = BuildConfig(model=name, n_images=len(x), stock_check_images=min(stock_check, len(x)), workers=1,
                          io_type=spec.io_type, device="cpu")
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
            rep = api.build(module, spec.input_shape, name=name, out_dir=out_dir, config=cfg, images=x, labels=y,
                            progress=False)
        # independent check: our own Brevitas forward vs the csim outputs the build kept
        want = np.asarray(golden.torch_reference(module, x).output, np.float64).reshape(len(x), -1)
        got = np.asarray(np.load(out_dir / name / "csim.npz")["csim"], np.float64).reshape(len(x), -1)
        if rep.get("float_scaled"):
            same = _float_scaled_same(rep, got, want)
        else:
            same = got == want
        out.fused = sum(1 for r in rep["hw"]["layers"] or [] if r.get("fused_from"))
        if same.all() and rep["exact_matches"] == rep["n_images"] == len(x):
            out.status = "exact"
        else:
            out.status, out.reason = "silently_wrong", f"{int((~same.all(1)).sum())}/{len(x)} images differ"
    except VerificationError as e:
        out.status, out.step, out.message = "not_exact", _failing_step(e), str(e)
        out.reason = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
    except FlowError as e:
        out.step, out.message = _failing_step(e), str(e)
        if out.step in REFUSE_STEPS:
            out.status, out.reason = "refused", refusal_reason(str(e))
        else:
            out.status, out.reason = "crashed", f"FlowError in step {out.step}: {str(e).splitlines()[0][:120]}"
    except Exception as e:  # anything else is a defect: record it, keep fuzzing
        out.step, out.message = _failing_step(e), traceback.format_exc()
        out.reason = f"{type(e).__name__} in step {out.step}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    out.seconds = round(time.perf_counter() - t0, 2)
    if not keep:
        for p in (out_dir / name, out_dir / f"{name}.failed"):
            shutil.rmtree(p, ignore_errors=True)
    return out


def _float_scaled_same(rep: dict, got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """A float-scaled design is verified with == against the integer-accumulator reference inside the build;
    Brevitas' float forward differs from it by float32 summation error only (csim x the output scale vs
    Brevitas' logits, within 1e-3 of the logits' magnitude), or by a level where the build explained it
    (a fragile threshold): those images are left out here."""
    last = rep["float_scaled"]["layers"][-1]
    if last["kind"] == "requant":  # ends in an activation quantizer: codes; Brevitas gives fl32(code * scale)
        same = (got * last["out_scale"]).astype(np.float32) == want.astype(np.float32)
    else:
        logits = got * np.asarray(last["output_scale"])
        same = np.abs(logits - want) <= 1e-3 * (1.0 + np.abs(want).max())
    for e in rep["float_scaled"]["brevitas_float_agreement"]["explained"]:
        same[e["image"]] = True
    return same


def summarize(outcomes: list[Outcome], seconds: float) -> str:
    counts = Counter(o.status for o in outcomes)
    lines = [f"models tried: {len(outcomes)} in {seconds:.0f} s",
             f"verified exact: {counts['exact']}",
             f"    of which with fused conv+ReLU kernels: {sum(1 for o in outcomes if o.status == 'exact' and o.fused)} "
             f"({sum(o.fused for o in outcomes if o.status == 'exact')} kernels)",
             f"refused before conversion: {counts['refused']}"]
    for reason, n in Counter(o.reason for o in outcomes if o.status == "refused").most_common():
        lines.append(f"    {n:5d}  {reason}")
    lines.append(f"silently wrong: {counts['silently_wrong']}")
    lines.append(f"not exact (caught by verification): {counts['not_exact']}")
    lines.append(f"crashed with another error: {counts['crashed']}")
    for reason, n in Counter(o.reason for o in outcomes if o.status in ("crashed", "not_exact",
                                                                          "silently_wrong")).most_common():
        lines.append(f"    {n:5d}  {reason}")
    return "\n".join(lines)


JOURNAL_VERSION = 1


def _commit() -> str:
    """The code the outcome came from: the git commit of the checkout (``+dirty`` with local edits), else the
    installed package's version (an installed package is not asked for a commit: git would answer for
    whatever repository happens to hold its site-packages)."""
    import subprocess

    from . import __version__
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return f"fpga_flow {__version__}"
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode == 0 and rev.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"fpga_flow {__version__}"


def read_journal(path: Path, seed: int, n_images: int, stock_check: int) -> tuple[dict[int, Outcome], set[str]]:
    """The outcomes a journal holds, by model index, and the code commits they came from; FlowError if it
    belongs to another run (seed, images, stock check) or is not a journal. A torn last line (a run killed
    while writing it) is cut off the file: that model runs again."""
    done: dict[int, Outcome] = {}
    commits: set[str] = set()
    want = {"journal": JOURNAL_VERSION, "seed": seed, "images": n_images, "stock_check": stock_check}
    lines = Path(path).read_text().splitlines()
    for k, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if k == len(lines) - 1 and k > 0:
                tmp = Path(f"{path}.tmp-{os.getpid()}")
                tmp.write_text("".join(f"{ln}\n" for ln in lines[:k]))
                os.replace(tmp, path)
                break
            raise FlowError(f"{path}: line {k + 1} is not JSON; not a fuzz journal (delete it to start over)")
        if k == 0:
            head = {key: rec.get(key) for key in want}
            if head != want:
                raise FlowError(f"{path} is the journal of another run ({head}); this run is {want}. Delete it "
                                f"or pass another --journal to start over")
            continue
        fields = {key: rec[key] for key in Outcome.__dataclass_fields__ if key in rec}
        done[int(rec["index"])] = Outcome(**fields)
        commits.add(str(rec.get("commit")))
    return done, commits


def fuzz(n: int, seed: int = 0, out_dir: Path | None = None, n_images: int = 32, stock_check: int = 4,
         data_path: str | None = None, progress: bool = True, log: Path | None = None,
         journal: Path | None = None) -> tuple[list[Outcome], str]:
    """Try ``n`` random models (seeded); returns the outcomes and the summary text.

    Builds go to a scratch directory (and its own csim cache) that is removed at the end; the
    specs and outcomes of every model that was not exact or refused go to ``log`` (JSON lines).

    ``journal``: every outcome is appended there as it ends (index, spec, code commit); a run that finds
    the file already there (same seed, images, stock check) does not rebuild the models it holds, so a
    long run (``make fuzz N=300``) can be stopped and resumed, across machines or sessions. The generator
    is drawn in order either way, and each journalled model's spec must equal the one drawn again, so
    the models are the ones a single run would have built.
    """
    rng = np.random.default_rng(seed)
    done, commits = (read_journal(journal, seed, n_images, stock_check) if journal and Path(journal).exists()
                     else ({}, set()))
    if journal and not Path(journal).exists():
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        Path(journal).write_text(json.dumps({"journal": JOURNAL_VERSION, "seed": seed, "images": n_images,
                                             "stock_check": stock_check}) + "\n")
    if done and progress:
        print(f"[fuzz] resuming: {sum(1 for i in done if i < n)} of {n} models already in {journal} "
              f"(delete it to start over)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="fpga_flow_fuzz_", dir=out_dir))
    old_cache = os.environ.get("FPGA_FLOW_CSIM_CACHE")
    os.environ["FPGA_FLOW_CSIM_CACHE"] = str(scratch / "csim-cache")
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    commit = _commit() if journal else None
    try:
        for i in range(n):
            spec = random_spec(rng_choose(rng))
            if i in done:
                if ModelSpec.from_json(done[i].spec) != spec:
                    raise FlowError(f"{journal}: model {i}'s spec differs from the one the generator draws now "
                                    f"(the generator changed since the journal was started); delete it or pass "
                                    f"another --journal to start over")
                outcomes.append(done[i])
                continue
            o = run_one(spec, scratch, f"fz{i}", n_images, stock_check, data_path)
            outcomes.append(o)
            if progress:
                print(f"[fuzz {i + 1}/{n}] {o.status:14s} {o.seconds:6.1f} s  {o.reason}", flush=True)
            if journal is not None:
                with open(journal, "a") as f:
                    f.write(json.dumps({"index": i, "commit": commit, **asdict(o)}) + "\n")
            if log is not None and o.status not in ("exact", "refused"):
                Path(log).parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(json.dumps(asdict(o)) + "\n")
            shutil.rmtree(scratch / "csim-cache", ignore_errors=True)  # every design is new: do not hoard binaries
    finally:
        if old_cache is None:
            os.environ.pop("FPGA_FLOW_CSIM_CACHE", None)
        else:
            os.environ["FPGA_FLOW_CSIM_CACHE"] = old_cache
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(outcomes, time.perf_counter() - t0)
    if done:
        summary += (f"\n(resumed from {journal}: {sum(1 for i in done if i < n)} models from earlier runs, whose "
                    f"time is not in the seconds above; code: {', '.join(sorted(commits | {commit}))})")
    return outcomes, summary
