"""Finding simulation runs on disk: any folder holding a ``ledger.jsonl`` is one run.

``activeseg simulate --out OUT`` writes ``OUT/<strategy>/seed_<s>/`` (or ``OUT/seed_<s>/`` with one
strategy), each with ``config.json``, ``ledger.jsonl``, an optional ``reference.json`` (the full-pool
model's scores) and ``heatmaps/round_*/``. ``OUT/reference/seed_<s>/`` holds only ``reference.json``
and has no ledger, so it is not a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from activeseg.records import read_ledger

LEDGER = "ledger.jsonl"


@dataclass
class Run:
    """One strategy × seed simulation read from its folder.

    Attributes:
        run_dir: the folder holding ``ledger.jsonl``.
        config: the run's ``config.json`` (empty if the file is missing).
        records: ledger records, one per finished round.
        reference: ``reference.json`` (``test_dice`` or ``test_accuracy``, ..., ``n_annotations``), or None.
    """

    run_dir: Path
    config: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    reference: dict | None = None

    def _field(self, key: str):
        if self.config.get(key) is not None:
            return self.config[key]
        if self.records and self.records[0].get(key) is not None:
            return self.records[0][key]
        raise ValueError(
            f"{self.run_dir}: neither config.json nor the ledger names the run's {key}; "
            f"add \"{key}\" to {self.run_dir / 'config.json'}"
        )

    @property
    def strategy(self) -> str:
        return str(self._field("strategy"))

    @property
    def seed(self) -> int:
        return int(self._field("seed"))

    @property
    def group(self) -> str:
        """The sweep group: the ``key=value`` folders just above the strategy folder (``query=4``), or
        ``""`` for a run of ``activeseg simulate``."""
        parts = []
        for folder in self.run_dir.parents[1:]:
            if "=" not in folder.name:
                break
            parts.append(folder.name)
        return "/".join(reversed(parts))

    @property
    def name(self) -> str:
        """The strategy, with the sweep group when there is one: ``"bald [query=4]"``."""
        return f"{self.strategy} [{self.group}]" if self.group else self.strategy

    @property
    def label(self) -> str:
        """``"<name> seed <s>"``, for figures and headings."""
        return f"{self.name} seed {self.seed}"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}; expected a JSON object")
    return value


def load_run(run_dir: str | Path) -> Run:
    """Read one run folder (``ledger.jsonl`` required; ``config.json``, ``reference.json`` optional)."""
    run_dir = Path(run_dir)
    reference = _read_json(run_dir / "reference.json")
    if reference is not None and not any(f"test_{m}" in reference for m in ("dice", "accuracy")):
        raise ValueError(f"{run_dir / 'reference.json'} has no 'test_dice' or 'test_accuracy'; recompute it")
    return Run(
        run_dir=run_dir,
        config=_read_json(run_dir / "config.json") or {},
        records=read_ledger(run_dir / LEDGER),
        reference=reference,
    )


def _ledgers_under(path: Path) -> list[Path]:
    if path.is_file() and path.name == LEDGER:
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such directory; pass the --out directory of `activeseg simulate`"
        )
    if (path / LEDGER).is_file():
        return [path / LEDGER]
    found = sorted(path.rglob(LEDGER))
    if not found:
        raise FileNotFoundError(
            f"{path}: no ledger.jsonl found; pass the --out directory of `activeseg simulate` "
            "(or a run folder inside it)"
        )
    return found


def find_runs(paths: Sequence[str | Path] | str | Path) -> list[Run]:
    """All runs in or below ``paths``, without duplicates, sorted by strategy then seed.

    Args:
        paths: run folders, strategy folders or any parent folder (searched recursively).

    Raises:
        FileNotFoundError: if a path does not exist or holds no ``ledger.jsonl``.
        ValueError: if two different folders hold the same strategy and seed.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    seen: dict[Path, Path] = {}
    for p in paths:
        for ledger in _ledgers_under(Path(p)):
            seen.setdefault(ledger.resolve(), ledger.parent)
    runs = [load_run(run_dir) for run_dir in seen.values()]
    runs.sort(key=lambda r: (r.name, r.seed, str(r.run_dir)))
    for a, b in zip(runs, runs[1:], strict=False):
        if (a.name, a.seed) == (b.name, b.seed):
            raise ValueError(
                f"{a.run_dir} and {b.run_dir} are both {a.label}; pass only one of them "
                "(e.g. the --out directory of a single `activeseg simulate`)"
            )
    return runs


def references_by_seed(runs: Iterable[Run]) -> dict[int, dict]:
    """The full-pool reference of each seed (the first run of that seed that has one)."""
    out: dict[int, dict] = {}
    for run in runs:
        if run.reference is not None:
            out.setdefault(run.seed, run.reference)
    return dict(sorted(out.items()))


def group_by_strategy(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs per strategy (per sweep group and strategy, keyed by ``Run.name``): by group, ``random``
    (the baseline) first within a group, then the others by name; seeds ascending."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.group, r.strategy != "random", r.strategy, r.seed)):
        groups.setdefault(run.name, []).append(run)
    return groups
