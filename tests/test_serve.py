"""The annotation server through a real uvicorn on 127.0.0.1 and an HTTP client: every endpoint, every
refusal, training in its worker process, leases under concurrency, and a SIGKILL in the middle of a stream
of submissions."""

from __future__ import annotations

import io
import json
import os
import time
import tomllib

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_util import TINY_TRAIN, png_bytes, thread_server
from serve_util import auth as _auth

from activeseg.serve.cli import open_project
from activeseg.serve.project import ProjectError
from activeseg.serve.store import Store, StoreError, database_url


def _wait_job(client, base, token, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"{base}/api/train", headers=_auth(token)).json()
        if job["state"] != "running":
            return job
        time.sleep(0.5)
    raise AssertionError(f"training did not end in {timeout} s: {job}")


@pytest.fixture
def lab_project(tmp_path, lab_folder):
    """A project from real nuclei slices (7 TIFFs, masks for 3 as {0, 255} PNGs)."""
    images, masks = lab_folder(tmp_path / "lab", n_labeled=3)
    root = tmp_path / "project"
    project, token, added = open_project(root, images, masks, train=dict(TINY_TRAIN), lease_seconds=600)
    assert token and added == {"images": 7, "labels": 3}
    return root, token, images


def test_project_file_and_reopen_add_only_new_images(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=2)
    root = tmp_path / "p"
    project, token, added = open_project(root, images, masks, train={"patch_size": 32})
    doc = tomllib.loads((root / "project.toml").read_text())
    assert doc["annotators"] == {"admin": token} and doc["project"]["classes"] == 2
    assert doc["train"] == {"patch_size": 32}
    again, token2, added2 = open_project(root, images, masks)
    assert token2 is None and added2 == {"images": 0, "labels": 0}
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(images / "new_one.png")
    _, _, added3 = open_project(root, images, None)
    assert added3 == {"images": 1, "labels": 0}
    store = Store(root)
    assert len(store.images()) == 8 and store.integrity_check() == []
    store.close()
    # the store is the one the project was created with: another --db is refused, nothing is touched
    with pytest.raises(ProjectError, match="created with SQLite in the project folder"):
        open_project(root, images, None, url=f"sqlite:///{tmp_path / 'other.db'}")
    assert not (tmp_path / "other.db").exists()
    with pytest.raises(StoreError, match="SQLite .* or PostgreSQL"):
        database_url("mysql://u@h/db")
    with pytest.raises(ProjectError, match="'cereals' picks regions of images"):
        open_project(tmp_path / "q", images, masks, strategy="cereals")
    assert not (tmp_path / "q" / "project.toml").exists()


