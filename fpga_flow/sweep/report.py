"""The sweep's results: table (CSV, JSON), Pareto set, plot and report.md, read from the trial folders.

Everything here is read back from what each trial wrote into its own folder (``params.json`` by Ray Tune,
``trial.json`` by :func:`~fpga_flow.sweep.trial.run_trial`, ``error.txt`` by Ray for a failed trial), so the
report can be rewritten at any time without Ray (``fpga-flow sweep --report-only``), also after an interruption.
Only verified trials (``==`` on every image) are points of the Pareto set and the plot; failed ones are listed
with their reason.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

from .. import zoo
from ..resources import shown
from . import space as spaces
from .trial import BUILD, CHECKPOINT, RECORD

RESULTS_CSV, RESULTS_JSON, PLOT, REPORT = "results.csv", "results.json", "pareto.png", "report.md"
SPACE_RECORD = "space.json"  # the space the sweep ran (written by the CLI at the start)
COLUMNS = ("trial", "status", "weight_bits", "act_bits", "prune", "reuse_factor", "target_fps", "clock_ns", "lr",
           "epochs", "accuracy", "hw_accuracy", "exact_matches", "n_images", "lut", "ff", "dsp", "bram18", "fps",
           "cost_kind", "sparsity", "train_s", "build_s", "wall_s", "pareto", "reason")
METRIC_NAMES = {"accuracy": "test accuracy", "hw_accuracy": "accuracy on the verified images", "lut": "LUT",
                "ff": "FF", "dsp": "DSP", "bram18": "BRAM18", "fps": "images/s"}


def collect(exp: Path, defaults: dict | None = None) -> list[dict]:
    """One row per trial folder of the experiment, in trial order: point (``defaults`` for the axes the space
    leaves out), status, metrics."""
    rows = []
    current = _current_trials(Path(exp))
    # Ray writes params.json when a trial ends; trial.json is ours, from its start (an interrupted trial has only it)
    for d in sorted(p for p in Path(exp).iterdir() if p.is_dir() and any((p / f).is_file()
                                                                           for f in ("params.json", RECORD))):
        if current is not None and not any(d.name.startswith(f"{t}_") for t in current):
            continue  # a failed trial that --retry-failed replaced with a new one (its folder is left as it was)
        point = _read_json(d / "params.json") or {}
        rec = _read_json(d / RECORD)
        row: dict = {"trial": d.name, **(defaults or {}), **point, "status": "not run", "dir": d}
        if rec:
            row.update(rec.get("point") or {})
            row["status"] = rec["status"] if rec["status"] != "running" else "interrupted"
            row.update(rec.get("metrics") or {})
            row.update({k: rec[k] for k in ("reason", "started", "ended", "build") if k in rec})
            if rec["status"] == "failed":
                row["wall_s"] = rec.get("wall_s")
        if row["status"] != "verified" and (d / "error.txt").is_file():
            row["status"] = "failed"
            row.setdefault("reason", _last_line((d / "error.txt").read_text()))
        rows.append(row)
    return rows


def _current_trials(exp: Path) -> set[str] | None:
    """Trial ids in Ray Tune's latest experiment state (None when there is none to read)."""
    states = sorted(exp.glob("experiment_state-*.json"))  # named by the start time of each (resumed) run
    try:
        data = json.loads(states[-1].read_text())["trial_data"]
        return {json.loads(t[0])["trial_id"] for t in data}
    except (IndexError, OSError, ValueError, KeyError, TypeError):
        return None


def pareto(rows: list[dict], objectives: list[tuple[str, str]]) -> list[dict]:
    """The verified rows no other verified row dominates (at least as good in every objective, better in one)."""
    ok = [r for r in rows if r["status"] == "verified" and all(_num(r.get(m)) for m, _ in objectives)]

    def key(r: dict) -> tuple:
        return tuple(r[m] if sense == "max" else -r[m] for m, sense in objectives)

    front = []
    for r in ok:
        kr = key(r)
        if not any(all(a >= b for a, b in zip(key(o), kr)) and key(o) != kr for o in ok):
            front.append(r)
    first_cost = next((m for m, s in objectives if s == "min"), objectives[0][0])
    return sorted(front, key=lambda r: (r[first_cost], r["trial"]))


def write(out: Path, model: str, space: spaces.Space, exp: Path, wall_s: float | None = None) -> Path:
    """results.csv, results.json, pareto.png and report.md in ``out``; returns the report's path."""
    rows = collect(exp, spaces.point_defaults(space))
    front = pareto(rows, space.objectives)
    names = {r["trial"] for r in front}
    for r in rows:
        r["pareto"] = r["trial"] in names
    _write_table(out, rows)
    plotted = _plot(out / PLOT, rows, front, model, space)
    report = out / REPORT
    report.write_text(_markdown(out, model, space, rows, front, plotted, wall_s))
    return report


