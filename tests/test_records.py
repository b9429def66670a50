"""Typed records, the generated schemas, the one converter and the metric registry.

* what the producers emit (the analysis' layer records, the metric functions, the model summary, the
  esd records) equals the schema's columns — a column forgotten on either side fails here;
* the converter refuses a key its schema lacks instead of dropping it;
* a toy metric behind a toy option, registered in a test (what a ``metric_<name>.py`` module holds),
  gives the option a CLI flag and an ``AnalyzeOptions`` keyword, enters the config hash only when on,
  and appears in the layers table, the model summary, the models table and ``correlate``'s output, with
  values equal to an independent numpy computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import hubscan
from hubscan.errors import SchemaMismatchError
from hubscan.esd import registry
from hubscan.records import EsdRecord, LayerRecord, ModelRecord, part_key
from hubscan.schema import rows_to_table, table_schema


def _model(path, seed: int, df: float) -> None:
    """A small safetensors model: two Student-t(df) matrices (heavier tail for small df), a 1-D bias
    and a matrix too small to analyze (skipped)."""
    g = np.random.default_rng(seed)
    save_file({"a.weight": torch.from_numpy(g.standard_t(df, (96, 48)).astype(np.float32)),
               "b.weight": torch.from_numpy(g.standard_t(df, (80, 40)).astype(np.float32)),
               "a.bias": torch.zeros(48), "tiny.weight": torch.ones(3, 2)}, str(path))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    p = tmp_path_factory.mktemp("records") / "m.safetensors"
    _model(p, 0, 3.0)
    return hubscan.analyze(str(p), keep_evals=True, randomize=True)


def test_layer_records_are_the_schema(result):
    names = table_schema("analysis").names
    statuses = {r["status"] for r in result.rows}
    assert statuses == {"success", "skipped"}
    for r in result.rows:
        assert isinstance(r, LayerRecord)
        assert list(r) == names == list(r.to_row())
    ok = [r for r in result.rows if r.status == "success"]
    # the metric functions return exactly the registry's columns (a forgotten or extra metric fails)
    assert all(list(r.metrics) == list(registry.metrics()) for r in ok)
    # every registry metric is a layers column of the dataset, in registry order, with its description
    layers = table_schema("layers")
    metric_fields = [layers.field(m) for m in registry.metrics()]
    assert [f.metadata[b"description"].decode() for f in metric_fields] == [
        m.description for m in registry.metrics().values()]
    assert layers.names[:5] == ["model_key", "source", "model_id", "revision", "survey_id"]
    assert layers.names[5:] == names
    # the dict view and the typed view agree; to_arrow keeps every value
    t = result.to_arrow()
    assert t.schema.names == names and t.num_rows == len(result.rows)
    a = next(r for r in ok if r.name == "a.weight")
    assert t.column("alpha").to_pylist()[result.rows.index(a)] == a["alpha"] == a.metrics["alpha"]
    assert math.isfinite(a["rand_distance"]) and a["phase"] is not None
    skipped = next(r for r in result.rows if r.name == "tiny.weight")
    assert skipped.reason and math.isnan(skipped["alpha"]) and skipped["N"] is None


def test_summary_and_model_record_are_the_schema(result):
    from hubscan.refs import parse_ref
    from hubscan.survey import model_row

    summary_metrics = registry.summary_metrics()
    assert set(summary_metrics) <= set(result.summary)
    ref = parse_ref("local:m.safetensors")
    rec = model_row(ref, {}, "k", "cfg", "s1", result.summary["status"], result.summary["reason"], result.summary,
                    format=result.format, device="cpu")
    assert isinstance(rec, ModelRecord) and list(rec) == table_schema("models").names
    # every summary key lands in a column: none is dropped, none left null
    row = rec.to_row()
    for k, v in result.summary.items():
        assert row[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(row[k])), k
    assert [m for m in table_schema("models").names if m in registry.metrics()] == list(summary_metrics)
    with pytest.raises(KeyError):
        rec["not_a_column"] = 1


def test_esd_records_are_the_schema(result):
    esd = result.esd_records()
    assert [e.name for e in esd] == ["a.weight", "b.weight"]
    assert all(isinstance(e, EsdRecord) and e.evals.dtype == np.float32 for e in esd)
    ident = {"model_key": "k", "source": "local", "model_id": "m", "revision": "r"}
    t = rows_to_table(esd, "esd", ident)
    assert t.schema.names == table_schema("esd").names
    np.testing.assert_array_equal(np.asarray(t.column("evals")[0].as_py(), np.float32),
                                  result.evals["a.weight"].astype(np.float32))


def test_converter_refuses_unknown_keys(result):
    row = dict(result.rows[0])
    rows_to_table([row], "analysis")  # the row as produced converts
    with pytest.raises(SchemaMismatchError, match="alpah"):
        rows_to_table([{**row, "alpah": 1.0}], "analysis")
    rec = LayerRecord(name="x", metrics={"not_registered": 1.0})
    with pytest.raises(KeyError, match="not_registered"):
        rows_to_table([rec], "analysis")


def test_strings_that_are_not_utf8_are_written_escaped(tmp_path):
    """A name with bytes that are not UTF-8 (``os.fsdecode`` leaves them as lone surrogates) and one with a
    lone surrogate (a pickled key ``"\\ud800"``) are written escaped —
    the bytes as Python's ``backslashreplace`` writes them — in every string column, lists and structs
    included, and the table goes to Parquet; valid text is unchanged."""
    import os

    import pyarrow.parquet as pq

    fs_name = os.fsdecode(b"enc.bad\xffname.weight")
    row = {"name": fs_name, "part": "q\ud800", "companions": ["ok", fs_name], "reason": "plain ascii", "dtype": "F32"}
    t = rows_to_table([row], "analysis")
    pq.write_table(t, tmp_path / "rows.parquet")
    back = pq.read_table(tmp_path / "rows.parquet").to_pylist()[0]
    escaped = b"enc.bad\xffname.weight".decode("utf-8", "backslashreplace")
    assert back["name"] == escaped == "enc.bad\\xffname.weight" and back["part"] == "q\\ud800"
    assert back["companions"] == ["ok", escaped] and back["reason"] == "plain ascii"
    model = {"model_id": "m\udcff", "tags": ["t\udcff"], "eval_results": [{"task": "x\ud800", "value": 1.5}]}
    back = rows_to_table([model], "models").to_pylist()[0]
    assert (back["model_id"], back["tags"]) == ("m\\xff", ["t\\xff"])
    assert back["eval_results"][0]["task"] == "x\\ud800" and back["eval_results"][0]["value"] == 1.5

    # end to end: a torch checkpoint (pickle keeps lone surrogates in str keys) naming a tensor with one
    W = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 32)))
    torch.save({"w\ud800.weight": W}, tmp_path / "m.pt")
    res = hubscan.analyze(tmp_path / "m.pt")
    assert [r["name"] for r in res.rows] == ["w\ud800.weight"]  # the analysis keeps the name as read
    assert res.to_arrow().column("name").to_pylist() == ["w\\ud800.weight"]


def test_part_key():
    assert part_key("attn.qkv.weight", "q") == "attn.qkv.weight:q"
    assert part_key("fc.weight", "") == "fc.weight" == LayerRecord(name="fc.weight").key


# -- a toy metric behind an option: two registry entries + its function (one metric_<name>.py file) -----

TOY, TOY_OPTION = "top_eigen_share", "top_share"


@pytest.fixture
def toy_metric():
    registry.register_option(TOY_OPTION, bool, False, "toy: the top eigenvalue's share of the ESD (column "
                             "top_eigen_share)")

    @registry.register_metric(TOY, "float64", "share of the ESD's mass in its largest eigenvalue",
                              summary=True, correlate=True, label="mean top-eigenvalue share", option=TOY_OPTION)
    def _top_share(s):
        return float(s.esd.evals[-1] / s.esd.evals.sum())

    yield TOY
    registry.unregister_metric(TOY)
    registry.unregister_option(TOY_OPTION)


def _top_share_numpy(w: np.ndarray) -> float:
    """Independent reference: σ_max² / ‖W‖²_F from numpy's SVD."""
    sv = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    return float(sv[0] ** 2 / np.sum(sv ** 2))