def test_every_endpoint_and_training_round(lab_project):
    root, token, _ = lab_project
    h = _auth(token)
    with thread_server(root) as (base, _app), httpx.Client(timeout=120) as c:
        assert c.get(f"{base}/api/health").json() == {"status": "ok"}
        assert c.get(f"{base}/openapi.json").json()["info"]["title"].startswith("activeseg")
        assert c.get(f"{base}/docs").status_code == 200
        page = c.get(f"{base}/")
        assert page.status_code == 200 and "activeseg" in page.text
        assert c.get(f"{base}/static/app.js").status_code == 200
        info = c.get(f"{base}/api/project", headers=h).json()
        assert info["annotator"] == "admin" and info["classes"] == 2 and "bald" in info["strategies"]

        imgs = c.get(f"{base}/api/images", headers=h).json()["images"]
        assert [i["status"] for i in imgs].count("labeled") == 3 and len(imgs) == 7
        assert {i["height"] for i in imgs} == {96} and {i["width"] for i in imgs} == {100}
        png = c.get(f"{base}/api/images/{imgs[0]['id']}", headers=h)
        assert png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (100, 96)
        # no model yet: random (seeded) order, overlays answer 404 saying what to do
        first = c.get(f"{base}/api/next?n=2", headers=h).json()
        assert len(first["items"]) == 2 and first["model_id"] is None
        assert all(i["score"] is None and i["lease_expires"] > time.time() for i in first["items"])
        r = c.get(f"{base}/api/images/{first['items'][0]['id']}/prediction", headers=h)
        assert r.status_code == 404 and "POST /api/train" in r.json()["detail"]

        # train in the worker process; a second request while it runs gets 409 naming the job
        job = c.post(f"{base}/api/train", headers=h)
        assert job.status_code == 202, job.text
        second = c.post(f"{base}/api/train", headers=h)
        assert second.status_code in (409, 202)
        if second.status_code == 409:
            assert f"job {job.json()['id']}" in second.json()["detail"]
        done = _wait_job(c, base, token)
        if second.status_code == 202:  # the first one had already ended
            done = _wait_job(c, base, token)
        assert done["state"] == "done", done
        rounds = c.get(f"{base}/api/metrics", headers=h).json()["rounds"]
        assert rounds[-1]["labeled"] == 3 and rounds[-1]["val_images"] == 1
        assert 0.0 <= rounds[-1]["val_dice"] <= 1.0

        # the queue now follows the model's bald scores, best first; my own leases come back first
        nxt = c.get(f"{base}/api/next?n=4&strategy=bald", headers=h).json()
        ids = [i["id"] for i in nxt["items"]]
        assert nxt["model_id"] == rounds[-1]["id"] and len(ids) == 4
        assert ids[:2] == sorted(ids[:2], key=[i["id"] for i in first["items"]].index)
        ranked = [i for i in nxt["items"][2:]]
        assert [i["score"] for i in ranked] == sorted((i["score"] for i in ranked), reverse=True)
        # another strategy is ranked on demand with the same model
        other = c.get(f"{base}/api/next?n=4&strategy=max_entropy", headers=h).json()
        assert set(i["id"] for i in other["items"]) == set(ids)  # all four are mine already
        for kind in ("prediction", "uncertainty", "prediction?format=labels"):
            r = c.get(f"{base}/api/images/{ids[0]}/{kind}", headers=h)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", kind
            arr = np.asarray(Image.open(io.BytesIO(r.content)))
            assert arr.shape[:2] == (96, 100)
            if kind.endswith("labels"):
                assert arr.ndim == 2 and set(np.unique(arr)) <= {0, 1}

        # a label: stored, versioned, final; the item leaves the queue
        mask = np.zeros((96, 100), np.uint8)
        mask[10:30, 20:50] = 1
        put = c.put(f"{base}/api/labels/{ids[0]}?model_id={nxt['model_id']}", content=png_bytes(mask),
                    headers={**h, "Content-Type": "image/png"})
        assert put.status_code == 200, put.text
        assert put.json()["version"] == 1 and put.json()["final"] and put.json()["model_id"] == nxt["model_id"]
        mask2 = mask.copy()
        mask2[40:60, 40:60] = 255  # not labelled
        put2 = c.put(f"{base}/api/labels/{ids[0]}", content=png_bytes(mask2), headers=h)
        assert put2.json()["version"] == 2
        final = np.asarray(Image.open(io.BytesIO(c.get(f"{base}/api/labels/{ids[0]}", headers=h).content)))
        older = np.asarray(Image.open(io.BytesIO(c.get(f"{base}/api/labels/{ids[0]}?version=1", headers=h).content)))
        assert np.array_equal(final, mask2) and np.array_equal(older, mask)
        versions = c.get(f"{base}/api/labels/{ids[0]}/versions", headers=h).json()["versions"]
        assert [v["final"] for v in versions] == [False, True]
        status = {i["id"]: i["status"] for i in c.get(f"{base}/api/images", headers=h).json()["images"]}
        assert status[ids[0]] == "labeled"
        assert ids[0] not in [i["id"] for i in c.get(f"{base}/api/next?n=7", headers=h).json()["items"]]

        # upload a new image
        new = np.random.default_rng(0).integers(0, 255, (40, 52), dtype=np.uint8)
        up = c.post(f"{base}/api/images", headers=h, files={"file": ("fresh.png", png_bytes(new), "image/png")})
        assert up.status_code == 201, up.text
        assert (up.json()["height"], up.json()["width"]) == (40, 52)
        dup = c.post(f"{base}/api/images", headers=h, files={"file": ("fresh.png", png_bytes(new), "image/png")})
        assert dup.status_code == 409 and "already" in dup.json()["detail"]

        # exhausted pool: 200, empty list, a message
        c.get(f"{base}/api/next?n=100", headers=h)
        bob = c.get(f"{base}/api/next?n=5", headers={"Authorization": "Bearer " + "x" * 20})
        assert bob.status_code == 401
    store = Store(root)
    assert store.integrity_check() == []
    store.close()


