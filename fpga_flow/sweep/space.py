"""The sweep's space file: what each trial varies, what stays fixed, and how the search runs.

A space file is TOML with three tables (docs/sweep.md)::

    [sweep]   how every trial trains, builds and is judged (backend, epochs, images, search, objectives)
    [space]   the axes: each key is a list of values; grid search takes every combination,
              random search draws ``num_samples`` points from them
    [build]   BuildConfig fields every trial's build shares (part, clock_ns, io_type, extra, ...)

It is checked here, before Ray starts, so a typo is a one-line error naming the key and what is allowed, not a
failed trial ten minutes later. Shipped spaces (``default``, ``convnet_bench``) are package data beside this
module and are found by name when the package is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import prune as pruning
from ..config import BITS_RANGE, BuildConfig, read_toml
from ..errors import FlowError

SPACES_DIR = Path(__file__).resolve().parent  # shipped space files (package data: fpga_flow/sweep/*.toml)
BACKENDS = ("hls4ml", "rtl")  # backends whose report.json the trial knows how to read a cost from
SEARCHES = ("grid", "random")
PARENT_SHIPPED = "shipped"  # the model's shipped W4A4 checkpoint
PARENT_NONE = "none"  # train from random weights


def _int_in(lo: int, hi: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _positive_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def parse_prune(value: str) -> tuple[str | None, float]:
    """``"none"`` -> (None, 0.0); ``"unstructured:0.5"`` / ``"structured:0.25"`` -> (method, amount)."""
    if value == "none":
        return None, 0.0
    method, sep, amount = str(value).partition(":")
    try:
        frac = float(amount) if sep else math.nan
    except ValueError:
        frac = math.nan
    if method not in pruning.METHODS or not 0.0 < frac < 1.0:
        raise FlowError(f"prune value {value!r}: expected 'none' or METHOD:AMOUNT with METHOD one of "
                        f"{', '.join(pruning.METHODS)} and 0 < AMOUNT < 1, e.g. 'unstructured:0.5'")
    return method, frac


def _prune_ok(v) -> bool:
    try:
        parse_prune(v)
    except FlowError:
        return False
    return isinstance(v, str)


# axis -> (check, what is allowed, backends it applies to (None: all))
AXES = {
    "weight_bits": (_int_in(*BITS_RANGE["weight_bits"]), "an integer {}..{}".format(*BITS_RANGE["weight_bits"]), None),
    "act_bits": (_int_in(*BITS_RANGE["act_bits"]), "an integer {}..{}".format(*BITS_RANGE["act_bits"]), None),
    "prune": (_prune_ok, "'none' or METHOD:AMOUNT (unstructured|structured, 0 < AMOUNT < 1)", None),
    "reuse_factor": (_positive_int, "a positive integer (hls4ml reuse factor)", ("hls4ml",)),
    "target_fps": (_positive_int, "a positive integer (rtl folding target, images/s)", ("rtl",)),
    "clock_ns": (_positive_number, "a positive number of ns", None),
    "lr": (_positive_number, "a positive learning rate", None),
    "epochs": (_positive_int, "a positive integer", None),
}

# [sweep] key -> (default, check, what is allowed)
SETTINGS = {
    "backend": ("hls4ml", lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
    "epochs": (1, _positive_int, "a positive integer (fine-tune epochs per trial)"),
    "lr": (5e-4, _positive_number, "a positive number (peak learning rate of the fine-tune)"),
    "batch_size": (64, _positive_int, "a positive integer"),
    "train_images": (0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     "an integer >= 0 (0: the whole training set; N: its first N images)"),
    "n_images": (1000, _positive_int, "a positive integer (test images every build verifies ==)"),
    "parent": (PARENT_SHIPPED, lambda v: isinstance(v, str) and bool(v),
               f"'{PARENT_SHIPPED}' (the model's shipped W4A4 checkpoint), '{PARENT_NONE}', or a checkpoint path"),
    "seed": (0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "search": ("grid", lambda v: v in SEARCHES, f"one of {', '.join(SEARCHES)}"),
    "num_samples": (1, _positive_int, "a positive integer (grid: repeats of the grid; random: points drawn)"),
    "objectives": (["accuracy:max", "lut:min"], lambda v: isinstance(v, list) and bool(v) and all(
        isinstance(o, str) for o in v), "a list like ['accuracy:max', 'lut:min']"),
    "cpus_per_trial": (1, _positive_int, "a positive integer (Ray resources of one trial)"),
    "max_concurrent": (0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                       "an integer >= 0 (0: as many as the CPUs allow)"),
}

# what a trial's metrics hold that an objective can name, and the sense that makes sense for it
OBJECTIVE_METRICS = ("accuracy", "hw_accuracy", "lut", "ff", "dsp", "bram18", "lut_dsp", "fps")


@dataclass(frozen=True)
class Space:
    """A parsed space file: settings ([sweep]), axes ([space]: key -> list of values), fixed build fields."""

    settings: dict
    axes: dict
    build: dict = field(default_factory=dict)
    source: str = "<dict>"

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return [tuple(o.split(":")) for o in self.settings["objectives"]]  # type: ignore[misc]

    def grid_size(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n

    def n_trials(self) -> int:
        n = self.settings["num_samples"]
        return n * self.grid_size() if self.settings["search"] == "grid" else n

    def with_settings(self, **changes) -> "Space":
        """The same space with some [sweep] settings replaced (CLI flags win over the file), checked again."""
        return from_dict({"sweep": {**self.settings, **{k: v for k, v in changes.items() if v is not None}},
                          "space": self.axes, "build": self.build}, self.source)


def shipped() -> list[str]:
    """Names of the space files shipped with the package (``--space NAME``)."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.toml"))


