"""Command line: argument parsing and printing only; the work is done by the library.

Each sub-command has its own ``_add_<command>`` (arguments) and ``cmd_<command>`` (run) function.
Errors end as one line on stderr, ``hubscan: error: <file or model>: <reason>``, and exit status 1
(2 for bad arguments, also one line); ``--debug`` (before or after the sub-command) shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import decimal
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import warnings

from hubscan import __version__
from hubscan.errors import HubscanError
from hubscan.errors import printable as _printable
from hubscan.records import ModelStatus, RowStatus



# -- terminal output ---------------------------------------------------------------------------------

def _console_class():
    """A rich Console whose ``print`` escapes strings (:func:`_printable`); markup off, so that a ``[`` in a
    name is text, never a style or a link."""
    from rich.console import Console

    class SafeConsole(Console):
        def __init__(self, **kwargs):
            super().__init__(markup=False, **kwargs)

        def print(self, *objects, **kwargs):  # noqa: A003 - rich's API
            super().print(*(_printable(o) if isinstance(o, str) else o for o in objects), **kwargs)

        def on_broken_pipe(self) -> None:  # rich exits 1 ("failed"): the reader went away, as for any output
            self.quiet = True
            raise BrokenPipeError  # _run: quiet, exit 141 as a process ended by SIGPIPE

    return SafeConsole


class _PrintableFormatter(logging.Formatter):
    """Log lines with their message escaped (:func:`_printable`); a traceback (``--debug``) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        return _printable(super().formatMessage(record))


# -- argument types: each refuses a bad value in one line -----------------------------------------

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as every other hubscan error:
    ``hubscan: error: <reason> (see hubscan analyze --help)``, pointing to the command's own help (an
    unknown option too, which argparse reports from the top-level parser)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"hubscan: error: {_printable(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # noqa: D401 - argparse API
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            (getattr(ns, "parser", None) or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs fitted to the terminal: prose lines wrapped at the width, indented lines
    (examples) kept as written but a command longer than the width continued on the next line with ``\\``
    (split at a space outside quotes, so the example still pastes into a shell)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            body = line.lstrip(" ")
            lead = indent + line[:len(line) - len(body)]
            if not body:
                out.append("")
            elif lead == indent:
                out.extend(textwrap.wrap(body, width, initial_indent=indent, subsequent_indent=indent,
                                         break_on_hyphens=False, break_long_words=False))
            else:
                out.extend(_continued(body, width, lead))
        return "\n".join(out)


def _continued(command: str, width: int, lead: str) -> list[str]:
    """A shell command in lines of at most ``width`` columns (where a space outside quotes allows), each
    but the last ending with `` \\``, the continuations indented 4 more."""
    words, word, quote = [], "", None
    for ch in command:  # words split at spaces outside quotes
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == " ":
            words.append(word)
            word = ""
            continue
        word += ch
    words.append(word)
    lines, cur = [], lead
    for w in words:
        if cur.strip() and len(cur) + 1 + len(w) + 2 > width:
            lines.append(cur + " \\")
            cur = lead + "    " + w
        else:
            cur = cur + (" " if cur.strip() else "") + w
    lines.append(cur)
    return lines


def _int_range(lo: int | None = None, hi: int | None = None):
    """An argparse type: an integer (``1e3`` accepted when integral) with lo ≤ value ≤ hi."""
    def parse(text: str) -> int:
        try:
            v = float(text)
            if not math.isfinite(v) or v != int(v):
                raise ValueError
            v = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"{v} is below {lo}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{v} is above {hi:,}")
        return v
    parse.__name__ = "integer"
    return parse


def _float_range(lo: float = 0.0, *, strict: bool = False):
    """An argparse type: a finite float ≥ lo (> lo when ``strict``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"{v:g} must be {'>' if strict else '≥'} {lo:g}")
        return v
    parse.__name__ = "number"
    return parse


def _json_object(text: str) -> dict:
    """An argparse type: a JSON object (filesystem options)."""
    try:
        v = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"anon\": true}'")
    return v


#: The environment variables the analysis reads beside huggingface_hub's (analyze and survey help).
ENVIRONMENT_HELP = ("environment:\n"
                    "  HUBSCAN_CPU_LINALG  torch | numpy | auto (default: the faster here,\n"
                    "                      measured; numpy on one torch thread only): the\n"
                    "                      library of CPU eigenvalues\n"
                    "  NUMBA_CACHE_DIR     where the compiled fits' machine code is cached\n"
                    "  HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE: huggingface_hub's")


def _check_cpu_linalg(parser: argparse.ArgumentParser) -> None:
    """Refuse a bad ``HUBSCAN_CPU_LINALG`` (:func:`hubscan.esd.eigen.cpu_linalg_setting`)."""
    from hubscan.esd.eigen import cpu_linalg_setting
    try:
        cpu_linalg_setting()
    except ValueError as exc:
        parser.error(str(exc))


def _check_cuda(parser: argparse.ArgumentParser, device: str) -> None:
    """Refuse ``cuda``/``cuda:N`` when this machine has no (such) CUDA device."""
    if not device.startswith("cuda"):
        return
    import torch
    if not torch.cuda.is_available():
        parser.error(f"--device {device}: no CUDA device on this machine (use --device cpu or auto)")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        parser.error(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _check_fit_options(parser: argparse.ArgumentParser, args) -> None:
    """The analysis options together, as :class:`hubscan.analysis.AnalyzeOptions` checks them (each flag's
    value was checked by its type): refused in the flags' names (``--min-evals 50 is above --max-evals 10``)."""
    try:
        _options(args)
    except (TypeError, ValueError) as exc:
        parser.error(re.sub(r"\b([a-z][a-z_]*) = ", lambda m: f"--{m.group(1).replace('_', '-')} ", str(exc)))


def _metric_options() -> dict:
    from hubscan.esd.registry import options
    return options()


def _option_type(option):
    """An argparse type for a registered option: its type and check (:meth:`hubscan.esd.registry.Option.parse`)."""
    def parse(text: str):
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option.name} = ")) from None
    parse.__name__ = option.type.__name__
    return parse


# -- shared option groups -------------------------------------------------------------------------

def _add_common(p: argparse.ArgumentParser) -> None:
    # default=SUPPRESS: given after the sub-command they override, absent they keep the main parser's value
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="print nothing but errors (files are still written)")


def _command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A sub-command's parser: ``kwargs`` (help, description, an ``examples:`` epilog) as given,
    the epilog's layout kept, ``--debug``/``-q`` accepted after the sub-command too, ``func`` run."""
    p = sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)
    _add_common(p)
    p.set_defaults(parser=p, func=func)
    return p


def _add_dataset(p: argparse.ArgumentParser, *, what: str) -> None:
    p.add_argument("--dataset", required=True, metavar="DIR_OR_URL",
                   help=f"the survey dataset {what} (a directory or s3://…, gs://… URL written by `hubscan survey`)")
    p.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                   help="filesystem options as JSON, e.g. '{\"endpoint_override\": \"127.0.0.1:9000\", \"scheme\": \"http\"}'")