def test_refusals_say_what_is_wrong(lab_project):
    root, token, _ = lab_project
    h = _auth(token)
    with thread_server(root) as (base, app), httpx.Client(timeout=60) as c:
        # authentication
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic abc"}):
            r = c.get(f"{base}/api/images", headers=headers)
            assert r.status_code == 401 and "token" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
        # an annotator added to project.toml is accepted without a restart
        text = (root / "project.toml").read_text() + 'bob = "bob-token-0123456789abcdef"\n'
        time.sleep(0.01)
        (root / "project.toml").write_text(text)
        assert c.get(f"{base}/api/project", headers=_auth("bob-token-0123456789abcdef")).json()["annotator"] == "bob"

        imgs = c.get(f"{base}/api/images", headers=h).json()["images"]
        free = next(i for i in imgs if i["status"] == "unlabeled")
        url = f"{base}/api/labels/{free['id']}"
        ok = np.zeros((96, 100), np.uint8)
        cases = [
            (np.zeros((10, 10), np.uint8), 422, "image is 96×100"),
            (np.full((96, 100), 7, np.uint8), 422, "value(s) [7]"),
            (np.dstack([ok, ok + 1, ok]), 422, "colour image"),
        ]
        for arr, status, words in cases:
            r = c.put(url, content=png_bytes(arr), headers=h)
            assert r.status_code == status and words in r.json()["detail"], r.text
        r = c.put(url, content=b"GIF89a not an image", headers=h)
        assert r.status_code == 415 and "neither PNG nor TIFF" in r.json()["detail"]
        r = c.put(url, content=b"\x89PNG\r\n\x1a\ngarbage", headers=h)
        assert r.status_code == 422 and "cannot be decoded" in r.json()["detail"]
        assert c.put(url, content=b"", headers=h).status_code == 422
        assert c.put(f"{base}/api/labels/99999", content=png_bytes(ok), headers=h).status_code == 404
        assert c.get(f"{base}/api/labels/{free['id']}", headers=h).status_code == 404
        assert c.get(f"{base}/api/images/99999", headers=h).status_code == 404
        assert c.get(f"{base}/api/next?strategy=nonsense", headers=h).status_code == 400
        regions = c.get(f"{base}/api/next?strategy=cereals", headers=h)  # a region strategy: not for this queue
        assert regions.status_code == 400 and "region strategies run in simulate and suggest" in regions.text
        assert "cereals" not in c.get(f"{base}/api/project", headers=h).json()["strategies"]
        assert c.get(f"{base}/api/next?n=0", headers=h).status_code == 422

        # a lease held by someone else
        lease = c.get(f"{base}/api/next?n=1", headers=_auth("bob-token-0123456789abcdef")).json()["items"][0]
        r = c.put(f"{base}/api/labels/{lease['id']}", content=png_bytes(ok), headers=h)
        assert r.status_code == 409 and "leased to 'bob'" in r.json()["detail"]

        # uploads: names, size cap, pixel cap (a decompression bomb: small file, huge image)
        srv = app.state.server
        for name in ("../evil.png", "a/b.png", "..png", "x.exe", ".hidden.png", ""):
            r = c.post(f"{base}/api/images", headers=h, files={"file": (name, png_bytes(ok), "image/png")})
            assert r.status_code in (400, 422), (name, r.status_code)
        assert not (root.parent / "evil.png").exists()
        srv.project.max_pixels = 1_000_000
        bomb = png_bytes(np.zeros((2000, 2000), np.uint8))
        assert len(bomb) < 20_000
        r = c.post(f"{base}/api/images", headers=h, files={"file": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 413 and "4,000,000 pixels" in r.json()["detail"]
        r = c.put(url, content=bomb, headers=h)
        assert r.status_code == 413
        srv.project.max_upload_bytes = 5_000
        big = png_bytes(np.random.default_rng(0).integers(0, 255, (96, 100), dtype=np.uint8))
        r = c.put(url, content=big, headers=h)
        assert r.status_code == 413 and "cap" in r.json()["detail"]
        r = c.post(f"{base}/api/images", headers=h, files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413
        # training with no new model is refused clearly before any label ... (labels exist here: 202)
        names = {i["name"] for i in c.get(f"{base}/api/images", headers=h).json()["images"]}
        assert not names & {"bomb.png", "big.png", "evil.png"}
    store = Store(root)
    assert store.integrity_check() == []
    store.close()


def test_no_5xx_over_the_openapi_schema(lab_project):
    """Property test: schemathesis generates requests for every operation of the schema; none answers 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    root, token, _ = lab_project
    failures = []

    def run(operation, base):
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(base_url=base, headers=_auth(token), timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        check()

    with thread_server(root) as (base, _app):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [op.ok() for op in schema.get_all_operations()]
        tried = set()
        for operation in operations:
            if operation.path == "/api/train" and operation.method.upper() == "POST":
                continue  # real training jobs are started (and refused while running) above
            tried.add(f"{operation.method.upper()} {operation.path}")
            run(operation, base)
    assert {"PUT /api/labels/{image_id}", "POST /api/images", "GET /api/next"} <= tried
    assert failures == [], json.dumps(failures[:5], indent=1)


def test_annotator_page_in_headless_chromium(lab_project, tmp_path):
    """Open the queue, paint on the canvas, submit; the item leaves the queue and the label is stored."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):
        pytest.fail("the annotator page's test needs Chromium and chromedriver on PATH "
                    "(Debian: apt-get install chromium chromium-driver)")
    root, token, _ = lab_project
    h = _auth(token)
    with thread_server(root) as (base, _app), httpx.Client(timeout=120) as c:
        assert c.post(f"{base}/api/train", headers=h).status_code == 202
        assert _wait_job(c, base, token)["state"] == "done"
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1400"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        wait = WebDriverWait(driver, 60)
        try:
            driver.get(f"{base}/#token={token}")
            wait.until(lambda d: d.find_element(By.ID, "app").is_displayed())
            assert "admin" in driver.find_element(By.ID, "who").text
            wait.until(lambda d: "labelled" in d.find_element(By.ID, "counts").text)
            driver.find_element(By.ID, "next").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue li")) >= 1)
            first = driver.find_elements(By.CSS_SELECTOR, "#queue li")[0]
            image_id = int(first.get_attribute("data-id"))
            first.click()
            wait.until(lambda d: d.find_element(By.ID, "submit").is_enabled())
            driver.find_element(By.ID, "show-uncertainty").click()
            # the editor starts from the model's prediction: the canvas holds its class map
            canvas = driver.find_element(By.ID, "mask-canvas")
            size = driver.execute_script("const c = arguments[0]; return [c.width, c.height, c.clientWidth];", canvas)
            assert size[:2] == [100, 96] and size[2] > 200
            scale = size[2] / 100
            ActionChains(driver).move_to_element_with_offset(canvas, 0, 0).click_and_hold() \
                .move_by_offset(int(12 * scale), 0).move_by_offset(int(12 * scale), 0).release().perform()
            shot = tmp_path / "serve_page.png"
            driver.save_screenshot(str(shot))
            if os.environ.get("ACTIVESEG_SCREENSHOT"):
                shutil.copy(shot, os.environ["ACTIVESEG_SCREENSHOT"])
            driver.find_element(By.ID, "submit").click()
            wait.until(lambda d: "stored version 1" in d.find_element(By.ID, "submit-msg").text)
            queue_ids = [int(li.get_attribute("data-id")) for li in driver.find_elements(By.CSS_SELECTOR, "#queue li")]
            assert image_id not in queue_ids
            wait.until(lambda d: "1 labelled" not in d.find_element(By.ID, "counts").text)
            assert driver.find_element(By.ID, "rounds").find_elements(By.CSS_SELECTOR, "tbody tr")
        finally:
            driver.quit()
        label = c.get(f"{base}/api/labels/{image_id}", headers=h)
        assert label.status_code == 200 and label.headers["x-annotator"] == "admin"
        mask = np.asarray(Image.open(io.BytesIO(label.content)))
        assert mask.shape == (96, 100)
        assert (mask[48, 52:72] == 1).all()  # the brush stroke from the centre to the right, class 1
        versions = c.get(f"{base}/api/labels/{image_id}/versions", headers=h).json()["versions"]
        assert versions[0]["model_id"] is not None  # it started from the model's suggestion
        status = {i["id"]: i["status"] for i in c.get(f"{base}/api/images", headers=h).json()["images"]}
        assert status[image_id] == "labeled"


def test_tiff_masks_and_label_maps_with_unlabelled_pixels(tmp_path, three_class_folder):
    """A 3-class project from label maps with classes.json; a TIFF mask with 255 (not labelled) pixels."""
    import tifffile

    images, masks = three_class_folder(tmp_path / "lab", n_labeled=2)
    root = tmp_path / "project"
    project, token, added = open_project(root, images, masks, train=dict(TINY_TRAIN))
    assert project.classes == 3 and project.names() == ("background", "interior", "boundary")
    h = _auth(token)
    with thread_server(root) as (base, _app), httpx.Client(timeout=60) as c:
        info = c.get(f"{base}/api/project", headers=h).json()
        assert info["class_names"] == ["background", "interior", "boundary"] and len(info["class_colours"]) == 3
        free = next(i for i in c.get(f"{base}/api/images", headers=h).json()["images"] if i["status"] == "unlabeled")
        mask = np.full((96, 100), 255, np.uint8)
        mask[10:20, 10:20], mask[20:30, 10:20], mask[30:40, 10:20] = 0, 1, 2
        buf = io.BytesIO()
        tifffile.imwrite(buf, mask)
        url = f"{base}/api/labels/{free['id']}"
        r = c.put(url, content=buf.getvalue(), headers={**h, "Content-Type": "image/tiff"})
        assert r.status_code == 200, r.text
        stored = np.asarray(Image.open(io.BytesIO(c.get(f"{base}/api/labels/{free['id']}", headers=h).content)))
        assert np.array_equal(stored, mask)
        bad = mask.copy()
        bad[0, 0] = 3
        buf = io.BytesIO()
        tifffile.imwrite(buf, bad)
        r = c.put(f"{base}/api/labels/{free['id']}", content=buf.getvalue(), headers=h)
        assert r.status_code == 422 and "value(s) [3]" in r.json()["detail"] and "0..2" in r.json()["detail"]
