"""Pool scoring speed, memory and ranking: our default MC-dropout path against a naive loop and baal.

The model is a 16-filter, depth-3 2-D U-Net trained for a few hundred steps on the real nuclei patches
(128×128); the pool is PNG files cut from the same real images (the 8 flips/rotations of every real
patch, cycled to reach 10,000 files). K = 20 MC-dropout passes, BALD scores.

1. **Pool sizes** 64, 1,024 and 10,000: each scored in a fresh subprocess by ``score_pool`` with our
   default estimator, reading the files through ``pool_loader`` (decoding in a worker process); pool
   images per second, achieved GFLOP/s (FLOPs counted by ``torch.utils.flop_counter`` on our path), and
   the subprocess's peak resident memory (its decode worker's too). One batch warms up first.
2. **Side by side** on the same 64 in-memory images, interleaved, median of ``--repeats``: our default,
   our float32 path, with consistent masks, with ``torch.compile`` (compilation time reported apart),
   a naive loop of K full forward passes (float32, ``no_grad``), and baal 2.1.0's
   ``ModelWrapper.predict_on_dataset`` with its default ``replicate_in_memory=True`` and with ``False``
   (both with batch 16); ratios against ours.
3. **Ranking**: Spearman correlation of BALD and entropy scores between our default path and the
   float32 reference on the same (consistent) dropout masks, on the distinct real patches (228 at 128 px).
4. This machine's matmul peak (4096² ``torch.mm``, float32 and bfloat16) with the same threads.
5. **A user's own U-Net** (defined here: 4 levels, 16 filters, ``Dropout2d`` after every pooling, declaring
   nothing) on the same 64 images: the naive loop, our default path (the deterministic prefix found by
   tracing), our float32 path, and our float32 path with tracing turned off; achieved GFLOP/s (FLOPs counted
   on each path) and their share of the measured matmul peak of the dtype used.

Writes ``benchmarks/results/score_pool.md`` and ``.json``.

baal is a benchmark-only dependency; it declares Jupyter among its requirements, so install it without
them (torch stays the pinned CPU build)::

    pip install --no-deps baal==2.1.0 structlog==22.3.0 torchmetrics==1.9.0 lightning-utilities==0.15.3

Usage: ``python benchmarks/score_pool.py [--sizes 64,1024,10000] [--k 20] [--repeats 3]`` (about 25
minutes on an idle 2-core CPU; ``--sizes 64,256 --repeats 1`` for a quick look; ``--results-only`` rewrites
the .md of ``--out`` from its .json).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe, host_line, matmul_peak  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PATCH = 128
UNET = dict(in_channels=1, num_classes=2, depth=3, base_filters=16, dropout=0.2)


# ----------------------------------------------------------------------------------------------- set-up
def prepare(work: Path, n_files: int, train_steps: int) -> int:
    """Train the U-Net on real nuclei patches and write the pool files; returns the real patch count."""
    from PIL import Image

    from activeseg.data import load_dataset
    from activeseg.models.unet import UNet
    from activeseg.train import TrainConfig, fit

    # the old grouping tiles the three real images into 128-px patches; the spatial split of ``nuclei``
    # needs test and validation regions with guard bands, which 128-px tiles of a 256-px plane do not fit
    data = load_dataset("nuclei_grouped", patch_size=PATCH, quiet=True)
    torch.manual_seed(0)
    model = UNet(**UNET)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data))
    val, train = order[:16], order[16:]
    cfg = TrainConfig(steps=train_steps, batch_size=8, lr=1e-3, eval_every=max(1, train_steps // 4))
    fit(model, data.images[train], data.targets[train], data.images[val], data.targets[val], cfg,
        torch.Generator().manual_seed(0))
    torch.save(model.state_dict(), work / "model.pt")
    pool = work / "pool"
    pool.mkdir()
    variants = [np.rot90(np.flip(img[0], 1) if f else img[0], r) for f in (0, 1) for r in range(4)
                for img in data.images]
    for i in range(n_files):
        img = variants[i % len(variants)]
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(pool / f"img_{i:05d}.png")
    return len(data)


def load_model(work: Path):
    from activeseg.models.unet import UNet

    model = UNet(**UNET)
    model.load_state_dict(torch.load(work / "model.pt", weights_only=True))
    return model.eval()


def pool_array(work: Path, n: int) -> np.ndarray:
    from activeseg.data.loader import TilePool

    pool = TilePool(sorted((work / "pool").iterdir())[:n])
    return np.stack([pool[i].numpy() for i in range(n)])


# ------------------------------------------------------------------------------- 1. one pool size
def measure_size(work: Path, n: int, k: int) -> dict:
    """Runs in a fresh subprocess: score ``n`` files from disk with the default path."""
    from activeseg.data.loader import TilePool, pool_loader
    from activeseg.scoring import score_pool
    from activeseg.uncertainty import MCDropout

    model = load_model(work)
    est = MCDropout(k=k, batch_size=16, precision="auto")
    files = sorted((work / "pool").iterdir())[:n]
    score_pool(model, pool_array(work, 16), "bald", estimator=est, device="cpu")  # warm-up batch
    first: list[float] = []
    t0 = time.perf_counter()
    scores = score_pool(model, pool_loader(TilePool(files), batch_size=16, workers=1), "bald", estimator=est,
                        device="cpu", progress=lambda done: first or first.append(time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    assert len(scores) == n and np.isfinite(scores).all()
    kib_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"n": n, "seconds": seconds, "first_batch_seconds": first[0], "images_per_s": n / seconds,
            "ms_per_image": 1000 * seconds / n,
            "peak_rss_mib": round(_peak_rss_kib() / 1024, 1), "peak_rss_worker_mib": round(kib_children / 1024, 1)}


def _peak_rss_kib() -> int:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss`` it does not carry over the
    parent's peak into a freshly exec'd child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def flops_per_image(work: Path, k: int) -> dict:
    """FLOPs of scoring one image on our path (prefix once, the rest K times) and of K full passes."""
    from torch.utils.flop_counter import FlopCounterMode

    from activeseg.uncertainty import MCDropout

    model = load_model(work)
    x = pool_array(work, 1)
    with FlopCounterMode(display=False) as ours:
        list(MCDropout(k=k, precision="float32").batches(model, x))
    with FlopCounterMode(display=False) as full, torch.no_grad():
        model(torch.from_numpy(x))
    return {"ours": ours.get_total_flops(), "naive": k * full.get_total_flops()}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ 2. side by side
def naive_loop(model, images: np.ndarray, k: int, batch_size: int = 16) -> np.ndarray:
    """K full forward passes per batch with dropout on (float32, contiguous, no_grad), then BALD."""
    from activeseg.acquisition import get_strategy

    bald = get_strategy("bald")
    model.eval()
    from activeseg.uncertainty.dropout import DROPOUT_TYPES

    for m in model.modules():
        if isinstance(m, DROPOUT_TYPES):
            m.train()
    scores = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(images[s : s + batch_size])
            probs = torch.stack([model(x).softmax(1) for _ in range(k)], 1)
            scores.append(bald.score(probs))
    model.eval()
    return np.concatenate(scores)


def baal_predict(model, images: np.ndarray, k: int, replicate: bool, batch_size: int = 16) -> np.ndarray:
    """baal's MC-dropout prediction of the pool: logits ``[N, C, H, W, K]``."""
    from baal.bayesian.dropout import MCDropoutModule
    from baal.modelwrapper import ModelWrapper, TrainingArgs

    wrapped = MCDropoutModule(model)
    args = TrainingArgs(batch_size=batch_size, use_cuda=False, workers=0, replicate_in_memory=replicate,
                        criterion=torch.nn.CrossEntropyLoss())
    data = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.zeros(len(images)))
    out = ModelWrapper(wrapped, args).predict_on_dataset(data, iterations=k, verbose=False)
    wrapped.unpatch()
    return out


