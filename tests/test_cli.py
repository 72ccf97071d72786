"""The command line as a user runs it: simulate → report, resume after SIGKILL, suggest, data, errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from activeseg.records import read_ledger

TINY = ["--depth", "2", "--base-filters", "4", "--steps", "6", "--batch-size", "4", "--eval-every", "3",
        "--initial", "4", "--query", "3", "--max-pool", "20", "--mc-samples", "3", "--patch-size", "32",
        "--heatmaps", "1", "--device", "cpu", "--reference-epochs", "2"]


def activeseg(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", "activeseg.cli", *map(str, args)], capture_output=True,
                          text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"activeseg {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_help_of_every_subcommand():
    for sub in ("simulate", "report", "suggest", "data"):
        out = activeseg(sub, "--help").stdout
        assert "usage: activeseg " + sub in out
    assert "--no-delete" in activeseg("simulate", "--help").stdout


def test_simulate_two_strategies_two_seeds_then_report(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "report"
    proc = activeseg("simulate", "--dataset", "nuclei", "--strategy", "random,bald", "--seeds", "2",
                     "--rounds", "2", *TINY, "--workers", "2", "--out", out, "--report", report)
    assert '"strategy": "random,bald"' in proc.stdout  # the effective config is printed
    for strategy in ("random", "bald"):
        for seed in (0, 1):
            run = out / strategy / f"seed_{seed}"
            assert len(read_ledger(run / "ledger.jsonl")) == 2
            assert json.loads((run / "config.json").read_text())["strategy"] == strategy
            assert (run / "reference.json").is_file()
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["strategies"]) == {"random", "bald"}
    assert "| bald " in proc.stdout and (report / "index.html").is_file()
    # the report command on its own gives the same summary
    activeseg("report", out, "--out", tmp_path / "report2", "--quiet")
    assert json.loads((tmp_path / "report2" / "summary.json").read_text()) == summary


def test_resume_after_sigkill_repeats_nothing_and_loses_nothing(tmp_path):
    args = ["simulate", "--dataset", "nuclei", "--strategy", "max_entropy", "--rounds", "5", *TINY,
            "--steps", "40", "--no-reference", "--quiet"]
    activeseg(*args, "--out", tmp_path / "full")
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "activeseg.cli", *map(str, args), "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = cut / "max_entropy" / "seed_0" / "ledger.jsonl"
    deadline = time.time() + 600  # generous for a loaded machine; the loop ends as soon as 2 rounds exist
    while time.time() < deadline and not (ledger.exists() and ledger.read_text().count("\n") >= 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_ledger(ledger))
    assert 2 <= n_before < 5, "the run was not killed mid-way; make its rounds slower"
    activeseg(*args, "--out", cut, "--resume")
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    resumed = read_ledger(ledger)
    assert [r["round"] for r in resumed] == [1, 2, 3, 4, 5]
    assert strip(resumed) == strip(read_ledger(tmp_path / "full" / "max_entropy" / "seed_0" / "ledger.jsonl"))


def test_suggest_ranks_the_unlabelled_images(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=3)
    out = tmp_path / "next"
    proc = activeseg("suggest", "--images", images, "--masks", masks, "--k", "2", "--out", out, "--strategy",
                     "std_edt", "--depth", "2", "--base-filters", "4", "--steps", "8", "--patch-size", "32",
                     "--mc-samples", "4", "--device", "cpu")
    assert "label these next" in proc.stdout
    with open(out / "suggestions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    assert {r["file"] for r in rows} == {p.name for p in sorted(images.iterdir())[3:]}
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:  # the extra columns: one fused pass, each within its map's range
        assert 0 <= float(r["mean_bald"]) <= float(r["mean_max_entropy"]) <= np.log(2)
        assert 0 <= float(r["mean_variation_ratio"]) <= 0.5 and 0 <= float(r["mean_std"]) <= 0.5
    heatmaps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert len(heatmaps) == 2 and heatmaps[0].startswith("001_" + Path(rows[0]["file"]).stem)
    assert (out / "model.pt").is_file() and json.loads((out / "config.json").read_text())["labeled_images"] == 3


def test_bad_folder_gives_a_clear_error_and_exit_code_2(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=2)
    Image.fromarray(np.full((96, 100), 7, np.uint8)).save(masks / "slice_stray.png")
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(next(masks.glob("*.png")))  # wrong size now
    proc = activeseg("suggest", "--images", images, "--masks", masks, "--out", tmp_path / "o", check=False)
    assert proc.returncode == 2
    assert "is 50×50 but image" in proc.stderr and "has no image with stem 'slice_stray'" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = activeseg("simulate", "--dataset", "nuclei", "--strategy", "bald,nope", "--out", tmp_path / "x",
                     check=False)
    assert proc.returncode == 2 and "unknown strategy" in proc.stderr and "max_entropy" in proc.stderr
    proc = activeseg("simulate", "--dataset", str(tmp_path / "nowhere"), "--out", tmp_path / "y", check=False)
    assert proc.returncode == 2 and "unknown dataset" in proc.stderr


def test_data_list():
    assert "nuclei" in activeseg("data", "list").stdout


def test_simulate_takes_a_three_class_folder(tmp_path, three_class_folder):
    three_class_folder(tmp_path / "lab", 7)  # every image labelled: a simulation's dataset
    out = tmp_path / "runs"
    activeseg("simulate", "--dataset", tmp_path / "lab", "--strategy", "bald", "--rounds", "2", *TINY,
              "--initial", "3", "--query", "2", "--no-reference", "--quiet", "--out", out)
    records = read_ledger(out / "bald" / "seed_0" / "ledger.jsonl")
    assert len(records) == 2
    for rec in records:  # per-class scores, and instance scores for the class named interior
        assert {"dice", "miou", "dice_interior", "dice_boundary", "instance_f1", "aji"} <= set(rec["test"])
