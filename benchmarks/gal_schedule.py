"""Which training schedule converges for the Gal et al. MNIST study, and what it costs.

Trains the paper's CNN on random labelled sets of 100, 300 and 1000 real MNIST digits (2 draws each;
weight decay 0.25/N) under several schedules and reports the test error on the standard 10k set, the
steps taken, the step of the kept checkpoint and the training seconds. A schedule keeps either the
weights with the best accuracy on the 100-digit validation set (``best``) or the final weights
(``last``, as Gal et al. did: their validation set only chose the weight decay). The paper's random
acquisition reaches 10% error at about 275 labelled digits and 4.66% at 1020 (Gal et al. 2017, Table 1
and §5.1); a schedule that stays well above that is not converged. Writes
``benchmarks/results/gal_schedule.md`` and ``.json``; rows already in the JSON are kept, so
``--schedule`` adds or re-measures single schedules.

Usage:
    python benchmarks/gal_schedule.py                          # every schedule (about 15 min, one core)
    python benchmarks/gal_schedule.py --schedule 25,64,2e-3,last   # one schedule
    python benchmarks/gal_schedule.py --schedule 25,64,2e-3,last,bfloat16   # with mixed-precision training
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from activeseg.data import load_dataset
from activeseg.models import build_model
from activeseg.train import TrainConfig, evaluate, fit

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
# (epochs, batch size, learning rate, checkpoint); at most MAX_STEPS steps
SCHEDULES = [(16, 32, 1e-3, "best"), (25, 64, 2e-3, "best"), (50, 32, 1e-3, "best"), (50, 128, 1e-3, "best"),
             (25, 64, 2e-3, "last"), (50, 128, 1e-3, "last")]
MAX_STEPS = 3000
SIZES = (100, 300, 1000)


def parse_schedule(text: str) -> tuple:
    try:
        epochs, batch, lr, checkpoint, *precision = text.split(",")
        precision = precision[0] if precision else "float32"
        if checkpoint not in ("best", "last") or precision not in ("float32", "bfloat16") or len(text.split(",")) > 5:
            raise ValueError
        return float(epochs), int(batch), float(lr), checkpoint, precision
    except ValueError:
        raise argparse.ArgumentTypeError(f"--schedule '{text}' is not EPOCHS,BATCH,LR,best|last[,float32|bfloat16] "
                                         "(e.g. 25,64,2e-3,last)") from None


def measure(mnist, val, rest, schedule: tuple, n: int, draws: int) -> dict:
    epochs, batch, lr, checkpoint, precision = (*schedule, "float32")[:5]
    cfg = TrainConfig(steps=MAX_STEPS, epochs=epochs, min_steps=50, batch_size=batch, lr=lr, weight_decay=0.25,
                      weight_decay_rule="per_item", loss="ce", eval_every=25, augment=False, checkpoint=checkpoint,
                      train_precision=precision)
    errors, kept, seconds = [], [], []
    for draw in range(draws):
        train = np.random.default_rng([n, draw]).choice(rest, n, replace=False)
        torch.manual_seed(draw)
        model = build_model("gal_cnn", in_channels=1, num_classes=10, image_size=28)
        t0 = time.perf_counter()
        res = fit(model, mnist.images[train], mnist.targets[train], mnist.images[val], mnist.targets[val],
                  cfg, torch.Generator().manual_seed(draw))
        seconds.append(time.perf_counter() - t0)
        test = mnist.official_test
        errors.append(evaluate(model, mnist.images[test], mnist.targets[test])[1]["error"])
        kept.append(res.best_step)
    return {"epochs": epochs, "batch_size": batch, "lr": lr, "checkpoint": checkpoint, "precision": precision, "n": n,
            "steps": cfg.steps_for(n), "test_error": [round(e, 4) for e in errors], "best_step": kept,
            "train_seconds": [round(s, 1) for s in seconds]}


def row(e: dict) -> str:
    errs = e["test_error"]
    return (f"| {e['epochs']:g} | {e['batch_size']} | {e['lr']:g} | {e.get('checkpoint', 'best')} "
            f"| {e.get('precision', 'float32')} | {e['n']} "
            f"| {e['steps']} | {100 * np.mean(errs):.2f} ({', '.join(f'{100 * x:.2f}' for x in errs)}) "
            f"| {e['best_step']} | {np.mean(e['train_seconds']):.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=2, help="random labelled sets per size")
    ap.add_argument("--schedule", type=parse_schedule, action="append",
                    help="EPOCHS,BATCH,LR,best|last to measure (repeatable; default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    mnist = load_dataset("mnist", quiet=True)
    rng = np.random.default_rng(0)
    val = rng.choice(60000, 100, replace=False)
    rest = np.setdiff1d(np.arange(60000), val)
    path = RESULTS / "gal_schedule.json"
    doc = json.loads(path.read_text()) if path.exists() else {"schedules": []}
    doc.update(draws=args.draws, threads=1)

    def key(e):
        return (float(e["epochs"]), e["batch_size"], e["lr"], e.get("checkpoint", "best"),
                e.get("precision", "float32"), e["n"])

    for schedule in args.schedule or SCHEDULES:
        for n in SIZES:
            entry = measure(mnist, val, rest, schedule, n, args.draws)
            doc["schedules"] = [e for e in doc["schedules"] if key(e) != key(entry)] + [entry]
            print(row(entry), flush=True)
    order = {(*s, "float32"): i for i, s in enumerate(SCHEDULES)}
    doc["schedules"].sort(key=lambda e: (order.get(key(e)[:5], len(order)), key(e)[:5], e["n"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    md = "\n".join([
        "# Training schedules for the Gal et al. CNN on random MNIST subsets",
        "",
        f"Random labelled sets ({args.draws} draws per size), test error on the standard 10k set, one thread",
        "(`python benchmarks/gal_schedule.py`). Checkpoint `best`: the weights with the best accuracy on the",
        "100 validation digits (checked every 25 steps); `last`: the final weights. Paper, random",
        "acquisition: 10% error at about 275 labelled digits, 4.66% at 1020.",
        "",
        "| epochs | batch | lr | checkpoint | training precision | labelled | steps | test error % (each draw) "
        "| kept step | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(row(e) for e in doc["schedules"]),
        "",
    ])
    (RESULTS / "gal_schedule.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
