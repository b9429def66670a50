"""A new weight format is one file: the toy format below (a reader registered with its suffix, nothing else)
is chosen among a folder's files, listed by the local source, analyzed like the same tensors in safetensors,
and surveyed on Ray through the local source and through the (fake) Hub — the actors import this module as a
plugin (:func:`hubscan.registry.load_plugins`)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import hubscan
from hubscan.errors import CorruptFileError
from hubscan.weights import WeightSet, register_reader
from hubscan.weights.base import TensorEntry

MAGIC = b"TOY1"


def write_toy(path: Path, tensors: dict) -> None:
    """The toy format: ``TOY1``, a little-endian u32 header length, a JSON header {name: [shape, offset]},
    then each tensor's float32 little-endian bytes."""
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, "<f4")
        header[name] = [list(a.shape), offset]
        blobs.append(a.tobytes())
        offset += a.nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(raw)) + raw + b"".join(blobs))


@register_reader("toy", [".toy"])
def open_toy(path) -> WeightSet:
    """A toy file's tensors, each read from its offset when loaded."""
    where = str(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:4] != MAGIC or len(head) < 8:
            raise CorruptFileError(where, "not a toy file (no TOY1 magic)")
        header = json.loads(f.read(struct.unpack("<I", head[4:])[0]))
    start = 8 + len(json.dumps(header).encode())

    def load(shape, offset):
        n = math.prod(shape)
        return torch.from_numpy(np.fromfile(where, "<f4", count=n, offset=start + offset).reshape(shape))

    entries = [TensorEntry(name, tuple(shape), "float32", where, lambda s=shape, o=off: load(s, o))
               for name, (shape, off) in header.items()]
    return WeightSet(files=[where], format="toy", entries=lambda: iter(entries))


def _tensors(seed: int) -> dict:
    g = np.random.default_rng(seed)
    return {"fc1.weight": g.standard_t(3, (96, 64)).astype(np.float32),
            "fc1.bias": np.zeros(96, np.float32), "fc2.weight": g.standard_t(4, (64, 96)).astype(np.float32)}


def _toy_model(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    write_toy(folder / "model.toy", _tensors(seed))
    (folder / "config.json").write_text('{"model_type": "toy"}')
    return folder


def _rows(result) -> list:
    return [(r["name"], r["status"], r["N"], r["M"], r["alpha"], r["D"], r["lambda_max"]) for r in result.rows]


def test_toy_format_is_chosen_listed_and_analyzed_like_safetensors(tmp_path):
    from safetensors.numpy import save_file

    from hubscan.sources import enumerate_models
    from hubscan.weights.files import choose_weight_files

    assert choose_weight_files(["config.json", "model.toy", "README.md"]) == (("model.toy",), "toy")
    # a format of its own never displaces the built-in choice (its default rule comes after them)
    assert choose_weight_files(["model.toy", "model.safetensors"]) == (("model.safetensors",), "safetensors")
    folder = _toy_model(tmp_path / "hub" / "a", 0)
    write_toy(tmp_path / "hub" / "b.toy", _tensors(1))
    (tmp_path / "hub" / "notes.txt").write_text("not a model")
    # the local source lists what the readers read, and every listed model opens
    listed = sorted(r.id for r, _ in enumerate_models(f"local:{tmp_path / 'hub'}"))
    assert listed == ["a", "b.toy"]
    save_file(_tensors(0), str(tmp_path / "same.safetensors"))
    toy, ref = hubscan.analyze(folder), hubscan.analyze(tmp_path / "same.safetensors")
    assert toy.format == "toy" and toy.summary["status"] == "success"
    assert _rows(toy) == _rows(ref)
    (tmp_path / "bad.toy").write_bytes(b"PK\x03\x04 not toy")
    with pytest.raises(CorruptFileError, match="bad.toy: not a toy file"):
        hubscan.analyze(tmp_path / "bad.toy")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hub_server import FakeHub, isolated_hf_client

    root = tmp_path_factory.mktemp("toyhub")
    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        for i in (0, 1):
            folder = _toy_model(root / f"m{i}", i)
            h.add_model(f"toy/m{i}", {"model.toy": folder / "model.toy", "config.json": folder / "config.json"},
                        info={"downloads": 10 - i})
        yield h


def test_toy_format_surveyed_through_the_local_source_and_the_hub(hub, ray_with_tests_on_path, tmp_path):
    from hubscan.query import connect
    from hubscan.survey import SurveyConfig, survey

    for i in (0, 1):
        _toy_model(tmp_path / "hub" / f"m{i}", i)
    expected = {f"m{i}": hubscan.analyze(tmp_path / "hub" / f"m{i}").summary["alpha"] for i in (0, 1)}
    for source, prefix, hub_settings in ((f"local:{tmp_path / 'hub'}", "", {}),
                                         ("hf", "toy/", {"endpoint": hub.endpoint})):
        out = tmp_path / ("ds-" + source.partition(":")[0])
        s = survey(SurveyConfig(source=source, out=str(out), actors=1, progress=False, keep_esd=False,
                                hub=hub_settings))
        assert (s["num_models"], s["num_success"], s["num_failed"]) == (2, 2, 0), source
        rows = connect(str(out)).execute("SELECT model_id, format, alpha FROM models ORDER BY model_id").fetchall()
        assert [(m, f) for m, f, _ in rows] == [(f"{prefix}m0", "toy"), (f"{prefix}m1", "toy")]
        for m, _, alpha in rows:
            assert alpha == pytest.approx(expected[m.removeprefix(prefix)], rel=1e-12), (source, m)
