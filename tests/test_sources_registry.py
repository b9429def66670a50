"""Sources are a registry: a toy ``memory:`` source defined here (one class) is parsed, analyzed, listed
by the CLI and surveyed on Ray like the built-in ones; local ids are relative to the surveyed folder."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import hubscan
from hubscan.errors import SourceError
from hubscan.refs import ModelRef, parse_ref
from hubscan.sources import enumerate_models, parse_spec, register_source, resolve, source_specs
from hubscan.weights.base import TensorEntry, WeightSet



def _models() -> dict:
    """Deterministic heavy-tailed tensors (the same in every process that imports this module)."""
    rng = np.random.default_rng(7)
    out = {}
    for name, shapes in (("tiny-a", [(96, 64), (64, 96), (96,)]), ("tiny-b", [(128, 48), (48, 48)])):
        out[name] = {f"layer{i}.weight": torch.from_numpy(rng.standard_t(3, s).astype(np.float32))
                     for i, s in enumerate(shapes)}
    return out


MODELS = _models()


@register_source
class MemorySource:
    """Models held in this module's memory: ``memory:NAME``; ``--source memory`` lists them all."""

    name = "memory"
    spec = "memory"
    filters = ()

    def parse(self, body: str) -> ModelRef:
        name, _, rev = body.partition("@")
        if name not in MODELS:
            raise ValueError(f"memory:{body}: no such model")
        return ModelRef("memory", name, rev or None)

    def enumerate(self, arg, *, client, limit=None):
        for name in sorted(MODELS)[:limit]:
            yield ModelRef("memory", name), {}

    def resolve(self, ref, client):
        h = hashlib.sha256()
        for k, t in MODELS[ref.id].items():
            h.update(k.encode() + t.numpy().tobytes())
        return ModelRef("memory", ref.id, h.hexdigest()[:12], tuple(MODELS[ref.id])), {"family": "toy"}

    def open(self, ref, client):
        where = f"memory:{ref.id}"
        entries = [TensorEntry(k, tuple(t.shape), "float32", where, (lambda t=t: t)) for k, t in MODELS[ref.id].items()]
        return WeightSet(files=[where], format="memory", entries=lambda: iter(entries))


def _same_rows(a, b):
    assert [(r["name"], r["status"]) for r in a.rows] == [(r["name"], r["status"]) for r in b.rows]
    for x, y in zip(a.rows, b.rows):
        for col in ("N", "M", "alpha", "D", "xmin", "lambda_max" if "lambda_max" in x else "log_spectral_norm",
                    "stable_rank", "phase"):
            u, v = x.get(col), y.get(col)
            assert u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v)), (x["name"], col, u, v)


def test_toy_source_is_parsed_resolved_and_analyzed_like_a_file(tmp_path):
    from safetensors.torch import save_file
    assert "memory" in source_specs() and parse_spec("memory")[0].name == "memory"
    assert parse_ref("memory:tiny-a@r1") == ModelRef("memory", "tiny-a", "r1")
    with pytest.raises(ValueError):
        parse_ref("memory:nope")
    pinned, meta = resolve("memory:tiny-a")
    assert pinned.files == ("layer0.weight", "layer1.weight", "layer2.weight") and meta["family"] == "toy"
    # the same tensors in a safetensors file give the same rows (the source only changes where bytes come from)
    path = tmp_path / "tiny-a.safetensors"
    save_file(MODELS["tiny-a"], str(path))
    got, ref = hubscan.analyze("memory:tiny-a"), hubscan.analyze(path)
    _same_rows(got, ref)
    assert got.ref == pinned and got.format == "memory" and got.summary["num_success"] == 2
    assert [r.id for r, _ in enumerate_models("memory")] == ["tiny-a", "tiny-b"]
    with pytest.raises(SourceError):
        parse_spec("memory:x")  # takes no argument
    with pytest.raises(SourceError):
        parse_spec("nosuchsource")


def test_cli_derives_source_choices_from_the_registry(capsys, tmp_path):
    from hubscan.cli import build_parser, main
    parser = build_parser()
    assert main(["survey", "--source", "nosuchsource", "--out", str(tmp_path / "ds"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown source (use hf, timm, local:DIR, list:FILE, memory)" in err[0]
    with pytest.raises(SystemExit):
        parser.parse_args(["survey", "--help"])
    assert "memory" in capsys.readouterr().out


def test_survey_through_a_registered_source(tmp_path, ray_with_tests_on_path):
    from hubscan.query import connect
    from hubscan.survey import SurveyConfig, survey
    out = tmp_path / "ds"
    s = survey(SurveyConfig(source="memory", out=str(out), actors=1, progress=False, keep_esd=False))
    assert (s["num_models"], s["num_success"], s["num_failed"]) == (2, 2, 0)
    rows = connect(str(out)).execute("SELECT model_id, source, family, alpha FROM models ORDER BY model_id").fetchall()
    assert [(m, src, fam) for m, src, fam, _ in rows] == [("tiny-a", "memory", "toy"), ("tiny-b", "memory", "toy")]
    for m, _, _, alpha in rows:
        assert alpha == pytest.approx(hubscan.analyze(f"memory:{m}").summary["alpha"], rel=1e-12)


def test_local_ids_are_relative_to_the_surveyed_folder(tmp_path, cases_dir, monkeypatch):
    import shutil
    root = tmp_path / "out" / "hub"
    (root / "pocketnet").mkdir(parents=True)
    for fold in (0, 1):  # two files: each its own model
        shutil.copy(cases_dir / "ok_small.safetensors", root / "pocketnet" / f"v3_fold{fold}.safetensors")
    shutil.copytree(cases_dir / "gpt2_like", root / "gpt2_like")
    listed = {r.id: (r, m) for r, m in enumerate_models(f"local:{root}")}
    assert set(listed) == {"pocketnet/v3_fold0.safetensors", "pocketnet/v3_fold1.safetensors", "gpt2_like"}
    ref, meta = listed["pocketnet/v3_fold0.safetensors"]
    assert meta["family"] == "pocketnet"  # a fold's family is its folder (the name is only version tokens)
    pinned, _ = resolve(ref)
    assert pinned.id == "pocketnet/v3_fold0.safetensors" and len(pinned.revision) == 16
    assert pinned.files == ("pocketnet/v3_fold0.safetensors",)
    # the same files moved elsewhere keep their ids (and, with their mtimes, their revision): portable
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved, copy_function=shutil.copy2)
    again = {r.id: r for r, _ in enumerate_models(f"local:{moved}")}
    assert resolve(again["pocketnet/v3_fold0.safetensors"])[0].revision == pinned.revision
    # a single path: relative to the current directory, however it was typed
    monkeypatch.chdir(tmp_path)
    for typed in ("out/hub/pocketnet/v3_fold0.safetensors", "./out/hub/pocketnet/v3_fold0.safetensors",
                  str(root / "pocketnet" / "v3_fold0.safetensors")):
        assert hubscan.analyze(typed).ref.id == "out/hub/pocketnet/v3_fold0.safetensors"
    outside = cases_dir / "ok_small.safetensors"
    assert hubscan.analyze(outside).ref.id == str(outside)  # outside the current directory: as given
    # a folder that is itself one model: its name
    (one,) = enumerate_models(f"local:{root / 'gpt2_like'}")
    assert one[0].id == "gpt2_like"
