"""Keras / TensorFlow HDF5 reader: files written by h5py in the layouts Keras writes (Keras 2 ``save_weights``:
``layer_names`` / ``weight_names`` attributes, TF variable names; Keras 3 ``.keras`` archives), analyzed like the
same tensors in PyTorch's orientation and names stored as safetensors; and the HDF5 features a hostile file
could use (sizes the file cannot hold, external storage and links, virtual datasets) refused or not followed."""

from __future__ import annotations

import io
import zipfile

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

import hubscan
from hubscan.errors import CorruptFileError, UnsafeFileError
from hubscan.weights.keras import tf_name_to_pt

RNG = np.random.default_rng(7)
# TF variable (scope included, as Keras 2 names it) -> (PyTorch name, TF-stored array, its PyTorch orientation)
DENSE = RNG.standard_t(4, (96, 160)).astype(np.float32)            # (in, out)
CONV = RNG.standard_t(4, (3, 3, 16, 32)).astype(np.float32)        # (kh, kw, in, out)
CONV1D = RNG.standard_t(4, (5, 24, 40)).astype(np.float32)         # (k, in, out)
EMB = RNG.standard_t(4, (300, 64)).astype(np.float32)              # (vocab, dim): not transposed
VARIABLES = {
    "tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0":
        ("bert.encoder.layer.0.attention.self.query.weight", DENSE, DENSE.T),
    "tf_bert_model/bert/encoder/layer_._0/attention/self/query/bias:0":
        ("bert.encoder.layer.0.attention.self.query.bias", np.zeros(160, np.float32), np.zeros(160, np.float32)),
    "tf_bert_model/bert/embeddings/word_embeddings/weight:0": ("bert.embeddings.word_embeddings.weight", EMB, EMB),
    "tf_bert_model/bert/embeddings/LayerNorm/gamma:0": ("bert.embeddings.LayerNorm.weight", np.ones(64, np.float32),
                                                        np.ones(64, np.float32)),
    "tf_convnext_model/convnext/stem___embeddings/conv/kernel:0":
        ("convnext.embeddings.conv.weight", CONV, CONV.transpose(3, 2, 0, 1)),
    "tf_wav2vec2/feature/conv_layers_._1/conv/kernel:0": ("feature.conv_layers.1.conv.weight", CONV1D, CONV1D.transpose(2, 1, 0)),
}


def write_keras2(path, variables: dict, full_model: bool = False) -> None:
    """Keras 2's ``save_weights`` HDF5 layout (keras/src/legacy/saving/legacy_h5_format.py): the root names its
    layers in ``layer_names``; layer L's group lists ``weight_names`` and holds each variable at ``L/<name>``."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = '{"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda"}]}}'
        layers: dict = {}
        for name in variables:
            layers.setdefault(name.split("/")[1], []).append(name)
        root.attrs["layer_names"] = [n.encode() for n in layers]
        root.attrs["backend"], root.attrs["keras_version"] = b"tensorflow", b"2.15.0"
        for layer, names in layers.items():
            g = root.create_group(layer)
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n in names:
                g.create_dataset(n, data=variables[n][1])


def rows(result) -> dict:
    return {r["name"]: (r["status"], r["N"], r["M"], r["alpha"]) for r in result.rows}


def reference(tmp_path, tensors: dict):
    path = tmp_path / "reference.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return hubscan.analyze(path)


def test_tf_name_conversion_follows_transformers():
    assert tf_name_to_pt("tf_bert_model/bert/encoder/layer_._11/output/dense/kernel:0", True) == (
        "bert.encoder.layer.11.output.dense.weight", True)
    assert tf_name_to_pt("tf_t5/shared/shared___embeddings/weight:0", True) == ("shared.embeddings.weight", False)
    assert tf_name_to_pt("m/bn/moving_variance:0", True) == ("bn.running_var", False)
    assert tf_name_to_pt("m/sep/depthwise_kernel:0", True) == ("sep.depthwise.weight", True)
    assert tf_name_to_pt("final_logits_bias:0", True) == ("final_logits_bias", False)


@pytest.mark.parametrize("full_model", [False, True])
def test_keras2_weights_read_in_pytorch_names_and_orientation(tmp_path, full_model):
    write_keras2(tmp_path / "tf_model.h5", VARIABLES, full_model)
    got = hubscan.analyze(tmp_path / "tf_model.h5")
    ref = reference(tmp_path, {pt: arr for pt, _, arr in VARIABLES.values()})
    assert got.format == "keras" and rows(got) == rows(ref)
    shapes = {r["name"]: r["shape"] for r in got.rows}
    assert shapes["convnext.embeddings.conv.weight"] == [32, 16, 3, 3]
    assert shapes["bert.encoder.layer.0.attention.self.query.weight"] == [160, 96]


def test_keras3_archive_stored_and_deflated(tmp_path):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=DENSE)
        f.create_dataset("layers/dense/vars/1", data=np.zeros(160, np.float32))
        f.create_dataset("layers/conv2d/vars/0", data=CONV)
    ref = reference(tmp_path, {"layers.dense.vars.0": DENSE, "layers.conv2d.vars.0": CONV.transpose(3, 2, 0, 1)})
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = tmp_path / f"model-{compression}.keras"
        with zipfile.ZipFile(path, "w", compression) as z:
            z.writestr("metadata.json", '{"keras_version": "3.5.0"}')
            z.writestr("config.json", '{"class_name": "Sequential"}')
            z.writestr("model.weights.h5", buf.getvalue())
        assert rows(hubscan.analyze(path)) == rows(ref), compression


def test_hdf5_sizes_links_and_external_data(tmp_path):
    # a dataset of 2**60 float32 elements, never written: the file is a few KB
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("w", shape=(2**30, 2**30), dtype="f4", chunks=(64, 64))
    with pytest.raises(CorruptFileError, match="more than a .*-byte file can hold"):
        hubscan.analyze(tmp_path / "huge.h5")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64 * 64, dtype=np.float32).tobytes())
    with h5py.File(tmp_path / "external.h5", "w") as f:
        f.create_dataset("w", shape=(64, 64), dtype="f4", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    with pytest.raises(UnsafeFileError, match="outside the file"):
        hubscan.analyze(tmp_path / "external.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("v", data=DENSE)
    with h5py.File(tmp_path / "linked.h5", "w") as f:
        f.create_dataset("kept/kernel:0", data=DENSE)
        f["alias"] = h5py.SoftLink("/kept")  # another name of the same group: read once
        f["far"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/v")
        layout = h5py.VirtualLayout(shape=DENSE.shape, dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "v", shape=DENSE.shape)
    res = hubscan.analyze(tmp_path / "linked.h5")
    assert [r["name"] for r in res.rows] == ["kept.weight"]
    assert res.missing == [("far", f"an external link to {tmp_path / 'other.h5'}:/v: not followed")]
    assert res.summary["status"] == "incomplete"
    with h5py.File(tmp_path / "virtual.h5", "w") as f:
        f.create_virtual_dataset("w", layout)
    with pytest.raises(UnsafeFileError, match="virtual dataset"):
        hubscan.analyze(tmp_path / "virtual.h5")


def test_another_format_under_h5_is_named(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.h5", "w") as z:
        z.writestr("data.pkl", b"x")
    with pytest.raises(CorruptFileError, match="not an HDF5 file: its first bytes are those of a zip archive"):
        hubscan.analyze(tmp_path / "model.h5")