def _layer_spec(text: str) -> str:
    from hubscan.esd.select import LayerFilter
    try:
        LayerFilter.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    from hubscan.esd.options import CORE_OPTIONS, FIX_FINGERS, MAX_EVALS_BOUND, METHODS, PRECISIONS

    core = {name: _option_type(option) for name, option in CORE_OPTIONS.items()}  # the API's rules (one place)
    g = p.add_argument_group("analysis options")
    g.add_argument("--device", default="cpu", type=core["device"], help="cpu | cuda | cuda:N | auto (default: cpu)")
    g.add_argument("--method", default="gram", choices=METHODS,
                   help="eigenvalues from the Gram matrix WᵀW (fast, default) or from the SVD of W")
    g.add_argument("--precision", default="float64", choices=PRECISIONS,
                   help="eigenvalue arithmetic (default float64); auto: float32 on CUDA where a float64 check "
                        "of one layer per shape gives |Δalpha| ≤ 1e-4")
    g.add_argument("--fix-fingers", default="none", choices=["none", *FIX_FINGERS[1:]],
                   help="WeightWatcher's fix_fingers options (default: none)")
    g.add_argument("--tpl", action="store_true", help="also fit a truncated power law (column Lambda)")
    g.add_argument("--mp-fit", dest="mp_fit", action=argparse.BooleanOptionalAction, default=True,
                   help="the Marchenko-Pastur bulk fit and so the phase (default: on; --no-mp-fit is "
                        "WeightWatcher's default, mp_fit=False)")
    g.add_argument("--randomize", action="store_true", help="compute rand_distance (one more eigensolve per layer)")
    g.add_argument("--split-fused", action="store_true", help="analyze fused q/k/v and RNN gates block by block")
    g.add_argument("--conv-slices", action="store_true", help="one row per conv slice instead of a pooled ESD")
    g.add_argument("--min-evals", type=core["min_evals"], default=8,
                   help=f"skip layers with fewer eigenvalues (default 8, at most {MAX_EVALS_BOUND:,})")
    g.add_argument("--max-evals", type=core["max_evals"], default=None,
                   help="skip layers with more eigenvalues (default: none)")
    for option in _metric_options().values():  # declared by the metric modules (hubscan.esd.registry)
        if option.type is bool:
            g.add_argument(option.flag, dest=option.name, action="store_false" if option.default else "store_true",
                           help=option.help)
        else:
            g.add_argument(option.flag, dest=option.name, type=_option_type(option), default=option.default,
                           metavar=option.metavar, help=option.help)
    g.add_argument("--layers", default="", metavar="SPEC", type=_layer_spec,
                   help="analyze only these layers: ids/ranges (3,5-8), types (dense, conv2d, embedding, conv1d, conv3d), "
                        "name globs ('*attention*'); '!' excludes ('!*pooler*'); others get skipped rows")
    g.add_argument("--evals-thresh", type=core["evals_thresh"], default=1e-5,
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
    g.add_argument("--max-retries", type=_int_range(0), default=4,
                   help="retries on 429/5xx/connection errors (default 4)")
    g.add_argument("--timeout", type=_float_range(0.0, strict=True), default=30.0,
                   help="seconds a hub request may stall (default 30)")


def _source_specs() -> list[str]:
    from hubscan.sources import source_specs
    return source_specs()


def _install_http_client(args) -> None:
    """A command that talks to the Hub installs hubscan's HTTP client in ``huggingface_hub`` (the CLI is an
    entry point: requests counted, a stalled server bounded by ``--timeout``, an unreachable Hub one line)."""
    from hubscan.hub import install_http_client
    install_http_client(getattr(args, "timeout", None) or 30.0)


def _client(args):
    """The hub client of a command (its HTTP client installed: :func:`_install_http_client`)."""
    from hubscan.hub import HubClient
    _install_http_client(args)
    return HubClient(endpoint=args.endpoint, cache_dir=args.cache_dir, keep_cache=args.keep_cache,
                     max_retries=args.max_retries, timeout=args.timeout)


def _options(args):
    from hubscan.analysis import AnalyzeOptions
    return AnalyzeOptions(device=args.device, method=args.method, precision=args.precision,
                          evals_thresh=args.evals_thresh,
                          fix_fingers="" if args.fix_fingers == "none" else args.fix_fingers, tpl=args.tpl,
                          mp_fit=args.mp_fit, randomize=args.randomize, split_fused=args.split_fused,
                          conv_slices=args.conv_slices, min_evals=args.min_evals, max_evals=args.max_evals,
                          layers=args.layers, **{name: getattr(args, name) for name in _metric_options()})


def _console(args=None, *, stderr: bool = False):
    """A rich Console: the terminal's width (``$COLUMNS`` when set); piped (``| less``, ``| head``) from a
    terminal, that terminal's width; 200 columns with no terminal at all (a file, a job log)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not (stream.isatty() or os.environ.get("COLUMNS")):
        width = 200
        for other in (sys.stderr, sys.stdout, sys.stdin):
            try:
                if other.isatty():
                    width = os.get_terminal_size(other.fileno()).columns
                    break
            except (OSError, ValueError, AttributeError):
                continue
    return _console_class()(width=width, file=stream, quiet=bool(args is not None and args.quiet))


def _id_ranges(rows) -> str:
    """Layer ids as compact ranges: ``0-3, 7, 9-12``."""
    ids = sorted({int(r["layer_id"]) for r in rows if r.get("layer_id") is not None})
    out, start = [], None
    for i, v in enumerate(ids):
        if start is None:
            start = v
        if i + 1 == len(ids) or ids[i + 1] != v + 1:
            out.append(f"{start}-{v}" if v > start else f"{v}")
            start = None
    return ", ".join(out)


def _say(console, text: str, indent: int = 2) -> None:
    """Print a note wrapped to the console's width, continuation lines indented under its first word; a word
    longer than a line (a URL, a path) is never split: it overflows its line, whole, to be copied."""
    import textwrap
    lines = textwrap.wrap(_printable(text), width=max(console.width, 40), initial_indent=" " * indent,
                          subsequent_indent=" " * (indent + 2), break_on_hyphens=False,
                          break_long_words=False) or [""]
    for line in lines:
        console.print(line, highlight=False, markup=False, crop=False, soft_wrap=True)


def _heading(console, text: str) -> None:
    """Print a heading that holds a path (a model's source): wrapped to the console's width after a
    ``/`` or a space, never inside a name (a name longer than the width is cut where it must be)."""
    text, width = _printable(text), max(console.width, 40)
    tokens = re.findall(r"[^/ ]*(?:/|\s+|$)", text)
    lines, line = [], ""
    for tok in filter(None, tokens):
        if line and len(line) + len(tok.rstrip()) > width:
            lines.append(line.rstrip())
            line = "  "
        while len(line) + len(tok) > width and len(tok) > width - 2:  # one name wider than the terminal
            lines.append(line + tok[:width - len(line)])
            tok, line = tok[width - len(line):], "  "
        line += tok
    lines.append(line.rstrip())
    for ln in lines:
        console.print(ln, highlight=False, markup=False, crop=False, soft_wrap=True)


def _fmt(v, digits=3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return str(v)


#: Commands whose ``--out`` is one file: its suffixes, checked with the options (exit 2).
_OUT_FILES = {"analyze": ((".parquet", ".csv", ".json", ".jsonl"), "analyze"),
              "correlate": ((".parquet", ".csv"), "correlate"), "report": ((".html", ".htm"), "report")}


def _check_out(path: str, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse, before anything runs, an output path whose folder does not exist, whose suffix is not one of
    ``suffixes`` (a name that is only a suffix, ``.csv``, has none), or that is (or links to) something other
    than a regular file: a folder, a device, a FIFO."""
    if "://" in path:
        return
    target = os.path.realpath(path)  # a symbolic link is written through (its target)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise HubscanError(path, f"folder {folder} does not exist (create it first; {what} does not create folders)")
    if suffixes and os.path.splitext(os.path.basename(path))[1].lower() not in suffixes:
        raise HubscanError(path, f"unknown file type (use {' / '.join(suffixes)})")
    from hubscan.store import not_a_regular_file
    if why := not_a_regular_file(target):
        raise HubscanError(path, why)


def _check_plot(path: str) -> None:
    """Refuse a ``--plot`` folder that cannot be made or written: its parent missing, or it (or its parent) a
    file or not writable."""
    folder = os.path.abspath(path)
    parent = os.path.dirname(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise HubscanError(path, "exists as a file, not a folder (--plot writes one PNG per layer into a folder)")
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise HubscanError(path, f"{os.path.dirname(os.path.normpath(path))} is a file, not a folder")
    if not os.path.isdir(parent):
        raise HubscanError(path, f"folder {parent} does not exist (create it first; analyze creates only "
                                 "the plot folder itself)")
    writable = folder if os.path.isdir(folder) else parent
    if not os.access(writable, os.W_OK | os.X_OK):
        raise HubscanError(path, f"folder {writable} is not writable")
    if not os.path.isdir(folder):  # made and removed again: what access() cannot tell (/proc, a read-only mount)
        try:
            os.mkdir(folder)
            os.rmdir(folder)
        except OSError as exc:
            raise HubscanError(path, f"cannot be created ({(exc.strerror or str(exc)).lower()})") from None


# -- analyze ------------------------------------------------------------------------------------------

#: Terminal-table columns of ``hubscan analyze``: title → row key (``NxM``: the two as one cell).
#: Any other column of the layers table can be chosen with --columns by its name.
ANALYZE_COLUMNS = {"id": "layer_id", "name": "name", "type": "layer_type", "NxM": "NxM", "N": "N", "M": "M",
                   "rf": "rf", "alpha": "alpha", "D": "D", "xmin": "xmin", "spikes": "num_pl_spikes",
                   "log_norm": "log_norm", "log_spec": "log_spectral_norm", "alpha_w": "alpha_weighted",
                   "stable_rank": "stable_rank", "phase": "phase", "status": "status"}
#: What fits 80 columns (the name takes what is left, shortened from the left). ``status`` is shown
#: only when a row is not ``success``; the reasons follow the table.
DEFAULT_ANALYZE_COLUMNS = ("id", "name", "NxM", "alpha", "D", "alpha_w", "phase", "status")
_LEFT = ("name", "type", "layer_type", "phase", "status")
_MIN_NAME = 16
_GAP = 2  # characters between two columns (the table's padding + divider)


def _short_left(text: str, width: int, letters: int = 1, keep: frozenset = frozenset()) -> str:
    """``text`` shortened to ``width`` characters keeping what tells layers apart: dotted parameter
    names first lose letters of their leading words (down to ``letters``; the words at the indices in ``keep``
    stay whole) but never a number (``encoder.layer.3.attention.self.value.weight`` →
    ``e.l.3.a.s.value.weight``, then ``…3.a.s.v.weight``), and only then lose their left end."""
    if len(text) <= width:
        return text
    parts = text.split(".")
    for i in range(max(0, len(parts) - 1)):  # leading words first; the last word stays whole
        if len(".".join(parts)) <= width:
            break
        if not parts[i].isdigit() and i not in keep:
            parts[i] = parts[i][:letters]
    text = ".".join(parts)
    if len(text) > width:  # then the left end goes, at a dot: as many trailing words as fit (the last index first)
        for k in range(1, len(parts)):
            if len(tail := "…" + ".".join(parts[k:])) <= width:
                return tail
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def _short_names(names: list[str], width: int) -> list[str]:
    """:func:`_short_left` of every name, distinct names kept distinct where the width allows: names
    whose shortenings collide keep whole the words in which they differ (``…lora_A…`` / ``…lora_B…``), then
    more letters of their words (``s.q.weight`` / ``s.qk.weight``) — never at the cost of a number they
    showed (a layer index)."""
    from collections import defaultdict

    def numbers(text: str) -> int:
        return sum(p.isdigit() for p in text.lstrip("…").split("."))

    def clashes(short: list[str]) -> dict:
        groups = defaultdict(set)
        for n, t in zip(names, short):
            groups[t].add(n)
        return {t: g for t, g in groups.items() if len(g) > 1}

    short = [_short_left(n, width) for n in names]
    redo = {}
    for group in clashes(short).values():  # the words where the colliding names differ stay whole
        split = [n.split(".") for n in group]
        if len({len(p) for p in split}) == 1:
            differ = frozenset(i for i in range(len(split[0])) if len({p[i] for p in split}) > 1)
            redo.update({n: _short_left(n, width, 1, differ) for n in group})
    short = [redo[n] if n in redo and numbers(redo[n]) >= numbers(t) else t for n, t in zip(names, short)]
    for letters in range(2, 16):
        clash = clashes(short)
        if not clash:
            break
        longer = [_short_left(n, width, letters) if t in clash else t for n, t in zip(names, short)]
        short = [b if numbers(b) >= numbers(a) else a for a, b in zip(short, longer)]
    return short


def _layer_cell(row: dict, key: str) -> str:
    if key == "name":
        from hubscan.records import part_key
        return part_key(row["name"], row.get("part"))
    if key == "NxM":
        return f"{row['N']}×{row['M']}" if row.get("N") is not None and row.get("M") is not None else ""
    if key == "status":
        return row.get("status") or ""
    return _fmt(row.get(key))


def _fit_columns(rows, columns, explicit: bool):
    """The columns shown: the default set drops ``status`` when every row is a success; chosen
    columns (``explicit``) are shown as given."""
    columns = list(columns)
    if explicit:
        return columns
    if "status" in columns and all(r.get("status") == RowStatus.SUCCESS for r in rows):
        columns.remove("status")
    return columns


def _fitted_table(title: str, titles: list[str], cells: list[list[str]], *, left, flexible: str | None,
                  width: int, caption: str | None = None, min_flexible: int = _MIN_NAME, optional=(),
                  want_flexible: int | None = None, dropped: list | None = None, aliases: dict | None = None,
                  shrinkable=()):
    """A rich Table in which no cell wraps: every column as wide as its widest cell, except
    ``flexible``, which takes the width the others leave (at least ``min_flexible``, or down to 6 where the
    others leave less) and is shortened from the left, after its values are replaced by their ``aliases``
    when they would be cut; ``optional`` columns are left out, last first, while the table would not fit
    with ``flexible`` at ``want_flexible`` characters (default ``min_flexible``); their titles are appended
    to ``dropped``. The ``shrinkable`` text columns give up what the table lacks first down to 20 characters,
    before any optional column goes, then down to 8 (their values cut in the middle); on a terminal still too
    narrow the last other columns go too (appended to ``dropped``)."""
    from rich import box
    from rich.table import Table

    titles, cells = list(titles), [[_printable(c) for c in r] for r in cells]
    widths = [max([len(t)] + [len(row[i]) for row in cells]) for i, t in enumerate(titles)]

    def others():
        i = titles.index(flexible) if flexible in titles else -1
        return sum(w for j, w in enumerate(widths) if j != i) + _GAP * (len(titles) - 1)

    def shrink(floor: int, room: int) -> None:  # the shrinkable columns cut (in the middle) to leave ``room``
        for t in shrinkable:
            over = others() + room - width
            if t in titles and over > 0:
                j = titles.index(t)
                w = max(len(t), floor, widths[j] - over)
                for row in cells:
                    row[j] = _sql_cut(row[j], w, "middle")
                widths[j] = max([len(t)] + [len(row[j]) for row in cells])

    want = max(min_flexible, want_flexible or 0)
    shrink(20, want)  # long group names give way to 20 characters before an optional column goes
    for t in reversed(optional):
        if t in titles and others() + want > width:
            i = titles.index(t)
            del titles[i], widths[i]
            for row in cells:
                del row[i]
            if dropped is not None:
                dropped.insert(0, t)
    shrink(8, 8)  # still too wide for the flexible column's 8: long group names give way further
    while flexible in titles and others() + 6 > width and len(titles) > 2:  # a narrow terminal: the last go too
        t = next((t for t in reversed(titles) if t != flexible and t not in left), None)
        if t is None:
            break
        i = titles.index(t)
        del titles[i], widths[i]
        for row in cells:
            del row[i]
        if dropped is not None:
            dropped.append(t)
    if flexible in titles:
        i = titles.index(flexible)
        w = max(min(min_flexible, max(6, width - others())), min(widths[i], width - others()))
        if aliases and widths[i] > w:
            for row in cells:
                row[i] = aliases.get(row[i], row[i])
        names = [row[i] for row in cells]
        for row, short in zip(cells, _short_names(names, w)):
            row[i] = short
        widths[i] = max(len(titles[i]), w)
    table = Table(title=_printable(title), box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1), pad_edge=False,
                  header_style="bold", title_justify="left", caption=caption, caption_justify="left")
    for t, w in zip(titles, widths):
        table.add_column(t, justify="left" if t in left else "right", no_wrap=True, overflow="ellipsis", min_width=w)
    for row in cells:
        table.add_row(*row)
    return table


def _layer_table(rows, columns, width: int):
    """The per-layer table of one result, fitted to ``width`` terminal columns (the name shortened),
    and the chosen columns that do not fit (kept left to right; they are all in ``--out``)."""
    keys = [ANALYZE_COLUMNS.get(c, c) for c in columns]
    titles = ["N×M" if c == "NxM" else c for c in columns]
    cells = [[_printable(_layer_cell(r, k)) for k in keys] for r in rows]
    used, keep = 0, []
    for i, t in enumerate(titles):
        w = max([len(t)] + [len(row[i]) for row in cells])
        w = min(w, _MIN_NAME) if t == "name" else w
        if keep and used + _GAP + w > width:
            continue
        keep.append(i)
        used += w + (_GAP if len(keep) > 1 else 0)
    dropped = [titles[i] for i in range(len(titles)) if i not in keep]
    titles, keys = [titles[i] for i in keep], [keys[i] for i in keep]
    cells = [[row[i] for i in keep] for row in cells]
    import pyarrow as pa

    from hubscan.schema import LAYER_SCHEMA
    text = {f.name for f in LAYER_SCHEMA if pa.types.is_string(f.type) or pa.types.is_list(f.type)}
    return _fitted_table("", titles, cells, left=[t for t, k in zip(titles, keys) if k in _LEFT or k in text],
                         flexible="name", width=width), dropped


def _print_result(result, console, columns, explicit: bool = False) -> None:
    from hubscan.weights.base import WeightKind

    from hubscan.esd.select import excluded
    shown, left_out = [], []  # left out: the layers --layers excludes, one line below
    for r in result.rows:
        (left_out if excluded(r) else shown).append(r)
    _heading(console, f"{result.source} ({result.format})")
    ids_shown = False
    if shown:
        columns = _fit_columns(shown, columns, explicit)
        ids_shown = "id" in columns
        table, dropped = _layer_table(shown, columns, console.width)
        console.print(table, crop=True)
        if dropped:
            _say(console, f"{len(dropped)} chosen column(s) do not fit {console.width} columns: "
                          f"{', '.join(dropped[:6])}{' …' if len(dropped) > 6 else ''} (all are in --out)")
    if left_out:  # the user's own filter: one line, not one per layer
        ranges = _id_ranges(left_out)
        _say(console, f"{len(left_out)} layer(s) {left_out[0]['reason']}"
                      + (f" (ids {ranges})" if ranges.count(",") < 8 else ""))
    for r in result.rows:  # failed / skipped rows, and fits with a caveat (e.g. on < 20 eigenvalues)
        if (r.get("status") != RowStatus.SUCCESS or r.get("reason")) and not excluded(r):
            _say(console, f"layer {r.get('layer_id', '')} {_layer_cell(r, 'name')}: {r['status']}: {r.get('reason')}")
    delta = result.kind != WeightKind.WEIGHTS  # ESDs of ΔW: HTSR's 2 / 6 guides are for trained W
    # named as the table names them: by id (and part: the q/k/v of a fused matrix share one id) when the id
    # column is shown, else by name
    warned = [f"{r.get('layer_id', '')}{' ' + r['part'] if r.get('part') else ''} ({r['warning']})" if ids_shown
              else f"{_layer_cell(r, 'name')} ({r['warning']})" for r in result.rows
              if r.get("status") == RowStatus.SUCCESS and r.get("warning") and not delta]
    if warned:
        _say(console, f"warnings (layer {'ids' if ids_shown else 'names'}): {', '.join(warned)}")
    s = result.summary
    if result.ref is not None and not result.ref.is_path:
        console.print(f"model {result.ref} ({s.get('bytes_read', 0) / 1e6:.1f} MB fetched)")
    _say(console, f"summary status={s['status']}" + (f" ({s['reason']})" if s.get("reason") else ""), indent=0)
    _say(console, f"layers: {s['num_success']} analyzed, {s['num_failed']} failed, {s['num_skipped']} skipped"
                  + (f", {s['num_missing']} missing" if s.get("num_missing") else ""))
    if not s["num_success"]:  # nothing analyzed: no metric to show
        _say(console, f"time {s['seconds']:.2f}s")
        return
    adapted = [r for r in result.rows if not r["name"].endswith(".lora_BA")]
    if result.kind == WeightKind.ADAPTER and adapted and len(adapted) < len(result.rows):
        # an adapter with its base: the ΔW = s·B·A rows and the adapted W + ΔW rows, never averaged together
        from hubscan.esd.metrics import summarize
        for what, rows in (("ΔW = s·B·A", [r for r in result.rows if r["name"].endswith(".lora_BA")]),
                           ("W + ΔW", adapted)):
            g = summarize(rows)
            _say(console, f"{what} ({g['num_success']} layers): "
                          + "  ".join(f"{m}={_fmt(g[m], 4) or '–'}" for m in ("alpha", "alpha_weighted", "log_norm")))
        _say(console, f"time {s['seconds']:.2f}s")
        return
    for group in (("alpha", "alpha_weighted", "log_alpha_norm"), ("log_norm", "log_spectral_norm"),
                  ("stable_rank", "mp_softrank")):
        _say(console, "  ".join(f"{m}={_fmt(s[m], 4) or '–'}" for m in group))
    if delta:
        _say(console, f"layers with alpha<2: {s['num_over_trained']}, alpha>6: {s['num_under_trained']} "
                      f"(of ΔW: the 2 / 6 training guides are for W), time {s['seconds']:.2f}s")
        return
    _say(console, f"over-trained layers (alpha<2): {s['num_over_trained']}, "
                  f"under-trained (alpha>6): {s['num_under_trained']}, time {s['seconds']:.2f}s")
    phases = {}
    for r in result.rows:
        if r.get("status") == RowStatus.SUCCESS and r.get("phase"):
            phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    if phases:
        _say(console, "phases: " + ", ".join(f"{k}={v}" for k, v in sorted(phases.items())))


def _columns(text: str) -> tuple[str, ...]:
    """--columns: comma-separated titles of :data:`ANALYZE_COLUMNS` or layer-row keys; ``all``."""
    if text.strip() == "all":
        return tuple(ANALYZE_COLUMNS)
    cols = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))  # each once, in the order given
    if not cols:
        raise argparse.ArgumentTypeError("no column named (give titles separated by commas, or all)")
    from hubscan.schema import LAYER_SCHEMA
    known = set(ANALYZE_COLUMNS) | set(LAYER_SCHEMA.names)
    bad = [c for c in cols if c not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown column(s) {', '.join(bad)}; choose from "
                                         f"{', '.join(ANALYZE_COLUMNS)}, any column of the layers table, or all")
    return cols