def side_by_side(work: Path, k: int, repeats: int, with_baal: bool) -> dict:
    from gal_cnn_scoring import NoSplit  # the model without stochastic_split (benchmarks/ is on sys.path)

    from activeseg.scoring import score_pool
    from activeseg.uncertainty import MCDropout

    model = load_model(work)
    images = pool_array(work, 64)
    compiled = MCDropout(k=k, batch_size=16, precision="auto", compile=True)
    t0 = time.perf_counter()
    score_pool(model, images[:16], "bald", estimator=compiled, device="cpu")
    compile_seconds = time.perf_counter() - t0
    variants = {
        "ours (default)": lambda: score_pool(model, images, "bald", estimator=MCDropout(k=k, precision="auto"),
                                             device="cpu"),
        "ours, consistent masks": lambda: score_pool(
            model, images, "bald", estimator=MCDropout(k=k, precision="auto", consistent=True), device="cpu"),
        "ours, float32": lambda: score_pool(model, images, "bald", estimator=MCDropout(k=k, precision="float32"),
                                            device="cpu"),
        "ours, torch.compile": lambda: score_pool(model, images, "bald", estimator=compiled, device="cpu"),
        "naive K-pass loop": lambda: naive_loop(NoSplit(model), images, k),
    }
    if with_baal:
        variants["baal, default (replicate_in_memory)"] = lambda: baal_predict(model, images, k, True)
        variants["baal, replicate_in_memory=False"] = lambda: baal_predict(model, images, k, False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn))
            print(f"  {name}: {times[name][-1]:.2f} s", flush=True)
    return {"n": len(images), "compile_seconds": compile_seconds,
            "seconds": {name: float(np.median(t)) for name, t in times.items()}, "all_seconds": times}


