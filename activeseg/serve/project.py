"""A server project: the folder ``DIR`` and its ``project.toml`` (classes, limits, training settings, the
annotators and their tokens).

``project.toml`` is written once, when ``activeseg serve`` creates the project, and read at every start;
an administrator adds annotators by editing its ``[annotators]`` table (name = token), and the running
server picks the change up at the next request.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from activeseg.config import SimConfig, load_config

PROJECT_FILE = "project.toml"
NAME_OK = "letters, digits, '.', '_', '-' and spaces, at most 128 characters, starting with a letter or digit"


class ProjectError(ValueError):
    """The project folder or its project.toml is not usable; the message says how to fix it."""


@dataclass
class Project:
    """Settings of one project (the ``[project]``, ``[train]`` and ``[annotators]`` tables)."""

    root: Path
    classes: int = 2
    class_names: tuple[str, ...] = ()
    strategy: str = "bald"
    seed: int = 0
    lease_seconds: float = 1800.0
    max_upload_bytes: int = 64 * 2**20
    max_pixels: int = 50_000_000
    val_fraction: float = 0.2
    database: str = ""  # SQLAlchemy URL of the store; empty: SQLite in the project folder
    train: dict = field(default_factory=dict)  # SimConfig overrides
    annotators: dict[str, str] = field(default_factory=dict)
    _mtime: float = 0.0

    @property
    def path(self) -> Path:
        return self.root / PROJECT_FILE

    def sim_config(self) -> SimConfig:
        """The training and scoring settings: activeseg's defaults, then ``[train]``."""
        return load_config(None, **{**self.train, "strategy": self.strategy, "seed": self.seed,
                                    "classes": self.classes, "heatmaps": 0})

    def database_for(self, url: str | None) -> str | None:
        """The store's URL: the one the project was created with; ``url`` (``--db``) must agree with it."""
        if url and url != self.database:
            where = f"the database {self.database!r}" if self.database else "SQLite in the project folder"
            raise ProjectError(f"{self.path} was created with {where}, not {url!r}; start without --db, or "
                               "change `database` in project.toml after moving the data there")
        return self.database or None

    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(["background"] + [f"class {c}" for c in range(1, self.classes)])

    # -- files -----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, classes: int = 2, class_names: tuple[str, ...] = (), **settings) -> tuple[Project, str]:
        """A new project in ``root`` with one annotator, ``admin``; returns it and the admin's token."""
        token = secrets.token_urlsafe(24)
        project = cls(Path(root), classes=classes, class_names=tuple(class_names), annotators={"admin": token},
                      **settings)
        project.validate()
        project.save()
        return project, token

    @classmethod
    def load(cls, root: Path) -> Project:
        path = Path(root) / PROJECT_FILE
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ProjectError(f"{path} not found; start `activeseg serve --project {root} --images FOLDER` "
                               "once to create the project") from None
        except tomllib.TOMLDecodeError as err:
            raise ProjectError(f"{path} is not valid TOML ({err}); fix the line it names") from None
        known = {f.name for f in fields(cls)} - {"root", "train", "annotators", "_mtime"}
        settings = doc.get("project", {})
        bad = sorted(set(settings) - known)
        if bad:
            raise ProjectError(f"{path}: unknown [project] key(s) {bad}; valid: {sorted(known)}")
        if "class_names" in settings:
            settings["class_names"] = tuple(settings["class_names"])
        project = cls(Path(root), train=dict(doc.get("train", {})), annotators=dict(doc.get("annotators", {})),
                      **settings)
        project._mtime = path.stat().st_mtime
        project.validate()
        return project

    def reload_annotators(self) -> None:
        """Re-read ``[annotators]`` when project.toml changed (an admin added someone)."""
        try:
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime:
                self.annotators = dict(tomllib.loads(self.path.read_text()).get("annotators", {}))
                self._mtime = mtime
        except (OSError, tomllib.TOMLDecodeError):
            pass  # keep the tokens that were valid; a broken edit must not lock everyone out

    def validate(self) -> None:
        problems = []
        if not 2 <= self.classes <= 255:
            problems.append(f"classes = {self.classes}: use 2 to 254 classes (255 marks unlabelled pixels)")
        if self.class_names and len(self.class_names) != self.classes:
            problems.append(f"class_names has {len(self.class_names)} names for {self.classes} classes")
        if not self.annotators:
            problems.append("[annotators] is empty; add a line `name = \"token\"`")
        for name, token in self.annotators.items():
            if not isinstance(token, str) or len(token) < 16:
                problems.append(f"annotator {name!r}: the token must be a string of 16 or more characters")
        try:
            self.sim_config()
        except (ValueError, TypeError) as err:
            problems.append(f"[train]: {err}")
        from activeseg.acquisition import STRATEGIES, whole_item_strategies

        if self.strategy in STRATEGIES and self.strategy not in whole_item_strategies():
            problems.append(f"strategy = {self.strategy!r} picks regions of images; the server's queue holds whole "
                            "images: use one of " + ", ".join(whole_item_strategies()))
        if problems:
            raise ProjectError(f"{self.path}: " + "; ".join(problems))

    def save(self) -> None:
        """Write project.toml atomically (temp file + rename)."""
        lines = ["# activeseg serve project; add annotators under [annotators] as name = \"token\"", "[project]"]
        for key in ("classes", "class_names", "strategy", "seed", "lease_seconds", "max_upload_bytes", "max_pixels",
                    "val_fraction", "database"):
            value = getattr(self, key)
            if key in ("class_names", "database") and not value:
                continue
            lines.append(f"{key} = {_toml(value)}")
        lines += ["", "# training settings: any activeseg SimConfig key (e.g. patch_size, steps, base_filters)",
                  "[train]"]
        lines += [f"{k} = {_toml(v)}" for k, v in sorted(self.train.items())]
        lines += ["", "[annotators]"] + [f"{_toml(k)} = {_toml(v)}" for k, v in self.annotators.items()]
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".toml.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime


def _toml(value) -> str:
    """A TOML literal of a string, number, bool or list of those (JSON's escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def check_name(name: str) -> str:
    """A client-given file name, if it is a plain name with an image extension; else ProjectError."""
    import re

    base = name.strip()
    if (not base or "/" in base or "\\" in base or ".." in base
            or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,127}", base)):
        raise ProjectError(f"file name {name!r} is not allowed: use {NAME_OK} (no folders, no '..')")
    if Path(base).suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ProjectError(f"file name {name!r} must end in .png, .tif or .tiff")
    return base
