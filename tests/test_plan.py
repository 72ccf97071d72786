"""activeseg.simulate.plan: the run layout, the job order, references, finished checks; sweep.expand agrees."""

import json
from pathlib import Path

import pytest

from activeseg.config import SimConfig
from activeseg.records import LEDGER, REFERENCE
from activeseg.simulate import Job, copy_references, plan
from activeseg.sweep import expand, load_sweep

BASE = SimConfig(rounds=2, device="cpu")


def rel(jobs, out):
    return [(j.kind, j.run_dir.relative_to(out).as_posix()) for j in jobs]


def test_strategy_seed_grid_layout_and_order(tmp_path):
    jobs = plan(BASE, {"strategy": ["random", "bald"], "seed": [0, 1]}, tmp_path)
    assert rel(jobs, tmp_path) == [
        ("reference", "reference/seed_0"),
        ("run", "random/seed_0"),
        ("run", "bald/seed_0"),
        ("reference", "reference/seed_1"),
        ("run", "random/seed_1"),
        ("run", "bald/seed_1"),
    ]
    runs = [j for j in jobs if j.kind == "run"]
    assert [(j.cfg.strategy, j.cfg.seed) for j in runs] == [("random", 0), ("bald", 0), ("random", 1), ("bald", 1)]
    assert all(j.resume for j in jobs)
    assert [j.cfg.seed for j in jobs if j.kind == "reference"] == [0, 1]


def test_runs_carry_the_base_settings(tmp_path):
    base = BASE.replace(query=7, strategy_options={"beta": 2.0})
    jobs = plan(base, {"strategy": ["density_weighted"], "seed": [3]}, tmp_path, resume=False, until_round=1,
                deadline=123.0)
    run = [j for j in jobs if j.kind == "run"][0]
    assert run.cfg == base.replace(strategy="density_weighted", seed=3)
    assert (run.resume, run.until_round, run.deadline) == (False, 1, 123.0)


def test_group_folders_only_for_keys_with_several_values(tmp_path):
    grid = {"strategy": ["random", "bald"], "seed": [0], "query": [2, 4], "rounds": [3], "initial": [4]}
    jobs = plan(BASE, grid, tmp_path)
    assert rel(jobs, tmp_path) == [
        ("reference", "query=2/reference/seed_0"),
        ("reference", "query=4/reference/seed_0"),
        ("run", "query=2/random/seed_0"),
        ("run", "query=2/bald/seed_0"),
        ("run", "query=4/random/seed_0"),
        ("run", "query=4/bald/seed_0"),
    ]
    runs = [j for j in jobs if j.kind == "run"]
    assert [j.cfg.query for j in runs] == [2, 2, 4, 4]
    assert all(j.cfg.rounds == 3 and j.cfg.initial == 4 for j in runs)  # single-value keys still apply


def test_two_group_keys_nest_in_sorted_key_order(tmp_path):
    grid = {"strategy": ["random"], "seed": [0], "query": [2, 4], "dataset": ["nuclei", "a/b c"]}
    dirs = [d for _, d in rel(plan(BASE, grid, tmp_path), tmp_path)]
    assert "dataset=a_b_c/query=2/random/seed_0" in dirs  # '/' and ' ' sanitised
    assert "dataset=nuclei/query=4/reference/seed_0" in dirs
    assert len(dirs) == 4 + 4


def test_references_one_per_group_and_seed(tmp_path):
    grid = {"strategy": ["random", "bald", "std_edt"], "seed": [0, 1, 2], "query": [2, 4]}
    jobs = plan(BASE, grid, tmp_path)
    refs = [j for j in jobs if j.kind == "reference"]
    assert len(refs) == 2 * 3
    assert len({j.run_dir for j in refs}) == len(refs)
    kinds = [j.kind for j in jobs]
    assert kinds == (["reference"] * 2 + ["run"] * 6) * 3  # seed by seed, each seed's references first
    assert [j.cfg.seed for j in jobs] == [0] * 8 + [1] * 8 + [2] * 8
    assert all(j.run_dir.parent.name == "reference" and j.run_dir.name == f"seed_{j.cfg.seed}" for j in refs)


def test_no_references_when_off(tmp_path):
    jobs = plan(BASE.replace(reference=False), {"strategy": ["random", "bald"], "seed": [0, 1]}, tmp_path)
    assert [j.kind for j in jobs] == ["run"] * 4


def test_reference_from_the_grid(tmp_path):
    jobs = plan(BASE, {"strategy": ["random"], "seed": [0], "reference": [False]}, tmp_path)
    assert [j.kind for j in jobs] == ["run"]


def test_runs_seed_by_seed_stable_within_seed(tmp_path):
    grid = {"strategy": ["random", "bald"], "seed": [5, 1, 3], "query": [2, 4]}
    runs = [j for j in plan(BASE.replace(reference=False), grid, tmp_path)]
    assert [j.cfg.seed for j in runs] == [1] * 4 + [3] * 4 + [5] * 4
    # within a seed: the itertools.product order over sorted keys (query, seed, strategy)
    assert [(j.cfg.query, j.cfg.strategy) for j in runs[:4]] == [(2, "random"), (2, "bald"), (4, "random"),
                                                                  (4, "bald")]


