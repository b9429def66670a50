"""The dataset at hub scale: a 20,000-model Delta dataset written through hubscan's own write path
(the actors' :class:`hubscan.survey.RowBuffer` → data files, the driver's batched
:meth:`hubscan.store.Dataset.commit`, compaction at the end) from real rows — all-MiniLM-L6-v2 of the
quickstart's local real-weights hub, analyzed once and replicated under new keys.

Measured in one run (issue 11's acceptance):

- data files per table after the survey's compaction (target ≤ models / 500);
- ``hubscan sql`` (:func:`hubscan.query.connect`, connection included): ``count(*), avg(alpha)`` over
  ``layers`` and a ``models ⋈ layers`` join (≤ 1 s and ≤ 2 × DuckDB over one compacted Parquet
  file per table of the same rows);
- the done-set lookup of 100,000 keys (``Dataset.done()`` + lookups, ≤ 2 s);
- ``--survey N``: a real Ray survey of N tiny local models, then the same with ``--force``: one
  ``models`` row per model, data files ≤ models / 100.

    python benchmarks/bench_dataset.py [--models 20000] [--batch 200] [--esd] [--survey 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COUNT_AVG = "SELECT count(*), avg(alpha) FROM layers"
JOIN = ("SELECT m.family, count(*), avg(l.alpha) FROM models m JOIN layers l USING (model_key) "
        "WHERE l.status = 'success' GROUP BY 1")


def real_rows(hub: Path, keep_esd: bool) -> dict:
    """The dataset rows of all-MiniLM-L6-v2 as a survey actor produces them."""
    from hubscan.analysis import AnalyzeOptions
    from hubscan.hub import HubClient
    from hubscan.sources import enumerate_models
    from hubscan.store import config_hash, model_key
    from hubscan.sources import resolve
    from hubscan.survey import analyze_models
    (ref, meta), = [(r, m) for r, m in enumerate_models(f"local:{hub}") if "MiniLM" in r.id]
    ref, _ = resolve(ref)
    opts = AnalyzeOptions()
    cfg = config_hash(opts)
    key = model_key(ref.source, ref.id, ref.revision, cfg)
    return next(analyze_models([(ref, meta, key)], options=opts, cfg_hash=cfg, survey_id="bench", client=HubClient(),
                               keep_esd=keep_esd))


def rekey(table: pa.Table, keys: list[str], per_model: int) -> pa.Table:
    """``table`` (one model's rows) repeated once per key, with new model_key / model_id."""
    big = pa.concat_tables([table] * len(keys))
    rep = pa.array([k for k in keys for _ in range(per_model)], pa.string())
    big = big.set_column(big.schema.get_field_index("model_key"), "model_key", rep)
    return big.set_column(big.schema.get_field_index("model_id"), "model_id", pc.binary_join_element_wise(
        "bench/", rep, ""))


def write_dataset(out: str, rows: dict, n_models: int, batch: int) -> float:
    """n_models × the real rows, written in flushes of ``batch`` models and committed by one
    committer (esd, layers, then models per batch), then compacted. Returns seconds."""
    from hubscan.store import Dataset
    from hubscan.survey import WRITE_ORDER, RowBuffer
    ds = Dataset(out)
    t0 = time.perf_counter()
    for start in range(0, n_models, batch):
        keys = [f"{i:016x}" for i in range(start, min(n_models, start + batch))]
        buf = RowBuffer(ds, batch, 1e9)
        tables = {t: rekey(rows[t], keys, rows[t].num_rows) for t in WRITE_ORDER if rows.get(t) is not None}
        buf.add(tables, rows["row"])
        buf.rows = [{"model_key": k} for k in keys]  # one summary per model (the tables hold all of them)
        flushed = buf.flush()
        for t in WRITE_ORDER:
            ds.commit(t, flushed["adds"][t], survey_id="bench")
    ds.compact(WRITE_ORDER, retention_hours=0)
    return time.perf_counter() - t0


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_queries(out: str, scratch: Path) -> dict:
    import duckdb
    from hubscan.query import connect
    from hubscan.store import Dataset
    ds = Dataset(out)
    res = {"files": {t: len(ds.files(t)) for t in ("models", "layers", "esd")}}
    res["sql_connect"] = best_of(lambda: connect(out))
    con = connect(out)
    res["sql_count_avg"] = best_of(lambda: con.execute(COUNT_AVG).fetchall())
    res["sql_join"] = best_of(lambda: con.execute(JOIN).fetchall())
    # the same rows compacted into one Parquet file per table, read by DuckDB directly
    for t in ("models", "layers"):
        pq.write_table(ds.read(t), scratch / f"{t}.parquet", compression="zstd")
    con = duckdb.connect()
    for t in ("models", "layers"):
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{scratch / (t + '.parquet')}')")
    res["duckdb_count_avg"] = best_of(lambda: con.execute(COUNT_AVG).fetchall())
    res["duckdb_join"] = best_of(lambda: con.execute(JOIN).fetchall())
    assert connect(out).execute(COUNT_AVG).fetchall()[0][0] == con.execute(COUNT_AVG).fetchall()[0][0]

    def lookup():
        done = Dataset(out).done()
        probe = [f"{i:016x}" for i in range(100_000)]
        return sum(1 for k in probe if k in done)
    res["done_lookup_100k"] = best_of(lookup, 3)
    res["done_hits"] = lookup()
    return res


def bench_survey(n: int, scratch: Path) -> dict:
    """A real Ray survey of n tiny local models, then --force."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from hubscan.query import connect
    from hubscan.store import Dataset
    from hubscan.survey import SurveyConfig, survey
    hub = scratch / "tiny"
    hub.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        save_file({"w.weight": torch.from_numpy(rng.standard_t(3, (48, 32)).astype(np.float32))},
                  str(hub / f"m{i:05d}.safetensors"))
    out = str(scratch / "survey-ds")
    res = {}
    for force in (False, True):
        t0 = time.perf_counter()
        s = survey(SurveyConfig(source=f"local:{hub}", out=out, actors=2, cpus_per_actor=1, progress=False,
                                force=force, flush_models=200))
        label = "force" if force else "first"
        rows = connect(out).execute("SELECT count(*), count(DISTINCT model_key) FROM models").fetchall()[0]
        res[label] = {"seconds": time.perf_counter() - t0, "success": s["num_success"], "models_rows": rows[0],
                      "distinct_keys": rows[1],
                      "files": {t: len(Dataset(out).files(t)) for t in ("models", "layers", "esd")}}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=200, help="models per actor flush (data file)")
    p.add_argument("--esd", action="store_true", help="also write the esd table (eigenvalues; ~60 kB per model)")
    p.add_argument("--survey", type=int, default=0, help="also run a Ray survey of this many tiny models (+ --force)")
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from hubscan.demo.localhub import build_local_hub
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        scratch = Path(tmp)
        build_local_hub(scratch / "hub")
        rows = real_rows(scratch / "hub", args.esd)
        out = str(scratch / "ds")
        secs = write_dataset(out, rows, args.models, args.batch)
        print(f"wrote {args.models} models × {rows['layers'].num_rows} layers in {secs:.1f} s "
              f"(flush every {args.batch} models, compacted)")
        r = bench_queries(out, scratch)
        limit = args.models / 500
        print(f"data files per table: {r['files']} (target ≤ {limit:.0f})")
        print(f"hubscan sql: opening the dataset (every Delta table → a DuckDB view) {r['sql_connect']:.3f} s")
        for q in ("count_avg", "join"):
            sql, duck = r[f"sql_{q}"], r[f"duckdb_{q}"]
            print(f"{q:10s} hubscan sql {sql:.3f} s (+ open {sql + r['sql_connect']:.3f} s) | DuckDB on one Parquet "
                  f"file {duck:.3f} s | ratio {sql / duck:.2f} (targets ≤ 1 s, ≤ 2×)")
        print(f"done-set lookup of 100,000 keys: {r['done_lookup_100k']:.3f} s ({r['done_hits']} hits; target ≤ 2 s)")
        if args.survey:
            s = bench_survey(args.survey, scratch)
            for label, v in s.items():
                print(f"survey of {args.survey} tiny models ({label}): {v['seconds']:.1f} s, {v['success']} analyzed, "
                      f"models rows {v['models_rows']} ({v['distinct_keys']} keys), data files {v['files']} "
                      f"(target ≤ {args.survey / 100:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
