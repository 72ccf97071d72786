"""The server's store under stress: concurrent annotators, a SIGKILL in the middle of a stream of
submissions, restarts after a crash and expiring leases, on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import tomllib

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_util import TINY_TRAIN, blob_folder, free_port, png_bytes, process_server, thread_server, wait_healthy
from serve_util import auth as _auth

from activeseg.serve.cli import open_project
from activeseg.serve.store import Store, StoreError, empty_database

PG_URL = os.environ.get("ACTIVESEG_TEST_PG_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> str:
    """The store's URL: '' (SQLite in the project folder) or a PostgreSQL database, emptied first, given by
    ACTIVESEG_TEST_PG_URL (``make test`` and ``.ci/run`` start a local server with ``.ci/postgres``)."""
    if request.param == "sqlite":
        return ""
    if not PG_URL:
        pytest.fail("the PostgreSQL store's tests need ACTIVESEG_TEST_PG_URL=postgresql://user:password@host/db; "
                    "`make test` sets it from .ci/postgres (Debian's postgresql), or run `export "
                    "ACTIVESEG_TEST_PG_URL=$(.ci/postgres)` first")
    empty_database(PG_URL)
    return PG_URL


def test_restart_moves_unacknowledged_files_aside(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=1)
    root = tmp_path / "p"
    open_project(root, images, masks)
    (root / "labels" / "1" / "v0002.png").write_bytes(b"written, never committed")
    (root / "labels" / "1" / ".v0003.png.123.tmp").write_bytes(b"half")
    store = Store(root)
    done = store.recover()
    assert done["orphans_moved"] == ["labels/1/v0002.png"]
    assert done["temp_files_removed"] == ["labels/1/.v0003.png.123.tmp"]
    moved = list((root / "orphans").rglob("v0002.png"))
    assert len(moved) == 1 and moved[0].read_bytes() == b"written, never committed"
    assert store.integrity_check() == [] and len(store.final_labels()) == 1
    store.close()


def test_concurrent_annotators_never_share_an_item(tmp_path, database):
    """8 annotators at once, each asking for items and labelling them: every label stored once."""
    images, _ = blob_folder(tmp_path / "lab", n=48)
    root = tmp_path / "project"
    _, token, _ = open_project(root, images, None, url=database or None, train=dict(TINY_TRAIN), lease_seconds=600)
    assert tomllib.loads((root / "project.toml").read_text())["project"].get("database", "") == database
    tokens = {f"ann{i}": f"token-of-annotator-{i:02d}-xxxx" for i in range(8)}
    (root / "project.toml").write_text((root / "project.toml").read_text()
                                       + "".join(f'{k} = "{v}"\n' for k, v in tokens.items()))
    per_annotator = 5
    sent: dict[str, list[int]] = {}
    errors: list[str] = []
    with thread_server(root) as (base, _):
        barrier = threading.Barrier(len(tokens))

        def annotate(name, tok):
            got = []
            with httpx.Client(timeout=60, headers=_auth(tok)) as c:
                barrier.wait()
                for _ in range(per_annotator):
                    items = c.get(f"{base}/api/next?n=1").json()["items"]
                    if not items:
                        break
                    item = items[0]
                    mask = np.zeros((48, 48), np.uint8)
                    mask[: 1 + item["id"] % 40] = 1
                    r = c.put(f"{base}/api/labels/{item['id']}", content=png_bytes(mask))
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text}")
                    got.append(item["id"])
            sent[name] = got

        threads = [threading.Thread(target=annotate, args=kv) for kv in tokens.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert errors == []
    all_ids = [i for ids in sent.values() for i in ids]
    assert len(all_ids) == 8 * per_annotator and len(set(all_ids)) == len(all_ids)  # nothing leased twice
    store = Store(root, database or None)
    labels = store.final_labels()
    assert sorted(r["id"] for r in labels) == sorted(all_ids)
    assert all(len(store.label_versions(i)) == 1 for i in all_ids)  # no duplicated label
    by = {v["image_id"]: v["annotator"] for i in all_ids for v in store.label_versions(i)}
    assert all(by[i] == name for name, ids in sent.items() for i in ids)
    assert store.integrity_check() == []
    store.close()


def test_sigkill_during_submissions_loses_nothing_acknowledged(tmp_path, database):
    images, _ = blob_folder(tmp_path / "lab", n=60)
    root = tmp_path / "project"
    _, token, _ = open_project(root, images, None, url=database or None, train=dict(TINY_TRAIN))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = process_server(root, port, log)
    acked: dict[int, int] = {}  # image id -> the version the server acknowledged
    try:
        wait_healthy(base, proc=proc)
        ids = [i["id"] for i in httpx.get(f"{base}/api/images", headers=_auth(token)).json()["images"]]
        stop = threading.Event()

        def stream():
            with httpx.Client(timeout=10, headers=_auth(token)) as c:
                for n, image_id in enumerate(ids):
                    if stop.is_set():
                        return
                    mask = np.zeros((48, 48), np.uint8)
                    mask[: 1 + n % 47] = 1
                    try:
                        r = c.put(f"{base}/api/labels/{image_id}", content=png_bytes(mask))
                    except httpx.HTTPError:
                        return  # the server is gone: this one was never acknowledged
                    if r.status_code == 200:
                        acked[image_id] = r.json()["version"]

        t = threading.Thread(target=stream)
        t.start()
        deadline = time.time() + 60
        while len(acked) < 15 and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        t.join(timeout=30)
        assert len(acked) >= 15, log.read_text()[-2000:]
        # restart: every acknowledged label is there, the store is consistent
        proc = process_server(root, port, log)
        wait_healthy(base, proc=proc)
        with httpx.Client(timeout=30, headers=_auth(token)) as c:
            status = {i["id"]: i["status"] for i in c.get(f"{base}/api/images").json()["images"]}
            for image_id, version in acked.items():
                assert status[image_id] == "labeled"
                r = c.get(f"{base}/api/labels/{image_id}")
                assert r.status_code == 200 and r.headers["x-label-version"] == str(version)
                n = ids.index(image_id)
                assert np.asarray(Image.open(io.BytesIO(r.content)))[: 1 + n % 47].all()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    store = Store(root, database or None)
    assert store.integrity_check() == []
    labelled = {r["id"] for r in store.final_labels()}
    assert set(acked) <= labelled and len(labelled) <= len(acked) + 1  # at most the one in flight
    leftovers = [p for p in (root / "labels").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    store.close()


def test_expired_lease_returns_the_image_to_the_queue(tmp_path):
    images, _ = blob_folder(tmp_path / "lab", n=3)
    root = tmp_path / "project"
    open_project(root, images, None)
    store = Store(root)
    first = store.lease_next("ann", 3, None, "bald", 0, lease_seconds=0.2)
    assert len(first) == 3 and store.lease_next("bob", 1, None, "bald", 0, 60) == []  # all leased
    assert {i["status"] for i in store.images()} == {"leased"}
    time.sleep(0.3)
    again = store.lease_next("bob", 3, None, "bald", 0, 60)
    assert sorted(i["id"] for i in again) == sorted(i["id"] for i in first)
    assert {i["leased_to"] for i in store.images()} == {"bob"}
    with pytest.raises(StoreError, match="leased to 'bob'"):  # ann's lease is gone: bob's holds
        store.put_label(first[0]["id"], "ann", png_bytes(np.zeros((48, 48), np.uint8)), None, 0.2)
    store.close()
