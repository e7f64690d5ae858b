"""The sweep on Ray Tune: local by default, a cluster by ``--address`` / ``RAY_ADDRESS``, resumable.

Ray Tune owns scheduling (trial resources, concurrency), the experiment state and its restoration
(``Tuner.restore``); this module only turns a :class:`~fpga_flow.sweep.space.Space` into a ``param_space``, wraps
:func:`~fpga_flow.sweep.trial.run_trial` as the trainable, and prints one line per finished trial instead of
Ray's progress tables. The experiment lives in ``<out>/tune/`` (``storage_path`` = the sweep folder, not
``~/ray_results``); each trial's artifacts land in its own trial folder there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .. import resources
from ..errors import FlowError
from . import space as spaces
from .trial import run_trial

EXPERIMENT = "tune"  # <out>/tune/: Ray Tune's experiment folder (state, one folder per trial)
RAY_PIN = "ray[tune]==2.60.0"  # the `sweep` extra of pyproject.toml

TrialFn = Callable[[str, dict, dict, dict, str], dict]  # run_trial's signature (tests give their own)


def import_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        raise FlowError(f"the sweep needs Ray Tune: `pip install '{RAY_PIN}'` (the `sweep` extra: "
                        "pip install -e '.[sweep]'; `make sweep` installs it)", exit_code=2) from None
    return ray, tune


def label(point: dict) -> str:
    """A short name of a point for folders and tables, e.g. ``w2a4_u50_rf4``."""
    parts = [f"w{point.get('weight_bits', '')}a{point.get('act_bits', '')}"]
    prune = point.get("prune", "none")
    if prune != "none":
        method, amount = spaces.parse_prune(prune)
        parts.append(f"{method[0]}{round(amount * 100)}")
    for key, short in (("reuse_factor", "rf"), ("target_fps", "fps"), ("clock_ns", "clk"), ("lr", "lr"),
                       ("epochs", "e")):
        if key in point:
            parts.append(f"{short}{point[key]:g}" if isinstance(point[key], float) else f"{short}{point[key]}")
    return "_".join(parts)


def _trial_dirname(trial) -> str:
    return f"{trial.trial_id}_{label(trial.config)}"


def _trainable(config: dict, model: str, settings: dict, build: dict, defaults: dict, trial_fn: TrialFn,
               experiment: str) -> None:
    from ray import tune

    point = {**defaults, **config}
    # get_trial_dir() is Ray's staging folder under /tmp/ray, copied to the experiment only when the trial ends
    # (and gone with the Ray session): the trial writes straight into its folder of the experiment instead, so
    # paths recorded in its files (config.toml's checkpoint) stay valid. A multi-machine cluster needs
    # --out on a shared filesystem, as Ray's storage_path does.
    trial_dir = Path(experiment) / Path(tune.get_context().get_trial_dir()).name
    metrics = trial_fn(model, point, settings, build, str(trial_dir))
    tune.report(metrics)


def param_space(space: spaces.Space) -> dict:
    """Grid: every axis a ``grid_search``; random: every axis a ``choice`` (``num_samples`` draws). The values
    of the axes the space leaves out are constants, so every trial's config (params.json) names its whole point."""
    _, tune = import_ray()
    wrap = tune.grid_search if space.settings["search"] == "grid" else tune.choice
    return {**spaces.point_defaults(space), **{k: wrap(list(v)) for k, v in space.axes.items()}}


