"""Sweeps: a grid of simulations (strategies × seeds × query sizes × datasets × any config key) run on Ray.

A sweep file is TOML::

    [sweep]
    config = "demo.toml"        # optional base config, relative to this file
    workers = 2                 # runs at once on a local Ray instance (default: the CPU count)

    [base]                      # optional: config keys shared by every run (override `config`)
    rounds = 6

    [grid]                      # every combination of these lists is one run
    strategy = ["random", "bald"]
    seed = [0, 1, 2]
    query = [4, 8]

Layout of ``--out``: the planner's of :mod:`activeseg.simulate` (``<group>/<strategy>/seed_<s>/`` per
run and ``<group>/reference/seed_<s>/``). ``sweep.json`` records the expanded plan and each run's state.

Each run is one Ray task (``num_cpus`` = its torch threads) writing its own ledger, so a sweep killed at
any point and started again skips finished runs and resumes unfinished ones from their last round; a
failed run is reported with its traceback and does not stop the others.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from activeseg.config import SimConfig, load_config, read_toml, read_toml_settings, strategy_list
from activeseg.simulate import Job, copy_references, plan, prefetch, run_job, set_threads


@dataclass
class Sweep:
    """A parsed sweep file: the base config values and the grid."""

    base: dict
    grid: dict[str, list]
    workers: int | None = None
    source: Path | None = None


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; errors name the key and say how to fix it."""
    path = Path(path)
    doc = read_toml(path, "sweep file", "; see the README's 'Sweeps' section for the format")
    unknown = sorted(set(doc) - {"sweep", "base", "grid"})
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {unknown}; a sweep file has [sweep], [base] and [grid]")
    head = doc.get("sweep", {})
    bad = sorted(set(head) - {"config", "workers"})
    if bad:
        raise ValueError(f"{path}: unknown [sweep] key(s) {bad}; valid: config, workers")
    base: dict = {}
    if "config" in head:
        cfg_path = (path.parent / head["config"]).resolve()
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{path}: [sweep] config = {head['config']!r} not found (looked at {cfg_path})")
        base.update(read_toml_settings(cfg_path))
    base.update(doc.get("base", {}))
    grid = doc.get("grid", {})
    known = {f.name for f in fields(SimConfig)}
    for where, keys in (("[base]", base), ("[grid]", grid)):
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config key(s) {unknown} in {where}; "
                             f"valid keys: {', '.join(sorted(known))}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: [grid] {key} = {values!r} must be a non-empty list, e.g. {key} = [{values!r}]")
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"{path}: [grid] {key} lists a value twice: {values}")
    if "strategy" in base and "," in str(base["strategy"]) and "strategy" not in grid:
        grid["strategy"] = strategy_list(base.pop("strategy"))
    workers = head.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"{path}: [sweep] workers = {workers!r} must be a positive integer")
    return Sweep(base=base, grid=grid, workers=workers, source=path)


def expand(sweep: Sweep, out: str | Path) -> list[Job]:
    """Every run of the grid and one reference per (group, seed) when references are on (the planner of
    :mod:`activeseg.simulate`)."""
    try:
        base = load_config(None, **sweep.base)
    except ValueError as err:
        raise ValueError(f"sweep [base]: {err}") from None
    return plan(base, sweep.grid, out, resume=True)


def _ray_run(job: Job, threads: int) -> tuple[str, float, str | None]:
    set_threads(threads)  # the Ray task is this worker process's entry point
    return run_job(job, True)


def run_sweep(sweep: Sweep | str | Path, out: str | Path, address: str | None = None, workers: int | None = None,
              threads: int | None = None, quiet: bool = False) -> list[dict]:
    """Run (or resume) every unfinished job of the sweep on Ray; return one status dict per job.

    Args:
        sweep: a :class:`Sweep` or the path of a sweep file.
        out: the sweep's output folder.
        address: an existing Ray cluster (``ray://host:10001`` or ``auto``); default: start a local
            instance with ``workers`` × ``threads`` CPUs.
        workers: runs at once on the local instance (default: the sweep file's, else the CPU count
            divided by ``threads``).
        threads: torch threads per run, also the CPUs each Ray task reserves (default: the CPU count
            divided by ``workers`` locally, 1 on a cluster).
    """
    import ray
    from tqdm.auto import tqdm

    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = expand(sweep, out)
    cores = os.cpu_count() or 1
    workers = workers or sweep.workers
    if address is None:
        if workers is None:
            workers = max(1, cores // (threads or 1))
        threads = threads or max(1, cores // workers)
    else:
        threads = threads or 1
    prefetch(jobs, quiet)
    status = {str(j.run_dir): {"kind": j.kind, "state": "done" if j.finished() else "pending"} for j in jobs}
    todo = [j for j in jobs if status[str(j.run_dir)]["state"] != "done"]
    _write_status(out, sweep, jobs, status)
    started = False
    if todo:
        if not ray.is_initialized():
            started = True
            if address is None:
                # Ray nices its workers to 15 by default; the runs are this instance's whole point.
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=workers * threads, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False, object_store_memory=100 * 1024**2)
            else:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        task = ray.remote(num_cpus=threads, max_retries=0)(_ray_run)
        pending = {task.remote(j, threads): j for j in todo}
        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="sweep", unit="run", disable=quiet)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                run_dir, seconds, err = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a worker that died: reported, the others go on
                run_dir, seconds, err = str(job.run_dir), 0.0, f"{type(exc).__name__}: {exc}"
            status[run_dir] = {"kind": job.kind, "state": "failed" if err else "done",
                               "seconds": round(seconds, 1), **({"error": err} if err else {})}
            _write_status(out, sweep, jobs, status)
            bar.update(1)
            bar.set_postfix_str(Path(run_dir).relative_to(out).as_posix())
        bar.close()
        if started:
            ray.shutdown()
    copy_references(jobs)
    failed = [(d, s) for d, s in status.items() if s["state"] == "failed"]
    for run_dir, s in failed:
        print(f"activeseg: sweep run {run_dir} failed:\n{s['error']}", file=sys.stderr)
    if not quiet:
        print(f"activeseg: sweep {out}: {sum(s['state'] == 'done' for s in status.values())} of {len(jobs)} done, "
              f"{len(failed)} failed", flush=True)
    return [{"run_dir": d, **s} for d, s in status.items()]


def _write_status(out: Path, sweep: Sweep, jobs: list[Job], status: dict) -> None:
    doc = {
        "source": None if sweep.source is None else str(sweep.source),
        "base": sweep.base,
        "grid": sweep.grid,
        "jobs": [{"run_dir": str(j.run_dir.relative_to(out)), **status[str(j.run_dir)]} for j in jobs],
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    tmp = out / "sweep.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out / "sweep.json")
