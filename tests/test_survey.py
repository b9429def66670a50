"""The survey on Ray: embedded local Ray over the local hub of real weights; resume, force, and
fault tolerance on a multi-node ``ray.cluster_utils.Cluster`` (node removed, actor killed, driver
killed); ``ray job submit`` of ``jobs/survey.py`` to a head started by the test."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import hubscan  # noqa: E402
from hubscan.analysis import AnalyzeOptions  # noqa: E402
from hubscan.demo.localhub import build_local_hub  # noqa: E402
from hubscan.survey import SurveyConfig, survey  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEEP = ("all-MiniLM-L6-v2", "silero_vad_16k.safetensors", "proteinmpnn_v_48_002.pt", "proteinmpnn_v_48_020.pt",
        "ligandmpnn_v_32_010_25.pt", "v3_fold0.pt", "v3_fold1.pt")


@pytest.fixture(scope="module")
def small_hub(tmp_path_factory) -> Path:
    """A local hub of 7 real models (MiniLM, silero-vad, 3 MPNNs, 2 PocketNet folds)."""
    root = tmp_path_factory.mktemp("hub")
    for link in build_local_hub(root):
        if os.path.basename(link) not in KEEP:
            os.unlink(link)
    models = [p for p in root.rglob("*") if p.is_symlink()]
    assert len(models) == len(KEEP)
    return root


def q(dataset: Path, sql: str, **kw):
    """A query through `hubscan sql`'s connection (the Delta tables' live files)."""
    from hubscan.query import connect
    return connect(str(dataset), **kw).execute(sql).fetchall()


def plain(series) -> list:
    import pandas as pd
    return [None if pd.isna(v) else (int(v) if isinstance(v, float) and v.is_integer() else v) for v in series]


@pytest.fixture(scope="module")
def local_ray():
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_survey_matches_analyze_and_resumes(small_hub, tmp_path, local_ray):
    out = tmp_path / "ds"
    cfg = SurveyConfig(source=f"local:{small_hub}", out=str(out), actors=2, progress=False)
    s1 = survey(cfg)
    assert (s1["num_models"], s1["num_success"], s1["num_failed"]) == (len(KEEP), len(KEEP), 0)
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(len(KEEP), len(KEEP))]
    # local bytes_read: the tensor bytes read from disk, summed into the surveys row
    assert s1["bytes_read"] == q(out, "SELECT sum(bytes_read) FROM models")[0][0] > 0
    assert q(out, "SELECT min(bytes_read) FROM models")[0][0] > 0

    # every model's layer rows equal `hubscan analyze` of that model, column by column
    for (model_id,) in q(out, "SELECT model_id FROM models"):
        expected = hubscan.analyze(small_hub / model_id).to_pandas()  # ids are relative to the surveyed folder
        from hubscan.query import connect
        got = connect(str(out)).execute("SELECT * FROM layers WHERE model_id = ? ORDER BY layer_id, part",
                                        [model_id]).df()
        assert len(got) == len(expected), model_id
        for col in ("name", "part", "status", "N", "M", "num_pl_spikes", "num_evals", "phase"):
            assert plain(got[col]) == plain(expected[col]), (model_id, col)
        for col in ("alpha", "D", "xmin", "log_norm", "log_spectral_norm", "alpha_weighted", "stable_rank"):
            for a, b in zip(got[col], expected[col]):
                assert (a is None or math.isnan(a)) == (b is None or math.isnan(b)), (model_id, col)
                if b is not None and not math.isnan(b):
                    # same computation; only BLAS thread counts differ (actor: 1 thread) → last-bit rounding
                    assert a == pytest.approx(b, rel=1e-12, abs=1e-12), (model_id, col, a, b)
    # the esd table holds each analyzed layer's eigenvalues (float32)
    n_esd, n_ok = q(out, "SELECT (SELECT count(*) FROM esd), (SELECT count(*) FROM layers WHERE status <> 'skipped' "
                         "AND reason NOT LIKE 'non-finite%')")[0]
    assert n_esd == n_ok

    from hubscan.store import Dataset
    versions = {t: Dataset(str(out)).version(t) for t in ("models", "layers", "esd")}
    s2 = survey(cfg)  # rerun: nothing to do, nothing committed but the surveys row
    assert (s2["num_already_done"], s2["num_success"]) == (len(KEEP), 0)
    assert {t: Dataset(str(out)).version(t) for t in ("models", "layers", "esd")} == versions

    s3 = survey(SurveyConfig(source=f"local:{small_hub}", out=str(out), actors=2, progress=False, force=True))
    assert s3["num_success"] == len(KEEP)
    counts = q(out, "SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM layers), "
                    "(SELECT count(DISTINCT survey_id) FROM surveys)")[0]
    assert counts[0] == len(KEEP) and counts[2] == 3
    assert counts[1] == q(out, "SELECT count(*) FROM (SELECT DISTINCT model_key, layer_id, part FROM layers)")[0][0]
    # each survey is a table version: as of the first survey, its models as it wrote them
    first = q(out, "SELECT survey_id FROM surveys ORDER BY started_at")[0][0]
    assert q(out, "SELECT count(*), min(survey_id), max(survey_id) FROM models", as_of=first) == [(len(KEEP), first,
                                                                                                   first)]
    assert q(out, "SELECT count(DISTINCT survey_id) FROM models") == [(1,)]  # all replaced by the --force run
    assert q(out, "SELECT count(*) FROM surveys", as_of=first) == [(1,)]


def test_new_config_is_a_new_analysis(small_hub, tmp_path, local_ray):
    out = tmp_path / "ds"
    base = dict(source=f"local:{small_hub}", out=str(out), actors=1, progress=False, limit=2)
    survey(SurveyConfig(**base))
    s = survey(SurveyConfig(**base, options=AnalyzeOptions(fix_fingers="clip_xmax")))
    assert s["num_success"] == 2 and s["num_already_done"] == 0
    assert q(out, "SELECT count(DISTINCT config_hash), count(*) FROM models") == [(2, 4)]


def test_failed_model_recorded_and_survey_goes_on(tmp_path, cases_dir, local_ray):
    listing = tmp_path / "models.txt"
    listing.write_text("\n".join(str(cases_dir / c) for c in (
        "ok_small.safetensors", "truncated.safetensors", "malicious_pickle.pt", "metadata_only_no_tensors.safetensors",
        "sharded_missing_shard", "does-not-exist.safetensors")) + "\n")
    out = tmp_path / "ds"
    s = survey(SurveyConfig(source=f"list:{listing}", out=str(out), actors=1, progress=False))
    rows = dict(q(out, "SELECT regexp_extract(model_id, '[^/]+$'), status FROM models"))
    assert rows == {"ok_small.safetensors": "success", "truncated.safetensors": "failed",
                    "malicious_pickle.pt": "failed", "metadata_only_no_tensors.safetensors": "skipped",
                    "sharded_missing_shard": "incomplete", "does-not-exist.safetensors": "failed"}
    reasons = dict(q(out, "SELECT regexp_extract(model_id, '[^/]+$'), reason FROM models"))
    assert "unsafe" in reasons["malicious_pickle.pt"] and "shorter" in reasons["truncated.safetensors"]
    assert (s["num_success"], s["num_failed"], s["num_skipped"], s["num_incomplete"]) == (1, 3, 1, 1)
    assert not (tmp_path / "hubscan_pickle_was_executed").exists()


def test_local_failure_reason_names_paths_relative_to_the_root(tmp_path, cases_dir, local_ray):
    """A dataset of a local folder is portable: the reason of a failed model names its file as the model
    id does, relative to the surveyed folder, never by the machine's absolute path."""
    hub = tmp_path / "hub"
    for name, case in (("a", "truncated.safetensors"), ("b", "ok_small.safetensors")):
        (hub / name).mkdir(parents=True)
        shutil.copy(cases_dir / case, hub / name / "model.safetensors")
    out = tmp_path / "ds"
    survey(SurveyConfig(source=f"local:{hub}", out=str(out), actors=1, progress=False))
    rows = dict(q(out, "SELECT model_id, reason FROM models WHERE status = 'failed'"))
    assert list(rows) == ["a"]
    assert rows["a"].startswith("a/model.safetensors: file shorter than its header says"), rows
    assert str(tmp_path) not in rows["a"]


