"""``activeseg serve``: create or reopen a project, take in a folder's new images (and masks), run the server."""

from __future__ import annotations

from pathlib import Path

from activeseg.serve.project import PROJECT_FILE, Project, ProjectError, check_name
from activeseg.serve.store import Store

IMPORTER = "import"  # the annotator name of masks that came with --masks


def open_project(root: str | Path, images: str | Path | None = None, masks: str | Path | None = None,
                 classes: int | None = None, url: str | None = None, **settings) -> tuple[Project, str | None, dict]:
    """The project in ``root``, created on first use, with the new files of ``images`` (and their masks
    from ``masks``) added. Returns the project, the admin token when it was just created (else None) and
    what was added. Every image and mask is checked before anything is stored."""
    from activeseg.data.folder import read_folder
    from activeseg.serve.imaging import decode, png

    root = Path(root)
    exists = (root / PROJECT_FILE).exists()
    data = None
    if images is not None:
        data = read_folder(images, masks, require_masks=False, classes=classes if not exists else None)
    if exists:
        project, token = Project.load(root), None
        if data is not None and data.num_classes != project.classes and any(m is not None for m in data.masks):
            raise ProjectError(f"the masks in {masks} have {data.num_classes} classes, the project {project.classes}")
    else:
        if data is None:
            raise ProjectError(f"{root} holds no project yet; give --images FOLDER to create it")
        names = tuple(data.class_names or ())
        project, token = Project.create(root, classes=data.num_classes, class_names=names, database=url or "",
                                        **settings)
    store = Store(root, project.database_for(url))
    added = {"images": 0, "labels": 0}
    try:
        if data is not None:
            known = store.image_names()
            for i, path in enumerate(data.paths):
                name = check_name(path.name)
                if name in known:
                    continue
                raw = path.read_bytes()
                img = store.add_image(name, raw, decode(raw, project.max_pixels).shape)
                added["images"] += 1
                if data.masks[i] is not None:
                    store.put_label(img["id"], IMPORTER, png(data.masks[i]), None, project.val_fraction)
                    added["labels"] += 1
    finally:
        store.close()
    return project, token, added


def serve(root: str | Path, images=None, masks=None, host: str = "127.0.0.1", port: int = 8000,
          url: str | None = None, classes: int | None = None, train_threads: int = 0, **settings) -> None:
    import uvicorn

    from activeseg.serve.app import create_app

    project, token, added = open_project(root, images, masks, classes, url, **settings)
    app = create_app(root, train_threads=train_threads)
    base = f"http://{host}:{port}/"
    print(f"activeseg serve: project {Path(root).resolve()} ({project.classes} classes, strategy {project.strategy}); "
          f"added {added['images']} image(s), {added['labels']} mask(s)")
    rec = app.state.server.recovered
    if rec["jobs_interrupted"] or rec["orphans_moved"]:
        print(f"activeseg serve: recovered from an interrupted run: {rec['jobs_interrupted']} training job(s) marked "
              f"failed, {len(rec['orphans_moved'])} file(s) never acknowledged moved to {Path(root) / 'orphans'}")
    if token:
        print(f"activeseg serve: created the project; annotator 'admin' has the token {token}\n"
              f"  (kept in {Path(root) / PROJECT_FILE}; add annotators under [annotators])")
        print(f"open {base}#token={token}", flush=True)
    else:
        print(f"open {base} (tokens: {Path(root) / PROJECT_FILE})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
