"""SVGD against an ensemble on the same labelled nuclei patches (Nath et al. 2020, Fig. 2), and what
batching the members with ``torch.func.vmap`` would buy on this CPU.

Part 1, the committees. One random labelled set of ``--train`` real nuclei patches (the paper used 30
hippocampus volumes), the nuclei validation patches, K = ``--members`` U-Nets with the same initial
weights for every committee, Adam ``--lr`` 1e-3 at a constant rate and batches of 8 as in the paper's
§5.2, no augmentation, the soft Dice loss. The committees:

* ``svgd_function``: the particles trained jointly by ``fit_svgd`` with activeseg's defaults: the
  log-likelihood -N × the batch Dice loss, a Gaussian prior of precision ``prior_precision`` on the
  weight tensors, the RBF kernel on the members' softmax outputs (function space);
* ``svgd_weight``: the same objective with the kernel on the flattened weights (Nath et al.'s kernel);
* ``independent``: the same objective and batches with the kernel replaced by the identity, i.e. an
  ensemble that differs from SVGD only by the particles' interaction (the gate: within 0.01 Dice of
  ``ensemble`` before any SVGD result is reported);
* ``ensemble``: the library's ``ensemble`` committee, each member trained alone by ``fit`` on the soft
  Dice loss (batch Dice), as ``--estimator ensemble`` trains it.

``--objective nath_log_dice`` trains the three SVGD committees with Nath et al.'s per-image log soft
Dice (and the prior on every parameter), as the committed run before issue 18 did.

Every ``--every`` steps each member's validation Dice (mean over patches) is recorded, and for the SVGD
committees the kernel's off-diagonal values and the repulsion / drive ratio of that step; the figure
shows the members' curves and the spread (standard deviation across members) over steps, the paper's
Fig. 2.

Part 2 (``--parts all``), batching the members: seconds per training step (forward and backward of K
members on one batch of 8) and per inference batch (32 patches), a Python loop over the members against
``torch.func.vmap`` over their stacked parameters (``stack_module_state``), medians of ``--repeats``,
interleaved in one run. (Under ``vmap`` the batch-norm layers use batch statistics only, which is the
cost of a training step without the running-statistics update.) With ``--parts committees`` the timing
is not re-measured (e.g. while another job shares the CPU) and the last results file's is kept, marked
as such.

Writes ``benchmarks/results/svgd_vs_ensemble.md``, ``.json`` and ``.png``.

Usage: ``python benchmarks/svgd_vs_ensemble.py`` (about 40 minutes on an idle 2-core CPU)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from machine import describe  # benchmarks/ is on sys.path when run as a script

from activeseg.config import SimConfig
from activeseg.data import load_dataset, make_split
from activeseg.engine import Engine
from activeseg.train import TrainConfig, evaluate, fit
from activeseg.uncertainty.committee import fit_svgd, member_seed

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
KINDS = ("svgd_function", "svgd_weight", "independent", "ensemble")


def member_dice(members, vx, vy) -> list[float]:
    return [round(float(evaluate(m, vx, vy)[1]["dice"]), 4) for m in members]


def train_committee(kind: str, members, x, y, vx, vy, cfg: TrainConfig, seed: int, every: int,
                    prior_precision: float, objective: str) -> dict:
    """Train in place; return the members' validation Dice every ``every`` steps, the SVGD kernel's
    summary at those steps, and the seconds spent training (validation excluded)."""
    curve: dict[int, list[float]] = {0: member_dice(members, vx, vy)}
    eval_seconds = 0.0
    t0 = time.perf_counter()
    if kind == "ensemble":
        rows: list[list[float]] = []
        for i, m in enumerate(members):
            def progress(step, m=m, i=i):
                nonlocal eval_seconds
                if step % every == 0:
                    t = time.perf_counter()
                    rows.append((step, i, float(evaluate(m, vx, vy)[1]["dice"])))
                    m.train()
                    eval_seconds += time.perf_counter() - t
            fit(m, x, y, vx[:1], vy[:1], cfg, torch.Generator().manual_seed(member_seed(seed, i)), progress=progress)
        for step in sorted({r[0] for r in rows}):
            curve[step] = [round(d, 4) for s, _, d in sorted(rows, key=lambda r: r[1]) if s == step]
    else:
        def progress(step):
            nonlocal eval_seconds
            if step % every == 0:
                t = time.perf_counter()
                curve[step] = member_dice(members, vx, vy)
                for m in members:
                    m.train()
                eval_seconds += time.perf_counter() - t
        res = fit_svgd(members, x, y, vx[:1], vy[:1], dataclasses.replace(cfg, eval_every=every),
                       torch.Generator().manual_seed(seed), progress=progress, repulsion=kind != "independent",
                       prior_precision=prior_precision, objective=objective,
                       kernel="weight" if kind == "svgd_weight" else "function")
        kernel = {str(h["step"]): {k: v for k, v in h.items() if k.startswith(("kernel_", "repulsion", "bandwidth"))}
                  for h in res.history if "kernel_offdiag_mean" in h}
    seconds = time.perf_counter() - t0 - eval_seconds
    return {"val_dice": {str(k): v for k, v in curve.items()}, "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / cfg.steps, 4), **({"kernel": kernel} if kind != "ensemble" and
                                                                  kind != "independent" else {})}


def time_vmap(cfg: SimConfig, dataset, members: int, repeats: int) -> dict:
    """Median seconds per training step and per inference batch: a loop over members vs vmap."""
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, stack_module_state, vmap

    from activeseg.losses import loss_fn

    x = torch.from_numpy(dataset.images[:8])
    y = torch.from_numpy(dataset.targets[:8].astype(np.int64))
    xi = torch.from_numpy(dataset.images[:32])
    weights = torch.ones(2)
    models = [Engine(cfg).new_network(dataset, i) for i in range(members)]
    for m in models:
        replace_all_batch_norm_modules_(m)
    train_models = models
    eval_models = [Engine(cfg).new_network(dataset, i).eval() for i in range(members)]
    base_t = copy.deepcopy(train_models[0]).to("meta")
    base_e = copy.deepcopy(eval_models[0]).to("meta")
    pt, bt = stack_module_state(train_models)
    pe, be = stack_module_state(eval_models)

    def loss(p, b, xb, yb):
        return loss_fn("dice", functional_call(base_t, (p, b), (xb,)), yb, weights)

    vgrad = vmap(grad(loss), in_dims=(0, 0, None, None), randomness="different")

    def train_loop():
        for m in train_models:
            m.train()
            torch.autograd.grad(loss_fn("dice", m(x), y, weights), list(m.parameters()))

    def train_vmap():
        vgrad(pt, bt, x, y)

    def infer_loop():
        with torch.inference_mode():
            torch.stack([m(xi).softmax(1) for m in eval_models], 1)

    def infer_vmap():
        with torch.no_grad():
            vmap(lambda p, b: functional_call(base_e, (p, b), (xi,)).softmax(1), in_dims=(0, 0))(pe, be)

    fns = {"train_loop": train_loop, "train_vmap": train_vmap, "infer_loop": infer_loop, "infer_vmap": infer_vmap}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)), 4) for k, v in times.items()}


def plot(doc: dict, out: Path) -> None:
    from activeseg.report._figure import new_figure, save_png

    fig = new_figure(11, 4.2, dpi=110)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    colors = {"svgd_function": "tab:red", "svgd_weight": "tab:orange", "independent": "tab:blue",
              "ensemble": "tab:green"}
    for kind, c in doc["committees"].items():
        curve = c["val_dice"]
        steps = np.array([int(s) for s in curve])
        dice = np.array([curve[str(s)] for s in steps])  # [T, K]
        for k in range(dice.shape[1]):
            axes[0].plot(steps, dice[:, k], color=colors.get(kind, "gray"), alpha=0.6, linewidth=1,
                         label=kind if k == 0 else None)
        axes[1].plot(steps, dice.std(1), color=colors.get(kind, "gray"), marker="o", markersize=3, label=kind)
    axes[0].set_title("validation Dice of each member")
    axes[1].set_title("spread across members (sd of validation Dice)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("Dice")
    fig.tight_layout()
    save_png(fig, out)


def committee_rows(doc: dict) -> list[str]:
    """One markdown row per committee: final member Dice (mean, range, sd), late spread, kernel, speed."""
    rows = []
    steps = doc["steps"]
    for kind, c in doc["committees"].items():
        curve = {int(s): np.array(v) for s, v in c["val_dice"].items()}
        last = curve[steps]
        late = [curve[s].std() for s in curve if s >= steps // 2]
        k = c.get("kernel", {}).get(str(steps))
        kern = "–" if not k else (f"{k['kernel_offdiag_min']:.3f} – {k['kernel_offdiag_max']:.3f} "
                                  f"(mean {k['kernel_offdiag_mean']:.3f}); {k['repulsion_over_drive']:.3g}")
        rows.append(f"| {kind} | {last.mean():.3f} | {last.min():.3f} – {last.max():.3f} | {last.std():.4f} "
                    f"| {np.mean(late):.4f} | {kern} | {c['seconds_per_step']:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=30, help="labelled patches")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=40, help="validate the members every this many steps")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--objective", default="loss", choices=["loss", "nath_log_dice"])
    ap.add_argument("--parts", default="all", choices=["all", "committees"],
                    help="committees: keep the last results file's timing of part 2 instead of re-measuring it")
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats of part 2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true", help="rewrite the .md and .png from the .json")
    args = ap.parse_args(argv)
    if args.table_only:
        write_report(json.loads((RESULTS / "svgd_vs_ensemble.json").read_text()))
        return 0
    torch.set_num_threads(args.threads)
    sim = SimConfig()
    previous = json.loads((RESULTS / "svgd_vs_ensemble.json").read_text()) \
        if (RESULTS / "svgd_vs_ensemble.json").exists() else {}
    data = load_dataset("nuclei", patch_size=sim.patch_size, quiet=True)
    split = make_split(data, args.train, sim.split_seed, args.seed)
    x, y = data.images[split.initial], data.targets[split.initial]
    vx, vy = data.images[split.val], data.targets[split.val]
    prior = sim.prior_precision
    cfg = TrainConfig(steps=args.steps, batch_size=8, lr=args.lr, eval_every=0, checkpoint="last", augment=False,
                      loss="dice", optimizer="adam", lr_schedule="constant", ema_decay=0.0, epochs=None,
                      weight_decay=prior / len(x))
    doc = {"machine": describe(), "train_patches": len(x), "val_patches": len(vx), "members": args.members,
           "depth": sim.depth, "base_filters": sim.base_filters, "steps": args.steps, "lr": args.lr,
           "batch_size": 8, "prior_precision": prior, "objective": args.objective, "threads": args.threads,
           "parts": args.parts, "repeats": args.repeats, "committees": {}}
    for kind in KINDS:
        members = [Engine(sim).new_network(data, member_seed(args.seed, i)) for i in range(args.members)]
        print(f"svgd_vs_ensemble: training the {kind} committee", flush=True)
        doc["committees"][kind] = train_committee(kind, members, x, y, vx, vy, cfg, args.seed, args.every, prior,
                                                  args.objective)
        final = doc["committees"][kind]["val_dice"][str(args.steps)]
        print(f"  final member Dice {final}, {doc['committees'][kind]['seconds_per_step']} s/step", flush=True)
    if args.parts == "all":
        print("svgd_vs_ensemble: timing loop vs vmap", flush=True)
        doc["batching"] = time_vmap(sim, data, args.members, args.repeats)
    else:
        doc["batching"] = {"members": previous.get("members"), **previous.get("batching", {}),
                           "kept_from_the_previous_results_file": True}
    # the last run of the other objective (the committed one before issue 18: nath_log_dice), kept beside
    keep = ("committees", "objective", "prior_precision", "steps", "train_patches", "val_patches")
    before = previous.get("previous") if previous.get("objective") == args.objective else (
        {k: previous[k] for k in keep if k in previous} if previous.get("committees") else None)
    if before:
        doc["previous"] = {"objective": "nath_log_dice", **before}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "svgd_vs_ensemble.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_report(doc)
    return 0


def write_report(doc: dict) -> None:
    """``svgd_vs_ensemble.md`` and ``.png`` from the results document."""
    plot(doc, RESULTS / "svgd_vs_ensemble.png")
    b, m, steps = doc["batching"], doc["machine"], doc["steps"]
    gate = doc["committees"]["ensemble"]["val_dice"][str(steps)]
    indep = doc["committees"]["independent"]["val_dice"][str(steps)]
    gap = float(np.mean(gate) - np.mean(indep))
    table_head = ["| committee | final mean member Dice | range | final sd across members | mean sd, second half "
                  "| kernel off-diagonal at the end; repulsion / drive | s / step (K members) |",
                  "|---|---|---|---|---|---|---|"]
    md = [
        "# SVGD vs ensemble on real nuclei patches (Nath et al. 2020, Fig. 2)",
        "",
        f"{doc['train_patches']} random labelled patches, {doc['val_patches']} validation patches, K = "
        f"{doc['members']} U-Nets (depth {doc['depth']}, {doc['base_filters']} filters) with the same initial "
        f"weights for every committee, Adam {doc['lr']:g} at a constant rate, batch {doc['batch_size']}, {steps} "
        f"steps, the soft Dice loss, no augmentation, {doc['threads']} torch threads (`python "
        f"benchmarks/svgd_vs_ensemble.py --objective {doc['objective']}"
        f"{' --parts committees' if doc['parts'] == 'committees' else ''} --threads {doc['threads']}`). Host: "
        f"{m.get('model')} (flags: {', '.join(m.get('flags', [])) or 'none'}), `torch.mm` peak "
        f"{m.get('matmul_gflops', {}).get('float32', '?')} GFLOP/s float32. SVGD objective: `{doc['objective']}`"
        f" with a prior of precision {doc['prior_precision']:g}. `independent` is that objective with the kernel "
        "replaced by the identity; `ensemble` trains each member alone on the batch soft-Dice loss.",
        "",
        *table_head,
        *committee_rows(doc),
        "",
        f"Gate (issue 18): `independent` within 0.01 Dice of `ensemble`: {np.mean(indep):.3f} vs "
        f"{np.mean(gate):.3f}, a gap of {gap:.3f}: **{'passed' if gap <= 0.01 else 'failed'}**.",
        "",
        "![members' validation Dice and their spread over training](svgd_vs_ensemble.png)",
        "",
    ]
    before = doc.get("previous")
    if before:
        md += [f"## Before: objective `{before['objective']}`, prior precision {before.get('prior_precision')}",
               "", f"The last run of the other objective, kept from the results file this one replaced: "
               f"{before.get('train_patches', '?')} labelled and {before.get('val_patches', '?')} validation "
               "patches of the split of its day (absolute Dice levels are not comparable with the table above; "
               "the gaps between committees are), its `svgd` row the weight-space kernel.", "",
               *table_head, *committee_rows(before), ""]
    kept = " (kept from the previous results file, not re-measured in this run)" if b.get(
        "kept_from_the_previous_results_file") else ""
    if "train_loop" in b:
        md += [f"## Batching the {b.get('members') or doc['members']} members (median of {doc['repeats']}, "
               f"interleaved){kept}", "",
               "| | Python loop over members | `vmap` over stacked parameters | vmap / loop |",
               "|---|---|---|---|",
               f"| training step (batch 8) | {b['train_loop']:.3f} s | {b['train_vmap']:.3f} s "
               f"| {b['train_vmap'] / b['train_loop']:.2f} |",
               f"| inference (32 patches) | {b['infer_loop']:.3f} s | {b['infer_vmap']:.3f} s "
               f"| {b['infer_vmap'] / b['infer_loop']:.2f} |", ""]
    (RESULTS / "svgd_vs_ensemble.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