def _write_table(out: Path, rows: list[dict]) -> None:
    clean = [{k: v for k, v in r.items() if k != "dir"} for r in rows]
    (out / RESULTS_JSON).write_text(json.dumps(clean, indent=1, default=str) + "\n")
    with open(out / RESULTS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in clean:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})


def cost_label(rows: list[dict]) -> str:
    """How the cost figures were obtained (every verified trial's ``cost_kind``: estimate or measured)."""
    kinds = sorted({r.get("cost_kind") for r in rows if r["status"] == "verified"} - {None})
    return " + ".join(kinds) or "none"


def _plot(path: Path, rows: list[dict], front: list[dict], model: str, space: spaces.Space) -> bool:
    ok = [r for r in rows if r["status"] == "verified"]
    if not ok:
        path.unlink(missing_ok=True)
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")

    kind = cost_label(rows)
    how = next(r.get("cost_how") for r in ok)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    fps = [max(r["fps"], 1e-9) for r in ok]
    norm = LogNorm(vmin=min(fps), vmax=max(fps)) if max(fps) > min(fps) else None
    sc = ax.scatter([r["lut"] for r in ok], [100 * r["accuracy"] for r in ok], c=fps, cmap="viridis", norm=norm,
                    s=36, edgecolors="none")
    f_lut = [r["lut"] for r in front]
    f_acc = [100 * r["accuracy"] for r in front]
    if front and ("lut", "min") in space.objectives and ("accuracy", "max") in space.objectives:
        ax.step(f_lut, f_acc, where="post", color="tab:red", lw=1, alpha=0.7)
    ax.scatter(f_lut, f_acc, s=110, facecolors="none", edgecolors="tab:red", lw=1.3, label="Pareto set")
    ax.set_xscale("log")
    ax.set_xlabel(f"LUT ({kind})")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right", fontsize=8)
    fig.colorbar(sc, ax=ax, label=f"images/s ({kind})")
    sc2 = ax2.scatter([r["lut"] for r in ok], fps, c=[100 * r["accuracy"] for r in ok], cmap="plasma", s=36)
    ax2.scatter(f_lut, [max(r["fps"], 1e-9) for r in front], s=110, facecolors="none", edgecolors="tab:red",
                lw=1.3)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel(f"LUT ({kind})")
    ax2.set_ylabel(f"images/s ({kind})")
    fig.colorbar(sc2, ax=ax2, label="test accuracy (%)")
    luts = [r["lut"] for r in ok]
    for axis, values in ((ax.xaxis, luts), (ax2.xaxis, luts), (ax2.yaxis, fps)):
        # log only over a decade or more; plain numbers, no crowded minor labels
        if max(values) < 10 * max(min(values), 1e-9):
            (ax2.set_yscale if axis is ax2.yaxis else axis.axes.set_xscale)("linear")
        else:
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(plain)
    fig.suptitle(f"{model}: {len(ok)} verified trial(s), backend {space.settings['backend']}; cost: {how}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _fmt(v, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if spec else str(v)


def point_columns(rows: list[dict]) -> list[str]:
    return [k for k in ("weight_bits", "act_bits", "prune", "reuse_factor", "target_fps", "clock_ns", "lr",
                        "epochs") if any(k in r for r in rows)]


def _markdown(out: Path, model: str, space: spaces.Space, rows: list[dict], front: list[dict], plotted: bool,
              wall_s: float | None) -> str:
    s = space.settings
    ok = [r for r in rows if r["status"] == "verified"]
    failed = [r for r in rows if r["status"] != "verified"]
    kind = cost_label(rows)
    how = next((r.get("cost_how") for r in ok), "-")
    pcols = point_columns(rows)
    train_set = f"the first {s['train_images']} training images" if s["train_images"] else "all training images"
    lines = [f"# Sweep of {model} ({s['backend']} backend)", "",
             f"{len(rows)} trial(s): {len(ok)} verified (`==` on every image), {len(failed)} failed or not run. "
             "A failed trial is never a point of the plot or of the Pareto set.", "",
             f"- cost: **{kind}** ({how})",
             f"- accuracy: the trial's quantized model on the {_fmt(ok[0]['test_images'] if ok else None, ',')} MNIST "
             f"test images (torch); the hardware was verified `==` on the first {s['n_images']} of them",
             f"- each trial: fine-tune {s['epochs']} epoch(s) from {_parent(model, s['parent'])} (lr {s['lr']:g}, batch "
             f"{s['batch_size']}, seed {s['seed']}, "
             f"{train_set}), "
             f"then build and verify; {s['cpus_per_trial']} CPU(s) per trial",
             f"- Pareto objectives: {', '.join(space.settings['objectives'])}",
             f"- files: `{RESULTS_CSV}`, `{RESULTS_JSON}`" + (f", `{PLOT}`" if plotted else "")
             + f", one folder per trial under `{out.name}/tune/`"]
    walls = [r["wall_s"] for r in rows if _num(r.get("wall_s"))]
    starts = [r["started"] for r in rows if _num(r.get("started"))]
    ends = [r["ended"] for r in rows if _num(r.get("ended"))]
    if wall_s is None and starts and ends:
        wall_s = max(ends) - min(starts)
    if walls:
        lines.append(f"- wall time per trial: median {sorted(walls)[len(walls) // 2]:.0f} s, min {min(walls):.0f} s, "
                     f"max {max(walls):.0f} s, sum {sum(walls):.0f} s"
                     + (f"; whole sweep (first trial start to last trial end) {wall_s:.0f} s" if wall_s else ""))
    if plotted:
        lines += ["", f"![Pareto plot]({PLOT})"]
    head = ["trial", *pcols, "accuracy", "==", "LUT", "FF", "DSP", "BRAM18", "images/s", "train s", "build s",
            "wall s", "Pareto"]
    lines += ["", f"## Verified trials (cost: {kind})", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for r in sorted(ok, key=lambda r: (-r["accuracy"], r["lut"])):
        lines.append("| " + " | ".join([r["trial"], *[_fmt(r.get(c)) for c in pcols], f"{100 * r['accuracy']:.2f}%",
                                          f"{r['exact_matches']}/{r['n_images']}", f"{r['lut']:,}", f"{r['ff']:,}",
                                          str(r["dsp"]), str(r["bram18"]), f"{r['fps']:,.0f}",
                                          _fmt(r.get("train_s"), ".0f"), _fmt(r.get("build_s"), ".0f"),
                                          _fmt(r.get("wall_s"), ".0f"), "**yes**" if r["pareto"] else ""]) + " |")
    lines += ["", "## Pareto set, and the commands that rebuild each point", ""]
    if not front:
        lines.append("(no verified trial)")
    for r in front:
        lines += [f"### {r['trial']}: {100 * r['accuracy']:.2f}%, {r['lut']:,} LUT, {r['dsp']} DSP, "
                  f"{r['fps']:,.0f} images/s ({r.get('cost_kind')})", "", "```", *rebuild_commands(out, model, space, r),
                  "```", ""]
    if failed:
        lines += ["## Failed or not run", "", "| trial | " + " | ".join(pcols) + " | status | reason |",
                  "|" + "---|" * (len(pcols) + 3)]
        for r in failed:
            reason = (r.get("reason") or "").replace("|", "\\|")[:300]
            lines.append("| " + " | ".join([r["trial"], *[_fmt(r.get(c)) for c in pcols], r["status"], reason])
                         + " |")
        lines.append("")
    lines += ["## Space", "", "```json", json.dumps(spaces.as_dict(space), indent=1), "```", ""]
    return "\n".join(lines)


def rebuild_commands(out: Path, model: str, space: spaces.Space, row: dict) -> list[str]:
    """Rebuild from the trial's own checkpoint (one command), or retrain the same recipe and build it."""
    d = row["dir"]
    build = d / row.get("build", f"{BUILD}/{model}")
    s = space.settings
    q = shlex.quote
    lines = ["# rebuild the trial's hardware from its checkpoint, with the build config it recorded:",
             f"fpga-flow hls --config {q(shown(build / 'config.toml'))} --checkpoint {q(shown(d / CHECKPOINT))} "
             f"--out build/sweep-rebuild/{q(row['trial'])}",
             "# or retrain the same recipe, then build it:"]
    parent = s["parent"]
    init = ""
    if parent == spaces.PARENT_SHIPPED:
        init = f" --init {zoo.SHIPPED_PREFIX}{model}_w4a4.pt"
    elif parent != spaces.PARENT_NONE:
        init = f" --init {q(parent)}"
    prune = ""
    if row.get("prune", "none") != "none":
        method, amount = spaces.parse_prune(row["prune"])
        prune = f" --prune {method} --prune-amount {amount:g}"
    ckpt = f"build/sweep-rebuild/{row['trial']}.pt"
    lines.append(f"fpga-flow train --model {q(model)} --weight-bits {row['weight_bits']} --act-bits {row['act_bits']} "
                 f"--epochs {row.get('epochs', s['epochs'])} --lr {row.get('lr', s['lr']):g} --batch-size "
                 f"{s['batch_size']} --seed {s['seed']} --threads {s['cpus_per_trial']}{init}{prune} --out {q(ckpt)}"
                 + (f"  # the trial used only the first {s['train_images']} training images (train(limit=...))"
                    if s["train_images"] else ""))
    lines.append(f"fpga-flow hls --config {q(shown(build / 'config.toml'))} --checkpoint {q(ckpt)} "
                 f"--out build/sweep-rebuild/{q(row['trial'])}")
    return lines


def _parent(model: str, parent: str) -> str:
    if parent == spaces.PARENT_SHIPPED:
        return f"the shipped `{zoo.SHIPPED_PREFIX}{model}_w4a4.pt`"
    return "random weights" if parent == spaces.PARENT_NONE else f"`{parent}`"


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


__all__ = ["collect", "pareto", "write", "rebuild_commands", "cost_label"]
