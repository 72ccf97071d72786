"""``activeseg`` command line: one subcommand per user task; argument handling only."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

from activeseg.config import SimConfig, help_of, load_config, strategy_list


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per SimConfig field (``--key value``; booleans are switches)."""
    g = p.add_argument_group("run settings (also settable in the --config TOML file)")
    for f in fields(SimConfig):
        if f.metadata.get("flag", True) is False:
            continue  # a table only a TOML file can give
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_ = help_of(f) + f" (default: {default})"
        if isinstance(default, bool):
            if default:
                g.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_const",
                               const=False, default=None, help=f"turn off {f.name} (default: on)")
            else:
                g.add_argument(flag, dest=f.name, action="store_const", const=True, default=None, help=help_)
        else:
            g.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_)


def _config(args: argparse.Namespace, **fixed) -> SimConfig:
    overrides = {f.name: getattr(args, f.name, None) for f in fields(SimConfig) if f.metadata.get("flag", True)}
    overrides.update(fixed)
    return load_config(args.config, **overrides)


def cmd_simulate(args: argparse.Namespace) -> int:
    from activeseg.acquisition import STRATEGIES
    from activeseg.simulate import set_threads, simulate

    cfg = _config(args)
    strategies = strategy_list(cfg.strategy)
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise ValueError(f"unknown strategy {bad}; valid: {', '.join(sorted(STRATEGIES))}")
    if args.workers <= 1:
        set_threads(os.cpu_count() or 1)  # this process runs the jobs; worker processes set their own
    seeds = list(range(cfg.seed, cfg.seed + args.seeds))
    if not args.quiet:
        print(f"activeseg simulate: strategies {strategies}, seeds {seeds}, out {args.out}\n{cfg.to_json()}")
    deadline = time.time() + 3600 * float(args.max_hours) if args.max_hours else None
    results = simulate(cfg, strategies, seeds, args.out, workers=args.workers,
                       resume=args.resume, quiet=args.quiet, deadline=deadline)
    failed = [r for r in results if r[2]]
    if not args.quiet:
        for run_dir, seconds, err in results:
            print(f"  {'FAILED' if err else 'done  '} {run_dir} ({seconds:.0f} s)")
    if args.report:
        cmd_report(argparse.Namespace(paths=[args.out], out=args.report, quiet=args.quiet))
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from activeseg.report import build_report

    target = getattr(args, "target", None)
    error = getattr(args, "target_error", None)
    if target is not None and error is not None:
        raise ValueError("give --target (a score) or --target-error (an error rate), not both")
    if error is not None:
        target = 1.0 - error
    build_report(args.paths, args.out, target_fraction=getattr(args, "target_fraction", 0.95), target=target,
                 budget=getattr(args, "budget", "n_annotations"))
    if not args.quiet:
        print((Path(args.out) / "summary.md").read_text())
        print(f"report written to {Path(args.out) / 'index.html'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from activeseg.sweep import run_sweep

    status = run_sweep(args.file, args.out, address=args.address, workers=args.workers, threads=args.threads,
                       quiet=args.quiet)
    if args.report:
        cmd_report(argparse.Namespace(paths=[args.out], out=args.report, quiet=args.quiet))
    return 1 if any(s["state"] == "failed" for s in status) else 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from activeseg.suggest import suggest

    cfg = _config(args)
    rows = suggest(args.images, args.masks, args.out, k=args.k, cfg=cfg, quiet=args.quiet)
    if not args.quiet:
        what = "region(s)" if rows and "y" in rows[0] else "unlabelled image(s)"
        print(f"ranked {len(rows)} {what}; label these next:")
        for row in rows[: args.k]:
            box = f" y={row['y']} x={row['x']} {row['h']}×{row['w']}" if "y" in row else ""
            print(f"  {row['rank']:>3}  {row['file']}{box}  score {row['score']:.4g}")
        table = "regions.csv" if rows and "y" in rows[0] else "suggestions.csv"
        print(f"written: {Path(args.out) / table}, heatmaps in {Path(args.out) / 'heatmaps'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from activeseg.serve.cli import serve
    except ImportError as err:
        raise RuntimeError(f"activeseg serve needs the server's packages ({err.name} is missing); "
                           "install them with: pip install 'activeseg[serve]'") from None
    settings = {"strategy": args.strategy, "lease_seconds": 60 * args.lease_minutes,
                "max_upload_bytes": int(args.max_upload_mb * 2**20), "max_pixels": args.max_pixels,
                "train": {"patch_size": args.patch_size}}
    serve(args.project, args.images, args.masks, host=args.host, port=args.port, url=args.db, classes=args.classes,
          train_threads=args.train_threads, **settings)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from activeseg.data import DATASETS, load_dataset
    from activeseg.data.fetch import data_dir

    if args.action == "list":
        for name in DATASETS:
            print(f"{name}\t(cache: {data_dir() / name})")
        return 0
    for name in args.names or list(DATASETS):
        ds = load_dataset(name, patch_size=args.patch_size)
        what = (f"{ds.num_classes} classes" if ds.task == "classification"
                else f"foreground fraction {ds.targets.mean():.3f}")
        print(f"{name}: {len(ds)} {ds.task} images of {ds.images.shape[2]}×{ds.images.shape[3]}, "
              f"{ds.in_channels} channel(s), {what}; cached in {data_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="activeseg", description="Deep active learning for image segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="run active-learning simulations on a fully labelled dataset")
    p.add_argument("--config", help="TOML file with run settings (flags override it)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (default 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel processes (default 1)")
    p.add_argument("--resume", action="store_true", help="continue runs from their ledgers")
    p.add_argument("--max-hours", type=float, default=None,
                   help="start no round after this many hours; finished rounds stay, --resume goes on")
    p.add_argument("--report", metavar="DIR", help="also write the comparison report into DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    _add_config_flags(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("sweep", help="run a grid of simulations (strategies × seeds × any key) on Ray")
    p.add_argument("file", help="sweep TOML file: [sweep] config/workers, [base] keys, [grid] lists")
    p.add_argument("--out", required=True, help="output folder; run again to resume an interrupted sweep")
    p.add_argument("--address", help="join an existing Ray cluster (e.g. auto or ray://head:10001) instead of "
                   "starting a local instance")
    p.add_argument("--workers", type=int, help="runs at once on the local instance (default: CPU count / threads)")
    p.add_argument("--threads", type=int, help="torch threads (and Ray CPUs) per run (default: CPU count / workers "
                   "locally, 1 on a cluster)")
    p.add_argument("--report", metavar="DIR", help="also write the comparison report into DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="learning curves, summary table and heatmaps of simulation runs")
    p.add_argument("paths", nargs="+", help="--out folders of simulate runs")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--target-fraction", type=float, default=0.95,
                   help="annotations to reach this fraction of the full-pool test score (default 0.95)")
    p.add_argument("--target", type=float, help="...or to reach this absolute test score (Dice or accuracy)")
    p.add_argument("--target-error", type=float, help="...or (classification) to reach this test error rate, "
                   "e.g. 0.05 as in Gal et al.'s Table 1")
    p.add_argument("--budget", choices=("n_annotations", "cost", "labelled_pixels"), default="n_annotations",
                   help="what the AULC axis and the targets count: annotations (items and regions), cost (clicks "
                   "to outline the labels) or labelled pixels")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("suggest", help="rank a folder's unlabelled images for annotation (the human loop)")
    p.add_argument("--images", required=True, help="folder of images (PNG/TIFF)")
    p.add_argument("--masks", required=True, help="folder of masks for some images, same file stems")
    p.add_argument("--k", type=int, default=8, help="suggestions to render as heatmaps (default 8)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="TOML file with model/training settings")
    p.add_argument("--quiet", action="store_true")
    _add_config_flags(p)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("serve", help="the annotation server: a project's datastore, HTTP API and annotator page")
    p.add_argument("--project", required=True, help="project folder (created on first start, reopened later)")
    p.add_argument("--images", help="folder of PNG/TIFF images; its new files are added at every start")
    p.add_argument("--masks", help="folder of masks for some of them (same file stems), taken in as labels")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", help="SQLAlchemy database URL (default: SQLite in the project folder), "
                                "e.g. postgresql://user@host/activeseg")
    p.add_argument("--train-threads", type=int, default=0, help="torch threads of the training process (0: all)")
    g = p.add_argument_group("project settings (used when the project is created; later edit project.toml)")
    g.add_argument("--classes", type=int, help="class count of label-map masks (else classes.json or inferred)")
    g.add_argument("--strategy", default="bald", help="acquisition strategy of the queue (default bald)")
    g.add_argument("--patch-size", type=int, default=64, help="training patch size (default 64)")
    g.add_argument("--lease-minutes", type=float, default=30.0, help="how long an item stays leased (default 30)")
    g.add_argument("--max-upload-mb", type=float, default=64.0, help="upload size cap in MiB (default 64)")
    g.add_argument("--max-pixels", type=int, default=50_000_000, help="pixel-count cap of an upload (default 5e7)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("data", help="list or fetch the bundled real datasets")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("names", nargs="*", help="datasets to fetch (default: all)")
    p.add_argument("--patch-size", type=int, default=64)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"activeseg {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
