"""Load on the annotation server: N annotators at once asking for items and submitting masks.

A project of real nuclei patches (64×64, from the fetched nuclei data) is served by ``activeseg serve`` in
its own process on 127.0.0.1; N client threads each loop ``GET /api/next`` → ``PUT /api/labels/{id}``
for a fixed number of items (no model yet: the queue is the seeded random order). Reported: requests/s,
median and p95 latency per request kind, labels stored vs sent, items leased twice, the store's integrity
check. Writes ``benchmarks/results/serve_load.json`` and ``.md``.

    python benchmarks/serve_load.py --annotators 8 --items 25
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import describe  # benchmarks/ is on sys.path when run as a script

from activeseg.serve.imaging import png

RESULTS = Path(__file__).resolve().parent / "results"


def make_folder(root: Path, n: int) -> Path:
    from activeseg.data import load_dataset
    from activeseg.serve.imaging import png

    ds = load_dataset("nuclei", patch_size=64, quiet=True)
    folder = root / "images"
    folder.mkdir(parents=True)
    for i in range(min(n, len(ds))):
        (folder / f"patch_{i:04d}.png").write_bytes(png((np.clip(ds.images[i, 0], 0, 1) * 255).astype(np.uint8)))
    return folder


def main(argv: list[str] | None = None) -> int:
    import httpx

    from activeseg.serve.cli import open_project
    from activeseg.serve.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=8)
    ap.add_argument("--items", type=int, default=25, help="items each annotator labels")
    ap.add_argument("--db", default=None, help="a PostgreSQL URL to store the project in (emptied first; "
                    "default: SQLite in the project folder); results go to serve_load_postgresql.json / .md")
    args = ap.parse_args(argv)
    n_items = args.annotators * args.items
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_folder(tmp, n_items + 20)
        root = tmp / "project"
        if args.db:  # a scratch database: emptied, as the tests do
            from activeseg.serve.store import empty_database

            empty_database(args.db)
        open_project(root, images, None, url=args.db)
        tokens = {f"annotator{i}": f"load-test-token-{i:02d}-0123456789" for i in range(args.annotators)}
        (root / "project.toml").write_text((root / "project.toml").read_text()
                                           + "".join(f'{k} = "{v}"\n' for k, v in tokens.items()))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "activeseg.cli", "serve", "--project", str(root),
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("serve_load: the server did not start")
                time.sleep(0.1)
            latencies: dict[str, list[float]] = {"next": [], "put": []}
            sent: dict[str, list[int]] = {}
            failures: list[str] = []
            lock = threading.Lock()
            barrier = threading.Barrier(args.annotators)

            def annotate(name: str, token: str) -> None:
                mine = []
                with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
                    barrier.wait()
                    for _ in range(args.items):
                        t0 = time.perf_counter()
                        r = c.get(f"{base}/api/next?n=1")
                        t1 = time.perf_counter()
                        items = r.json().get("items", []) if r.status_code == 200 else []
                        if not items:
                            failures.append(f"{name}: next {r.status_code}")
                            break
                        mask = np.zeros((64, 64), np.uint8)
                        mask[: 1 + items[0]["id"] % 60] = 1
                        r = c.put(f"{base}/api/labels/{items[0]['id']}", content=png(mask))
                        t2 = time.perf_counter()
                        with lock:
                            latencies["next"].append(t1 - t0)
                            latencies["put"].append(t2 - t1)
                        if r.status_code != 200:
                            failures.append(f"{name}: put {r.status_code} {r.text[:100]}")
                        else:
                            mine.append(items[0]["id"])
                sent[name] = mine

            threads = [threading.Thread(target=annotate, args=kv) for kv in tokens.items()]
            t_start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t_start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        store = Store(root, args.db)
        labels = store.final_labels()
        versions = sum(len(store.label_versions(r["id"])) for r in labels)
        integrity = store.integrity_check()
        store.close()
    ids = [i for v in sent.values() for i in v]
    requests = len(latencies["next"]) + len(latencies["put"])
    ms = {k: {"median": round(1000 * float(np.median(v)), 1), "p95": round(1000 * float(np.percentile(v, 95)), 1)}
          for k, v in latencies.items() if v}
    doc = {"machine": describe(), "annotators": args.annotators, "items_per_annotator": args.items,
           "wall_seconds": round(wall, 2), "requests": requests, "requests_per_second": round(requests / wall, 1),
           "latency_ms": ms, "labels_sent": n_items, "labels_acknowledged": len(ids), "labels_stored": len(labels),
           "label_versions_stored": versions, "items_given_twice": len(ids) - len(set(ids)),
           "failures": failures[:20], "integrity_problems": integrity}
    RESULTS.mkdir(parents=True, exist_ok=True)
    backend = "postgresql" if args.db else "sqlite"
    stem = "serve_load" + ("_postgresql" if args.db else "")
    doc["database"] = backend
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    m = doc["machine"]
    md = ["# Annotation server under load", "",
          f"Made by `python benchmarks/serve_load.py --annotators {args.annotators} --items {args.items}"
          f"{' --db postgresql://…' if args.db else ''}`: `activeseg serve` "
          f"({'PostgreSQL on this machine' if args.db else 'SQLite'}, one uvicorn process) on 127.0.0.1, "
          f"{args.annotators} annotator threads "
          "each looping `GET /api/next?n=1` → `PUT /api/labels/{id}` (a 64×64 PNG mask) over real nuclei "
          f"patches. Host: {m.get('model')} (flags: {', '.join(m.get('flags', [])) or 'none'}), "
          f"{os.cpu_count()} cores, `torch.mm` peak {m.get('matmul_gflops', {}).get('float32', '?')} GFLOP/s "
          "float32; client and server share the machine.", "",
          "| measure | value |", "|---|---|",
          f"| requests | {requests} in {wall:.1f} s = **{requests / wall:.1f} requests/s** |",
          *(f"| `{k}` latency median / p95 | {v['median']} ms / {v['p95']} ms |" for k, v in ms.items()),
          f"| labels sent / acknowledged / stored | {n_items} / {len(ids)} / {len(labels)} |",
          f"| label versions stored | {versions} (no duplicate when equal to the labels stored) |",
          f"| items given to two annotators | {len(ids) - len(set(ids))} |",
          f"| failed requests | {len(failures)} |",
          f"| integrity check | {'ok' if not integrity else '; '.join(integrity[:3])} |", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if not failures and not integrity and len(set(ids)) == len(ids) == len(labels) else 1


if __name__ == "__main__":
    raise SystemExit(main())
