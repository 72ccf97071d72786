"""Sweeps: the grid expansion, a sweep on a local Ray instance with 2 workers on tiny real nuclei data
(one run failing without stopping the others), and a sweep killed with SIGKILL then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_util import without_timing

from activeseg.config import load_config
from activeseg.records import read_ledger
from activeseg.sweep import expand, load_sweep, run_sweep

TINY = """
[base]
dataset = "nuclei"
patch_size = 32
depth = 2
base_filters = 4
reference_epochs = 2
steps = 4
batch_size = 4
eval_every = 2
initial = 4
query = 2
max_pool = 16
mc_samples = 3
heatmaps = 0
val_size = 20
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path



# ---------------------------------------------------------------- the grid


def test_grid_expansion(tmp_path):
    write(tmp_path, '[simulate]\ndataset = "nuclei"\nrounds = 5\nstrategy = "random,bald"\n', "base.toml")
    path = write(tmp_path, '[sweep]\nconfig = "base.toml"\nworkers = 2\n[base]\nrounds = 3\n'
                           '[grid]\nseed = [0, 1]\nquery = [4, 8]\nlr = [0.001]\n')
    sweep = load_sweep(path)
    assert sweep.workers == 2 and sweep.base["rounds"] == 3 and sweep.grid["strategy"] == ["random", "bald"]
    jobs = expand(sweep, tmp_path / "out")
    refs = [j for j in jobs if j.kind == "reference"]
    runs = [j for j in jobs if j.kind == "run"]
    for seed in (0, 1):  # seed by seed, each seed's references first
        kinds = [j.kind for j in jobs if j.cfg.seed == seed]
        assert kinds == ["reference"] * 2 + ["run"] * 4
    assert sorted(str(j.run_dir.relative_to(tmp_path / "out")) for j in refs) == [
        "query=4/reference/seed_0", "query=4/reference/seed_1", "query=8/reference/seed_0", "query=8/reference/seed_1"]
    assert len(runs) == 2 * 2 * 2  # lr takes one value: no folder level for it
    assert [j.cfg.seed for j in runs] == [0, 0, 0, 0, 1, 1, 1, 1]  # seed by seed
    first = runs[0]
    assert first.run_dir == tmp_path / "out" / "query=4" / first.cfg.strategy / "seed_0"
    assert {(j.cfg.strategy, j.cfg.query, j.cfg.rounds, j.cfg.lr) for j in runs} == {
        (s, q, 3, 0.001) for s in ("random", "bald") for q in (4, 8)}
    assert len({j.run_dir for j in runs}) == len(runs)
    assert not any(j.finished() for j in jobs)


def test_grid_without_varying_keys_and_references_off(tmp_path):
    sweep = load_sweep(write(tmp_path, '[base]\nreference = false\n[grid]\nstrategy = ["bald"]\nseed = [3]\n'))
    (job,) = expand(sweep, tmp_path / "o")
    assert job.kind == "run" and job.run_dir == tmp_path / "o" / "bald" / "seed_3"


