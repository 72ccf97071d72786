"""``benchmarks/nath_nuclei.py``'s table of what the queried patches held, on hand-made ledgers."""

import json
from pathlib import Path

from conftest import load_benchmark


def _run(folder: Path, strategy: str, seed: int, rounds: list[list[tuple[int, float]]]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"strategy": strategy, "seed": seed}))
    with open(folder / "ledger.jsonl", "w") as f:
        for r, picks in enumerate(rounds, start=1):
            selected = [{"dataset_idx": i, "item_id": f"p{i}", "score": 0.0, "cost": c} for i, c in picks]
            f.write(json.dumps({"round": r, "strategy": strategy, "seed": seed, "selected": selected}) + "\n")


def test_the_picks_table_counts_each_queried_patch_once_and_background_as_empty(tmp_path):
    nath = load_benchmark("nath_nuclei")
    # random, Delete: seed 0 picks 2 structures of 4 (costs 10, 30), seed 1 one of 4 (cost 8)
    _run(tmp_path / "delete" / "random" / "seed_0", "random", 0, [[(1, 10), (2, 0)], [(3, 30), (4, 0)]])
    _run(tmp_path / "delete" / "random" / "seed_1", "random", 1, [[(5, 0), (6, 0)], [(7, 8), (8, 0)]])
    # NoDelete: patch 1 re-picked in round 2 (recorded at no cost) counts once: 1 of 3 patches holds a structure
    _run(tmp_path / "nodelete" / "nath_entropy" / "seed_0", "nath_entropy", 0, [[(1, 12), (2, 0)], [(1, 0), (9, 0)]])
    lines = nath.picks_table(tmp_path, ["random", "nath_entropy"])
    rows = [line for line in lines if line.startswith("| ") and "seeds" not in line]
    assert rows == [
        "| Random Delete | 2 | 4.0 ± 0.0 | 0.38 ± 0.18 | 6.0 ± 5.7 |",  # shares 0.5, 0.25; mean costs 10, 2
        "| Epistemic (Eq. 3 as written) No Delete | 1 | 3.0 | 0.33 | 4.0 |",
    ]
    (tmp_path / "empty").mkdir()
    assert nath.picks_table(tmp_path / "empty", ["random"]) == []  # no mode started: no table