def test_toy_metric_reaches_layers_models_and_correlate(toy_metric, tmp_path):
    from safetensors.numpy import load_file

    from hubscan.accuracy import write_provenance
    from hubscan.correlate import correlate, joined
    from hubscan.store import Dataset, config_hash, model_key
    from hubscan.survey import model_row

    ds = Dataset(str(tmp_path / "ds"))
    options = hubscan.AnalyzeOptions(top_share=True)
    cfg = config_hash(options)
    dfs = [2.5, 3.0, 4.0, 6.0, 12.0]
    expected, acc_rows = {}, []
    for i, df in enumerate(dfs):
        p = tmp_path / f"m{i}.safetensors"
        _model(p, 10 + i, df)
        res = hubscan.analyze(str(p), options)
        ref = res.ref
        key = model_key(ref.source, ref.id, ref.revision, cfg)
        ds.write_model(model_row(ref, {"family": "toy"}, key, cfg, "s1", res.summary["status"],
                                 res.summary["reason"], res.summary, format=res.format), res.rows, None)
        tensors = load_file(str(p))
        per_layer = {n: _top_share_numpy(tensors[n]) for n in ("a.weight", "b.weight")}
        expected[ref.id] = per_layer
        acc_rows.append({"source": ref.source, "model_id": ref.id, "benchmark": "toy", "metric": "top1",
                         "value": 70.0 + 5 * i, "higher_is_better": True, "provenance": "test"})
    write_provenance(ds, "toy", acc_rows)

    # the layers table has the column, and its values are the numpy reference
    layers = ds.read("layers").to_pandas()
    assert TOY in layers.columns
    meta = ds.arrow_dataset("layers").schema.field(TOY).metadata or {}
    assert b"share of" in b"".join(meta.values()), meta
    for _, r in layers[layers["status"] == "success"].iterrows():
        assert r[TOY] == pytest.approx(expected[r["model_id"]][r["name"]], rel=1e-9)
    # the models table averages it
    models = ds.read("models").to_pandas().set_index("model_id")
    for mid, per_layer in expected.items():
        assert models.loc[mid, TOY] == pytest.approx(np.mean(list(per_layer.values())), rel=1e-9)
    # correlate tests it against accuracy by default
    j = joined(ds, metric="top1")
    assert TOY in j.columns and len(j) == len(dfs)
    out = correlate(ds, metric="top1", group_by=None)
    row = out[out["metric"] == TOY].iloc[0]
    from scipy.stats import spearmanr
    ref_rho = spearmanr(j[TOY].to_numpy(float), j["accuracy"].to_numpy(float)).statistic
    assert row["n"] == len(dfs) and row["spearman_rho"] == pytest.approx(ref_rho)
    assert set(registry.correlate_metrics()) - {"rand_distance"} <= set(out["metric"])


