"""Run many simulations (strategies × seeds), in parallel worker processes when asked.

Layout of ``out``: with one strategy, ``out/seed_<s>/``; with several, ``out/<strategy>/seed_<s>/``.
Each seed's full-pool reference model is trained once and its ``reference.json`` copied into every
strategy's run folder of that seed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from activeseg.config import SimConfig


@dataclass(frozen=True)
class Job:
    kind: str  # "reference" or "run"
    cfg: SimConfig
    run_dir: Path
    resume: bool
    until_round: int | None = None
    deadline: float | None = None


def plan(cfg: SimConfig, strategies: list[str], seeds: list[int], out: Path, resume: bool,
         until_round: int | None = None, deadline: float | None = None) -> list[Job]:
    """References first (one per seed), then one run per strategy × seed, seed by seed (so a deadline
    that stops the plan early leaves every strategy with the same seeds)."""
    jobs = []
    if cfg.reference:
        for s in seeds:
            jobs.append(Job("reference", cfg.replace(seed=s), out / "reference" / f"seed_{s}", resume))
    for s in seeds:
        for strategy in strategies:
            run_dir = out / f"seed_{s}" if len(strategies) == 1 else out / strategy / f"seed_{s}"
            jobs.append(Job("run", cfg.replace(strategy=strategy, seed=s), run_dir, resume, until_round, deadline))
    return jobs


def _run_job(job: Job, threads: int, quiet: bool) -> tuple[str, float, str | None]:
    """Execute one job in this process; returns (run dir, seconds, error text or None)."""
    import torch

    from activeseg.data import load_dataset
    from activeseg.loop import run_reference, run_simulation

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        dataset = load_dataset(job.cfg.dataset, patch_size=job.cfg.patch_size, quiet=True)
        if job.kind == "reference":
            run_reference(job.cfg, dataset, job.run_dir)
        else:
            run_simulation(job.cfg, dataset, job.run_dir, resume=job.resume, progress=not quiet,
                           until_round=job.until_round, deadline=job.deadline)
        return str(job.run_dir), time.perf_counter() - t0, None
    except Exception:  # noqa: BLE001 - one failed run must not stop the others; it is reported
        return str(job.run_dir), time.perf_counter() - t0, traceback.format_exc()


def _star(args):
    return _run_job(*args)


def simulate(cfg: SimConfig, strategies: list[str], seeds: list[int], out: str | Path, workers: int = 1,
             resume: bool = False, quiet: bool = False, until_round: int | None = None,
             deadline: float | None = None) -> list[tuple[str, float, str | None]]:
    """Run every job of the plan; return (run dir, seconds, error) per job.

    Args:
        workers: processes running jobs at once; each gets ``cores // workers`` torch threads.
        until_round: run every job only up to this round (``resume=True`` later goes on).
        deadline: a ``time.time()`` after which no round starts; finished rounds stay in the ledgers
            and a later call with ``resume=True`` continues them.
    """
    from tqdm.auto import tqdm

    from activeseg.data import load_dataset

    # Fetch and validate once here, so a bad dataset fails before any run starts and workers only read
    # the cache (never two downloads racing into it).
    load_dataset(cfg.dataset, patch_size=cfg.patch_size, quiet=quiet)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    jobs = plan(cfg, strategies, seeds, out, resume, until_round, deadline)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    results = []
    bar = tqdm(total=len(jobs), desc="simulate", unit="run", disable=quiet)
    if workers <= 1:
        for job in jobs:
            results.append(_run_job(job, threads, quiet))
            bar.update(1)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, maxtasksperchild=1) as procs:
            for res in procs.imap(_star, [(j, threads, True) for j in jobs]):
                results.append(res)
                bar.update(1)
                bar.set_postfix_str(Path(res[0]).relative_to(out).as_posix())
    bar.close()
    for job in jobs:
        if job.kind == "run" and cfg.reference:
            ref = out / "reference" / f"seed_{job.cfg.seed}" / "reference.json"
            if ref.exists() and job.run_dir.is_dir():
                shutil.copyfile(ref, job.run_dir / "reference.json")
    for run_dir, _, err in results:
        if err:
            print(f"activeseg: run {run_dir} failed:\n{err}", file=sys.stderr)
    return results