def _provenance(args, result) -> dict:
    """What --out files record about how they were made (Parquet key-value metadata); ``cpu_linalg``: the
    library of the CPU eigenvalues (torch / numpy; None when none were computed on CPU) and ``cpu_threads``
    torch's thread count (both change the eigenvalues' last bits)."""
    import torch

    from hubscan.esd.eigen import cpu_linalg_chosen
    ref = result.ref
    return {"hubscan_version": __version__, "model": str(args.path),
            "model_id": getattr(ref, "id", None) or str(args.path),
            "source": getattr(ref, "source", None), "revision": getattr(ref, "revision", None),
            "format": result.format, "options": _options(args).to_dict(),
            "cpu_linalg": cpu_linalg_chosen(), "cpu_threads": torch.get_num_threads(),
            "status": result.summary.get("status")}


def cmd_analyze(args) -> int:
    import dataclasses
    from hubscan import analyze

    console = _console(args)
    options = _options(args)
    if args.plot:  # (its destination checked with the options: _check_plot)
        options = dataclasses.replace(options, keep_evals=True)
    result = analyze(args.path, options, client=_client(args), base=args.base)
    if args.plot:
        from hubscan.report import plot_model
        console.print(f"plotting {len(result.evals)} layer ESDs to {args.plot} …")
        files = plot_model(result, args.plot,
                           progress=lambda i, n: console.print(f"  {i}/{n} plots", highlight=False) if i % 10 == 0 else None)
        console.print(f"wrote {len(files)} plots to {args.plot}")
    if args.out:
        from hubscan.store import write_file
        write_file(result.to_arrow(), args.out, metadata=_provenance(args, result))
    _print_result(result, console, args.columns or DEFAULT_ANALYZE_COLUMNS, explicit=args.columns is not None)
    if args.out:
        console.print(f"wrote {len(result.rows)} rows to {args.out}")
    return 0 if result.summary["status"] in (ModelStatus.SUCCESS, ModelStatus.INCOMPLETE) else 1