class _Progress:
    """One line per finished trial (Ray's own tables are off: verbose=0)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def make(self):
        _, tune = import_ray()
        progress = self

        class Callback(tune.Callback):
            def on_trial_complete(self, iteration, trials, trial, **info):
                progress.line(trial, "verified", trial.last_result)

            def on_trial_error(self, iteration, trials, trial, **info):
                progress.line(trial, "FAILED", None)

        return Callback()

    def line(self, trial, status: str, result: dict | None) -> None:
        self.done += 1
        what = ""
        if result and "accuracy" in result:
            what = (f" acc {result['accuracy']:.2%}, {result['lut']:,} LUT, {result['dsp']} DSP, "
                    f"{result['fps']:,.0f} img/s ({result['cost_kind']}), {result['exact_matches']}/"
                    f"{result['n_images']} ==, {result['wall_s']:.0f} s")
        elif status == "FAILED":
            what = f" (why: {resources.shown(Path(trial.path) / 'trial.log')}; the report lists it)"
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done}/{self.total} {elapsed:5.0f} s] {label(trial.config)}: {status}{what}", flush=True)


def init_ray(address: str | None, cpus: int | None) -> str:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start a local Ray with ``cpus`` CPUs (default: all).
    Returns where it runs, in words. Workers import this fpga_flow (a checkout's, when run from one)."""
    ray, _ = import_ray()
    for name in ("ray.tune", "ray.train", "ray.air"):  # a failed trial is one line of ours, not Ray's traceback
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables on the console
    env = {"PYTHONUNBUFFERED": "1"}
    root = resources.checkout()
    if root is not None:  # `python -m fpga_flow` in a checkout: the workers import the same package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
              runtime_env={"env_vars": env}, ignore_reinit_error=True)
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        try:
            ray.init(address=addr, **kw)
        except (ConnectionError, RuntimeError) as e:  # Ray's AuthenticationError is a RuntimeError
            said = f"{e} {e.__cause__ or ''}".lower()
            auth = "authentication" in said and os.environ.get("RAY_AUTH_MODE") != "token"
            raise FlowError(f"cannot connect to the Ray cluster at {addr} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0]})" + (
                                ". Ray 2.60 clusters use token authentication, which a client given an address "
                                "enables only when told: set RAY_AUTH_MODE=token (the token is read from "
                                "~/.ray/auth_token, $RAY_AUTH_TOKEN_PATH or $RAY_AUTH_TOKEN)" if auth else
                                ": is it running (`ray status`)?")) from None
        where = f"the Ray cluster at {addr}"
    else:
        # "local": a new instance even when `ray start` left a cluster on this machine (address None would join it)
        ray.init(address="local", num_cpus=cpus or os.cpu_count() or 1, **kw)
        where = "a local Ray instance"
    return f"{where} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


def check_out(out: Path, resume: bool) -> Path:
    """The experiment folder in ``out``; an existing sweep needs ``resume``, and resuming needs one."""
    _, tune = import_ray()
    exp = Path(out).resolve() / EXPERIMENT
    exists = exp.is_dir() and tune.Tuner.can_restore(str(exp))
    if exists and not resume:
        raise FlowError(f"{resources.shown(exp)} already holds a sweep: add --resume to continue it (finished "
                        "trials are kept), or remove the folder (or choose --out) to start over")
    if resume and not exists:
        raise FlowError(f"nothing to resume in {resources.shown(exp)}: run the sweep without --resume first")
    return exp


def run(model: str, space: spaces.Space, out: str | os.PathLike, address: str | None = None,
        resume: bool = False, cpus: int | None = None, trial_fn: TrialFn = run_trial,
        progress: bool = True, retry_failed: bool = False) -> Path:
    """Run (or, with ``resume``, continue) the sweep of ``model`` over ``space`` into ``out``; returns the
    experiment folder. Trials that fail are recorded by Tune as errored and not retried (a build that is not
    bit-exact stays so), unless ``retry_failed`` on a resume: then they run again from their start (after
    fixing what made them fail, e.g. a crash outside the flow)."""
    ray, tune = import_ray()
    out = Path(out).resolve()
    exp = check_out(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    settings = space.settings
    where = init_ray(address, cpus)
    total = space.n_trials()
    if progress:
        print(f"sweep of {model}: {total} trial(s) on {where}, {settings['cpus_per_trial']} CPU(s) each; "
              f"backend {settings['backend']}; folder {resources.shown(out)}", flush=True)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, model=model, settings=settings, build=space.build,
                             defaults=spaces.point_defaults(space), trial_fn=trial_fn, experiment=str(exp)),
        {"cpu": settings["cpus_per_trial"]})
    try:
        if resume:
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=retry_failed)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(space),
                tune_config=tune.TuneConfig(num_samples=settings["num_samples"],
                                            max_concurrent_trials=settings["max_concurrent"] or None,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          callbacks=[_Progress(total).make()] if progress else [],
                                          log_to_file=True))
        tuner.fit()  # failed trials are in the results (and the report), not raised
    finally:
        if ray.is_initialized():
            ray.shutdown()
    sys.stdout.flush()
    return exp
