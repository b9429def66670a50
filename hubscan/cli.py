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
    from rich.console import Console
    from hubscan.analysis import analyze

    console = Console(width=None if sys.stdout.isatty() else 240)
    result = analyze(args.path, _options(args), client=_client(args))
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
    _add_fit_options(p)
    _add_hub_options(p)
    p.set_defaults(func=cmd_analyze)
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
        where = getattr(args, "path", "") or args.command
        msg = " ".join(str(exc).split())
        print(f"hubscan: error: {where}: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