def test_end_to_end_survey_accuracy_correlate_report(small_hub, tmp_path, local_ray, capsys):
    """Local real-weights hub → survey → synthetic accuracy CSV → `hubscan correlate` → `hubscan
    report`: the statistics are those scipy gives on the same numbers; the report's scatter has one
    point per model."""
    import base64
    import re
    import numpy as np
    from scipy import stats
    from hubscan.cli import main

    out = tmp_path / "ds"
    survey(SurveyConfig(source=f"local:{small_hub}", out=str(out), actors=2, progress=False))
    models = q(out, "SELECT model_id, alpha FROM models ORDER BY model_id")
    rng = np.random.default_rng(0)
    acc = {m: 90 - 5 * a + rng.normal(0, 1) for m, a in models}  # synthetic: accuracy falls with alpha
    csv = tmp_path / "acc.csv"
    csv.write_text("model_id,metric,value\n" + "".join(f"{m},top1,{v}\n" for m, v in acc.items()))
    assert main(["accuracy", "--dataset", str(out), "--csv", str(csv)]) == 0
    corr_path = tmp_path / "corr.csv"
    assert main(["correlate", "--dataset", str(out), "--group-by", "family", "--out", str(corr_path)]) == 0
    import pandas as pd
    corr = pd.read_csv(corr_path)
    row = corr[(corr["group"] == "all") & (corr["metric"] == "alpha")].iloc[0]
    x = np.array([a for _, a in models])
    y = np.array([acc[m] for m, _ in models])
    assert row["n"] == len(models)
    assert row["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert row["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert row["r2"] == pytest.approx(stats.linregress(x, y).rvalue ** 2)
    report = tmp_path / "report.html"
    assert main(["report", "--dataset", str(out), "--out", str(report)]) == 0
    html = report.read_text()
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 5
    import io
    import matplotlib.image as mpimg
    for b64 in images:
        img = mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")
        assert img.shape[0] > 100 and img.std() > 0.01


@pytest.mark.parametrize("source,fragment", [
    ("local:/nonexistent-hubscan-dir", "no such folder"),
    ("list:/nonexistent-hubscan-list.txt", "No such file"),
    ("bogus", "unknown source"),
])
def test_bad_source_fails_fast_before_ray_and_writes_nothing(tmp_path, capsys, source, fragment):
    from hubscan.cli import main
    out = tmp_path / "ds"
    t0 = time.monotonic()
    assert main(["survey", "--source", source, "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment.lower() in err[0].lower(), err
    assert not out.exists()          # no dataset folder, no surveys row
    assert time.monotonic() - t0 < 10  # Ray was never started


def test_list_with_bad_lines_names_every_one_before_anything_starts(tmp_path, capsys, cases_dir):
    """A list whose lines are not all references: one line naming each bad line by number (a typo found
    before the survey, not after the models above it), nothing written."""
    from hubscan.cli import main
    listing = tmp_path / "models.txt"
    listing.write_text(f"{cases_dir / 'ok_small.safetensors'}\n# a comment\nhf:a b/c\n\nhf:org/x@\nhf:ok/fine\n")
    out = tmp_path / "ds"
    assert main(["survey", "--source", f"list:{listing}", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 line(s) are not model references: line 3: hf:a b/c: " in err[0], err
    assert "; line 5: hf:org/x@" in err[0] and "Error" not in err[0], err
    assert not out.exists()


def test_list_surveys_a_model_once_whatever_the_spelling_of_its_path(tmp_path, monkeypatch):
    """models/a, ./models//a and its absolute path are one model: one reference (normalised, the first line's
    spelling), not three ids for the same files; other references are kept in order."""
    from hubscan.sources import enumerate_models
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "models.txt"
    listing.write_text(f"./models//a.safetensors\nhf:org/x\nmodels/a.safetensors\n{tmp_path}/models/a.safetensors\n"
                       "hf:org/x\nhf:org/x@v2\nmodels/b.safetensors\n")
    refs = [str(ref) for ref, _ in enumerate_models(f"list:{listing}")]
    assert refs == ["models/a.safetensors", "hf:org/x", "hf:org/x@v2", "models/b.safetensors"], refs


def test_query_commands_on_missing_and_partial_datasets(tmp_path, capsys, cases_dir):
    from hubscan.cli import main
    for cmd in (["sql", "SELECT count(*) FROM models"], ["correlate"], ["report", "--out", str(tmp_path / "r.html")]):
        assert main([*cmd, "--dataset", str(tmp_path / "missing")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no hubscan dataset here" in err[0], (cmd, err)
    assert not (tmp_path / "missing").exists() and not (tmp_path / "r.html").exists()
    # a dataset without accuracy: the accuracy view exists (empty), with its columns
    from hubscan.store import Dataset
    ds = Dataset(str(tmp_path / "ds"))
    ds.write_model("k", "local", {"model_key": "k", "source": "local", "model_id": "m", "status": "success"}, [], None)
    assert main(["sql", "SELECT count(*) AS n, count(value) FROM accuracy", "--dataset", str(tmp_path / "ds"),
                 "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "0,0"


def test_nothing_to_do_and_empty_source_never_start_ray(tmp_path, cases_dir, capsys, monkeypatch):
    """The work list comes before Ray: an empty folder fails in one line, a rerun with nothing
    left writes only its surveys row — neither starts Ray."""
    from hubscan.cli import main
    from hubscan.survey import Survey

    def no_ray(self):
        raise AssertionError("Ray started")
    monkeypatch.setattr(Survey, "init_ray", no_ray)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "ds"
    assert main(["survey", "--source", f"local:{empty}", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no models found" in err[0], err
    assert not out.exists()
    # a dataset that already holds the listed model: nothing to do
    from hubscan.store import Dataset, config_hash, model_key
    from hubscan.sources import enumerate_models
    listing = tmp_path / "models.txt"
    listing.write_text(f"{cases_dir / 'ok_small.safetensors'}\n")
    (ref, _), = enumerate_models(f"list:{listing}")
    from hubscan.sources import resolve
    ref, _ = resolve(ref)
    key = model_key(ref.source, ref.id, ref.revision, config_hash(AnalyzeOptions()))
    Dataset(str(out)).write_model(key, ref.source, {"model_key": key, "model_id": ref.id, "status": "success"}, [], None)
    assert main(["survey", "--source", f"list:{listing}", "--out", str(out), "--no-progress"]) == 0
    assert q(out, "SELECT num_already_done, num_success FROM surveys") == [(1, 0)]


def test_progress_lines_without_a_terminal_and_bar_at_80_columns(monkeypatch, caplog):
    """Output to a file or pipe: a log line every N models; a terminal of 80 columns: the bar keeps
    the count and the ok / failed numbers."""
    import io
    import logging
    from hubscan.survey import _Progress
    counts = {"success": 3, "incomplete": 0, "failed": 1, "skipped": 0}  # committed so far (lags a flush)
    stats = {"success": 9, "incomplete": 1, "failed": 2, "skipped": 0, "bytes_read": 5e6}  # analyzed so far
    cfg = SurveyConfig(source="local:x", out="x", progress_models=5, progress_seconds=3600)
    with caplog.at_level(logging.INFO, logger="hubscan.progress"):
        p = _Progress(cfg, 12)
        for n in range(1, 13):
            p.update(n, counts, stats, None)
        p.close(counts)
    lines = [r.getMessage() for r in caplog.records if r.name == "hubscan.progress"]
    assert len(lines) == 2 and lines[0].startswith("survey: 5/12 analyzed") and "(10 ok, 2 failed" in lines[0]
    assert "5.0 MB read" in lines[0] and "4 committed" in lines[0], lines[0]
    # a long model: the driver's wait ends when the next line is due, which then comes without a new result
    timed = SurveyConfig(source="local:x", out="x", progress_models=100, progress_seconds=0.2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hubscan.progress"):
        p = _Progress(timed, 12)
        assert 1.0 <= p.due_in() < 1.2  # at least a second (the driver's wait), the rest of the interval else
        time.sleep(0.25)
        p.update(3, counts, stats, None)  # what the driver calls when its wait ends without a result
    assert [r.getMessage()[:21] for r in caplog.records] == ["survey: 3/12 analyzed"]

    class Tty(io.StringIO):
        def isatty(self):
            return True
    term = Tty()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.setenv("COLUMNS", "80")
    p = _Progress(cfg, 2000)
    p.update(1234, counts, stats, {"model_id": "x" * 200})
    p.close(counts)
    text = term.getvalue()
    last = [ln for ln in text.replace("\r", "\n").splitlines() if "1234/2000" in ln][-1]
    import re
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last)
    assert len(plain.rstrip()) <= 80 and "10 ok 2 failed" in plain, plain


def test_migrate_schema_v1_then_compact(tmp_path, capsys):
    """`hubscan migrate` converts the loose-Parquet layout (table=<t>/source=<s>/part-<key>.parquet);
    `hubscan compact` leaves one data file per partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hubscan.cli import main
    from hubscan.schema import DATASET_LAYER_SCHEMA, MODEL_SCHEMA
    from hubscan.store import Dataset, rows_to_table
    old = tmp_path / "v1"
    for i in range(6):
        src = "hf" if i % 2 else "local"
        ident = {"model_key": f"k{i}", "source": src, "model_id": f"m{i}", "revision": "r"}
        for table, schema, rows in (("models", MODEL_SCHEMA, [{**ident, "status": "success", "alpha": 2.0 + i}]),
                                    ("layers", DATASET_LAYER_SCHEMA, [{**ident, "layer_id": j, "alpha": 2.0 + j}
                                                                      for j in range(2)])):
            t = rows_to_table(rows, schema)
            t = t.drop_columns(["source"]) if i < 3 else t  # v1 files held source in the path (or both)
            d = old / f"table={table}" / f"source={src}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.drop_columns(["requests"]) if "requests" in t.column_names else t,
                           d / f"part-k{i}.parquet")
    (old / "table=models" / "source=hf" / ".tmp-abc").write_bytes(b"partial")  # v1 temp files are skipped
    new = tmp_path / "v2"
    assert main(["sql", "SELECT 1", "--dataset", str(old)]) == 1
    assert "hubscan migrate" in capsys.readouterr().err
    assert main(["migrate", str(old), str(new)]) == 0
    assert "models: 6 rows" in capsys.readouterr().out
    assert q(new, "SELECT source, count(*), sum(alpha) FROM models GROUP BY 1 ORDER BY 1") == [
        ("hf", 3, 3 * 2.0 + 1 + 3 + 5), ("local", 3, 3 * 2.0 + 0 + 2 + 4)]
    assert q(new, "SELECT count(*), count(requests) FROM models") == [(6, 0)]  # a column v1 lacked: null
    assert q(new, "SELECT count(*), count(DISTINCT (model_key, layer_id)) FROM layers") == [(12, 12)]
    ds = Dataset(str(new))
    ds.write("models", rows_to_table([{"model_key": "k9", "source": "hf", "model_id": "m9", "status": "success"}],
                                     MODEL_SCHEMA))
    assert len(ds.files("models")) == 3
    assert main(["compact", "--dataset", str(new), "--retention-hours", "0"]) == 0
    assert "models: 3 → 2 data files" in capsys.readouterr().out
    assert len(pa.table(ds.table("models").get_add_actions()).column("path")) == 2
    assert sorted(p.name for p in (new / "models").rglob("*.parquet")) == sorted(
        os.path.basename(f) for f in ds.files("models"))  # vacuum left only the live files


def test_survey_many_small_models_then_force(tmp_path, local_ray):
    """CI-sized (benchmarks/bench_dataset.py --survey 2000 runs 2,000): a survey of small local
    models, then --force: one models row per model, data files ≤ models / 100, each survey a
    version (the first is still queryable as it was)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from hubscan.store import Dataset
    n = 160
    hub = tmp_path / "tiny"
    hub.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        save_file({"w.weight": torch.from_numpy(rng.standard_t(3, (48, 32)).astype(np.float32))},
                  str(hub / f"m{i:04d}.safetensors"))
    out = tmp_path / "ds"
    cfg = dict(source=f"local:{hub}", out=str(out), actors=2, progress=False, flush_models=40)
    s1 = survey(SurveyConfig(**cfg))
    s2 = survey(SurveyConfig(**cfg, force=True))
    assert (s1["num_success"], s2["num_success"], s2["num_already_done"]) == (n, n, 0)
    assert q(out, "SELECT count(*), count(DISTINCT model_key), count(DISTINCT survey_id) FROM models") == [(n, n, 1)]
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM layers") == [(n, n)]
    ds = Dataset(str(out))
    assert all(len(ds.files(t)) <= max(1, n // 100) for t in ("models", "layers", "esd"))
    assert q(out, "SELECT min(survey_id) = max(survey_id), count(*) FROM models", as_of=s1["survey_id"]) == [(True, n)]
    assert q(out, "SELECT max(survey_id) FROM models")[0][0] == s2["survey_id"]


def test_survey_that_keeps_eigenvalues_redoes_models_surveyed_without_them(tmp_path, local_ray):
    """``--no-esd`` then a survey that keeps the eigenvalues: the models the first left without them are analyzed
    again (their rows replaced, not doubled) and their ``esd`` rows are the eigenvalues of WᵀW (numpy); before,
    the second survey found them done and the ``esd`` table stayed empty for good. A third survey finds them
    done."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    hub = tmp_path / "tiny"
    hub.mkdir()
    rng = np.random.default_rng(1)
    ws = {f"m{i}": rng.standard_normal((40, 24)).astype(np.float32) for i in range(3)}
    for name, w in ws.items():
        save_file({"w.weight": torch.from_numpy(w)}, str(hub / f"{name}.safetensors"))
    out = tmp_path / "ds"
    cfg = dict(source=f"local:{hub}", out=str(out), actors=1, progress=False)
    s1 = survey(SurveyConfig(**cfg, keep_esd=False))
    from hubscan.store import Dataset
    assert s1["num_success"] == 3 and Dataset(str(out)).read("esd").num_rows == 0
    s2 = survey(SurveyConfig(**cfg))
    assert (s2["num_success"], s2["num_already_done"]) == (3, 0)
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(3, 3)]
    assert q(out, "SELECT count(*) FROM layers") == [(3,)]
    for name, w in ws.items():
        evals = q(out, f"SELECT evals FROM esd WHERE model_id LIKE '%{name}.safetensors'")
        assert len(evals) == 1
        ref = np.linalg.eigvalsh(w.astype(np.float64).T @ w.astype(np.float64))
        np.testing.assert_allclose(evals[0][0], ref, rtol=1e-6)  # stored as float32
    s3 = survey(SurveyConfig(**cfg))
    assert (s3["num_already_done"], s3["num_success"]) == (3, 0)


def test_changes_compare_with_the_last_survey_that_ran_to_its_end(tmp_path, local_ray):
    """``hubscan changes`` by default: the last survey against the last one before it that was not interrupted.
    Against an interrupted one (here: a run stopped before it listed anything, between the two) a model no longer
    listed went unreported ("no longer listed: 0")."""
    import datetime as dt

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from hubscan.query import survey_changes
    from hubscan.schema import rows_to_table
    from hubscan.store import Dataset
    hub = tmp_path / "tiny"
    hub.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        save_file({"w.weight": torch.from_numpy(rng.standard_normal((24, 16)).astype(np.float32))},
                  str(hub / f"m{i}.safetensors"))
    out = tmp_path / "ds"
    cfg = dict(source=f"local:{hub}", out=str(out), actors=1, progress=False)
    s1 = survey(SurveyConfig(**cfg))
    stopped = s1["started_at"] + dt.timedelta(seconds=1)  # a run stopped at once: its row only
    Dataset(str(out)).write("surveys", rows_to_table([{"survey_id": "stopped", "started_at": stopped,
                                                       "finished_at": stopped, "source": f"local:{hub}",
                                                       "interrupted": True}], "surveys"))
    (hub / "m2.safetensors").unlink()
    s2 = survey(SurveyConfig(**cfg))
    c = survey_changes(str(out))
    assert (c["older"]["survey_id"], c["newer"]["survey_id"]) == (s1["survey_id"], s2["survey_id"])
    assert [r["model_id"] for r in c["unlisted"]] == ["m2.safetensors"] and c["new"] == []
    assert survey_changes(str(out), older="stopped")["older"]["survey_id"] == "stopped"  # asked for: as asked


def test_survey_where_every_model_failed_exits_nonzero(tmp_path, cases_dir, local_ray, capsys):
    from hubscan.cli import main
    listing = tmp_path / "models.txt"
    listing.write_text(f"{cases_dir / 'truncated.safetensors'}\n{cases_dir / 'malicious_pickle.pt'}\n")
    out = tmp_path / "ds"
    assert main(["survey", "--source", f"list:{listing}", "--out", str(out), "--actors", "1", "--no-progress"]) == 1
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and "every model failed (2" in err[0], err
    # the terminal names this survey's failed models with their reasons (first 5)
    failed = [line for line in cap.out.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 2 and "truncated.safetensors: " in failed[1] and "malicious_pickle.pt: " in failed[0], failed
    assert q(out, "SELECT num_failed, num_success FROM surveys") == [(2, 0)]  # the survey is still recorded


def test_redone_models_leave_the_analyzed_counts(tmp_path):
    """Models analyzed but lost before their commit (an actor died with them buffered) are queued again
    and no longer counted as analyzed: the progress counts never exceed the models surveyed."""
    from hubscan.refs import ModelRef
    from hubscan.survey import Survey, SurveyConfig, Task

    s = Survey(SurveyConfig(source="local:x", out=str(tmp_path / "ds"), progress=False))
    a, b = (Task(ModelRef("local", m, "r"), {}, f"k{m}") for m in "ab")
    rows = {"a": [{"status": "success", "bytes_read": 100}], "b": [{"status": "failed", "bytes_read": 7}]}
    s.analyzed = 2
    s.seen.update(success=1, failed=1, bytes_read=107)
    s._redo([(a, 0.0, rows["a"])])
    assert s.analyzed == 1 and s.seen["success"] == 0 and s.seen["failed"] == 1 and s.seen["bytes_read"] == 7
    assert list(s.retry) == [a]


def test_interrupt_during_a_commit_is_counted_with_it(tmp_path, monkeypatch):
    """A Ctrl-C that arrives while a batch is being committed takes effect once the commit and its counts
    are done: the models table and the survey's counts agree (the surveys row counts what landed). Without
    the deferral the interrupt raised between the ``models`` commit and the count left num_success 0 with
    one model committed (seen in CI's test_ctrl_c_stops_cleanly)."""
    import signal

    from hubscan.records import ModelStatus
    from hubscan.refs import ModelRef
    from hubscan.store import Dataset, rows_to_table
    from hubscan.survey import RowBuffer, Survey, SurveyConfig, model_row

    s = Survey(SurveyConfig(source="local:x", out=str(tmp_path / "ds"), progress=False))
    s.dataset = Dataset(str(tmp_path / "ds"))
    buf = RowBuffer(s.dataset, 10, float("inf"))
    row = model_row(ModelRef("local", "m", "r"), {}, "km", "cfg", "sid", ModelStatus.SUCCESS, "")
    buf.add({"models": rows_to_table([row], "models")}, row)
    real = Dataset.commit
    after = []

    def commit_then_interrupt(self, table, *a, **kw):
        real(self, table, *a, **kw)
        if table == "models":  # the done-set is written: Ctrl-C now, before the survey has counted it
            os.kill(os.getpid(), signal.SIGINT)
            after.append(table)  # the handler ran inside the deferral: this line is still reached
    monkeypatch.setattr(Dataset, "commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        s.commit(buf.flush())
    assert after == ["models"]
    assert s.counts[ModelStatus.SUCCESS] == 1 and s.status_of == {"km": "success"}
    assert Dataset(str(tmp_path / "ds")).read("models", columns=["model_key"]).column(0).to_pylist() == ["km"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_a_model_committed_twice_in_one_survey_keeps_one_set_of_rows(tmp_path, caplog):
    """A model committed a second time in one survey (a task queued again after its batch was committed):
    its second rows replace its first in every table — never two sets of layers for one model_key (one way
    to CI's 86 layer rows for 84 models' 84 once an actor and the driver were killed, not reproduced alone) —
    with a warning, and the model committed beside it keeps its rows."""
    from hubscan.records import ModelStatus
    from hubscan.refs import ModelRef
    from hubscan.store import Dataset, model_tables
    from hubscan.survey import RowBuffer, Survey, SurveyConfig, model_row

    s = Survey(SurveyConfig(source="local:x", out=str(tmp_path / "ds"), progress=False))
    s.dataset = Dataset(str(tmp_path / "ds"))

    def batch(models, alpha):
        buf = RowBuffer(s.dataset, 10, float("inf"))
        for m in models:
            row = model_row(ModelRef("local", m, "r"), {}, f"k{m}", "cfg", "sid", ModelStatus.SUCCESS, "")
            buf.add(model_tables(row, [{"layer_id": i, "name": f"l{i}.weight", "alpha": alpha} for i in range(2)]),
                    row)
        return buf.flush()
    s.commit(batch("ab", 2.0))
    with caplog.at_level("WARNING", logger="hubscan.survey"):
        s.commit(batch("a", 3.0))  # model a again, with other values
    layers = sorted((r["model_key"], r["layer_id"], r["alpha"]) for r in s.dataset.read("layers").to_pylist())
    assert layers == [("ka", 0, 3.0), ("ka", 1, 3.0), ("kb", 0, 2.0), ("kb", 1, 2.0)]
    assert sorted(s.dataset.read("models", columns=["model_key"]).column(0).to_pylist()) == ["ka", "kb"]
    assert "1 model(s) committed a second time in this survey" in caplog.text and "(a)" in caplog.text
    assert s.counts[ModelStatus.SUCCESS] == 2  # the surveys row counts each model once