def _check_analyze(parser, args) -> None:
    _check_fit_options(parser, args)
    _check_cpu_linalg(parser)
    _check_cuda(parser, args.device)


def _add_analyze(sub) -> None:
    p = _command(sub, "analyze", cmd_analyze, help="analyze one model's weights: per-layer table and summary",
                 description="Analyze one model's weights: the ESD of every weight matrix, its power-law "
                             "alpha and the WeightWatcher metrics, printed as a table and a summary.",
                 epilog="examples:\n"
                        "  hubscan analyze hf:sentence-transformers/all-MiniLM-L6-v2\n"
                        "  hubscan analyze timm:resnet18.a1_in1k --columns name,alpha,log_norm,phase\n"
                        "  hubscan analyze model.safetensors --out layers.parquet   # or .csv / .json\n"
                        "  hubscan analyze ./my-model/ --plot plots/ --fix-fingers clip_xmax\n" + ENVIRONMENT_HELP)
    p.add_argument("path", help="hf:ORG/NAME[@REV], timm:ARCH.TAG, or a local weight file (.safetensors, .bin / .pt / "
                                ".pth, .onnx, .gguf, .h5 / .keras, .msgpack …) or model folder")
    p.add_argument("--out", help="write every column of every layer row to this file: .parquet (with the model, "
                                 "revision, options and hubscan version in its metadata), .csv or .json (JSON lines)")
    p.add_argument("--columns", type=_columns, default=None, metavar="COL,COL,…",
                   help=f"terminal table columns (default: {','.join(DEFAULT_ANALYZE_COLUMNS)}; 'all'; or any "
                        f"layers column: {', '.join(ANALYZE_COLUMNS)}, num_spikes, lambda_max …)")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write an ESD plot per layer (log-log, fitted power law, xmin) and alpha vs depth to DIR")
    _add_fit_options(p)
    _add_delta_options(p)
    _add_hub_options(p)
    p.set_defaults(check=_check_analyze)


# -- survey -------------------------------------------------------------------------------------------

def _hub_budget(value: str) -> dict:
    from hubscan.hub import parse_budget
    try:
        return parse_budget([value])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The survey's source-filter options (their ``args`` names); each source takes those in its ``filters``.
SOURCE_FILTERS = ("filter", "author", "search", "pipeline_tag", "sort", "exclude")


def _survey_config(args):
    from hubscan.survey import SurveyConfig

    filters = {k: getattr(args, k) for k in SOURCE_FILTERS if getattr(args, k) is not None}
    from hubscan.sources import parse_spec
    accepted = parse_spec(args.source)[0].filters
    filters = {k: v for k, v in filters.items() if k in accepted}
    hub = {k: v for k, v in {"endpoint": args.endpoint, "cache_dir": args.cache_dir, "keep_cache": args.keep_cache,
                             "max_retries": args.max_retries, "timeout": args.timeout}.items() if v is not None}
    return SurveyConfig(source=args.source, out=args.out, filters=filters, limit=args.limit, options=_options(args),
                        address=args.address, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                        cpus_per_actor=args.cpus_per_actor, max_in_flight=args.max_in_flight,
                        max_attempts=args.max_attempts, force=args.force, keep_esd=not args.no_esd,
                        hub_budget={k: v for d in args.hub_budget for k, v in d.items()},
                        storage_options=args.storage_options or {},
                        hub=hub, progress=not (args.no_progress or args.quiet), flush_models=args.flush_models,
                        flush_seconds=args.flush_seconds, compact=not args.no_compact,
                        retention_hours=args.retention_hours, quiet=args.quiet)


def _print_survey(summary, console) -> None:
    """This run's counts as a table that fits the terminal (80 columns included)."""
    titles = ["models", "done", "success", "incompl.", "failed", "skipped", "MB read", "seconds", "actors"]
    cells = [[str(summary["num_models"]), str(summary["num_already_done"]), str(summary["num_success"]),
              str(summary["num_incomplete"]), str(summary["num_failed"]), str(summary["num_skipped"]),
              f"{summary['bytes_read'] / 1e6:.1f}", f"{summary['seconds']:.1f}", str(summary["actors"])]]
    _heading(console, f"this survey: {summary['survey_id']} ({summary['source']}; done = already in the dataset)")
    console.print(_fitted_table("", titles, cells, left=(), flexible=None, width=console.width), crop=True)


def _print_not_analyzed(config, summary, console, show: int = 5) -> None:
    """This survey's models that are not a success, with their reasons (the first ``show``)."""
    n = sum(summary.get(k) or 0 for k in ("num_failed", "num_incomplete", "num_skipped"))
    if not n:
        return
    from hubscan.query import connect
    where = f"survey_id = '{summary['survey_id']}' AND status <> 'success'"
    rows = connect(config.out, **config.storage_options).execute(
        f"SELECT status, model_id, reason FROM models WHERE {where} ORDER BY status, model_id LIMIT {show}").fetchall()
    for status, model_id, reason in rows:  # a reason that starts with the model's own path says it once
        reason = reason or ""
        _say(console, f"{status} {reason}" if reason.startswith(f"{model_id}") else f"{status} {model_id}: {reason}")
    if n > len(rows):
        _say(console, f"… {n - len(rows)} more: hubscan sql --dataset {config.out} \"SELECT model_id, status, "
                      f"reason FROM models WHERE {where}\"")


def cmd_survey(args) -> int:
    from hubscan.survey import survey

    config = _survey_config(args)
    if config.progress and not sys.stderr.isatty():  # progress lines instead of a bar
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PrintableFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
        progress = logging.getLogger("hubscan.progress")
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    if args.lineage:
        return cmd_lineage(args, config)
    summary = survey(config)
    console = _console(args)
    _print_survey(summary, console)
    _print_not_analyzed(config, summary, console)
    from hubscan.query import summary_tables
    for title, lines in summary_tables(config.out, config.storage_options, columns=console.width):
        _say(console, title, indent=0)
        for line in lines:
            console.print("  " + line)
    _check_not_all_failed(config, summary)
    return 0


def _check_not_all_failed(config, summary) -> None:
    """A survey where every model it tried failed (none already done) is an error: one line, non-zero exit.

    Raises
    ------
    hubscan.errors.HubscanError
    """
    tried = sum(summary[k] for k in ("num_success", "num_incomplete", "num_failed", "num_skipped"))
    if summary["num_failed"] and summary["num_failed"] == tried and not summary["num_already_done"]:
        raise HubscanError(config.source, f"every model failed ({tried}; their reasons: hubscan sql --dataset "
                                          f"{config.out} \"SELECT model_id, reason FROM models WHERE status = 'failed'\")")


def _check_survey(parser, args) -> None:
    _check_fit_options(parser, args)
    _check_lineage(parser, args)
    _check_source_filters(parser, args)
    _check_cpu_linalg(parser)  # (the driver's setting; its actors' nodes read theirs)
    if args.address is None:  # the local machine runs the actors: its GPUs are what counts
        _check_cuda(parser, args.device)


