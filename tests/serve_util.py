"""Helpers of the server tests and the load benchmark: projects on disk and real uvicorn servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TINY_TRAIN = {"depth": 2, "base_filters": 4, "steps": 8, "min_steps": 4, "batch_size": 4, "eval_every": 4,
              "mc_samples": 3, "patch_size": 32, "score_batch_size": 8, "device": "cpu"}


def auth(token: str) -> dict:
    """The header of an annotator's requests."""
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(arr: np.ndarray) -> bytes:
    from activeseg.serve.imaging import png

    return png(arr)


def blob_folder(root: Path, n: int, n_labeled: int = 0, size: int = 48, seed: int = 0) -> tuple[Path, Path]:
    """``n`` synthetic gray PNGs of bright discs (masks for the first ``n_labeled``): for load and crash tests."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    yy, xx = np.ogrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            y, x = rng.integers(6, size - 6, 2)
            mask[(yy - y) ** 2 + (xx - x) ** 2 < 25] = 1
        img = np.clip(rng.normal(40, 10, (size, size)) + 150 * mask, 0, 255).astype(np.uint8)
        (images / f"img_{i:03d}.png").write_bytes(png_bytes(img))
        if i < n_labeled:
            (masks / f"img_{i:03d}.png").write_bytes(png_bytes(mask))
    return images, masks


@contextmanager
def thread_server(root: Path, port: int | None = None):
    """A real uvicorn serving the project ``root`` on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from activeseg.serve.app import create_app

    port = port or free_port()
    app = create_app(root, train_threads=1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.server.store.close()


def process_server(root: Path, port: int, log: Path) -> subprocess.Popen:
    """``activeseg serve`` on the existing project ``root`` as its own process (for SIGKILL)."""
    cmd = [sys.executable, "-m", "activeseg.cli", "serve", "--project", str(root), "--port", str(port),
           "--train-threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def wait_healthy(base: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become healthy in {timeout} s")