def resolve(name_or_path: str | Path) -> Path:
    """A path to an existing file, else the shipped space of that name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = SPACES_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    raise FlowError(f"space file {str(name_or_path)!r} not found; give a path to a TOML file or a shipped space: "
                    f"{', '.join(shipped())}")


def load(name_or_path: str | Path) -> Space:
    path = resolve(name_or_path)
    return from_dict(read_toml(path), str(name_or_path))


def from_dict(doc: dict, where: str = "<dict>") -> Space:
    """Check every key and value of a parsed space file; the error names the file, table and key."""
    unknown = sorted(set(doc) - {"sweep", "space", "build"})
    if unknown:
        raise FlowError(f"{where}: unknown table(s) {', '.join(unknown)}; a space file has [sweep], [space], [build]")
    raw = doc.get("sweep", {})
    if not isinstance(raw, dict):
        raise FlowError(f"{where}: [sweep] must be a table")
    bad = sorted(set(raw) - set(SETTINGS))
    if bad:
        raise FlowError(f"{where}: [sweep] unknown key(s) {', '.join(bad)}; known: {', '.join(SETTINGS)}")
    settings = {}
    for key, (default, ok, allowed) in SETTINGS.items():
        v = raw.get(key, default)
        if not ok(v):
            raise FlowError(f"{where}: [sweep] {key} = {v!r} must be {allowed}")
        settings[key] = v
    _check_objectives(settings["objectives"], where)

    axes_raw = doc.get("space", {})
    if not isinstance(axes_raw, dict) or not axes_raw:
        raise FlowError(f"{where}: [space] must be a table with at least one axis ({', '.join(AXES)})")
    axes = {}
    for key, values in axes_raw.items():
        if key not in AXES:
            raise FlowError(f"{where}: [space] unknown axis {key!r}; known: {', '.join(AXES)}")
        ok, allowed, only = AXES[key]
        if only and settings["backend"] not in only:
            raise FlowError(f"{where}: [space] {key} applies to the {', '.join(only)} backend, not "
                            f"{settings['backend']} (backend = {settings['backend']!r} in [sweep])")
        if not isinstance(values, list) or not values:
            raise FlowError(f"{where}: [space] {key} must be a non-empty list of values, e.g. {key} = [...]")
        for v in values:
            if not ok(v):
                raise FlowError(f"{where}: [space] {key} value {v!r} must be {allowed}")
        if len(set(map(str, values))) != len(values):
            raise FlowError(f"{where}: [space] {key} lists a value twice: {values}")
        axes[key] = list(values)

    build = doc.get("build", {})
    if not isinstance(build, dict):
        raise FlowError(f"{where}: [build] must be a table of BuildConfig fields")
    owned = {"model", "weight_bits", "act_bits", "checkpoint", "backend", "n_images"} | set(axes)
    clash = sorted(set(build) & owned)
    if clash:
        raise FlowError(f"{where}: [build] must not set {', '.join(clash)}: the sweep sets them per trial "
                        "([space] axes, [sweep] backend/n_images, the trained checkpoint)")
    BuildConfig.from_dict({**build, "backend": settings["backend"]}, where=f"{where} [build]")  # checks types
    return Space(settings=settings, axes=axes, build=dict(build), source=where)


def _check_objectives(objectives: list[str], where: str) -> None:
    for o in objectives:
        name, _, sense = o.partition(":")
        if name not in OBJECTIVE_METRICS or sense not in ("min", "max"):
            raise FlowError(f"{where}: [sweep] objective {o!r}: expected METRIC:min|max with METRIC one of "
                            f"{', '.join(OBJECTIVE_METRICS)}")


def as_dict(space: Space) -> dict:
    """The space as the TOML document it came from (recorded in the sweep folder)."""
    return {"sweep": dict(space.settings), "space": dict(space.axes), "build": dict(space.build)}


def point_defaults(space: Space) -> dict:
    """Values of the axes a space leaves out, so every trial's point names all of them."""
    d = BuildConfig()
    return {"weight_bits": d.weight_bits, "act_bits": d.act_bits, "prune": "none",
            **({"reuse_factor": space.build.get("reuse_factor", d.reuse_factor)}
               if space.settings["backend"] == "hls4ml" else {})}


__all__ = ["Space", "load", "from_dict", "resolve", "shipped", "parse_prune", "AXES", "SETTINGS", "as_dict",
           "point_defaults"]
