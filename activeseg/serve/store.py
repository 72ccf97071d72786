"""The server's datastore: SQLite in the project folder by default (any SQLAlchemy URL, e.g. PostgreSQL,
through ``--db``), files on disk under the project folder.

What it keeps: the images; every label version per annotator (who, when, from which model suggestion,
the final one marked); leases; the query history (per model and strategy, every unlabelled image's rank
and score); model checkpoints with their sha256; the training jobs; the validation split, decided for
each image when it is first labelled and never changed afterwards.

Durability: a file is written to a temporary name, fsynced and renamed into place before the row that
names it is committed, one transaction per label; SQLite runs in WAL mode with ``synchronous=FULL``. A
crash at any point leaves either the committed row with its complete file, or no row (an unreferenced
file is removed at the next start). Writers take the database's write lock at ``BEGIN`` (SQLite
``BEGIN IMMEDIATE``; on PostgreSQL one transaction-scoped advisory lock), so two annotators' leases or
labels never interleave; a lease is also a primary key, so no backend can lease one image twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

meta = sa.MetaData()
images_t = sa.Table(
    "images", meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(160), nullable=False, unique=True),
    sa.Column("file", sa.String(200), nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("channels", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("split", sa.String(8)),  # None until first labelled, then "train" or "val" for good
)
labels_t = sa.Table(
    "labels", meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("annotator", sa.String(80), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("model_id", sa.Integer),  # the model suggestion the annotator started from, if any
    sa.Column("file", sa.String(200), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.UniqueConstraint("image_id", "version"),
)
leases_t = sa.Table(
    "leases", meta,
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), primary_key=True),
    sa.Column("annotator", sa.String(80), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
models_t = sa.Table(
    "models", meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("job_id", sa.Integer),
    sa.Column("file", sa.String(200), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("labeled", sa.Integer, nullable=False),
    sa.Column("val_images", sa.Integer, nullable=False),
    sa.Column("val_dice", sa.Float),
    sa.Column("val_miou", sa.Float),
    sa.Column("seconds", sa.Float),
)
scores_t = sa.Table(
    "scores", meta,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("strategy", sa.String(40), primary_key=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), primary_key=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
jobs_t = sa.Table(
    "jobs", meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(12), nullable=False),  # running, done, failed
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("requested_by", sa.String(80), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("pid", sa.Integer),
)
ACTIVE = ("running",)
WRITE_LOCK = 0x61637469  # PostgreSQL advisory lock key of the store's writers


class StoreError(ValueError):
    """A request the store refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def database_url(url: str) -> str:
    """``url`` checked: SQLite or PostgreSQL (``postgresql://`` is served by psycopg 3 when psycopg2 is
    absent); anything else is refused with what to use instead."""
    scheme = url.split(":", 1)[0]
    if scheme.startswith("sqlite"):
        return url
    if not scheme.startswith("postgresql"):
        raise StoreError(f"database URL {url!r}: activeseg serve stores projects in SQLite (the default) or "
                         "PostgreSQL (postgresql://user:password@host/database)", 400)
    if scheme == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None:
            if importlib.util.find_spec("psycopg") is None:
                raise StoreError("a PostgreSQL store needs a driver: pip install 'activeseg[postgres]'", 400)
            return "postgresql+psycopg" + url[len(scheme):]
    return url


def empty_database(url: str) -> None:
    """Drop the store's tables from the database at ``url`` (a scratch database of tests and benchmarks)."""
    engine = sa.create_engine(database_url(url))
    meta.drop_all(engine)
    engine.dispose()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, complete or not at all: temp file, fsync, rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def row(r) -> dict:
    return dict(r._mapping)


