"""Records of a run: its folder and ledger, written by the front ends and read by the report.

A run folder holds ``config.json`` (the effective settings), ``strategy.json`` (the strategy's settings,
its defaults included, for runs started since 2026-12-07), ``split.json`` (the dataset indices and ids
of the initial set, pool, validation and test items), ``ledger.jsonl`` (one JSON object per finished
round), optionally ``reference.json`` (the full-pool model's scores), ``last_model.pt`` (warm start) and
``heatmaps/round_NN/*.png``.

Ledger appends are flushed and fsynced, so a killed process loses at most the line it was writing.
:func:`read_ledger` skips such a cut-off last line with a warning; :func:`write_ledger` rewrites the
file atomically so a resumed run can drop that line before appending again (:func:`open_ledger`).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

LEDGER = "ledger.jsonl"
CONFIG = "config.json"
SPLIT = "split.json"
STRATEGY = "strategy.json"
REFERENCE = "reference.json"


def to_json_value(obj, where: str = "record"):
    """``obj`` with numpy scalars/arrays and tuples turned into plain JSON types.

    Args:
        obj: a dict/list/tuple tree of str, int, float, bool, None, numpy scalars and numpy arrays.
        where: the position of ``obj`` in the record, for the error message.

    Raises:
        TypeError: for any other object (it names the key and the type).
    """
    if isinstance(obj, np.generic) and not isinstance(obj.item(), np.generic):
        return to_json_value(obj.item(), where)  # checked first: np.float64 is also a float
    if obj is None or isinstance(obj, str | bool | int | float):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not isinstance(key, str | int | float | bool):
                raise TypeError(f"cannot write key {key!r} of {where}: keys must be strings or numbers")
            out[str(key) if not isinstance(key, str) else key] = to_json_value(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [to_json_value(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"cannot write {where} = {obj!r:.80} of type {type(obj).__name__} to the ledger; "
        "convert it to a number, string, list or dict first"
    )


def _line(record: dict) -> str:
    if not isinstance(record, dict):
        raise TypeError(f"cannot write a {type(record).__name__} as a ledger record; pass a dict")
    return json.dumps(to_json_value(record)) + "\n"


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as a JSON line, creating parent folders; flushed and fsynced.

    If the file does not end with a newline (a line cut off by a kill), the new record starts on a
    fresh line, so it is never glued onto the broken one.

    Raises:
        TypeError: if the record holds something JSON cannot represent (see :func:`to_json_value`).
    """
    path = Path(path)
    line = _line(record)  # convert before opening: a bad record leaves the file untouched
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_ledger(path: str | Path) -> list[dict]:
    """All records of a ledger, in file order.

    A last line that is not valid JSON (the process was killed while writing it) is skipped with a
    ``UserWarning``; blank lines are ignored.

    Raises:
        ValueError: if a line other than the last is not a JSON object (the ledger is corrupt).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(numbered) - 1:
                warnings.warn(
                    f"{path}: skipping truncated last line {n} (a run killed while writing it?); "
                    "resuming the run recomputes that round",
                    UserWarning,
                    stacklevel=2,
                )
                break
            raise ValueError(
                f"{path.name}: line {n} is not valid JSON ({err.msg}); the ledger {path} is corrupt: "
                "fix or delete that line"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path.name}: line {n} is a {type(record).__name__}, not a JSON object; {path} is corrupt"
            )
        records.append(record)
    return records


def write_ledger(path: str | Path, records: Iterable[dict]) -> None:
    """Replace the whole ledger with ``records``, atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    text = "".join(_line(r) for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def open_ledger(run_dir: str | Path, resume: bool) -> list[dict]:
    """The finished rounds of the run in ``run_dir`` (none for a new run).

    Raises:
        FileExistsError: the ledger exists and ``resume`` is off.
    """
    ledger = Path(run_dir) / LEDGER
    if not ledger.exists():
        return []
    if not resume:
        raise FileExistsError(f"{ledger} exists; pass --resume to continue it or choose another --out")
    records = read_ledger(ledger)
    if len(records) != _count_lines(ledger):
        write_ledger(ledger, records)  # drop a line cut off by a kill, so appends start clean
    return records


def finished_rounds(run_dir: str | Path) -> int:
    """Complete ledger lines of a run (0 without a ledger); cheap enough to check many runs."""
    ledger = Path(run_dir) / LEDGER
    if not ledger.is_file():
        return 0
    with ledger.open() as f:
        return sum(1 for line in f if line.endswith("\n") and line.strip())


MAY_CHANGE = ("rounds", "device", "channels_last", "heatmaps")
"""Settings a resumed run may change: how long it goes on, and how it computes (not what)."""


def write_config(run_dir: str | Path, config_json: str, resume: bool, default_json: str,
                 may_change: tuple[str, ...] = MAY_CHANGE) -> None:
    """Save the run's settings; when resuming, first check they equal the saved ones (but ``may_change``).

    A key the saved config lacks (added to activeseg after the run started) counts as its default
    (``default_json``: the defaults' JSON).
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    now = json.loads(config_json)
    if resume and path.exists():
        saved = {**json.loads(default_json), **json.loads(path.read_text())}
        differ = {k for k in now if k not in may_change and saved.get(k) != now[k]}
        if differ:
            pairs = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now[k]!r}" for k in sorted(differ))
            raise ValueError(f"{run_dir}: cannot resume with a different config ({pairs}); use another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(config_json)


def write_strategy(run_dir: str | Path, settings: dict, fresh: bool) -> None:
    """``strategy.json``: every setting of the run's strategy, its defaults included, so a later change of a
    default cannot silently change what a resumed run does. ``fresh``: no round has finished yet (write);
    otherwise check against the saved file (a run started before it existed has none and is not checked).
    """
    path = Path(run_dir) / STRATEGY
    if not fresh and path.exists():
        saved = json.loads(path.read_text())
        differ = sorted(k for k in {*saved, *settings} if saved.get(k) != settings.get(k))
        if differ:
            pairs = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {settings.get(k)!r}" for k in differ)
            raise ValueError(f"{run_dir}: cannot resume: the strategy's settings changed ({pairs}); set the saved "
                             "values in the config's [strategy] table, or use another --out")
        return
    if fresh:
        path.write_text(json.dumps(settings, indent=1, sort_keys=True))


def write_split(run_dir: str | Path, split, item_ids: list[str], seed: int) -> None:
    """``split.json``: each part's dataset indices and item ids, and the split seed."""
    parts = {name: getattr(split, name) for name in ("initial", "pool", "val", "test")}
    doc = {
        "seed": seed,
        **{f"{k}_dataset_idx": np.asarray(v).tolist() for k, v in parts.items()},
        **{f"{k}_ids": [item_ids[i] for i in v] for k, v in parts.items()},
    }
    Path(run_dir, SPLIT).write_text(json.dumps(doc, indent=1))


def read_split(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """The dataset indices of each part (``initial``, ``pool``, ``val``, ``test``) from ``split.json``, or None."""
    path = Path(run_dir) / SPLIT
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return {k: np.asarray(doc[f"{k}_dataset_idx"], dtype=np.int64) for k in ("initial", "pool", "val", "test")}


def read_reference(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / REFERENCE
    return json.loads(path.read_text()) if path.is_file() else None


def write_reference(run_dir: str | Path, reference: dict) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    Path(run_dir, REFERENCE).write_text(json.dumps(reference, indent=1))