def test_toy_option_is_a_flag_a_keyword_and_a_hash_entry(toy_metric, tmp_path, capsys):
    import pyarrow.parquet as pq

    from hubscan.cli import main
    from hubscan.store import config_hash

    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    assert "--top-share" in capsys.readouterr().out
    p = tmp_path / "m.safetensors"
    _model(p, 0, 3.0)
    assert main(["analyze", str(p), "--top-share", "--out", str(tmp_path / "on.parquet"), "-q"]) == 0
    assert main(["analyze", str(p), "--out", str(tmp_path / "off.parquet"), "-q"]) == 0
    on, off = (pq.read_table(tmp_path / f).to_pylist() for f in ("on.parquet", "off.parquet"))
    from safetensors.numpy import load_file
    w = load_file(str(p))
    for r_on, r_off in zip(on, off):
        assert r_off[TOY] is None  # off by default: the column is there, empty
        if r_on["status"] == "success":
            assert r_on[TOY] == pytest.approx(_top_share_numpy(w[r_on["name"]]), rel=1e-9)
    # on, it is a config of its own; off, the hash is the one datasets had before the option existed
    assert config_hash(hubscan.AnalyzeOptions(top_share=True)) != config_hash(hubscan.AnalyzeOptions())
    registry.unregister_option(TOY_OPTION)
    try:
        plain = config_hash(hubscan.AnalyzeOptions())
    finally:
        registry.register_option(TOY_OPTION, bool, False, "re-added for the fixture's cleanup")
    assert config_hash(hubscan.AnalyzeOptions()) == plain
    with pytest.raises(ValueError, match="top_share"):
        hubscan.AnalyzeOptions(top_share="yes")


def test_toy_metric_unregistered_is_gone(toy_metric):
    assert TOY in table_schema("layers").names
    registry.unregister_metric(TOY)
    try:
        assert TOY not in table_schema("layers").names and TOY not in table_schema("models").names
    finally:  # the fixture unregisters it again
        registry.register_metric(TOY, "float64", "re-added for the fixture's cleanup")(lambda s: None)


def test_register_twice_warns_naming_the_module_that_wins(toy_metric):
    from hubscan.registry import RegistryWarning
    again = lambda s: 0.0  # noqa: E731
    again.__module__ = "my_plugin"
    with pytest.warns(RegistryWarning, match=rf"metric '{TOY}' registered again: my_plugin's entry replaces "
                                             rf"{__name__}'s"):
        registry.register_metric(TOY, "float64", "again")(again)
    assert registry.METRICS.module_of(TOY) == "my_plugin" and registry.get_metric(TOY).compute is again
    with pytest.warns(RegistryWarning, match=f"analysis option '{TOY_OPTION}' registered again"):
        registry.register_option(TOY_OPTION, bool, False, "again")
    with pytest.raises(ValueError, match="dtype"):
        registry.register_metric("bad_dtype_metric", "complex128", "no")(lambda s: 0.0)