class Store:
    """The datastore of the project folder ``root`` (``url``: any SQLAlchemy URL; default SQLite in it)."""

    def __init__(self, root: str | Path, url: str | None = None) -> None:
        self.root = Path(root)
        for sub in ("images", "labels", "models"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.url = database_url(url or f"sqlite:///{self.root / 'store.db'}")
        self.sqlite = self.url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 60}} if self.sqlite else {"pool_pre_ping": True}
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.url.startswith("postgresql"):
            @event.listens_for(self.engine, "begin")
            def _begin_pg(conn):  # writers queue on one transaction-scoped lock, as SQLite's BEGIN IMMEDIATE
                if not conn.get_execution_options().get("readonly"):
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        if self.sqlite:
            @event.listens_for(self.engine, "connect")
            def _connect(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # transactions begun below, not by the driver
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _begin(conn):  # writers take the write lock at once (no lost updates); readers a snapshot
                conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("readonly") else "BEGIN IMMEDIATE")
        meta.create_all(self.engine)

    @contextmanager
    def tx(self):
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self):
        with self.engine.connect().execution_options(readonly=True) as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- start-up ----------------------------------------------------------------------------------------
    def recover(self) -> dict:
        """After a crash or restart: jobs that were running are marked failed, temporary files are removed,
        and files no committed row names (written, never acknowledged) are moved to ``orphans/`` (nothing on
        disk is deleted on the database's word alone). Returns what was done."""
        now = time.time()
        with self.tx() as c:
            stale = c.execute(sa.update(jobs_t).where(jobs_t.c.state.in_(ACTIVE)).values(
                state="failed", message="interrupted: the server stopped while it ran", ended_at=now)).rowcount
            named = {r.file for r in c.execute(sa.select(labels_t.c.file))}
            named |= {r.file for r in c.execute(sa.select(images_t.c.file))}
            named |= {r.file for r in c.execute(sa.select(models_t.c.file))}
        removed, moved = [], []
        for sub in ("images", "labels", "models"):
            for path in sorted((self.root / sub).rglob("*")):
                rel = path.relative_to(self.root).as_posix()
                if not path.is_file() or rel in named:
                    continue
                if path.name.startswith(".") and path.name.endswith(".tmp"):  # an unfinished write_atomic
                    path.unlink()
                    removed.append(rel)
                else:
                    target = self.root / "orphans" / time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
                    moved.append(rel)
        return {"jobs_interrupted": stale, "temp_files_removed": removed, "orphans_moved": moved}

    def integrity_check(self) -> list[str]:
        """Every problem found (empty when consistent): the database's own check, every named file present
        with its recorded hash, one final label per labelled image, leases and scores on known images."""
        problems = []
        with self.read() as c:
            if self.sqlite:
                result = [r[0] for r in c.exec_driver_sql("PRAGMA integrity_check")]
                if result != ["ok"]:
                    problems += [f"sqlite: {r}" for r in result]
            for table in (images_t, labels_t, models_t):
                for r in c.execute(sa.select(table.c.id, table.c.file, table.c.sha256)):
                    path = self.root / r.file
                    if not path.is_file():
                        problems.append(f"{table.name} {r.id}: file {r.file} is missing")
                    elif sha256(path.read_bytes()) != r.sha256:
                        problems.append(f"{table.name} {r.id}: file {r.file} does not match its sha256")
            finals = c.execute(sa.select(labels_t.c.image_id, sa.func.sum(sa.cast(labels_t.c.final, sa.Integer)))
                               .group_by(labels_t.c.image_id)).all()
            problems += [f"image {i}: {n} final labels (expected 1)" for i, n in finals if n != 1]
            orphans = c.execute(sa.select(leases_t.c.image_id).where(
                leases_t.c.image_id.not_in(sa.select(images_t.c.id)))).all()
            problems += [f"lease on unknown image {r.image_id}" for r in orphans]
        return problems

    # -- images ----------------------------------------------------------------------------------------
    def add_image(self, name: str, data: bytes, shape: tuple[int, ...]) -> dict:
        """Store an image file (already validated) under its checked ``name``; 409 if the name exists."""
        file = f"images/{name}"
        with self.tx() as c:
            if c.execute(sa.select(images_t.c.id).where(images_t.c.name == name)).first():
                raise StoreError(f"an image named {name!r} is already in the project; rename the file", 409)
            write_atomic(self.root / file, data)
            channels = 1 if len(shape) == 2 else int(shape[2])
            rid = c.execute(sa.insert(images_t).values(
                name=name, file=file, height=int(shape[0]), width=int(shape[1]), channels=channels,
                sha256=sha256(data), added_at=time.time())).inserted_primary_key[0]
        return self.image(rid)

    def image(self, image_id: int) -> dict:
        with self.read() as c:
            r = c.execute(sa.select(images_t).where(images_t.c.id == image_id)).first()
        if r is None:
            raise StoreError(f"no image with id {image_id}; GET /api/images lists them", 404)
        return row(r)

    def image_names(self) -> set[str]:
        with self.read() as c:
            return {r.name for r in c.execute(sa.select(images_t.c.name))}

    def images(self) -> list[dict]:
        """Every image with its status: ``labeled`` (a final label), ``leased`` (an unexpired lease) or
        ``unlabeled``."""
        now = time.time()
        with self.read() as c:
            labelled = {r.image_id for r in c.execute(sa.select(labels_t.c.image_id).where(labels_t.c.final))}
            leased = {r.image_id: row(r) for r in c.execute(sa.select(leases_t).where(leases_t.c.expires_at > now))}
            out = []
            for r in c.execute(sa.select(images_t).order_by(images_t.c.id)):
                d = row(r)
                d["status"] = "labeled" if r.id in labelled else "leased" if r.id in leased else "unlabeled"
                if r.id in leased:
                    d["leased_to"], d["lease_expires"] = leased[r.id]["annotator"], leased[r.id]["expires_at"]
                out.append(d)
        return out

    # -- leases ----------------------------------------------------------------------------------------
    def lease_next(self, annotator: str, n: int, model_id: int | None, strategy: str, seed: int,
                   lease_seconds: float) -> list[dict]:
        """Lease up to ``n`` unlabelled images to ``annotator``, best first: the caller's own unexpired
        leases (renewed), then by the model's rank for ``strategy``, or in a seeded random order before any
        model exists. One transaction; an image is never leased to two annotators at once."""
        now = time.time()
        expires = now + lease_seconds
        with self.tx() as c:
            c.execute(sa.delete(leases_t).where(leases_t.c.expires_at <= now))
            labelled = sa.select(labels_t.c.image_id).where(labels_t.c.final)
            mine = [r.image_id for r in c.execute(sa.select(leases_t.c.image_id).where(
                leases_t.c.annotator == annotator).where(leases_t.c.image_id.not_in(labelled)))]
            taken = sa.select(leases_t.c.image_id)
            free = sa.select(images_t.c.id).where(images_t.c.id.not_in(labelled)).where(images_t.c.id.not_in(taken))
            scores: dict[int, float] = {}
            if model_id is not None:
                ranked = c.execute(sa.select(scores_t.c.image_id, scores_t.c.score).where(
                    scores_t.c.model_id == model_id).where(scores_t.c.strategy == strategy).where(
                    scores_t.c.image_id.in_(free)).order_by(scores_t.c.rank)).all()
                scores = {r.image_id: r.score for r in ranked}
                order = [r.image_id for r in ranked]
                rest = sorted({r.id for r in c.execute(free)} - set(order), key=lambda i: _shuffle_key(seed, i))
                order += rest  # images added after the model was scored: after the ranked ones
            else:
                order = sorted((r.id for r in c.execute(free)), key=lambda i: _shuffle_key(seed, i))
            chosen = (mine + order)[:n]
            for image_id in chosen:
                if image_id in mine:
                    c.execute(sa.update(leases_t).where(leases_t.c.image_id == image_id).values(expires_at=expires))
                else:
                    c.execute(sa.insert(leases_t).values(image_id=image_id, annotator=annotator, expires_at=expires))
            names = dict(c.execute(sa.select(images_t.c.id, images_t.c.name).where(images_t.c.id.in_(chosen))).all())
        return [{"id": i, "name": names[i], "score": scores.get(i), "lease_expires": expires} for i in chosen]

    # -- labels ----------------------------------------------------------------------------------------
    def put_label(self, image_id: int, annotator: str, png_bytes: bytes, model_id: int | None,
                  val_fraction: float) -> dict:
        """Store a new label version (already validated) as the image's final one, in one transaction; the
        caller's lease on it ends. 409 when another annotator holds an unexpired lease on the image."""
        now = time.time()
        with self.tx() as c:
            img = c.execute(sa.select(images_t).where(images_t.c.id == image_id)).first()
            if img is None:
                raise StoreError(f"no image with id {image_id}; GET /api/images lists them", 404)
            lease = c.execute(sa.select(leases_t).where(leases_t.c.image_id == image_id)).first()
            if lease is not None and lease.annotator != annotator and lease.expires_at > now:
                raise StoreError(f"image {image_id} is leased to {lease.annotator!r} until "
                                 f"{time.strftime('%H:%M:%S', time.localtime(lease.expires_at))}; ask "
                                 "GET /api/next for an image of your own", 409)
            version = (c.execute(sa.select(sa.func.max(labels_t.c.version)).where(
                labels_t.c.image_id == image_id)).scalar() or 0) + 1
            file = f"labels/{image_id}/v{version:04d}.png"
            write_atomic(self.root / file, png_bytes)
            c.execute(sa.update(labels_t).where(labels_t.c.image_id == image_id).values(final=False))
            rid = c.execute(sa.insert(labels_t).values(
                image_id=image_id, version=version, annotator=annotator, created_at=now, model_id=model_id,
                file=file, sha256=sha256(png_bytes), final=True)).inserted_primary_key[0]
            c.execute(sa.delete(leases_t).where(leases_t.c.image_id == image_id))
            if img.split is None:  # the validation split: decided once, at the first label
                splits = [r.split for r in c.execute(sa.select(images_t.c.split).where(images_t.c.split.is_not(None)))]
                n_val = splits.count("val")
                split = "val" if n_val < round(val_fraction * (len(splits) + 1)) else "train"
                c.execute(sa.update(images_t).where(images_t.c.id == image_id).values(split=split))
            out = row(c.execute(sa.select(labels_t).where(labels_t.c.id == rid)).first())
        return out

    def label(self, image_id: int, version: int | None = None) -> dict:
        """The final label of an image, or the given version; 404 when there is none."""
        self.image(image_id)
        q = sa.select(labels_t).where(labels_t.c.image_id == image_id)
        q = q.where(labels_t.c.version == version) if version is not None else q.where(labels_t.c.final)
        with self.read() as c:
            r = c.execute(q).first()
        if r is None:
            what = f"version {version}" if version is not None else "a label"
            raise StoreError(f"image {image_id} has no {what}; PUT /api/labels/{image_id} stores one", 404)
        return row(r)

    def label_versions(self, image_id: int) -> list[dict]:
        with self.read() as c:
            return [row(r) for r in c.execute(sa.select(labels_t).where(labels_t.c.image_id == image_id)
                                              .order_by(labels_t.c.version))]

    def final_labels(self) -> list[dict]:
        """Every labelled image with its final label's file and its split."""
        with self.read() as c:
            q = sa.select(images_t.c.id, images_t.c.name, images_t.c.file.label("image_file"), images_t.c.split,
                          labels_t.c.file.label("label_file"), labels_t.c.version).join(
                labels_t, labels_t.c.image_id == images_t.c.id).where(labels_t.c.final).order_by(images_t.c.id)
            return [row(r) for r in c.execute(q)]

    def count_labels(self) -> int:
        with self.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(labels_t)).scalar())

    # -- models and scores -----------------------------------------------------------------------------
    def add_model(self, job_id: int, state_bytes: bytes, info: dict,
                  rankings: dict[str, list[tuple[int, float]]]) -> int:
        """A trained model (its checkpoint bytes) and its rankings per strategy, in one transaction."""
        now = time.time()
        with self.tx() as c:
            mid = c.execute(sa.insert(models_t).values(job_id=job_id, file="", sha256=sha256(state_bytes),
                                                       created_at=now, **info)).inserted_primary_key[0]
            file = f"models/model_{mid:04d}.pt"
            write_atomic(self.root / file, state_bytes)
            c.execute(sa.update(models_t).where(models_t.c.id == mid).values(file=file))
            for strategy, ranked in rankings.items():
                _insert_ranking(c, mid, strategy, ranked, now)
        return mid

    def add_ranking(self, model_id: int, strategy: str, ranked: list[tuple[int, float]]) -> None:
        with self.tx() as c:
            c.execute(sa.delete(scores_t).where(scores_t.c.model_id == model_id).where(scores_t.c.strategy == strategy))
            _insert_ranking(c, model_id, strategy, ranked, time.time())

    def has_ranking(self, model_id: int, strategy: str) -> bool:
        with self.read() as c:
            return c.execute(sa.select(scores_t.c.rank).where(scores_t.c.model_id == model_id).where(
                scores_t.c.strategy == strategy).limit(1)).first() is not None

    def current_model(self) -> dict | None:
        with self.read() as c:
            r = c.execute(sa.select(models_t).order_by(models_t.c.id.desc()).limit(1)).first()
        return None if r is None else row(r)

    def models(self) -> list[dict]:
        with self.read() as c:
            return [row(r) for r in c.execute(sa.select(models_t).order_by(models_t.c.id))]

    # -- jobs ------------------------------------------------------------------------------------------
    def start_job(self, requested_by: str) -> dict:
        """A new running job; StoreError (409, naming the running job) when one is running."""
        with self.tx() as c:
            running = c.execute(sa.select(jobs_t).where(jobs_t.c.state.in_(ACTIVE))).first()
            if running is not None:
                raise StoreError(f"training job {running.id} (started by {running.requested_by}) is still running "
                                 f"({running.message}); GET /api/train follows it", 409)
            jid = c.execute(sa.insert(jobs_t).values(state="running", progress=0.0, message="starting",
                                                     requested_by=requested_by, started_at=time.time())
                            ).inserted_primary_key[0]
        return self.job(jid)

    def update_job(self, job_id: int, **values) -> None:
        if values.get("state") in ("done", "failed"):
            values.setdefault("ended_at", time.time())
        with self.tx() as c:
            c.execute(sa.update(jobs_t).where(jobs_t.c.id == job_id).values(**values))

    def job(self, job_id: int | None = None) -> dict | None:
        """The given job, or the latest one (None before any)."""
        q = sa.select(jobs_t)
        q = q.where(jobs_t.c.id == job_id) if job_id is not None else q.order_by(jobs_t.c.id.desc()).limit(1)
        with self.read() as c:
            r = c.execute(q).first()
        return None if r is None else row(r)


def _insert_ranking(c, model_id: int, strategy: str, ranked: list[tuple[int, float]], now: float) -> None:
    if ranked:
        c.execute(sa.insert(scores_t), [
            {"model_id": model_id, "strategy": strategy, "image_id": int(i), "rank": rank, "score": float(s),
             "created_at": now} for rank, (i, s) in enumerate(ranked)])


def _shuffle_key(seed: int, image_id: int) -> int:
    """A seeded random order of images that does not change when images are added."""
    return int(np.random.SeedSequence([seed, image_id]).generate_state(1)[0])
