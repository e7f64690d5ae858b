"""`make bench-accuracy`: MNIST test accuracy of the recipes we ship, as a committed table.

Each row is one training run (``train.train`` or ``train.train_float``) whose
checkpoint and card go to ``build/accuracy/<row>.pt/.json``; a row whose card is
already there is not re-run (``--force`` re-runs it), so an interrupted sweep
continues where it stopped and rows can be run one at a time. The table in
``docs/bench/accuracy.md`` is written from every card present; rows not yet
measured are listed as missing. Runs use one CPU thread unless told otherwise
(on a shared 2-core machine two threads oversubscribe and run far slower).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from . import zoo
from .resources import DEFAULT_OUT
from .toolchain import cpu_name

OUT_DIR = DEFAULT_OUT / "accuracy"
DOC = DEFAULT_OUT / "bench" / "accuracy.md"  # `make bench-accuracy` writes the committed docs/bench/accuracy.md

# name -> (description, run kwargs, target accuracy or None). ``epochs`` None = the --epochs value.
ROWS: dict[str, tuple[str, dict, float | None]] = {
    "float": ("float seed ConvNet (seed normalisation)", dict(kind="float"), 0.992),
    "w8a8": ("W8A8", dict(bits=(8, 8)), None),
    "w4a4": ("W4A4 (the shipped checkpoint when present)", dict(bits=(4, 4), shipped=True), 0.990),
    "w4a4_aug": ("W4A4 + augmentation 'default'", dict(bits=(4, 4), augment="default"), None),
    "w2a2": ("W2A2", dict(bits=(2, 2)), 0.985),
    "w2a2_kd": ("W2A2 + KD from the float teacher", dict(bits=(2, 2), kd=True), 0.985),
    "w2a2_init": ("W2A2 initialised from the W4A4 weights (its activation quantizers calibrate anew)",
                  dict(bits=(2, 2), init_bits=(4, 4)), 0.985),
    "w4a4_p50u": ("W4A4 pruned 50% unstructured (L1, per layer), fine-tuned from W4A4",
                  dict(bits=(4, 4), prune=("unstructured", 0.5)), None),
    "w4a4_p25s": ("W4A4 pruned 25% structured (L2 channels, per layer), shrunk, fine-tuned from W4A4",
                  dict(bits=(4, 4), prune=("structured", 0.25)), None),
}
PRUNED_WITHIN = 0.003  # pruned W4A4 within 0.3 points of W4A4


def _card_file(name: str, out_dir: Path) -> Path:
    return out_dir / f"{name}.json"


def run_row(name: str, a: argparse.Namespace, out_dir: Path) -> dict:
    from . import data, distill, train
    _, spec, _ = ROWS[name]
    common = dict(seed=a.seed, device=a.device, data_path=a.data, progress=not a.quiet)
    out = out_dir / f"{name}.pt"
    if spec.get("kind") == "float":
        epochs = a.float_epochs if a.float_epochs is not None else a.epochs
        return train.train_float(a.model, epochs=epochs, augment=None, out=out, **common)
    w, act = spec["bits"]
    shipped = zoo.checkpoint_path(a.model, w, act)
    if spec.get("shipped") and shipped.is_file():
        model, card = train.load_checkpoint(a.model, shipped, w, act)
        test = data.load("test", a.data)
        from . import prune
        acc = train.evaluate(model, test.images, test.labels, input_shape=zoo.load(a.model).INPUT_SHAPE)
        return dict(card, test_accuracy=acc,
                    source=zoo.SHIPPED_PREFIX + shipped.name, sparsity=prune.sparsity(model))
    kw: dict = dict(weight_bits=w, act_bits=act, epochs=a.epochs, augment=spec.get("augment"), out=out)
    if spec.get("kd"):
        teacher = out_dir / "float.pt"
        if not teacher.is_file():
            run_and_save("float", a, out_dir)
        kw.update(teacher=teacher, kd_temperature=a.kd_temperature, kd_alpha=a.kd_alpha)
    if spec.get("init_bits"):
        base = zoo.checkpoint_path(a.model, *spec["init_bits"])
        if not base.is_file():
            raise SystemExit(f"bench-accuracy: {name} starts from {base}, which does not exist: run `make train` first")
        kw.update(init=base)
    if spec.get("prune"):
        base = zoo.checkpoint_path(a.model, w, act)
        if not base.is_file():
            base = out_dir / "w4a4.pt"
            if not base.is_file():
                run_and_save("w4a4", a, out_dir)
        method, amount = spec["prune"]
        kw.update(init=base, prune=method, prune_amount=amount, epochs=a.finetune_epochs, lr=a.finetune_lr)
    return train.train(a.model, **kw, **common)


def run_and_save(name: str, a: argparse.Namespace, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    card = run_row(name, a, out_dir)
    card = dict(card, row=name, wall_minutes=round((time.perf_counter() - t0) / 60, 2))
    out_dir.mkdir(parents=True, exist_ok=True)
    _card_file(name, out_dir).write_text(json.dumps(card, indent=2) + "\n")
    print(f"{name}: {card['test_accuracy']:.2%} ({card['wall_minutes']} min)", flush=True)
    return card


def verify_hls(name: str, a: argparse.Namespace, out_dir: Path) -> dict:
    """Build a pruned row's checkpoint through the whole flow (hls4ml, g++ csim, ``==``) and record in its
    card whether it is bit-exact and whether the HLS weights have exactly the torch model's nonzeros."""
    from . import api, prune, toolchain, train
    from .config import BuildConfig
    card_file = _card_file(name, out_dir)
    card = json.loads(card_file.read_text())
    if toolchain.find("g++", required=False) is None:
        return card
    w, act = ROWS[name][1]["bits"]
    ckpt = out_dir / f"{name}.pt"
    model, _ = train.load_checkpoint(a.model, ckpt, w, act)
    nonzero = [s["weights"] - s["zero_int_weights"] for n, s in prune.sparsity(model).items() if n != "_total"]
    cfg = BuildConfig(model=a.model, weight_bits=w, act_bits=act, n_images=a.verify_hls, checkpoint=str(ckpt),
                      data_path=a.data)
    rep = api.build_zoo(cfg, out_dir=out_dir / "hls" / name, progress=not a.quiet)
    layers = [r for r in rep["hw"]["layers"] if "weights" in r]
    card["hls"] = {"exact_matches": rep["exact_matches"], "n_images": rep["n_images"],
                   "csim_accuracy": rep["accuracy"]["csim"], "n_out": [r["n_out"] for r in layers],
                   "nonzero_weights": [r["nonzero_weights"] for r in layers], "torch_nonzero_int_weights": nonzero}
    card_file.write_text(json.dumps(card, indent=2) + "\n")
    print(f"{name}: HLS {rep['exact_matches']}/{rep['n_images']} bit-exact", flush=True)
    return card


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def table(out_dir: Path) -> str:
    cards = {n: json.loads(_card_file(n, out_dir).read_text()) for n in ROWS if _card_file(n, out_dir).is_file()}
    import torch
    gpu_rows = (" (rows whose notes say 'trained on cuda': on the GPU)"
                if any(c.get("device", "cpu") != "cpu" for c in cards.values()) else "")
    lines = ["# MNIST test accuracy (10,000 images) of the training recipes", "",
             "Written by `make bench-accuracy` (`python -m fpga_flow bench-accuracy`) from the cards in",
             "`build/accuracy/`. Adam, batch 64, cosine lr to 0, seed 0, deterministic kernels;",
             f"machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} cores shared with other jobs,",
             f"torch {torch.__version__} on the CPU, 1 thread{gpu_rows}. Minutes are the training loop's wall clock on",
             "that shared machine, so indicative only.", "",
             "| row | recipe | epochs | augment | test accuracy | target | met | train min | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = cards.get("w4a4", {}).get("test_accuracy")
    for n, (desc, spec, target) in ROWS.items():
        c = cards.get(n)
        if c is None:
            lines.append(f"| {n} | {desc} | - | - | not measured | {_fmt_pct(target)} | - | - | missing |")
            continue
        acc = c["test_accuracy"]
        notes = []
        if n.startswith("w4a4_p") and base is not None:
            target = base - PRUNED_WITHIN
            notes.append(f"{100 * (acc - base):+.2f} pts vs W4A4")
        if n == "w4a4_aug" and base is not None:
            notes.append(f"{100 * (acc - base):+.2f} pts vs W4A4 without augmentation")
        if c.get("source"):
            notes.append(f"shipped checkpoint `{c['source']}`")
        if c.get("init") and n != "w2a2_init":
            notes.append(f"fine-tuned from `{Path(c['init']).name}` at lr {c.get('lr')}")
        if n == "w2a2_init" and "w2a2" in cards:
            notes.append(f"{100 * (acc - cards['w2a2']['test_accuracy']):+.2f} pts vs W2A2 from random weights; "
                         "the first and only setting tried")
        sp = c.get("sparsity", {}).get("_total")
        if sp:
            notes.append(f"{sp['zero_int_weights']}/{sp['weights']} integer weights are 0")
        if c.get("widths"):
            notes.append("widths " + ", ".join(f"{k} {v}" for k, v in c["widths"].items())
                         + " (from 10, 20, 50): shrunk")
        h = c.get("hls")
        if h:
            same = "= torch" if h["nonzero_weights"] == h["torch_nonzero_int_weights"] else "!= torch (DEFECT)"
            notes.append(f"HLS csim {h['exact_matches']}/{h['n_images']} bit-exact, layer outputs "
                         f"{'/'.join(map(str, h['n_out']))}, nonzero HLS weights "
                         f"{'/'.join(map(str, h['nonzero_weights']))} {same}")
        if c.get("teacher_accuracy") is not None:
            notes.append(f"teacher {_fmt_pct(c['teacher_accuracy'])}, T={c.get('kd_temperature')}, "
                         f"alpha={c.get('kd_alpha')}")
            if "w2a2" in cards:
                notes.append(f"{100 * (acc - cards['w2a2']['test_accuracy']):+.2f} pts vs W2A2 without KD")
        met = "-" if target is None else ("yes" if acc >= target - 1e-12 else f"no ({100 * (acc - target):+.2f})")
        minutes = c.get("train_seconds")
        if c.get("device", "cpu") != "cpu":  # a GPU row (--device cuda): its minutes are not the CPU's
            notes.append(f"trained on {c['device']}")
        lines.append(f"| {n} | {desc} | {c.get('epochs', '-')} | {c.get('augment') or 'none'} | {_fmt_pct(acc)} | "
                     f"{_fmt_pct(target)} | {met} | {'-' if minutes is None else f'{minutes / 60:.1f}'} | "
                     f"{'; '.join(notes)} |")
    others = sorted(p for p in out_dir.glob("*.json") if p.stem not in ROWS)
    if others:
        lines += ["", "Other runs kept in the same folder (variants tried; not part of the sweep):", "",
                  "| run | bits | epochs | augment | KD | test accuracy | train min |", "|---|---|---|---|---|---|---|"]
        for p in others:
            c = json.loads(p.read_text())
            bits = "float" if c.get("kind") == "float" else f"W{c.get('weight_bits')}A{c.get('act_bits')}"
            kd = (f"teacher {_fmt_pct(c['teacher_accuracy'])}, T={c.get('kd_temperature')}, "
                  f"alpha={c.get('kd_alpha')}") if c.get("teacher_accuracy") is not None else "-"
            lines.append(f"| {p.stem} | {bits} | {c.get('epochs')} | {c.get('augment') or 'none'} | {kd} | "
                         f"{_fmt_pct(c.get('test_accuracy'))} | {c.get('train_seconds', 0) / 60:.1f} |")
    lines += ["", "Pruned rows: target is W4A4's accuracy minus 0.3 points; their epochs and minutes are the",
              "fine-tune only (on top of W4A4's). Structured pruning removes whole output channels of every",
              "layer but the last (the classes); the shrunk model is checked to compute exactly what the",
              "zero-masked one does before it is saved. The HLS check builds the saved checkpoint through",
              "hls4ml and g++ csim (`==` against Brevitas and QONNX) and compares the nonzero weights per layer",
              "with the torch model's nonzero integer weights. The KD row's teacher is the float row's model.", ""]
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default="convnet")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), help="rows to run (default: all, in table order)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each training row (default 20)")
    p.add_argument("--float-epochs", type=int, default=45,
                   help="epochs of the float model (default 45: it trains ~2.5x faster per epoch than QAT)")
    p.add_argument("--finetune-epochs", type=int, default=5, help="epochs of the pruning fine-tunes (default 5)")
    p.add_argument("--finetune-lr", type=float, default=5e-4, help="peak lr of the pruning fine-tunes")
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--kd-alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--data", help="folder with the MNIST IDX files")
    p.add_argument("--out-dir", default=str(OUT_DIR), help="checkpoints and cards (default build/accuracy)")
    p.add_argument("--doc", default=str(DOC), help="table to write (default build/bench/accuracy.md; make bench-accuracy: docs/bench/accuracy.md)")
    p.add_argument("--force", action="store_true", help="re-run rows that already have a card")
    p.add_argument("--verify-hls", type=int, default=1000, metavar="N",
                   help="build the pruned rows through hls4ml + g++ csim on N images and record exactness and "
                        "nonzero HLS weights (default 1000; 0 = off; skipped without g++)")
    p.add_argument("--table-only", action="store_true", help="only rewrite the table from existing cards")
    p.add_argument("--quiet", "-q", action="store_true")


def main(a: argparse.Namespace) -> int:
    import torch
    torch.set_num_threads(a.threads)
    out_dir = Path(a.out_dir)
    if not a.table_only:
        for name in a.rows or list(ROWS):
            if a.force or not _card_file(name, out_dir).is_file():
                run_and_save(name, a, out_dir)
            doc = Path(a.doc)
            doc.parent.mkdir(parents=True, exist_ok=True)
            doc.write_text(table(out_dir))  # after every row: an interrupted sweep keeps its rows
        for name in a.rows or list(ROWS):
            if ROWS[name][1].get("prune") and a.verify_hls > 0 and _card_file(name, out_dir).is_file():
                if a.force or "hls" not in json.loads(_card_file(name, out_dir).read_text()):
                    verify_hls(name, a, out_dir)
    doc = Path(a.doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(table(out_dir))
    print(f"table: {doc}")
    return 0


if __name__ == "__main__":
    import sys
    ap = argparse.ArgumentParser(prog="python -m fpga_flow.bench_accuracy", description=__doc__)
    add_args(ap)
    sys.exit(main(ap.parse_args()))
