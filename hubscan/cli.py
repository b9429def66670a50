"""Command line: argument parsing and printing only; the work is done by the library.

Errors end as one line on stderr, ``hubscan: error: <file or model>: <reason>``, and exit status 1
(2 for bad arguments); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from hubscan import __version__
from hubscan.errors import HubscanError


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("analysis options")
    g.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    g.add_argument("--method", default="gram", choices=["gram", "svd"],
                   help="eigenvalues from the Gram matrix WᵀW (fast, default) or from the SVD of W")
    g.add_argument("--precision", default="float64", choices=["float64", "float32"])
    g.add_argument("--fix-fingers", default="", choices=["", "xmin_peak", "clip_xmax"],
                   help="WeightWatcher's fix_fingers options (default: none)")
    g.add_argument("--tpl", action="store_true", help="also fit a truncated power law (column Lambda)")
    g.add_argument("--no-mp-fit", dest="mp_fit", action="store_false",
                   help="skip the Marchenko-Pastur bulk fit (and so the phase)")
    g.add_argument("--randomize", action="store_true", help="compute rand_distance (one more eigensolve per layer)")
    g.add_argument("--split-fused", action="store_true", help="analyze fused q/k/v and RNN gates block by block")
    g.add_argument("--conv-slices", action="store_true", help="one row per conv slice instead of a pooled ESD")
    g.add_argument("--min-evals", type=int, default=8, help="skip layers with fewer eigenvalues (default 8)")
    g.add_argument("--max-evals", type=int, default=None, help="skip layers with more eigenvalues (default: none)")
    g.add_argument("--evals-thresh", type=float, default=1e-5,
                   help="eigenvalues <= this are left out of the power-law fit (default 1e-5, as WW)")


def _add_delta_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tune deltas and adapters")
    g.add_argument("--base", metavar="BASE", default=None,
                   help="base model (any source, as PATH): analyze dW = W - W_base per tensor matched by name "
                        "and shape, with distance columns; for a LoRA adapter folder, also W + s*B*A")


def _add_hub_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hub options (token: $HF_TOKEN, never on the command line)")
    g.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    g.add_argument("--cache-dir", default=None, help="download cache for whole-file formats (default: a temporary one)")
    g.add_argument("--keep-cache", action="store_true", help="keep downloaded files after each model")
    g.add_argument("--max-retries", type=int, default=4, help="retries on 429/5xx/connection errors (default 4)")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds a hub request may stall (default 30)")


def _client(args):
    from hubscan.hub import HubClient
    return HubClient(endpoint=args.endpoint, cache_dir=args.cache_dir, keep_cache=args.keep_cache,
                     max_retries=args.max_retries, timeout=args.timeout)


def _options(args):
    from hubscan.analysis import AnalyzeOptions
    return AnalyzeOptions(device=args.device, method=args.method, precision=args.precision,
                          evals_thresh=args.evals_thresh, fix_fingers=args.fix_fingers, tpl=args.tpl,
                          mp_fit=args.mp_fit, randomize=args.randomize, split_fused=args.split_fused,
                          conv_slices=args.conv_slices, min_evals=args.min_evals, max_evals=args.max_evals)


def _fmt(v, digits=3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return str(v)


def _print_result(result, console) -> None:
    from rich.table import Table

    table = Table(title=f"{result.source} ({result.format})", show_lines=False, header_style="bold")
    cols = [("name", "name"), ("type", "layer_type"), ("N", "N"), ("M", "M"), ("rf", "rf"),
            ("alpha", "alpha"), ("D", "D"), ("xmin", "xmin"), ("spikes", "num_pl_spikes"),
            ("log_norm", "log_norm"), ("log_spec", "log_spectral_norm"), ("alpha_w", "alpha_weighted"),
            ("stable_rank", "stable_rank"), ("phase", "phase"), ("status", "status")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("name", "type", "phase", "status") else "right",
                         no_wrap=title == "name", overflow="fold")
    for r in result.rows:
        cells = []
        for _, key in cols:
            v = r.get(key)
            if key == "name" and r.get("part"):
                v = f"{v}:{r['part']}"
            if key == "status" and r.get("status") != "success":
                v = f"{r['status']}: {r.get('reason', '')}"
            elif key == "status" and r.get("warning"):
                v = r["warning"]
            cells.append(_fmt(v))
        table.add_row(*cells)
    console.print(table)
    s = result.summary
    if result.ref is not None and result.ref.source != "local":
        console.print(f"model {result.ref} ({s.get('bytes_read', 0) / 1e6:.1f} MB fetched)")
    console.print(f"[bold]summary[/bold] status={s['status']}"
                  + (f" ({s['reason']})" if s.get("reason") else "")
                  + f"  layers: {s['num_success']} analyzed, {s['num_failed']} failed, {s['num_skipped']} skipped"
                  + (f", {s['num_missing']} missing" if s.get("num_missing") else ""))
    console.print("  " + "  ".join(f"{m}={_fmt(s[m], 4)}" for m in
                                   ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm",
                                    "log_alpha_norm", "stable_rank", "mp_softrank")))
    console.print(f"  over-trained layers (alpha<2): {s['num_over_trained']}, "
                  f"under-trained (alpha>6): {s['num_under_trained']}, time {s['seconds']:.2f}s")
    phases = {}
    for r in result.rows:
        if r.get("status") == "success" and r.get("phase"):
            phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    if phases:
        console.print("  phases: " + ", ".join(f"{k}={v}" for k, v in sorted(phases.items())))


def cmd_analyze(args) -> int:
    import dataclasses
    from rich.console import Console
    from hubscan.analysis import analyze

    console = Console(width=None if sys.stdout.isatty() else 240)
    options = _options(args)
    if args.plot:
        options = dataclasses.replace(options, keep_evals=True)
    result = analyze(args.path, options, client=_client(args), base=args.base)
    if args.plot:
        from hubscan.report import plot_model
        files = plot_model(result, args.plot)
        console.print(f"wrote {len(files)} plots to {args.plot}")
    if args.out:
        import pyarrow.parquet as pq
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        pq.write_table(result.to_arrow(), tmp)
        os.replace(tmp, args.out)
    if not args.quiet:
        _print_result(result, console)
    if args.out:
        console.print(f"wrote {len(result.rows)} rows to {args.out}")
    return 0 if result.summary["status"] in ("success", "incomplete") else 1


def _survey_config(args):
    import json as _json
    from hubscan.survey import SurveyConfig

    filters = {k: v for k, v in {"filter": args.filter, "author": args.author, "search": args.search,
                                 "pipeline_tag": args.pipeline_tag, "sort": args.sort,
                                 "exclude": args.exclude}.items() if v is not None}
    if args.source == "timm":
        filters = {k: v for k, v in filters.items() if k in ("filter", "exclude")}
    elif args.source != "hf":
        filters = {}
    hub = {k: v for k, v in {"endpoint": args.endpoint, "cache_dir": args.cache_dir, "keep_cache": args.keep_cache,
                             "max_retries": args.max_retries, "timeout": args.timeout}.items() if v is not None}
    return SurveyConfig(source=args.source, out=args.out, filters=filters, limit=args.limit, options=_options(args),
                        address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                        cpus_per_actor=args.cpus_per_actor, max_in_flight=args.max_in_flight,
                        max_attempts=args.max_attempts, force=args.force, keep_esd=not args.no_esd,
                        storage_options=_json.loads(args.storage_options) if args.storage_options else {},
                        hub=hub, progress=not args.no_progress)


def _print_survey(summary, console) -> None:
    from rich.table import Table
    t = Table(title=f"survey {summary['survey_id']} ({summary['source']})")
    for col in ("models", "already done", "success", "incomplete", "failed", "skipped", "MB read", "seconds",
                "actors"):
        t.add_column(col, justify="right")
    t.add_row(str(summary["num_models"]), str(summary["num_already_done"]), str(summary["num_success"]),
              str(summary["num_incomplete"]), str(summary["num_failed"]), str(summary["num_skipped"]),
              f"{summary['bytes_read'] / 1e6:.1f}", f"{summary['seconds']:.1f}", str(summary["actors"]))
    console.print(t)


def cmd_survey(args) -> int:
    from rich.console import Console
    from hubscan.survey import survey

    config = _survey_config(args)
    summary = survey(config)
    console = Console(width=None if sys.stdout.isatty() else 200)
    _print_survey(summary, console)
    from hubscan.query import summary_tables
    for title, lines in summary_tables(config.out, config.storage_options):
        console.print(title)
        for line in lines:
            console.print("  " + line)
    return 0


def cmd_sql(args) -> int:
    import json as _json
    from hubscan.query import connect

    con = connect(args.dataset, **(_json.loads(args.storage_options) if args.storage_options else {}))
    cur = con.execute(args.query)
    cols = [d[0] for d in cur.description] if cur.description else []
    rows = cur.fetchall()
    if args.format == "csv":
        import csv
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
    elif args.format == "json":
        print(_json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table
        t = Table(*cols)
        for r in rows:
            t.add_row(*[_fmt(v, 4) for v in r])
        Console(width=None if sys.stdout.isatty() else 240).print(t)
    return 0


def cmd_accuracy(args) -> int:
    from hubscan import accuracy

    done = []
    for path in args.timm or []:
        done.append(("timm results", accuracy.ingest_timm_results(args.dataset, path, image_size=args.image_size)))
    for path in args.leaderboard or []:
        done.append(("leaderboard", accuracy.ingest_leaderboard(args.dataset, path)))
    for path in args.csv or []:
        done.append(("csv", accuracy.ingest_csv(args.dataset, path)))
    if args.cards:
        done.append(("model cards", accuracy.ingest_card_results(args.dataset)))
    if not done:
        print("hubscan: error: accuracy: nothing to ingest (--timm, --leaderboard, --csv or --cards)", file=sys.stderr)
        return 2
    for what, table in done:
        print(f"{what}: {table.num_rows} accuracy rows written to {args.dataset}")
    return 0


def cmd_correlate(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from hubscan.correlate import correlate, joined, write_correlations
    from hubscan.store import Dataset

    Dataset(args.dataset, create=False).require()
    df = joined(args.dataset, metric=args.metric, benchmark=args.benchmark, source=args.source)
    if df.empty:
        print(f"hubscan: error: {args.dataset}: no model has both HTSR metrics and a '{args.metric}' accuracy "
              "(ingest accuracy first: hubscan accuracy --dataset … --timm/--csv/--leaderboard/--cards)",
              file=sys.stderr)
        return 1
    corr = correlate(df, metric=args.metric, group_by=args.group_by, bootstrap=args.bootstrap, seed=args.seed)
    if args.out:
        write_correlations(corr, args.out)
    table = Table(title=f"{args.metric} vs HTSR metrics ({len(df)} models, grouped by {args.group_by})")
    cols = ["group", "metric", "n", "spearman_rho", "kendall_tau", "kendall_p", "pearson_r", "rmse", "r2"]
    present = [c for c in cols if c in corr.columns]
    for c in present:
        table.add_column(c, justify="left" if c in ("group", "metric") else "right")
    for _, r in corr.iterrows():
        table.add_row(*[_fmt(r[c], 3) if not isinstance(r[c], str) else r[c] for c in present])
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if args.out:
        print(f"wrote {len(corr)} rows to {args.out}")
    return 0


def cmd_report(args) -> int:
    import json as _json
    from hubscan.report import build_report
    from hubscan.store import Dataset

    Dataset(args.dataset, create=False, **(_json.loads(args.storage_options) if args.storage_options else {})).require()
    path = build_report(args.dataset, args.out, metric=args.metric, benchmark=args.benchmark, group_by=args.group_by,
                        storage_options=_json.loads(args.storage_options) if args.storage_options else None)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubscan", description="HTSR spectra (alpha, ESD metrics) of model weights.")
    parser.add_argument("--version", action="version", version=f"hubscan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="analyze one model's weights: per-layer table and summary")
    p.add_argument("path", help="hf:ORG/NAME[@REV], timm:ARCH.TAG, or a local .safetensors / .bin / .pt / .pth / "
                                ".onnx / .gguf file or Hugging Face layout folder")
    p.add_argument("--out", help="write the per-layer rows to this Parquet file")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write an ESD plot per layer (log-log, fitted power law, xmin) and alpha vs depth to DIR")
    _add_fit_options(p)
    _add_delta_options(p)
    _add_hub_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("survey", help="analyze many models on Ray into a Parquet dataset (resumable)")
    p.add_argument("--source", required=True, help="hf | timm | local:DIR | list:FILE (one reference per line)")
    p.add_argument("--out", required=True, help="dataset directory or URL (s3://bucket/prefix …)")
    p.add_argument("--limit", type=int, default=None, help="models to enumerate at most")
    g = p.add_argument_group("source filters")
    g.add_argument("--filter", default=None, help="hf: tag (e.g. timm, safetensors, text-generation); timm: name glob")
    g.add_argument("--author", default=None, help="hf: organisation or user")
    g.add_argument("--search", default=None, help="hf: substring of the repo id")
    g.add_argument("--pipeline-tag", default=None, help="hf: task, e.g. image-classification")
    g.add_argument("--sort", default=None, help="hf: downloads (default) | likes | lastModified | createdAt")
    g.add_argument("--exclude", default=None, help="timm: name glob to leave out")
    g = p.add_argument_group("cluster")
    g.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:10001); default: embedded local Ray")
    g.add_argument("--actors", type=int, default=None, help="analysis actors (default: one per GPU, else CPUs/2)")
    g.add_argument("--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs")
    g.add_argument("--cpus-per-actor", type=float, default=None)
    g.add_argument("--max-in-flight", type=int, default=None, help="models dispatched at once (default 2 × actors)")
    g.add_argument("--max-attempts", type=int, default=3, help="attempts per model when its actor dies (default 3)")
    g = p.add_argument_group("dataset")
    g.add_argument("--force", action="store_true", help="re-analyze models the dataset already holds")
    g.add_argument("--no-esd", action="store_true", help="do not write the esd table (eigenvalues)")
    g.add_argument("--storage-options", default=None, help="filesystem options as JSON, e.g. "
                   "'{\"endpoint_override\": \"127.0.0.1:9000\", \"scheme\": \"http\"}'")
    g.add_argument("--no-progress", action="store_true", help="no live progress bar")
    _add_fit_options(p)
    _add_hub_options(p)
    p.set_defaults(func=cmd_survey)

    p = sub.add_parser("sql", help="query a dataset with DuckDB (views: models, layers, esd, surveys, accuracy)")
    p.add_argument("query", help='e.g. "SELECT family, avg(alpha) FROM models GROUP BY 1"')
    p.add_argument("--dataset", required=True, help="dataset directory or URL")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--storage-options", default=None, help="filesystem options as JSON")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("accuracy", help="ingest reported accuracy into a dataset's accuracy table")
    p.add_argument("--dataset", required=True)
    p.add_argument("--timm", action="append", help="timm results CSV, folder of them, or URL (repeatable)")
    p.add_argument("--image-size", default="input", choices=["input", "test"],
                   help="timm models evaluated at two sizes: keep the pretrained input size (default) or the test size")
    p.add_argument("--leaderboard", action="append", help="Open LLM Leaderboard contents (Parquet/CSV/JSON, v1 or v2)")
    p.add_argument("--csv", action="append", help="plain CSV: model_id,metric,value[,source,benchmark]")
    p.add_argument("--cards", action="store_true", help="model-card model-index results gathered by the survey")
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("correlate", help="HTSR metrics against reported accuracy, per family and overall")
    p.add_argument("--dataset", required=True)
    p.add_argument("--metric", default="top1", help="accuracy metric (default top1)")
    p.add_argument("--benchmark", default=None, help="e.g. imagenet, imagenet-real (default: per source)")
    p.add_argument("--source", default=None, help="only models of this source (hf, timm, local)")
    p.add_argument("--group-by", default="family", help="family | model_type | a regex on model_id (group 1)")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for tau / rho CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the table to .parquet or .csv")
    p.set_defaults(func=cmd_correlate)

    p = sub.add_parser("report", help="a self-contained HTML report of a dataset (plots + tables)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="report.html")
    p.add_argument("--metric", default="top1")
    p.add_argument("--benchmark", default=None)
    p.add_argument("--group-by", default="family")
    p.add_argument("--storage-options", default=None, help="filesystem options as JSON")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hubscan`` command. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except HubscanError as exc:
        if args.debug:
            raise
        print(f"hubscan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hubscan: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unexpected: still one line
        if args.debug:
            raise
        where = getattr(args, "path", "") or getattr(args, "source", "") or getattr(args, "dataset", "") or args.command
        msg = " ".join(str(exc).split())
        print(f"hubscan: error: {where}: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
