"""The annotation server's HTTP API (FastAPI) and the annotator page.

Every route but ``/api/health``, the page and its static files needs ``Authorization: Bearer TOKEN``
with a token of ``project.toml``'s ``[annotators]``. The OpenAPI schema is at ``/openapi.json``, its
page at ``/docs``. Training runs in a separate process, one job at a time; scoring and overlays call
the same engine as simulations (``activeseg.serve.worker``).
"""

from __future__ import annotations

import multiprocessing
import secrets
import threading
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from activeseg.serve import imaging, worker
from activeseg.serve.imaging import UploadError
from activeseg.serve.project import Project, ProjectError, check_name
from activeseg.serve.store import Store, StoreError

STATIC = Path(__file__).with_name("static")
MAX_ID = 2**63 - 1  # the database's integer range
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="the image's id (GET /api/images)")]
PNG = {"content": {"image/png": {}}, "description": "a PNG image"}
LABEL_BODY = {"requestBody": {"required": True, "description": "the mask: a one-channel PNG or TIFF of class labels",
                              "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                          for t in ("image/png", "image/tiff")}}}


class Server:
    """What the routes share: the project, the store, the loaded model and the training process."""

    def __init__(self, root: Path, url: str | None, train_threads: int = 0) -> None:
        self.root, self.train_threads = Path(root), train_threads
        self.project = Project.load(self.root)
        self.url = self.project.database_for(url)
        self.store = Store(self.root, self.url)
        self.recovered = self.store.recover()
        self.lock = threading.Lock()  # one inference at a time in this process
        self._model: tuple[int, object, worker.ProjectData] | None = None
        self.process: multiprocessing.Process | None = None
        from activeseg.scoring import pick_device

        self.device = pick_device(self.project.sim_config().device)

    # -- the current model, loaded once per model id ---------------------------------------------------
    def model(self) -> tuple[dict, object, worker.ProjectData] | None:
        row = self.store.current_model()
        if row is None:
            return None
        if self._model is None or self._model[0] != row["id"]:
            pd = worker.load_data(self.store, self.project)
            model = worker.load_model(self.store, self.project, row, pd).to(self.device)
            self._model = (row["id"], model, pd)
        return row, self._model[1], self._model[2]

    def overlay(self, image_id: ImageId, kind: str) -> Path:
        """The cached PNG overlay ``kind`` (prediction, labels, uncertainty) of an image from the current model."""
        img = self.store.image(image_id)
        with self.lock:
            current = self.model()
            if current is None:
                raise StoreError("no model has been trained yet; POST /api/train once some images are labelled", 404)
            row, model, _ = current
            path = self.root / "cache" / f"model_{row['id']:04d}" / f"{image_id}_{kind}.png"
            if not path.exists():
                cfg = self.project.sim_config()
                engine = worker.Engine(cfg)
                x = imaging.model_input(imaging.decode((self.root / img["file"]).read_bytes(), worker.NO_CAP))
                probs, maps = engine.maps(model, [x], cfg.seed, self.device)
                probs, unc = np.asarray(probs[0]), np.asarray(maps[0])
                data = {"prediction": imaging.prediction_png, "labels": imaging.labels_png}.get(kind)
                png = data(probs) if data else imaging.uncertainty_png(unc)
                from activeseg.serve.store import write_atomic

                write_atomic(path, png)
        return path

    def ranking_for(self, strategy: str) -> int | None:
        """The current model's id, its ranking for ``strategy`` computed now if it was not yet."""
        with self.lock:
            current = self.model()
            if current is None:
                return None
            row, model, pd = current
            if not self.store.has_ranking(row["id"], strategy):
                pd = worker.load_data(self.store, self.project)  # labels may have come in since the model
                self.store.add_ranking(row["id"], strategy, worker.rank(self.project, model, pd, strategy,
                                                                        self.project.seed, self.device))
            return row["id"]

    # -- training --------------------------------------------------------------------------------------
    def start_training(self, annotator: str) -> dict:
        if not self.store.final_labels():
            raise StoreError("no image has a label yet; PUT /api/labels/{id} a mask first", 409)
        job = self.store.start_job(annotator)
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=worker.run_job, args=(str(self.root), self.url, job["id"], self.train_threads),
                           daemon=True)
        proc.start()
        self.store.update_job(job["id"], pid=proc.pid)
        self.process = proc

        def watch():
            proc.join()
            latest = self.store.job(job["id"])
            if latest and latest["state"] == "running":  # the process died without saying so
                self.store.update_job(job["id"], state="failed",
                                      message=f"the training process ended with exit code {proc.exitcode}")

        threading.Thread(target=watch, daemon=True).start()
        return self.store.job(job["id"])


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, at most ``cap`` bytes (413 beyond, whatever the client declared)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise UploadError(f"the upload is {int(declared):,} bytes, over this project's cap of {cap:,} "
                          "(max_upload_bytes in project.toml)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise UploadError(f"the upload is over this project's cap of {cap:,} bytes (max_upload_bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(root: str | Path, url: str | None = None, train_threads: int = 0) -> FastAPI:
    """The app of the project in ``root`` (created before by :func:`activeseg.serve.cli.open_project`); its
    store is the database the project was created with (``url``, when given, must be that one)."""
    srv = Server(Path(root), url, train_threads)
    app = FastAPI(title="activeseg annotation server", version="1",
                  description="Active learning for segmentation: leases the most informative unlabelled images "
                              "to annotators, stores their masks, retrains and re-scores.")
    app.state.server = srv
    bearer = HTTPBearer(auto_error=False)

    def annotator(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        srv.project.reload_annotators()
        if creds is None:
            raise HTTPException(401, "missing token: send `Authorization: Bearer TOKEN` (tokens are in the "
                                     "project's project.toml, [annotators])", headers={"WWW-Authenticate": "Bearer"})
        for name, token in srv.project.annotators.items():
            if secrets.compare_digest(creds.credentials.encode(), str(token).encode()):
                return name
        raise HTTPException(401, "unknown token; ask the project's admin for yours (project.toml, [annotators])",
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StoreError)
    @app.exception_handler(UploadError)
    async def _refused(_request, err):
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(ProjectError)
    async def _bad_name(_request, err):
        return JSONResponse({"detail": str(err)}, status_code=400)

    # -- pages -----------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/project")
    def project_info(who: str = Depends(annotator)):
        from activeseg.acquisition import whole_item_strategies
        from activeseg.report.heatmaps import class_table

        p = srv.project
        colours = class_table(p.classes)
        return {"annotator": who, "classes": p.classes, "class_names": list(p.names()), "strategy": p.strategy,
                "class_colours": ["#" + "".join(f"{round(255 * v):02x}" for v in rgb) for rgb in colours],
                "strategies": whole_item_strategies(), "lease_seconds": p.lease_seconds,
                "max_upload_bytes": p.max_upload_bytes, "max_pixels": p.max_pixels}

    # -- images ----------------------------------------------------------------------------------------
    @app.get("/api/images")
    def list_images(who: str = Depends(annotator)):
        keep = ("id", "name", "status", "height", "width", "channels", "split", "leased_to", "lease_expires")
        return {"images": [{k: img.get(k) for k in keep} for img in srv.store.images()]}

    @app.post("/api/images", status_code=201)
    async def upload_image(request: Request, file: UploadFile = File(...), who: str = Depends(annotator)):
        name = check_name(file.filename or "")
        cap = srv.project.max_upload_bytes
        data = await file.read(cap + 1)
        if len(data) > cap:
            raise UploadError(f"the upload is over this project's cap of {cap:,} bytes (max_upload_bytes)", 413)
        arr = imaging.decode(data, srv.project.max_pixels)
        return srv.store.add_image(name, data, arr.shape)

    @app.get("/api/images/{image_id}", response_class=Response, responses={200: PNG})
    def image_png(image_id: ImageId, who: str = Depends(annotator)):
        img = srv.store.image(image_id)
        path = srv.root / "cache" / "images" / f"{image_id}.png"
        if not path.exists():
            from activeseg.serve.store import write_atomic

            arr = imaging.decode((srv.root / img["file"]).read_bytes(), worker.NO_CAP)
            write_atomic(path, imaging.display_png(imaging.model_input(arr)))
        return FileResponse(path, media_type="image/png")

    @app.get("/api/images/{image_id}/prediction", response_class=Response, responses={200: PNG})
    def prediction(image_id: ImageId, format: str = Query("overlay", pattern="^(overlay|labels)$"),
                   who: str = Depends(annotator)):
        """The current model's prediction: a class-colour overlay, or (``format=labels``) the class map."""
        kind = "prediction" if format == "overlay" else "labels"
        return FileResponse(srv.overlay(image_id, kind), media_type="image/png")

    @app.get("/api/images/{image_id}/uncertainty", response_class=Response, responses={200: PNG})
    def uncertainty(image_id: ImageId, who: str = Depends(annotator)):
        return FileResponse(srv.overlay(image_id, "uncertainty"), media_type="image/png")

    # -- the queue -------------------------------------------------------------------------------------
    @app.get("/api/next")
    def next_items(n: int = Query(1, ge=1, le=100), strategy: str | None = Query(None, max_length=40),
                   who: str = Depends(annotator)):
        from activeseg.acquisition import whole_item_strategies

        strategy = strategy or srv.project.strategy
        valid = whole_item_strategies()
        if strategy not in valid:
            raise HTTPException(400, f"unknown strategy {strategy!r} for a queue of whole images; valid: "
                                f"{', '.join(valid)} (region strategies run in simulate and suggest)")
        model_id = srv.ranking_for(strategy)
        items = srv.store.lease_next(who, n, model_id, strategy, srv.project.seed, srv.project.lease_seconds)
        out = {"items": items, "model_id": model_id, "strategy": strategy if model_id else "random (no model yet)"}
        if not items:
            out["message"] = "no unlabelled image is free: every image is labelled or leased to someone"
        return out

    # -- labels ----------------------------------------------------------------------------------------
    @app.put("/api/labels/{image_id}", openapi_extra=LABEL_BODY)
    async def put_label(image_id: ImageId, request: Request, model_id: int | None = Query(None, ge=1, le=MAX_ID),
                        who: str = Depends(annotator)):
        """Store a mask as the image's new final label version."""
        img = srv.store.image(image_id)
        data = await read_body(request, srv.project.max_upload_bytes)
        if not data:
            raise UploadError("the request has no body; send the mask as a PNG or TIFF file", 422)
        mask = imaging.mask_from(data, (img["height"], img["width"]), srv.project.classes, srv.project.max_pixels)
        return srv.store.put_label(image_id, who, imaging.png(mask), model_id, srv.project.val_fraction)

    @app.get("/api/labels/{image_id}", response_class=Response, responses={200: PNG})
    def get_label(image_id: ImageId, version: int | None = Query(None, ge=1, le=MAX_ID), who: str = Depends(annotator)):
        """The final mask (or ``version``) as a one-channel PNG of class labels."""
        label = srv.store.label(image_id, version)
        return FileResponse(srv.root / label["file"], media_type="image/png",
                            headers={"X-Label-Version": str(label["version"]), "X-Annotator": label["annotator"]})

    @app.get("/api/labels/{image_id}/versions")
    def label_versions(image_id: ImageId, who: str = Depends(annotator)):
        srv.store.image(image_id)
        keep = ("version", "annotator", "created_at", "model_id", "final", "sha256")
        return {"versions": [{k: v[k] for k in keep} for v in srv.store.label_versions(image_id)]}

    # -- training --------------------------------------------------------------------------------------
    @app.post("/api/train", status_code=202)
    def train(who: str = Depends(annotator)):
        return srv.start_training(who)

    @app.get("/api/train")
    def train_state(who: str = Depends(annotator)):
        job = srv.store.job()
        return job if job is not None else {"state": "idle", "message": "no training job has run yet"}

    @app.get("/api/metrics")
    def metrics(who: str = Depends(annotator)):
        keep = ("id", "labeled", "val_images", "val_dice", "val_miou", "created_at", "seconds", "sha256")
        return {"rounds": [{"round": i, **{k: m[k] for k in keep}} for i, m in enumerate(srv.store.models(), 1)]}

    return app