def test_bad_grid_key_names_the_run(tmp_path):
    with pytest.raises(ValueError, match=r"run \{.*'bogus': 1.*\}: unknown config key\(s\) \['bogus'\]"):
        plan(BASE, {"strategy": ["random"], "seed": [0], "bogus": [1]}, tmp_path)
    with pytest.raises(ValueError, match=r"run \{'query': 'lots'.*\}: config key 'query'"):
        plan(BASE, {"strategy": ["random"], "seed": [0], "query": ["lots"]}, tmp_path)


def write_ledger_text(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEDGER).write_text(text)


def test_run_finished_counts_complete_ledger_lines(tmp_path):
    job = Job("run", BASE.replace(rounds=2), tmp_path / "bald" / "seed_0", resume=True)
    assert not job.finished()  # no folder, no ledger
    write_ledger_text(job.run_dir, '{"round": 0}\n')
    assert not job.finished()
    write_ledger_text(job.run_dir, '{"round": 0}\n{"round": 1')  # second line cut off: no newline
    assert not job.finished()
    write_ledger_text(job.run_dir, '{"round": 0}\n\n{"round": 1}\n')  # a blank line does not count
    assert job.finished()
    assert not Job("run", BASE.replace(rounds=3), job.run_dir, resume=True).finished()


def test_reference_finished_when_reference_json_exists(tmp_path):
    job = Job("reference", BASE, tmp_path / "reference" / "seed_0", resume=True)
    assert not job.finished()
    job.run_dir.mkdir(parents=True)
    write_ledger_text(job.run_dir, '{"round": 0}\n{"round": 1}\n')  # a ledger is not what makes it done
    assert not job.finished()
    (job.run_dir / REFERENCE).write_text("{}")
    assert job.finished()


def test_copy_references_into_matching_runs_only(tmp_path):
    grid = {"strategy": ["random", "bald"], "seed": [0, 1], "query": [2, 4]}
    jobs = plan(BASE, grid, tmp_path)
    ref = tmp_path / "query=2" / "reference" / "seed_0"
    ref.mkdir(parents=True)
    (ref / REFERENCE).write_text(json.dumps({"dice": 0.75}))
    for j in jobs:
        if j.kind == "run" and not (j.cfg.query == 4 and j.cfg.strategy == "bald" and j.cfg.seed == 1):
            j.run_dir.mkdir(parents=True)  # one run folder never made: it must be skipped, not created
    copy_references(jobs)
    got = {j.run_dir.relative_to(tmp_path).as_posix() for j in jobs
           if j.kind == "run" and (j.run_dir / REFERENCE).is_file()}
    assert got == {"query=2/random/seed_0", "query=2/bald/seed_0"}
    assert json.loads((tmp_path / "query=2" / "bald" / "seed_0" / REFERENCE).read_text()) == {"dice": 0.75}
    assert not (tmp_path / "query=4" / "bald" / "seed_1").exists()


def test_sweep_expand_equals_plan(tmp_path):
    (tmp_path / "base.toml").write_text('rounds = 3\nquery = 2\n[strategy]\nbeta = 2.0\n')
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        '[sweep]\nconfig = "base.toml"\nworkers = 2\n\n[base]\nrounds = 4\ndevice = "cpu"\n\n'
        '[grid]\nstrategy = ["random", "density_weighted"]\nseed = [1, 0]\ninitial = [4, 8]\n'
    )
    sweep = load_sweep(sweep_file)
    assert sweep.workers == 2
    out = tmp_path / "out"
    jobs = expand(sweep, out)
    base = SimConfig(rounds=4, query=2, device="cpu", strategy_options={"beta": 2.0})
    expected = plan(base, {"strategy": ["random", "density_weighted"], "seed": [1, 0], "initial": [4, 8]}, out)
    assert jobs == expected
    assert len(jobs) == 4 + 8
    assert jobs[0].run_dir == out / "initial=4" / "reference" / "seed_0"
    assert all(j.cfg.rounds == 4 and j.cfg.strategy_options == {"beta": 2.0} for j in jobs)


def test_sweep_comma_strategy_in_base_becomes_grid(tmp_path):
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('[base]\nstrategy = "random, bald"\nreference = false\n\n[grid]\nseed = [0]\n')
    jobs = expand(load_sweep(sweep_file), tmp_path)
    assert [j.run_dir.relative_to(tmp_path).as_posix() for j in jobs] == ["random/seed_0", "bald/seed_0"]


def test_in_process_jobs_run_with_the_thread_count_asked_for(tmp_path, monkeypatch):
    # A study run with --workers 1 --threads 1 beside another job must not spread over every core: two
    # processes each with all the cores' threads slowed a 3-D round three-fold on 2 cores.
    import torch

    from activeseg import simulate as sim

    seen = []
    monkeypatch.setattr(sim, "prefetch", lambda jobs, quiet: None)
    monkeypatch.setattr(sim, "run_job", lambda job, quiet: seen.append(torch.get_num_threads()) or ("", 0.0, None))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sim.simulate(SimConfig(reference=False), ["random"], [0, 1], tmp_path, threads=1, quiet=True)
        assert seen == [1, 1]
        sim.simulate(SimConfig(reference=False), ["random"], [0], tmp_path / "b", quiet=True)
        assert seen[-1] == 1  # no thread count asked for: the process's own setting
    finally:
        torch.set_num_threads(before)