def _add_survey(sub) -> None:
    p = _command(sub, "survey", cmd_survey, help="analyze many models on Ray into a dataset (resumable)",
                 description="Analyze many models on Ray into a dataset; models already in the dataset "
                             "(same revision and options) are skipped, so a survey resumes where it stopped.",
                 epilog="examples:\n"
                        "  hubscan survey --source local:out/hub --out out/dataset\n"
                        "  hubscan survey --source timm --filter 'resnet*' --limit 20 --out out/timm\n"
                        "  hubscan survey --source hf --author google --filter safetensors --limit 100 "
                        "--out s3://bucket/htsr --storage-options '{\"region\": \"eu-west-1\"}'\n"
                        "  hubscan survey --source list:models.txt --out out/dataset --actors 4\n" + ENVIRONMENT_HELP)
    p.add_argument("--source", required=True,
                   help=" | ".join(_source_specs()) + " (list: one reference per line)")
    p.add_argument("--out", required=True, help="dataset directory or URL (s3://bucket/prefix …)")
    p.add_argument("--limit", type=_int_range(1), default=None, help="models to enumerate at most")
    g = p.add_argument_group("source filters")
    g.add_argument("--filter", default=None, help="hf: tag (e.g. timm, safetensors, text-generation); timm: name glob")
    g.add_argument("--author", default=None, help="hf: organisation or user")
    g.add_argument("--search", default=None, help="hf: substring of the repo id")
    g.add_argument("--pipeline-tag", default=None, help="hf: task, e.g. image-classification")
    g.add_argument("--sort", default=None, help="hf: downloads (default) | likes | lastModified | createdAt")
    g.add_argument("--exclude", default=None, help="timm: name glob to leave out")
    g = p.add_argument_group("cluster")
    g.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:10001); default: embedded local Ray")
    g.add_argument("--actors", type=_int_range(1), default=None, help="analysis actors (default: one per GPU, else CPUs/2)")
    g.add_argument("--gpus-per-actor", type=_float_range(0.0), default=None, help="default: 1 when the cluster has GPUs")
    g.add_argument("--cpus-per-actor", type=_float_range(0.0, strict=True), default=None)
    g.add_argument("--max-in-flight", type=_int_range(1), default=None, help="models dispatched at once (default 2 × actors)")
    g.add_argument("--max-attempts", type=_int_range(1), default=3, help="attempts per model when its actor dies (default 3)")
    g.add_argument("--hub-budget", type=_hub_budget, action="append", default=[], metavar="PLAN|KIND=N/SECONDS",
                   help="the Hub's request budget for the whole survey (driver and all actors): a plan (anonymous, "
                        "free, pro: the Hub's published limits per 5 minutes) or KIND=N/SECONDS, KIND api or "
                        "resolvers (repeatable); default: what the Hub's RateLimit-Policy headers say")
    g = p.add_argument_group("dataset")
    g.add_argument("--force", action="store_true", help="re-analyze models the dataset already holds")
    g.add_argument("--no-esd", action="store_true", help="do not write the esd table (eigenvalues)")
    g.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                   help="filesystem options as JSON, e.g. '{\"endpoint_override\": \"127.0.0.1:9000\", \"scheme\": \"http\"}'")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress (default: a bar on a terminal, else a line every 100 models / 30 s)")
    g.add_argument("--flush-models", type=_int_range(1), default=100,
                   help="an actor writes its rows as data files every this many models (default 100)")
    g.add_argument("--flush-seconds", type=_float_range(0.0, strict=True), default=60.0,
                   help="… or when its oldest unwritten model is this old (default 60)")
    g.add_argument("--no-compact", action="store_true", help="skip compaction and vacuum at the end")
    g.add_argument("--retention-hours", type=_float_range(0.0), default=168.0,
                   help="vacuum keeps removed files this long (default 168; survey versions are always kept)")
    _add_lineage_options(p)
    _add_fit_options(p)
    _add_hub_options(p)
    p.set_defaults(check=_check_survey)


# -- survey --lineage (model-tree census) ------------------------------------------------------------------

def _add_lineage_options(p) -> None:
    g = p.add_argument_group("model tree (--source hf --lineage BASE_ID)")
    g.add_argument("--lineage", default=None, metavar="BASE_ID",
                   help="survey BASE_ID's descendants (base_model tags) and each child-parent delta; "
                        "--limit caps the descendants")
    g.add_argument("--depth", type=_int_range(1), default=None, help="deepest generation below the base (default: all)")
    g.add_argument("--relations", type=_relations, default=None,
                   help="comma list of finetune,adapter,quantized,merge (default: all)")
    g.add_argument("--batch-size", type=_int_range(1), default=8,
                   help="children per read of their parent's tensors (default 8)")


def _relations(text: str) -> tuple:
    from hubscan.sources.lineage import RELATIONS
    rels = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in rels if r not in RELATIONS]
    if not rels or bad:
        raise argparse.ArgumentTypeError(f"{bad[0] if bad else text!r} is not a relation ({','.join(RELATIONS)})")
    return rels


def _check_source_filters(parser, args) -> None:
    """A source filter the chosen source does not take (``--filter`` with ``--source local:DIR``) is refused
    before the survey starts, naming the ones it takes: never a survey of more models than asked for."""
    from hubscan.sources import parse_spec

    if args.lineage is not None:
        return  # _check_lineage says what --lineage takes
    try:
        source = parse_spec(args.source)[0]
    except HubscanError:
        return  # the survey names a source it cannot parse
    given = [k for k in SOURCE_FILTERS if getattr(args, k) is not None]
    extra = [k for k in given if k not in source.filters]
    if extra:
        takes = ", ".join("--" + k.replace("_", "-") for k in source.filters) or "none"
        parser.error(f"--source {args.source} takes no {', '.join('--' + k.replace('_', '-') for k in extra)} "
                     f"(its filters: {takes})")


def _check_lineage(parser, args) -> None:
    if args.lineage is None:
        if args.depth is not None or args.relations is not None:
            parser.error("--depth and --relations need --lineage BASE_ID")
        return
    from hubscan.sources.hf import HubSource
    if args.source != HubSource.name:
        parser.error(f"--lineage needs --source {HubSource.name}")
    if any(getattr(args, k) for k in SOURCE_FILTERS):
        parser.error("--lineage enumerates by base_model tags: no --filter/--author/--search/--pipeline-tag/--sort")


def cmd_lineage(args, config) -> int:
    import dataclasses

    from hubscan.census import census
    from hubscan.sources.lineage import RELATIONS

    config = dataclasses.replace(config, filters={
        "lineage": args.lineage, "depth": args.depth, "relations": list(args.relations or RELATIONS)})
    s = census(args.lineage, args.out, depth=args.depth, relations=args.relations or RELATIONS, limit=args.limit,
               batch_size=args.batch_size, survey=config)
    console = _console(args)
    _print_survey(s["survey"], console)
    _print_not_analyzed(config, s["survey"], console)
    failed = s["failed_edges"]
    console.print(f"model tree of {args.lineage}: {s['nodes']} models ({s['analyzed']} analyzed now), "
                  f"{s['edges']} edges{f' ({len(failed)} not analyzed, below)' if failed else ''}, "
                  f"{s['deltas']} delta rows in {s['seconds']:.1f} s → {args.out}")
    for e in s["tree"].edges:
        console.print(f"  {'  ' * (e.depth - 1)}{e.child} ← {e.parent}  ({e.relation}, found by {e.found_by})")
    for child, parent, reason in failed:
        _say(console, f"delta {child} ← {parent} not analyzed: {reason}")
    _check_not_all_failed(config, s["survey"])
    if failed and len(failed) == s["edges"]:  # as for models: some failed is a survey, all failed an error
        raise HubscanError(args.lineage, f"no edge's delta could be analyzed ({len(failed)} tried; the reasons above)")
    return 0


# -- sql ----------------------------------------------------------------------------------------------

def _sql_cell(v) -> str:
    """A query result cell: floats to 6 significant digits (a 1.6e-05 stays visible), lists likewise;
    timestamps to the second, UTC unmarked (``--format csv`` / ``json`` keep every digit)."""
    import datetime as dt
    if isinstance(v, float):
        return f"{v:.6g}"  # NaN shows as nan (NULL as a blank cell)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_sql_cell(x) for x in v) + "]"
    if isinstance(v, dt.datetime):
        utc = v.utcoffset() == dt.timedelta(0)
        return (v.replace(tzinfo=None) if utc else v).isoformat(sep=" ", timespec="seconds")
    return "" if v is None else str(v)


#: Result columns ``hubscan sql`` keeps whole at any width (ids and names are copied into the next query).
_WHOLE = ("model_key", "pair_key", "edge_key", "survey_id", "name", "child", "parent", "root")


def _sql_cut(text: str, width: int, how: str) -> str:
    """``text`` in at most ``width`` characters: ``list`` cut between elements (``[2.59, 2.63, …]``),
    ``middle`` an id or name with its head and its distinguishing tail (``encoder.la…v.weight``), else
    cut at the end; "…" marks the cut."""
    if len(text) <= width:
        return text
    if width < 4:
        return text[:max(width - 1, 0)] + "…"
    if how == "list" and text.startswith("[") and text.endswith("]"):
        out = "["
        for part in text[1:-1].split(", "):
            if len(out) + len(part) + 2 + 2 > width:  # this element, its ", " and the closing "…]"
                break
            out += part + ", "
        return out + "…]"
    if how == "middle":
        head = (width - 1) // 3
        return text[:head] + "…" + text[len(text) - (width - 1 - head):]
    return text[:width - 1] + "…"