# ------------------------------------------------------------------------ 5. a user's own U-Net
class UserUNet(torch.nn.Module):
    """A plain 4-level U-Net as a user writes it (16 filters, batch norm, ``Dropout2d`` after every pooling)
    that declares nothing: MC dropout finds its deterministic prefix by tracing."""

    def __init__(self, f: int = 16) -> None:
        super().__init__()
        nn = torch.nn

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        ch = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.down = nn.ModuleList([block(1, ch[0])] + [block(ch[i], ch[i + 1]) for i in range(3)])
        self.drops = nn.ModuleList([nn.Dropout2d(0.2) for _ in range(4)])
        self.bottom = block(ch[3], ch[4])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(4))])
        self.dec = nn.ModuleList([block(2 * ch[i], ch[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(ch[0], 2, 1)

    def forward(self, x):
        skips = []
        for block, drop in zip(self.down, self.drops, strict=True):
            x = block(x)
            skips.append(x)
            x = drop(torch.nn.functional.max_pool2d(x, 2))
        x = self.bottom(x)
        for up, block in zip(self.ups, self.dec, strict=True):
            x = block(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


def user_unet(work: Path, k: int, repeats: int, peaks: dict) -> dict:
    """Naive loop against our paths on the user's U-Net (same 64 images): seconds, GFLOP/s, share of peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from activeseg.scoring import score_pool
    from activeseg.uncertainty import MCDropout
    from activeseg.uncertainty.estimators import resolve_precision

    torch.manual_seed(0)
    model = UserUNet().eval()
    images = pool_array(work, 64)
    with FlopCounterMode(display=False) as full, torch.no_grad():
        model(torch.from_numpy(images[:1]))
    untraced = UserUNet().eval()
    untraced.load_state_dict(model.state_dict())
    untraced.trace_split = False
    with FlopCounterMode(display=False) as ours:
        list(MCDropout(k=k, precision="float32").batches(model, images[:1]))
    flops = {"naive K-pass loop": k * full.get_total_flops(), "ours (default)": ours.get_total_flops(),
             "ours, float32": ours.get_total_flops(), "ours, float32, not traced": k * full.get_total_flops()}
    auto = str(resolve_precision("auto", "cpu")).removeprefix("torch.")
    variants = {
        "naive K-pass loop": lambda: naive_loop(model, images, k),
        "ours (default)": lambda: score_pool(model, images, "bald", estimator=MCDropout(k=k), device="cpu"),
        "ours, float32": lambda: score_pool(model, images, "bald", estimator=MCDropout(k=k, precision="float32"),
                                            device="cpu"),
        "ours, float32, not traced": lambda: score_pool(untraced, images, "bald",
                                                        estimator=MCDropout(k=k, precision="float32"), device="cpu"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_timed(fn))
            print(f"  user U-Net, {name}: {times[name][-1]:.2f} s", flush=True)
    rows = {}
    for name, t in times.items():
        sec = float(np.median(t))
        dtype = auto if name == "ours (default)" else "float32"
        gflops = flops[name] * len(images) / sec / 1e9
        rows[name] = {"seconds": sec, "dtype": dtype, "gflops": gflops, "share_of_peak": gflops / peaks[dtype]}
    return {"n": len(images), "rows": rows}


# ------------------------------------------------------------------------------------ 3. ranking
def ranking(work: Path, n_real: int, k: int) -> dict:
    from scipy import stats

    from activeseg.acquisition import get_strategy
    from activeseg.scoring import score_and_summarize
    from activeseg.uncertainty import MCDropout

    model = load_model(work)
    images = pool_array(work, min(n_real, 256))
    out = {"n": len(images)}
    for name in ("bald", "max_entropy"):
        strategy = get_strategy(name)
        fast = score_and_summarize(model, images, strategy, MCDropout(k=k, consistent=True, precision="auto"), "cpu")[0]
        ref = score_and_summarize(model, images, strategy,
                                  MCDropout(k=k, consistent=True, precision="float32", channels_last=False), "cpu")[0]
        out[name] = float(stats.spearmanr(fast, ref).statistic)
    return out


# --------------------------------------------------------------------------------------- report
def user_section(user: dict | None) -> list[str]:
    if not user:
        return []
    naive = user["rows"]["naive K-pass loop"]["seconds"]
    out = ["", f"## A user's own U-Net (4 levels, `Dropout2d`, declares nothing), {user['n']} images", "",
           "| path | dtype | seconds | × faster than naive | achieved GFLOP/s | share of that dtype's matmul peak |",
           "|---|---|---|---|---|---|"]
    out += [f"| {name} | {r['dtype']} | {r['seconds']:.2f} | {naive / r['seconds']:.2f} | {r['gflops']:.0f} | "
            f"{100 * r['share_of_peak']:.0f}% |" for name, r in user["rows"].items()]
    return out + ["", "Our paths trace the model for its deterministic prefix (the first block, and the skip "
                  "half of the last decoder convolution, run once per batch); `not traced` opts out."]


def write(doc: dict, name: str = "score_pool") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    flops, peak = doc["flops_per_image"], doc["matmul_gflops"]
    md = ["# Pool scoring: speed, memory and ranking", "",
          f"{doc['machine']}; torch {doc['torch']}, {doc['threads']} threads; K = {doc['k']}; 16-filter depth-3 "
          f"U-Net on 128×128 real nuclei images; compute precision of the default path: {doc['precision']}. "
          f"Command: `{doc.get('command', 'python benchmarks/score_pool.py')}`.", "",
          f"Matmul peak (4096² `torch.mm`): {peak['float32']:.0f} GFLOP/s float32, {peak['bfloat16']:.0f} "
          f"GFLOP/s bfloat16. FLOPs per pool image: {flops['ours'] / 1e9:.1f} G on our path (the first block "
          f"once, the rest K times), {flops['naive'] / 1e9:.1f} G for K full passes.", "",
          "## Pool size (files read by `pool_loader`, one decode worker; fresh process each)", "",
          "| pool images | seconds | images/s | ms/image | achieved GFLOP/s | peak RSS (MiB) "
          "| decode worker peak RSS (MiB) |",
          "|---|---|---|---|---|---|---|"]
    for r in doc["sizes"]:
        md.append(f"| {r['n']:,} | {r['seconds']:.1f} | {r['images_per_s']:.2f} | {r['ms_per_image']:.1f} | "
                  f"{r['images_per_s'] * flops['ours'] / 1e9:.0f} | {r['peak_rss_mib']:.0f} "
                  f"| {r['peak_rss_worker_mib']:.0f} |")
    sizes = {r["n"]: r for r in doc["sizes"]}
    if 64 in sizes and 10_000 in sizes:
        ratio = sizes[10_000]["seconds"] / (sizes[64]["seconds"] * 10_000 / 64)
        steady = sizes[10_000]["seconds"] / (doc["side_by_side"]["seconds"]["ours (default)"] * 10_000 / 64)
        md += ["", f"Linearity: 10,000 images took {ratio:.3f}× of 10,000/64 × the 64-file time (target within "
               f"1.10×); the 64-file time includes starting the decode worker (first batch after "
               f"{sizes[64]['first_batch_seconds']:.2f} s). Against the 64 in-memory images of the side-by-side "
               f"run (same path, no loader start-up): {steady:.3f}×."]
    if 1024 in sizes and 10_000 in sizes:
        md.append(f"Memory: peak RSS at 10,000 is {sizes[10_000]['peak_rss_mib'] / sizes[1024]['peak_rss_mib']:.3f}× "
                  "that at 1,024 (target ≤ 1.2×).")
    sbs = doc["side_by_side"]
    ours = sbs["seconds"]["ours (default)"]
    md += ["", f"## Side by side on the same {sbs['n']} images (median of {doc['repeats']}, interleaved)", "",
           "| path | seconds | × ours |", "|---|---|---|"]
    md += [f"| {name} | {s:.2f} | {s / ours:.2f} |" for name, s in sbs["seconds"].items()]
    md += ["", f"`torch.compile` took {sbs['compile_seconds']:.0f} s to compile (not in its row). baal's rows are "
           "prediction only (logits of every pass kept for the whole pool); ours include the BALD scores.", "",
           f"## Ranking on {doc['ranking']['n']} real patches, same dropout masks", "",
           "| score | Spearman, default path vs float32 reference |", "|---|---|"]
    md += [f"| {name} | {doc['ranking'][name]:.4f} |" for name in ("bald", "max_entropy")]
    md += user_section(doc.get("user_unet"))
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,1024,10000")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--no-baal", action="store_true", help="skip baal (e.g. when it is not installed)")
    ap.add_argument("--out", default="score_pool", help="results file name in benchmarks/results (.md, .json)")
    ap.add_argument("--results-only", action="store_true", help="rewrite the .md of --out from its .json")
    ap.add_argument("--_measure", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.results_only:
        write(json.loads((RESULTS / f"{args.out}.json").read_text()), args.out)
        return 0
    if args._measure:  # the child process of one pool size
        print(json.dumps(measure_size(Path(args._work), args._measure, args.k)))
        return 0
    if not args.no_baal:
        try:
            import baal  # noqa: F401
        except ImportError:
            raise SystemExit("baal is not installed; see this script's docstring for the pip command, "
                             "or pass --no-baal") from None
    sizes = [int(s) for s in args.sizes.split(",")]
    argv_used = sys.argv[1:] if argv is None else list(argv)
    from activeseg.uncertainty.estimators import resolve_precision

    with tempfile.TemporaryDirectory(prefix="score_pool_") as tmp:
        work = Path(tmp)
        print("training the U-Net and writing the pool files ...", flush=True)
        n_real = prepare(work, max(sizes + [256]), args.train_steps)
        doc = {"machine": host_line(describe()), "command": " ".join(["python benchmarks/score_pool.py", *argv_used]),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "k": args.k, "repeats": args.repeats,
               "precision": str(resolve_precision("auto", "cpu")).removeprefix("torch."), "real_patches": n_real,
               "matmul_gflops": matmul_peak(), "flops_per_image": flops_per_image(work, args.k)}
        print("side by side ...", flush=True)
        doc["side_by_side"] = side_by_side(work, args.k, args.repeats, not args.no_baal)
        doc["ranking"] = ranking(work, n_real, args.k)
        print("a user's U-Net ...", flush=True)
        doc["user_unet"] = user_unet(work, args.k, args.repeats, doc["matmul_gflops"])
        doc["sizes"] = []
        for n in sizes:
            print(f"pool of {n} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--_measure", str(n), "--_work", str(work), "--k",
                                   str(args.k)], capture_output=True, text=True, check=True)
            doc["sizes"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {doc['sizes'][-1]}", flush=True)
    write(doc, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
