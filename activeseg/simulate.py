"""Plan and run many simulations: a grid of run settings (strategies × seeds × any key) as jobs.

One planner and one layout serve ``activeseg simulate`` (a grid over strategy × seed, run in local
worker processes) and ``activeseg sweep`` (any grid, run on Ray). Layout of ``out``::

    <group>/<strategy>/seed_<s>/     one run (see activeseg.records)
    <group>/reference/seed_<s>/      the full-pool reference of that group and seed

where ``<group>`` names the values of the grid keys other than strategy and seed that take several
values (``query=4``; empty when there are none). Each group and seed's reference is trained once and its
``reference.json`` copied into every run folder of that group and seed. Jobs come seed by seed, each seed's
references before its runs (a run stopped early leaves every strategy with the same seeds, and no
seed waits for the references of later seeds).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing as mp
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from activeseg.config import SimConfig, load_config
from activeseg.records import REFERENCE, finished_rounds

SPECIAL = ("strategy", "seed")  # grid keys that name the run folder rather than its group


@dataclass(frozen=True)
class Job:
    kind: str  # "reference" or "run"
    cfg: SimConfig
    run_dir: Path
    resume: bool
    until_round: int | None = None
    deadline: float | None = None

    def finished(self) -> bool:
        """A reference with its ``reference.json``; a run whose ledger holds every round."""
        if self.kind == "reference":
            return (self.run_dir / REFERENCE).is_file()
        return finished_rounds(self.run_dir) >= self.cfg.rounds


def _sanitize(value) -> str:
    return str(value).replace("/", "_").replace(" ", "_")


def plan(base: SimConfig, grid: dict[str, list], out: str | Path, resume: bool = True,
         until_round: int | None = None, deadline: float | None = None) -> list[Job]:
    """Every run of the grid over ``base`` (one per combination) and one reference per (group, seed) when
    ``reference`` is on; see the module docstring for the layout and order."""
    out = Path(out)
    keys = sorted(grid)
    group_keys = [k for k in keys if k not in SPECIAL and len(grid[k]) > 1]
    references: dict[Path, Job] = {}
    runs: list[Job] = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        try:
            cfg = load_config(None, **{**dataclasses.asdict(base), **values})
        except ValueError as err:
            raise ValueError(f"run {values}: {err}") from None
        group = out.joinpath(*(f"{k}={_sanitize(values[k])}" for k in group_keys))
        runs.append(Job("run", cfg, group / cfg.strategy / f"seed_{cfg.seed}", resume, until_round, deadline))
        if cfg.reference:
            ref_dir = group / "reference" / f"seed_{cfg.seed}"
            references.setdefault(ref_dir, Job("reference", cfg, ref_dir, resume))
    return sorted([*references.values(), *runs], key=lambda job: job.cfg.seed)  # stable: references first


def copy_references(jobs: list[Job]) -> None:
    """Copy each group and seed's ``reference.json`` into its run folders."""
    for job in jobs:
        if job.kind != "run" or not job.run_dir.is_dir():
            continue
        src = job.run_dir.parent.parent / "reference" / f"seed_{job.cfg.seed}" / REFERENCE
        if src.is_file():
            shutil.copyfile(src, job.run_dir / REFERENCE)


def prefetch(jobs: list[Job], quiet: bool) -> None:
    """Fetch and validate every dataset of the plan once, so a bad dataset fails before any run starts and
    workers only read the cache (never two downloads racing into it)."""
    from activeseg.data import load_for

    seen = set()
    for job in jobs:
        key = (job.cfg.dataset, job.cfg.patch_size, job.cfg.classes, job.cfg.ignore_index)
        if key not in seen:
            seen.add(key)
            load_for(job.cfg, quiet=quiet)


def run_job(job: Job, quiet: bool) -> tuple[str, float, str | None]:
    """Execute one job in this process; returns (run dir, seconds, error text or None)."""
    from activeseg.data import load_for
    from activeseg.loop import run_reference, run_simulation

    t0 = time.perf_counter()
    try:
        dataset = load_for(job.cfg)
        if job.kind == "reference":
            run_reference(job.cfg, dataset, job.run_dir)
        else:
            run_simulation(job.cfg, dataset, job.run_dir, resume=job.resume, progress=not quiet,
                           until_round=job.until_round, deadline=job.deadline)
        return str(job.run_dir), time.perf_counter() - t0, None
    except Exception:  # noqa: BLE001 - one failed run must not stop the others; it is reported
        return str(job.run_dir), time.perf_counter() - t0, traceback.format_exc()


def set_threads(threads: int) -> None:
    """Torch threads of this process: called at process entry points (the CLI, a worker's start) and by
    :func:`simulate` when it runs its jobs in this process with ``threads`` given."""
    import torch

    torch.set_num_threads(max(1, threads))


def _worker_job(job: Job) -> tuple[str, float, str | None]:
    return run_job(job, True)


def simulate(cfg: SimConfig, strategies: list[str], seeds: list[int], out: str | Path, workers: int = 1,
             resume: bool = False, quiet: bool = False, until_round: int | None = None,
             deadline: float | None = None, threads: int | None = None) -> list[tuple[str, float, str | None]]:
    """Run every job of the strategy × seed grid; return (run dir, seconds, error) per job.

    Args:
        workers: processes running jobs at once; with more than one, each worker process starts with
            ``threads`` torch threads (default: the CPU count divided by ``workers``). With one, jobs run in
            this process, with ``threads`` torch threads when given (else its own setting).
        until_round: run every job only up to this round (``resume=True`` later goes on).
        deadline: a ``time.time()`` after which no round starts; finished rounds stay in the ledgers
            and a later call with ``resume=True`` continues them.
    """
    import os

    from tqdm.auto import tqdm

    out = Path(out)
    jobs = plan(cfg, {"strategy": list(strategies), "seed": list(seeds)}, out, resume, until_round, deadline)
    prefetch(jobs, quiet)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    results = []
    bar = tqdm(total=len(jobs), desc="simulate", unit="run", disable=quiet)
    if workers <= 1:
        if threads:
            set_threads(threads)
        for job in jobs:
            results.append(run_job(job, quiet))
            bar.update(1)
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=set_threads, initargs=(threads,), maxtasksperchild=1) as procs:
            for res in procs.imap(_worker_job, jobs):
                results.append(res)
                bar.update(1)
                bar.set_postfix_str(Path(res[0]).relative_to(out).as_posix())
    bar.close()
    copy_references(jobs)
    for run_dir, _, err in results:
        if err:
            print(f"activeseg: run {run_dir} failed:\n{err}", file=sys.stderr)
    return results