def _sql_table(cols: list[str], rows: list, width: int):
    """The result as a table of ``width`` columns. Numbers and timestamps are never cut; ids and names
    are kept whole when they fit and give way only after the other text columns (at least 24 characters,
    their head and tail kept around a "…", so that different values stay different; a ``name`` column of
    layer names shortened as ``analyze`` shortens them, every index kept); other text at least
    8 characters, sharing what is left; lists cut between elements. A column is left out only when even
    those least widths do not fit (the columns after it are still tried).

    Returns
    -------
    (rich.table.Table, list of str)
        The table and the columns left out.
    """
    import datetime as dt

    from rich.table import Table

    cols = [_printable(c) for c in cols]
    cells = [[_printable(_sql_cell(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def every(i, types) -> bool:
        return bool(rows) and all(isinstance(r[i], types) for r in rows if r[i] is not None)
    numeric = [every(i, (int, float, decimal.Decimal)) for i in range(len(cols))]
    uncut = [n or every(i, (dt.date, dt.time, dt.timedelta)) for i, n in enumerate(numeric)]
    lists = [every(i, (list, tuple)) for i in range(len(cols))]
    whole = [c in _WHOLE or c.endswith("_id") for c in cols]
    least = [w if u else min(w, 24 if k else 12 if li else 8) for w, u, k, li in zip(widths, uncut, whole, lists)]
    keep, used = [], 1
    for i in range(len(cols)):
        if keep and used + least[i] + 3 > width:
            continue
        keep.append(i)
        used += least[i] + 3
    room = width - used
    fixed = {i: least[i] for i in keep}
    for i in keep:  # ids and names whole first, left to right
        if whole[i]:
            grow = min(widths[i] - fixed[i], max(room, 0))
            fixed[i] += grow
            room -= grow
    others = sorted((widths[i], i) for i in keep if not whole[i] and not uncut[i])
    for n, (w, i) in enumerate(others):  # water-filling: narrow columns whole, the wide ones share the rest
        grow = max(0, min(w - fixed[i], room // (len(others) - n)))
        fixed[i] += grow
        room -= grow
    how = {i: "list" if lists[i] else "middle" if whole[i] else "end" for i in keep}
    shown = {i: [_sql_cut(r[i], fixed[i], how[i]) for r in cells] for i in keep}
    shortened = []
    for i in keep:  # layer names: shortened as analyze shortens them (every index kept, distinct names distinct)
        if cols[i] == "name" and any(len(r[i]) > fixed[i] for r in cells):
            shown[i] = _short_names([r[i] for r in cells], fixed[i])
            shortened.append(cols[i])
    t = Table()
    for i in keep:
        t.add_column(cols[i], width=fixed[i], no_wrap=True, overflow="ellipsis",
                     justify="right" if numeric[i] else "left")
    for k in range(len(cells)):
        t.add_row(*[shown[i][k] for i in keep])
    return t, [cols[i] for i in range(len(cols)) if i not in keep], shortened


#: DuckDB statement types whose result ``sql`` shows (SET, CREATE, INSERT, COPY … run, their status unshown).
_SQL_SHOWN = frozenset({"SELECT", "PRAGMA", "EXPLAIN", "CALL", "MULTI", "EXECUTE", "ANALYZE"})


def cmd_sql(args) -> int:
    import duckdb

    from hubscan.query import connect

    if not args.query.strip():
        raise HubscanError(args.dataset, "empty query")
    if args.dataset.startswith("hf://"):  # a published census (hubscan publish)
        from hubscan.publish import connect as connect_published
        _install_http_client(args)
        if args.as_of:
            raise HubscanError(args.dataset, "--as-of needs a Delta dataset; a published census is one version "
                                             "(hf://datasets/ORG/NAME@REVISION for an older commit)")
        con = connect_published(args.dataset, endpoint=args.endpoint)
    else:
        con = connect(args.dataset, as_of=args.as_of, empty_views=True, **(args.storage_options or {}))
    results = []  # (columns, rows) of each statement that returns rows, in order (as DuckDB's own shell shows them)
    try:
        statements = con.extract_statements(args.query)
        for statement in statements:
            cur = con.execute(statement)
            if statement.type.name in _SQL_SHOWN and cur is not None and cur.description:
                results.append(([d[0] for d in cur.description], cur.fetchall()))
    except duckdb.Error as exc:  # the query's problem in one line, with the views it can use
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal AND "
                                           "view_name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY view_name").fetchall()]
        text = re.sub(r"^[A-Za-z ]+ Error: ", "", " ".join(str(exc).split()))
        text = re.sub(r" LINE \d+: .*$", "", text)  # the caret drawing needs its line breaks
        text = re.sub(r' Did you mean "([^"]+)"\?', lambda m: m.group(0) if m.group(1) in views else "", text)
        raise HubscanError(args.dataset, f"{text} (views: {', '.join(views)})") from None
    if not statements:
        raise HubscanError(args.dataset, "the query holds no statement (only comments)")
    if not results:  # COPY … TO, SET, CREATE …: done, nothing to show (as DuckDB's shell)
        return 0
    if len(results) > 1 and args.format != "table":
        raise HubscanError(args.dataset, f"--format {args.format} takes a query with one statement that returns rows; "
                                         f"this one has {len(results)} (--format table shows each)")
    if args.format == "table":
        console = _console(args)
        for k, (cols, rows) in enumerate(results):
            if k:
                console.print()
            table, dropped, shortened = _sql_table(cols, rows, console.width)
            console.print(table)
            if not rows:
                _say(console, "(no rows)", indent=0)
            if shortened:  # a shortened name pasted into a WHERE clause would match nothing: say so
                _say(console, f"{', '.join(shortened)} shortened to fit {console.width} columns (encoder.layer.0. "
                              "→ e.l.0.; --format csv or json shows whole names)", indent=0)
            if dropped:
                _say(console, f"{len(dropped)} column(s) do not fit {console.width} columns: "
                              f"{', '.join(dropped[:8])}{' …' if len(dropped) > 8 else ''} (--format csv or json "
                              "shows every column)", indent=0)
        return 0
    (cols, rows), = results
    if args.format == "csv":
        import csv
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        # lists and structs as JSON (a reader parses them; Python's repr it cannot)
        rows = [[json.dumps(v, default=lambda x: float(x) if isinstance(x, decimal.Decimal) else str(x))
                 if isinstance(v, (list, tuple, dict)) else v for v in r] for r in rows]
        if sys.stdout.isatty():  # to a terminal: escaped; to a file or pipe: the data as stored
            rows = [[_printable(v) if isinstance(v, str) else v for v in r] for r in rows]
        w.writerows(rows)
    else:
        print(json.dumps([{c: _json_value(v) for c, v in zip(cols, r)} for r in rows], indent=1, allow_nan=False))
    return 0


def _json_value(v):
    """A DuckDB value as JSON: NaN and ±inf as null (JSON has no such numbers), a BLOB as DuckDB writes it
    (``\\xAB`` for a byte that is not printable ASCII), decimals as numbers, lists and structs element by element,
    every other type (timestamps, intervals, UUIDs) as the text of the Python value DuckDB returns."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return _json_value(float(v))
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in bytes(v))
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)


def _add_sql(sub) -> None:
    p = _command(sub, "sql", cmd_sql,
                 help="query a dataset with DuckDB (views: models, layers, esd, surveys, accuracy, lineage, deltas, "
                      "training, latest_models, latest_layers)",
                 description="Query a dataset with DuckDB; the tables are views named models, layers, esd, "
                             "surveys, accuracy, lineage, deltas and training (lineage, deltas and training when the "
                             "dataset holds them; models, layers and esd are empty views until a survey commits a "
                             "model). models keeps a row per revision of a model: latest_models and latest_layers "
                             "hold the newest analysis of each model, once.",
                 epilog="examples:\n"
                        "  hubscan sql --dataset out/dataset \"SELECT family, count(*), avg(alpha) FROM "
                        "latest_models GROUP BY 1\"\n"
                        "  hubscan sql --dataset out/dataset --format csv \"SELECT model_id, name, alpha FROM "
                        "layers WHERE alpha < 2\" > over_trained.csv\n"
                        "  hubscan sql --dataset hf://datasets/my-org/hub-census \"SELECT count(*) FROM layers\"")
    p.add_argument("query", help='e.g. "SELECT family, avg(alpha) FROM latest_models GROUP BY 1"')
    _add_dataset(p, what="to query")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--as-of", metavar="SURVEY_ID", default=None,
                   help="the tables as they were when this survey finished (Delta time travel)")
    p.add_argument("--endpoint", default=None,
                   help="hub URL for an hf://datasets/ORG/NAME census (default: $HF_ENDPOINT or https://huggingface.co)")


# -- compact / migrate --------------------------------------------------------------------------------

def cmd_compact(args) -> int:
    import uuid

    from hubscan.store import Dataset, Lease

    data = Dataset(args.dataset, create=False, **(args.storage_options or {})).require()
    with Lease(data, f"compact-{uuid.uuid4().hex[:6]}", operation="compact"):  # vacuum would delete a survey's
        compacted = data.compact(retention_hours=args.retention_hours)        # files not yet committed
    for table, r in compacted.items():
        print(f"{table}: {r['files_before']} → {r['files_after']} data files, {r['vacuumed']} unreferenced files deleted")
    return 0


def _add_compact(sub) -> None:
    p = _command(sub, "compact", cmd_compact, help="compact a dataset's tables into few large files, vacuum unreferenced ones",
                 description="Delta optimize (small files into large ones) and vacuum (delete files no live "
                             "version references) on every table; files of every survey's version are kept.",
                 epilog="examples:\n  hubscan compact --dataset out/dataset\n"
                        "  hubscan compact --dataset out/dataset --retention-hours 0")
    _add_dataset(p, what="to compact")
    p.add_argument("--retention-hours", type=_float_range(0.0), default=168.0,
                   help="keep removed files younger than this (default 168; 0: delete now)")


def _wrapped(line: str, width: int | None = None) -> str:
    """``line`` wrapped at ``width`` or, on a terminal, at its width (``COLUMNS``), its indentation kept and
    continuation lines indented 2 more; words (paths, URLs) are never split. Into a pipe or a file (no
    ``width``) one finding stays one line, for grep."""
    import shutil
    import textwrap

    if width is None:
        if not sys.stdout.isatty():
            return line
        width = shutil.get_terminal_size((100, 24)).columns
    lead = line[:len(line) - len(line.lstrip(" "))]
    return textwrap.fill(line.strip(), width, initial_indent=lead, subsequent_indent=lead + "  ",
                         break_long_words=False, break_on_hyphens=False) or line


def cmd_doctor(args) -> int:
    from hubscan import doctor

    so = args.storage_options or {}
    if args.repair:
        done = doctor.repair(args.dataset, **so)
        for line in done:
            print(_wrapped(line))
        print("repaired" if done else "nothing to repair: the dataset is sound")
        return 0
    found = doctor.diagnose(args.dataset, **so)
    for line in found.lines():
        print(_wrapped(line))
    if found.sound:
        return 0
    print(_wrapped(f"hubscan doctor --dataset {args.dataset} --repair restores what can be restored safely (as "
                   "said above; every file it changes is first copied to DATASET/_doctor/)"))
    return 1


def _add_doctor(sub) -> None:
    p = _command(sub, "doctor", cmd_doctor, help="say what is damaged in a dataset and how to recover; --repair does it",
                 description="Examine every table's Delta log (commits, checkpoints) and data files. Exit status 1 when "
                             "something is damaged. --repair (while no survey runs) rolls a table with a damaged "
                             "or missing commit back to its last version readable whole, moves damaged checkpoints "
                             "aside, drops lost data files from the table, and removes from `models` the models "
                             "whose rows were lost, so that the next survey redoes them.",
                 epilog="examples:\n  hubscan doctor --dataset out/dataset\n"
                        "  hubscan doctor --dataset out/dataset --repair")
    _add_dataset(p, what="to examine")
    p.add_argument("--repair", action="store_true", help="repair what can be repaired safely (files changed are "
                                                          "copied to DATASET/_doctor/ first)")


def cmd_migrate(args) -> int:
    from hubscan.store import migrate

    opts = args.storage_options or {}
    for table, n in migrate(args.old, args.new, storage_options=opts, new_storage_options=opts).items():
        print(f"{table}: {n} rows")
    return 0


def _add_migrate(sub) -> None:
    p = _command(sub, "migrate", cmd_migrate, help="convert a schema-v1 dataset (loose Parquet files) into Delta tables",
                 epilog="example:\n  hubscan migrate out/old-dataset out/dataset")
    p.add_argument("old", help="the schema-v1 dataset (OLD/table=<t>/source=<s>/part-<key>.parquet)")
    p.add_argument("new", help="the new dataset location")
    p.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                   help="filesystem options as JSON (both locations)")


# -- changes ------------------------------------------------------------------------------------------

def cmd_changes(args) -> int:
    from hubscan.query import survey_changes

    c = survey_changes(args.dataset, args.since, args.survey, args.storage_options)
    if args.json:
        print(json.dumps(c, indent=1, default=str))
        return 0
    console = _console(args)
    a, b = c["older"], c["newer"]
    if a is None:  # one survey (or none): nothing to compare yet; exit 0 as a query that returns no rows
        first = f"one survey so far ({b['survey_id']})" if b else "no survey yet"
        print(f"{args.dataset}: {first}: nothing to compare yet (changes need two surveys)")
        return 0
    console.print(f"changes from survey {a['survey_id']} ({a['started_at']:%Y-%m-%d %H:%M}) to {b['survey_id']} "
                  f"({b['started_at']:%Y-%m-%d %H:%M})", highlight=False)
    _say(console, f"{b['survey_id']}: {b['num_models']} models listed, {b['num_already_done']} unchanged (not read), "
                  f"{(b['num_success'] or 0) + (b['num_failed'] or 0) + (b['num_skipped'] or 0)} analyzed or recorded; "
                  f"{b['requests'] or 0} requests, {(b['bytes_read'] or 0) / 1e6:.1f} MB read")
    sections = [("new models", c["new"], lambda r: f"{r['model_id']} @ {str(r['revision'])[:12]}: {r['status']}"),
                ("new revisions", c["new_revision"],
                 lambda r: f"{r['model_id']} {', '.join(x[:12] for x in r['old_revisions'])} → {str(r['revision'])[:12]}: "
                           f"{r['status']}"),
                ("no longer listed (rows kept, last_seen says when)", c["unlisted"],
                 lambda r: f"{r['model_id']} (last seen {r['last_seen']:%Y-%m-%d %H:%M})"),
                ("access changed", c["access"], lambda r: f"{r['model_id']}: gated {r['before']} → {r['after']}"),
                ("status changed", c["status"], lambda r: f"{r['model_id']}: {r['before']} → {r['after']}")]
    for title, rows, line in sections:
        console.print(f"{title}: {len(rows)}", highlight=False)
        for r in rows[:args.show]:
            _say(console, line(r))
        if len(rows) > args.show:
            _say(console, f"… {len(rows) - args.show} more (--show N, or --json)")
    return 0


def _add_changes(sub) -> None:
    p = _command(sub, "changes", cmd_changes, help="what changed between two surveys of a dataset (periodic surveys)",
                 description="What changed between two surveys of a dataset: new models, new revisions, models no "
                             "longer listed (their rows are kept; last_seen says when they were last listed), "
                             "access (gated) and status changes — the models table as each survey left it.",
                 epilog="examples:\n"
                        "  hubscan changes --dataset out/hub                 # the last two surveys\n"
                        "  hubscan changes --dataset out/hub --since 20261101T000000Z-ab12cd --json")
    _add_dataset(p, what="surveyed at least twice")
    p.add_argument("--since", default=None, metavar="SURVEY_ID", help="the older survey (default: the one before --survey)")
    p.add_argument("--survey", default=None, metavar="SURVEY_ID", help="the newer survey (default: the last)")
    p.add_argument("--show", type=_int_range(0), default=20, help="models shown per section (default 20)")
    p.add_argument("--json", action="store_true", help="everything as JSON")


# -- accuracy -----------------------------------------------------------------------------------------

def cmd_accuracy(args) -> int:
    from hubscan import accuracy
    from hubscan.store import Dataset

    if not (args.timm or args.leaderboard or args.csv or args.cards):
        raise HubscanError("accuracy", "nothing to ingest (give --timm, --leaderboard, --csv or --cards)")
    data = Dataset(args.dataset, create=args.create, **(args.storage_options or {}))
    if not args.create:
        data.require()
    done = []
    for path in args.timm or []:
        done.append(("timm results", path, accuracy.ingest_timm_results(data, path, image_size=args.image_size)))
    for path in args.leaderboard or []:
        done.append(("leaderboard", path, accuracy.ingest_leaderboard(data, path)))
    left_out = {}  # csv path -> [(line, reason)]
    for path in args.csv or []:
        done.append(("csv", path, accuracy.ingest_csv(data, path, left_out=left_out.setdefault(path, []))))
    if args.cards:
        done.append(("model cards", "models.eval_results", accuracy.ingest_card_results(data)))
    console = _console(args)
    err = _console(args, stderr=True)
    for what, path, table in done:
        m = accuracy.match_report(data, table)
        console.print(f"{what} {path}: {table.num_rows} accuracy rows for {m['models']} models written to "
                      f"{args.dataset}; {m['matched']} of them match a surveyed model", highlight=False)
        if left_out.get(path) and what == "csv":  # rows of the user's file not written: each with its line
            rows = left_out[path]
            _say(console, f"{len(rows)} row(s) left out: " + ", ".join(f"line {n} ({why})" for n, why in rows[:5])
                 + (f" … ({len(rows)} in all)" if len(rows) > 5 else ""))
        if what == "csv" and m["matched"] and m["unmatched"]:  # the user's own rows: say which found no model
            _say(console, f"not in the dataset: {', '.join(m['unmatched'][:5])}"
                          + (f" … ({len(m['unmatched'])} in all)" if len(m["unmatched"]) > 5 else ""))
        if m["models"] and not m["matched"]:
            err.print(f"hubscan: warning: {path}: no row names a model in {args.dataset} (ids there look like "
                      f"{', '.join(m['example_ids']) or 'nothing yet'}); correlate will find no accuracy",
                      highlight=False)
    return 0


def _add_accuracy(sub) -> None:
    p = _command(sub, "accuracy", cmd_accuracy, help="ingest reported accuracy into a dataset's accuracy table",
                 description="Ingest reported accuracy (timm results, Open LLM Leaderboard, a plain CSV, "
                             "model cards) into a dataset's accuracy table and say how many rows match a "
                             "surveyed model.",
                 epilog="examples:\n"
                        "  hubscan accuracy --dataset out/timm --timm "
                        "https://raw.githubusercontent.com/huggingface/pytorch-image-models/main/results\n"
                        "  hubscan accuracy --dataset out/dataset --csv accuracy.csv   "
                        "# model_id,metric,value[,source,benchmark]\n"
                        "  hubscan accuracy --dataset out/hf --cards")
    _add_dataset(p, what="to add the accuracy table to (must exist unless --create)")
    p.add_argument("--create", action="store_true", help="create the dataset when it does not exist yet")
    p.add_argument("--timm", action="append", help="timm results CSV, folder of them, or URL (repeatable)")
    p.add_argument("--image-size", default="input", choices=["input", "test"],
                   help="timm models evaluated at two sizes: keep the pretrained input size (default) or the test size")
    p.add_argument("--leaderboard", action="append", help="Open LLM Leaderboard contents (Parquet/CSV/JSON, v1 or v2)")
    p.add_argument("--csv", action="append", help="plain CSV: model_id,metric,value[,source,benchmark]; "
                                                  "local models by the id the survey gave them")
    p.add_argument("--cards", action="store_true", help="model-card model-index results gathered by the survey")


# -- correlate ----------------------------------------------------------------------------------------

#: correlate's terminal columns: title → column of :func:`hubscan.correlate.correlate`'s table
#: (``*_ci``: the bootstrap interval of that statistic, shown with --bootstrap).
CORRELATE_COLUMNS = {"group": "group", "metric": "metric", "n": "n", "rho": "spearman_rho",
                     "rho 95% CI": "spearman_rho_ci", "p(rho)": "spearman_p", "tau": "kendall_tau",
                     "tau 95% CI": "kendall_tau_ci", "p(tau)": "kendall_p", "r": "pearson_r", "rmse": "rmse",
                     "r2": "r2"}


def _corr_cell(r, c) -> str:
    if c.endswith("_ci"):
        lo, hi = r.get(c[:-3] + "_lo"), r.get(c[:-3] + "_hi")
        return "" if _isnan(lo) else "[" + f"{lo:.2f},{hi:.2f}".replace("0.", ".") + "]"
    v = r[c]
    if c.endswith("_p") and isinstance(v, float) and 0 < v < 1e-3:
        return f"{v:.0e}"
    return v if isinstance(v, str) else _fmt(v, 3)


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def cmd_correlate(args) -> int:
    from hubscan.correlate import accuracy_metrics, correlate, joined, write_correlations
    from hubscan.store import Dataset

    data = Dataset(args.dataset, create=False, **(args.storage_options or {})).require()
    df = joined(data, metric=args.metric, benchmark=args.benchmark, source=args.source)
    if df.empty:
        have = accuracy_metrics(data)
        hint = (f"the accuracy table holds: {', '.join(have[:6])}{' …' if len(have) > 6 else ''}; choose with "
                "--metric/--benchmark" if have else
                "ingest accuracy first: hubscan accuracy --dataset … --timm/--csv/--leaderboard/--cards")
        raise HubscanError(args.dataset, f"no model has both HTSR metrics and a '{args.metric}' accuracy ({hint})")
    corr = correlate(df, metric=args.metric, group_by=args.group_by, bootstrap=args.bootstrap, seed=args.seed)
    if args.out:
        write_correlations(corr, args.out)
    titles = [t for t, c in CORRELATE_COLUMNS.items()
              if (c in corr.columns) or (c.endswith("_ci") and args.bootstrap and c[:-3] + "_lo" in corr.columns)]
    small, cells = [], []
    for group, rows in corr.groupby("group", sort=False):
        n = rows["n"].max()
        if _isnan(n) or n < 3:
            small.append(f"{group} (n={0 if _isnan(n) else int(n)})")
            continue
        cells += [[str(_corr_cell(r, CORRELATE_COLUMNS[t])) for t in titles] for _, r in rows.iterrows()]
    console = _console(args)
    dropped: list = []
    table = _fitted_table(f"{args.metric} vs HTSR metrics ({len(df)} models, grouped by {args.group_by})", titles,
                          cells, left=("group", "metric"), flexible="metric", min_flexible=10,
                          want_flexible=max([0] + [len(r[titles.index("metric")]) for r in cells]),
                          optional=("p(rho)", "r", "rmse", "r2"), width=console.width, dropped=dropped,
                          shrinkable=("group",),
                          aliases={v: k for k, v in ANALYZE_COLUMNS.items() if k != v},
                          caption="rho: Spearman, tau: Kendall (two-sided p); r: Pearson, rmse, r2: least-squares "
                                  "line" + (f"; CI: percentile bootstrap, {args.bootstrap} resamples"
                                            if args.bootstrap else "") + "; every column in --out")
    console.print(table)
    if dropped:
        _say(console, f"{', '.join(dropped)}: do not fit {console.width} columns (every column is in --out)")
    if small:
        console.print(f"not enough models to correlate (n < 3): {', '.join(small)}", highlight=False)
    if args.out:
        console.print(f"wrote {len(corr)} rows to {args.out}", highlight=False)
    return 0


def _add_accuracy_selection(p, used_by: str) -> None:
    """--metric / --benchmark / --group-by: which reported accuracy, and how models are grouped."""
    p.add_argument("--metric", default="top1", help=f"accuracy metric{used_by} (default top1)")
    p.add_argument("--benchmark", default=None,
                   help="benchmark of that metric, e.g. imagenet, imagenet-real (default: per source)")
    p.add_argument("--group-by", default="family",
                   help="how models are grouped: family | model_type | a regex on model_id (group 1)")


def _add_correlate(sub) -> None:
    p = _command(sub, "correlate", cmd_correlate, help="HTSR metrics against reported accuracy, per family and overall",
                 description="Rank correlations (Kendall tau, Spearman rho) and a least-squares fit of each "
                             "HTSR metric against reported accuracy, per group of models and overall.",
                 epilog="examples:\n"
                        "  hubscan correlate --dataset out/timm --metric top1 --benchmark imagenet\n"
                        "  hubscan correlate --dataset out/timm --group-by '^([a-z]+)' --bootstrap 1000\n"
                        "  hubscan correlate --dataset out/dataset --out correlations.csv")
    _add_dataset(p, what="with HTSR metrics and an accuracy table")
    _add_accuracy_selection(p, "")
    p.add_argument("--source", default=None, help="only models of this source (hf, timm, local)")
    p.add_argument("--bootstrap", type=_int_range(0), default=0, help="bootstrap resamples for tau / rho CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the table to .parquet or .csv")


# -- report -------------------------------------------------------------------------------------------

def cmd_report(args) -> int:
    from hubscan.report import build_report
    from hubscan.store import Dataset

    so = args.storage_options or {}
    Dataset(args.dataset, create=False, **so).require()
    console = _console(args)
    path = build_report(args.dataset, args.out, metric=args.metric, benchmark=args.benchmark, group_by=args.group_by,
                        storage_options=so or None,
                        progress=lambda step: console.print(f"report: {step} …", highlight=False))
    console.print(f"wrote {path}", highlight=False)
    return 0


def _add_report(sub) -> None:
    p = _command(sub, "report", cmd_report, help="a self-contained HTML report of a dataset (plots + tables)",
                 description="Write a self-contained HTML report of a dataset: per-model table, phases, "
                             "failures, alpha distributions, accuracy correlations and plots.",
                 epilog="examples:\n"
                        "  hubscan report --dataset out/dataset --out report.html\n"
                        "  hubscan report --dataset out/timm --out timm.html --metric top1 --benchmark "
                        "imagenet-real --group-by '^([a-z]+)'")
    _add_dataset(p, what="to report on")
    p.add_argument("--out", required=True, help="the HTML file to write (its folder must exist)")
    _add_accuracy_selection(p, " the correlation section uses")


# -- publish ------------------------------------------------------------------------------------------

def cmd_publish(args) -> int:
    from hubscan.publish import publish

    _install_http_client(args)
    r = publish(args.dataset, args.url, endpoint=args.endpoint, private=args.private, message=args.message,
                storage_options=args.storage_options)
    console = _console(args)
    rows = ", ".join(f"{t} {n:,} rows in {r.shards[t]} shard(s)" for t, n in r.rows.items())
    if r.commit is None:
        console.print(f"{r.url} already holds this census ({rows}): no commit", highlight=False)
    else:
        console.print(f"published {rows} to {r.url}: commit {r.commit[:12]} ({len(r.added)} shard(s) added, "
                      f"{len(r.deleted)} removed, {r.unchanged} unchanged)", highlight=False)
    return 0


def _add_publish(sub) -> None:
    p = _command(sub, "publish", cmd_publish, help="publish a dataset to the Hub as a census (Parquet shards + card)",
                 description="Write every table of a dataset as Parquet shards plus a dataset card whose YAML "
                             "configs let the Hub's viewer and datasets.load_dataset read each table, in one "
                             "commit; a later publish uploads only the shards that changed. Token: $HF_TOKEN "
                             "or the saved login (never on the command line).",
                 epilog="examples:\n"
                        "  hubscan publish out/dataset hf://datasets/my-org/hub-census\n"
                        "  hubscan sql --dataset hf://datasets/my-org/hub-census \"SELECT count(*) FROM models\"")
    p.add_argument("dataset", help="the survey dataset (a directory or s3://…, gs://… URL)")
    p.add_argument("url", help="hf://datasets/ORG/NAME (created when absent; @BRANCH to commit to a branch)")
    p.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", default=None, help="commit message (default: the tables and their rows)")
    p.add_argument("--storage-options", type=_json_object, default=None, metavar="JSON",
                   help="filesystem options of the dataset as JSON")


# -- entry point --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hubscan", description="HTSR spectra (alpha, ESD metrics) of model weights.",
                     epilog="examples:\n"
                            "  hubscan analyze hf:sentence-transformers/all-MiniLM-L6-v2\n"
                            "  hubscan survey --source local:out/hub --out out/dataset\n"
                            "  hubscan sql --dataset out/dataset \"SELECT family, avg(alpha) FROM latest_models "
                            "GROUP BY 1\"\n"
                            "  hubscan report --dataset out/dataset --out report.html\n"
                            "'hubscan COMMAND --help' shows each command's options and examples.",
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"hubscan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                title="commands")
    for add in (_add_analyze, _add_survey, _add_sql, _add_compact, _add_doctor, _add_migrate, _add_changes,
                _add_accuracy, _add_correlate, _add_report, _add_publish):
        add(sub)
    return parser


def _error_line(exc: BaseException, where: str) -> str:
    """One line for an unexpected exception: the file or thing it names and the reason, no class name."""
    if isinstance(exc, OSError) and exc.filename:
        reason = (exc.strerror or str(exc)).lower() if exc.strerror else " ".join(str(exc).split())
        return f"{exc.filename}: {reason}"
    if isinstance(exc, KeyError):
        return f"{where}: missing {exc}"
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if where and msg.startswith(str(where)) else f"{where}: {msg}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hubscan`` command. Returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command runs (the option checks import torch: seconds)
        print("hubscan: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "check", None):
        args.check(args.parser, args)
    try:  # an output refused before anything runs
        for opt in ("out", "plot"):  # given but empty ('--out ""', an unset shell variable): nothing to write to
            if getattr(args, opt, None) is not None and not str(getattr(args, opt)).strip():
                raise HubscanError(f"--{opt}", "is empty (give a file or folder)")
        if getattr(args, "out", None) and args.command in _OUT_FILES:
            _check_out(args.out, *_OUT_FILES[args.command])
        if getattr(args, "plot", None):
            _check_plot(args.plot)
    except HubscanError as exc:
        args.parser.error(str(exc))
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, handlers=[handler])
    if args.debug:  # hubscan's own debug lines, not numba's compiler dumps (tens of thousands of lines)
        logging.getLogger("numba").setLevel(logging.WARNING)
    if args.quiet:
        warnings.simplefilter("ignore")
    received = []  # SIGTERM (kill, timeout, Slurm, Kubernetes) stops as Ctrl-C does: a KeyboardInterrupt

    def on_sigterm(signum, frame):
        received.append(signum)  # Ray turns an interrupt inside ray.get/wait into a KeyboardInterrupt of its own
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return _run(args, received)
    finally:
        if previous is not None:  # main() called in-process (tests, scripts): the caller's handler back
            signal.signal(signal.SIGTERM, previous)


def _run(args, received: list) -> int:
    """``args.func(args)`` with every outcome in one line and an exit status (``received``: the SIGTERMs)."""
    try:
        return args.func(args)
    except HubscanError as exc:
        if args.debug:
            raise
        here = os.path.join(os.getcwd(), "")  # paths under the current folder as the ids show them
        print(f"hubscan: error: {_printable(' '.join(str(exc).split()).replace(here, ''))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # exit 128 + the signal: SIGINT 130, SIGTERM 143
        print("hubscan: interrupted" + (" (SIGTERM)" if received else ""), file=sys.stderr)
        return 128 + (received[0] if received else signal.SIGINT)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a process ended by SIGPIPE
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE
    except Exception as exc:  # anything unexpected: still one line
        if args.debug:
            raise
        where = getattr(args, "path", "") or getattr(args, "source", "") or getattr(args, "dataset", "") or args.command
        print(f"hubscan: error: {_printable(_error_line(exc, where))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