@pytest.mark.parametrize(("text", "message"), [
    ("[grid]\nstrategy = 'bald'\n", "must be a non-empty list"),
    ("[grid]\nseed = []\n", "must be a non-empty list"),
    ("[grid]\nseed = [1, 1]\n", "lists a value twice"),
    ("[grid]\nquerry = [4]\n", r"unknown config key\(s\) \['querry'\] in \[grid\]"),
    ("[base]\nlearning_rate = 1\n", r"unknown config key\(s\) \['learning_rate'\] in \[base\]"),
    ("[sweep]\nworkers = 0\n", "workers = 0 must be a positive integer"),
    ("[sweep]\nthreads = 2\n", r"unknown \[sweep\] key"),
    ("[runs]\n", r"unknown table\(s\) \['runs'\]"),
    ("[sweep]\nconfig = 'missing.toml'\n", "not found"),
    ("[grid\n", "is not valid TOML"),
])
def test_sweep_file_errors(tmp_path, text, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_sweep(write(tmp_path, text))


def test_bad_value_names_the_run(tmp_path):
    sweep = load_sweep(write(tmp_path, "[grid]\nquery = [4, 'many']\n"))
    with pytest.raises(ValueError, match=r"run \{'query': 'many'\}: config key 'query' = 'many' is not"):
        expand(sweep, tmp_path / "o")


# ---------------------------------------------------------------- on Ray


def test_sweep_on_local_ray_with_two_workers(tmp_path):
    path = write(tmp_path, TINY + 'rounds = 2\n[grid]\nstrategy = ["random", "bald"]\nseed = [0]\n'
                                  'model = ["unet", "gal_cnn"]\n')
    status = run_sweep(path, tmp_path / "out", workers=2, quiet=True)
    by_dir = {Path(s["run_dir"]).relative_to(tmp_path / "out").as_posix(): s for s in status}
    # the Gal CNN does not segment: its runs (and reference) fail with the reason, the U-Net ones finish
    failed = sorted(d for d, s in by_dir.items() if s["state"] == "failed")
    assert failed == ["model=gal_cnn/bald/seed_0", "model=gal_cnn/random/seed_0", "model=gal_cnn/reference/seed_0"]
    assert all("does not do segmentation" in by_dir[d]["error"] for d in failed)
    for strategy in ("random", "bald"):
        run_dir = tmp_path / "out" / "model=unet" / strategy / "seed_0"
        assert [r["round"] for r in read_ledger(run_dir / "ledger.jsonl")] == [1, 2]
        assert json.loads((run_dir / "reference.json").read_text())["n_annotations"] == 20
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert {j["run_dir"]: j["state"] for j in saved["jobs"]}["model=unet/bald/seed_0"] == "done"
    # run again: everything finished is skipped, the failed runs are retried (and fail again)
    again = run_sweep(path, tmp_path / "out", workers=2, quiet=True)
    assert sum(s["state"] == "done" for s in again) == 3 and "seconds" not in next(
        s for s in again if s["run_dir"].endswith("unet/bald/seed_0"))


def test_sweep_killed_with_sigkill_resumes_without_repeating(tmp_path):
    """A real `activeseg sweep` process killed mid-run, then restarted: every ledger ends with each round
    once and the same records as a sweep that never stopped."""
    path = write(tmp_path, TINY + 'rounds = 6\nreference = false\n[grid]\nstrategy = ["bald", "random"]\n'
                                  'seed = [0]\n')
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "activeseg.cli", "sweep", str(path), "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledgers = [out / s / "seed_0" / "ledger.jsonl" for s in ("bald", "random")]
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if any(p.exists() and len(p.read_text().splitlines()) >= 2 for p in ledgers):
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p: len(p.read_text().splitlines()) if p.exists() else 0 for p in ledgers}
    assert any(0 < n < 6 for n in before.values())  # killed mid-run
    status = run_sweep(path, out, workers=2, quiet=True)
    assert all(s["state"] == "done" for s in status)
    clean = tmp_path / "clean"
    run_sweep(path, clean, workers=2, quiet=True)
    for strategy in ("bald", "random"):
        resumed = read_ledger(out / strategy / "seed_0" / "ledger.jsonl")
        assert [r["round"] for r in resumed] == [1, 2, 3, 4, 5, 6]
        assert without_timing(resumed) == without_timing(read_ledger(clean / strategy / "seed_0" / "ledger.jsonl"))


def test_the_readme_example_expands(tmp_path):
    sweep = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "sweep_example.toml")
    jobs = expand(sweep, tmp_path)
    assert sum(j.kind == "run" for j in jobs) == 12 and sum(j.kind == "reference" for j in jobs) == 4
    base = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.toml")
    assert {j.cfg.dataset for j in jobs} == {base.dataset} and {j.cfg.rounds for j in jobs} == {5}
    assert sweep.workers == 2
