"""Helpers of the tests that compare simulated runs: records without their timings, a run's initial set."""

import json


def without_timing(records: list[dict]) -> list[dict]:
    """The ledger records without ``seconds``, the one field two identical runs do not share."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def initial_idx(run_dir) -> list[int]:
    """The dataset indices of a run's initial labelled set, from its ``split.json``."""
    return json.loads((run_dir / "split.json").read_text())["initial_dataset_idx"]
