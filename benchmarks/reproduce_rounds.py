"""Re-run the first round(s) of committed study runs from their saved configs and compare the records.

A refactoring must not change what a run computes. For each run folder given (one with ``config.json``
and ``ledger.jsonl``), this re-runs rounds 1..``--rounds`` in a temporary folder with the same config
and seed, and compares every field of each new ledger record (timings excepted) with the committed one.
It also writes the new records, so two checkouts (before / after a change) can be compared on the same
host with ``--against``: a committed ledger made on another CPU may differ in the last bits (oneDNN picks
other kernels on AVX-512 than on AVX2, and ``score_precision = auto`` picks bfloat16 only on CPUs with
native bf16), while two checkouts on one host must agree bit for bit.

Usage::

    python benchmarks/reproduce_rounds.py RUN_DIR... --rounds 1 --out benchmarks/results/reproduce_rounds.json
    python benchmarks/reproduce_rounds.py RUN_DIR... --against before.json --out after.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_features  # benchmarks/ is on sys.path when run as a script

IGNORED = ("seconds",)  # wall-clock timings differ run to run


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in IGNORED}


def _diff(a: dict, b: dict) -> list[str]:
    """Names of the top-level fields whose values differ (or that only one record has)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def rerun(run_dir: Path, rounds: int) -> list[dict]:
    """Rounds 1..``rounds`` of the run in ``run_dir``, recomputed from its config in a temporary folder."""
    from activeseg.config import from_saved
    from activeseg.data import load_for
    from activeseg.loop import run_simulation

    saved = json.loads((run_dir / "config.json").read_text())
    cfg = from_saved(saved, heatmaps=0)  # heatmaps draw from forked RNGs: no effect on records
    dataset = load_for(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        return run_simulation(cfg, dataset, Path(tmp) / "run", progress=False, until_round=rounds)


def _key(run_dir: Path) -> str:
    """A run folder as the results file names it: relative to the checkout when inside it."""
    path = Path(run_dir).resolve()
    root = Path(__file__).resolve().parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc["runs"] = {_key(Path(k)): v for k, v in doc["runs"].items()}
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders with config.json and ledger.jsonl")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--against", type=Path, help="a results file of another checkout to compare with")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--table-only", action="store_true", help="only rewrite OUT's markdown table from OUT and --against")
    args = p.parse_args(argv)
    if args.table_only:
        if not args.against:
            p.error("--table-only needs --against")
        doc = _load(args.out)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(table(doc, _load(args.against)))
        return 0
    if not args.runs:
        p.error("give the run folders to re-run")
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    other = _load(args.against)["runs"] if args.against else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "activeseg"], capture_output=True,
                           text=True).stdout.strip()
    commit += " + uncommitted changes to activeseg/" if dirty else ""
    results: dict = {}
    for run_dir in tqdm(args.runs, desc="runs", unit="run"):
        committed = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines() if line.strip()]
        t0 = time.perf_counter()
        new = [_strip(r) for r in rerun(run_dir, args.rounds)]
        entry = {"seconds": round(time.perf_counter() - t0, 1), "records": new,
                 "differs_from_committed": [_diff(_strip(c), n) for c, n in zip(committed, new, strict=False)]}
        if _key(run_dir) in other:
            entry["differs_from_against"] = [_diff(a, n) for a, n in zip(other[_key(run_dir)]["records"], new,
                                                                          strict=True)]
        results[_key(run_dir)] = entry
        print(f"{run_dir}: vs committed {entry['differs_from_committed']}"
              + (f", vs --against {entry['differs_from_against']}" if "differs_from_against" in entry else ""),
              flush=True)
    doc = {"commit": commit, "cpu": cpu_features(), "torch": torch.__version__, "threads": 1,
           "rounds": args.rounds, "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if args.against:
        args.out.with_suffix(".md").write_text(table(doc, _load(args.against)))
    return 0


def _short(run: str) -> str:
    return run.split("benchmarks/results/", 1)[-1]


def _first_score(record: dict) -> str:
    key = "dice" if "dice" in record["test"] else "accuracy"
    return f"{key} {record['test'][key]:.4f}"


def table(after: dict, before: dict) -> str:
    """A markdown summary: per run, whether this checkout equals the other bit for bit, the round-1 test
    score of the committed ledger and of this re-run, and which fields differ from the committed ledger."""
    root = Path(__file__).resolve().parents[1]
    cpu = after["cpu"]
    flags = ", ".join(cpu["flags"]) or "none of avx2/fma/avx512f/avx512_bf16/amx_bf16"
    lines = [f"# Re-run of the first {after['rounds']} round(s) of committed study runs", "",
             f"Host: {cpu['model']} (CPU flags: {flags}), "
             f"torch {after['torch']}, {after['threads']} thread; checkouts {before['commit']} (before) and "
             f"{after['commit']} (after), both run on this host.", "",
             "| run | s | after = before (every field but timings) | round-1 test: committed → here "
             "| fields differing from the committed ledger |",
             "|---|---|---|---|---|"]
    for run, entry in after["runs"].items():
        same = entry.get("differs_from_against")
        verdict = "—" if same is None else "yes, bit for bit" if not any(same) else f"no: {same}"
        committed = "; ".join(", ".join(d) or "none" for d in entry["differs_from_committed"])
        ledger = root / run / "ledger.jsonl"
        first = json.loads(ledger.read_text().splitlines()[0]) if ledger.is_file() else None
        scores = f"{_first_score(first)} → {_first_score(entry['records'][0])}" if first else "—"
        lines.append(f"| {_short(run)} | {entry['seconds']} | {verdict} | {scores} | {committed} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
