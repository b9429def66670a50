"""The analysis options' values, checked once (hubscan.esd.options) for the Python API and the CLI alike.

The references: the comma-joined ``--layers`` spec (hubscan.esd.select) for list/int selections, and the
choices and ranges the CLI refused before the API checked them.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from test_cli import CASES, run_cli

import hubscan
from hubscan.analysis import AnalyzeOptions
from hubscan.store import config_hash


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.ReLU(), torch.nn.Linear(96, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 48))


def _analyzed(result) -> set:
    return {r["name"] for r in result.rows if r["status"] == "success"}


@pytest.mark.parametrize("given, spec", [([1, 3], "1,3"), ((1, 3), "1,3"), (5, "5"), (["*0*", "*4*"], "*0*,*4*"),
                                         ([0, "!*4*"], "0,!*4*"), ([5, 2], "5,2"), ([], "")])
def test_layers_as_list_or_int_is_the_joined_spec(given, spec):
    opts = AnalyzeOptions(layers=given)
    assert opts.layers == spec and config_hash(opts) == config_hash(AnalyzeOptions(layers=spec))


def test_layers_list_selects_what_the_spec_selects():
    model = _mlp()  # tensors: 0.weight (id 0), 0.bias (1), 2.weight (2), 2.bias (3), 4.weight (4), 4.bias (5)
    by_list = hubscan.analyze(model, layers=[0, 4], mp_fit=False)
    by_spec = hubscan.analyze(model, layers="0,4", mp_fit=False)
    assert _analyzed(by_list) == _analyzed(by_spec) == {"0.weight", "4.weight"}
    assert _analyzed(hubscan.analyze(model, layers=["*0*", "*4*"], mp_fit=False)) == {"0.weight", "4.weight"}
    assert _analyzed(hubscan.analyze(model, layers=2, mp_fit=False)) == {"2.weight"}
    alpha = {r["name"]: r["alpha"] for r in by_spec.rows}
    assert all(r["alpha"] == alpha[r["name"]] for r in by_list.rows if r["status"] == "success")


@pytest.mark.parametrize("bad", [{1, 3}, [1.5], 2.0, True, [None], {"a": 1}])
def test_layers_of_another_type_is_one_type_error(bad):
    with pytest.raises(TypeError, match=r"^layers = .*: a spec string .*, a layer id \(int\), or a list/tuple"):
        AnalyzeOptions(layers=bad)


@pytest.mark.parametrize("kw, message", [
    ({"method": "qr"}, "method = 'qr': not one of 'gram', 'svd'"),
    ({"precision": "float16"}, "precision = 'float16': not one of 'float64', 'float32', 'auto'"),
    ({"fix_fingers": "yes"}, "fix_fingers = 'yes': not one of '', 'xmin_peak', 'clip_xmax'"),
    ({"evals_thresh": math.nan}, "evals_thresh = nan: not a finite number"),
    ({"evals_thresh": math.inf}, "evals_thresh = inf: not a finite number"),
    ({"evals_thresh": -1e-5}, "evals_thresh = -1e-05: must be ≥ 0"),
    ({"min_evals": -5}, "min_evals = -5: below 1"),
    ({"min_evals": 10**9}, "min_evals = 1000000000: above 1,000,000"),
    ({"max_evals": 0}, "max_evals = 0: below 1"),
    ({"min_evals": 50, "max_evals": 10}, "min_evals = 50 is above max_evals = 10: every layer would be skipped"),
    ({"mp_fit": "no"}, "mp_fit = 'no': not of type bool"),
    ({"tpl": 1}, "tpl = 1: not of type bool"),
    ({"seed": 1.5}, "seed = 1.5: not of type int"),
    ({"device": "tpu"}, "device = 'tpu': not a device (cpu, cuda, cuda:N, auto or another torch device type)"),
    ({"layers": -1}, "layers = -1: layer ids are ≥ 0"),
])
def test_bad_option_values_are_refused_before_any_read(kw, message):
    with pytest.raises(ValueError) as exc:
        hubscan.analyze(_mlp(), **kw)
    assert str(exc.value) == message and "\n" not in message


def test_accepted_values_unchanged():
    opts = AnalyzeOptions(precision="auto", device="auto", fix_fingers="clip_xmax", method="svd", evals_thresh=0,
                          min_evals=1, max_evals=1, seed=3)
    assert (opts.precision, opts.device, opts.evals_thresh, type(opts.evals_thresh)) == ("auto", "auto", 0.0, float)
    assert AnalyzeOptions(device=torch.device("cpu")).device == "cpu"
    assert AnalyzeOptions(device="cuda:1").device == "cuda:1"  # a name, whether or not this machine has one


def test_numpy_scalars_are_their_python_values():
    """A sweep's values often come from numpy (np.arange, np.linspace): taken as the Python number, and the
    config hash equal to that of the same Python values."""
    import numpy as np
    given = AnalyzeOptions(seed=np.int64(3), min_evals=np.int32(10), evals_thresh=np.float64(1e-4),
                           mp_fit=np.bool_(False), alpha_ci=np.float64(0.9))
    plain = AnalyzeOptions(seed=3, min_evals=10, evals_thresh=1e-4, mp_fit=False, alpha_ci=0.9)
    assert [(type(getattr(given, k)), getattr(given, k)) for k in ("seed", "min_evals", "mp_fit")] == [
        (int, 3), (int, 10), (bool, False)]
    assert config_hash(given) == config_hash(plain)
    for bad, message in ((dict(seed=np.float64(1.5)), r"seed = np.float64\(1.5\): not of type int"),
                         (dict(mp_fit=np.int64(1)), r"mp_fit = np.int64\(1\): not of type bool")):
        with pytest.raises(ValueError, match=message):
            AnalyzeOptions(**bad)


# -- the CLI: the same rules, exit 2 and one line ----------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (["--min-evals", "-5"], "argument --min-evals: -5: below 1"),
    (["--min-evals", "50", "--max-evals", "10"], "--min-evals 50 is above --max-evals 10: every layer would be skipped"),
    (["--evals-thresh", "nan"], "argument --evals-thresh: 'nan': not a finite number"),
    (["--evals-thresh", "abc"], "argument --evals-thresh: 'abc': not of type float"),  # not Python's "could not …"
    (["--min-evals", "abc"], "argument --min-evals: 'abc': not of type int"),
    (["--min-evals", "1e400"], "argument --min-evals: '1e400': not of type int"),  # inf: no traceback
    (["--device", "tpu"], "argument --device: 'tpu': not a device (cpu, cuda, cuda:N, auto"),
    (["--method", "qr"], "argument --method: invalid choice: 'qr'"),
])
def test_cli_refuses_with_the_api_rule(tmp_path, args, line):
    rc, _, err = run_cli("analyze", "m", *args, cwd=tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and line in err, err


def test_plot_destination_checked_before_the_analysis(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--out", tmp_path / "x.csv",
                           "--plot", tmp_path / "notes.txt")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "notes.txt: exists as a file, not a folder" in err and out == ""  # nothing analyzed
    assert not (tmp_path / "x.csv").exists() and (tmp_path / "notes.txt").read_text() == "mine"
    # a folder access() calls writable but that cannot be made (/proc refuses every mkdir, root or not)
    if os.path.isdir("/proc/self"):
        rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--plot", "/proc/hubscan-plots")
        assert rc == 2 and "/proc/hubscan-plots: cannot be created (" in err and out == "", err
    rc, out, err = run_cli("analyze", CASES / "ok_small.safetensors", "--plot", "notes.txt/sub", cwd=tmp_path)
    assert rc == 2 and "notes.txt/sub: notes.txt is a file, not a folder" in err and out == "", err
    ok = tmp_path / "plots"  # a folder that can be made is not left behind by the check
    rc, out, err = run_cli("analyze", CASES / "nope.safetensors", "--plot", ok)
    assert rc == 1 and not ok.exists(), err


def test_mp_fit_flag_both_ways():
    """``--mp-fit`` (what a WeightWatcher user types for mp_fit=True) is accepted: it is the default;
    ``--no-mp-fit`` turns the fit off; the survey takes the same pair."""
    from hubscan.cli import build_parser
    parser = build_parser()
    for cmd in (["analyze", "m"], ["survey", "--source", "local:x", "--out", "d"]):
        assert parser.parse_args(cmd).mp_fit is True
        assert parser.parse_args([*cmd, "--mp-fit"]).mp_fit is True
        assert parser.parse_args([*cmd, "--no-mp-fit"]).mp_fit is False
