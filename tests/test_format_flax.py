"""Flax msgpack reader: files in flax's encoding (``flax.serialization.to_bytes``: arrays as msgpack extension 1
of ``[shape, dtype name, C-order bytes]``, chunked arrays as ``__msgpack_chunked_array__`` maps), written with the
msgpack library, read like the same tensors in PyTorch's names and orientation as safetensors; the walker agrees
with ``msgpack.unpackb`` on any tree, and a count or length the file cannot hold is refused at once."""

from __future__ import annotations


import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import hubscan
from hubscan.errors import CorruptFileError
from hubscan.weights.flax import FlaxArray, read_tree


def ndarray(a: np.ndarray) -> msgpack.ExtType:
    """flax.serialization._msgpack_ext_pack of an ndarray."""
    return msgpack.ExtType(1, msgpack.packb((a.shape, a.dtype.name, a.tobytes("C")), use_bin_type=True))


def chunked(a: np.ndarray, n: int) -> dict:
    """flax.serialization._chunk: the flat array in n pieces."""
    flat = a.reshape(-1)
    step = -(-flat.size // n)
    return {"__msgpack_chunked_array__": True, "shape": {str(i): d for i, d in enumerate(a.shape)},
            "chunks": {str(i): ndarray(flat[i * step:(i + 1) * step]) for i in range(n)}}


RNG = np.random.default_rng(3)
DENSE = RNG.standard_t(4, (96, 160)).astype(np.float32)     # (in, out)
CONV = RNG.standard_t(4, (3, 3, 16, 32)).astype(np.float32)  # (kh, kw, in, out)
EMB = RNG.standard_t(4, (300, 64)).astype(np.float16)


def write(path, tree) -> None:
    path.write_bytes(msgpack.packb(tree, use_bin_type=True))


def test_flax_checkpoint_read_in_pytorch_names_and_orientation(tmp_path):
    tree = {"params": {"encoder": {"layer": {"0": {"dense": {"kernel": ndarray(DENSE), "bias": ndarray(np.zeros(160, "f4"))}}}},
                       "conv": {"kernel": chunked(CONV, 3)},
                       "embeddings": {"word_embeddings": {"embedding": ndarray(EMB)},
                                      "LayerNorm": {"scale": ndarray(np.ones(64, "f4"))}},
                       "step": np.int64(7).item()}}
    write(tmp_path / "flax_model.msgpack", tree)
    save_file({"encoder.layer.0.dense.weight": np.ascontiguousarray(DENSE.T),
               "conv.weight": np.ascontiguousarray(CONV.transpose(3, 2, 0, 1)),
               "embeddings.word_embeddings.weight": EMB}, str(tmp_path / "ref.safetensors"))
    got, ref = hubscan.analyze(tmp_path / "flax_model.msgpack"), hubscan.analyze(tmp_path / "ref.safetensors")
    key = lambda res: {r["name"]: (r["status"], r["shape"], r["dtype"], r["N"], r["M"], r["alpha"]) for r in res.rows}
    assert got.format == "flax" and key(got) == key(ref)


jsonish = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
                       | st.text(max_size=40) | st.binary(max_size=300),
                       lambda c: st.lists(c, max_size=20) | st.dictionaries(st.text(max_size=10), c, max_size=20),
                       max_leaves=60)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), jsonish, max_size=10), st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(["float32", "float16", "int8", "float64"]),
              st.lists(st.integers(0, 5), max_size=3)), max_size=4))
def test_the_walker_agrees_with_msgpack(tmp_path_factory, tree, arrays):
    tree = dict(tree)
    for name, dtype, shape in arrays:
        tree[name] = ndarray(np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape))
    blob = msgpack.packb(tree, use_bin_type=True)
    ours = read_tree(blob, "t")
    theirs = msgpack.unpackb(blob, raw=False, strict_map_key=False,
                             ext_hook=lambda code, data: msgpack.unpackb(data, raw=False))

    def same(a, b):
        if isinstance(a, FlaxArray):
            shape, dtype, data = b
            (offset, n), = a.spans
            return a.shape == tuple(shape) and a.dtype == dtype and blob[offset:offset + n] == data
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(b, bytes):  # bins are located, not read
            return a is not None and blob[a.offset:a.offset + a.length] == b
        return a == b

    assert same(ours, theirs)


@pytest.mark.parametrize("blob,fragment", [
    (b"\xdf\xff\xff\xff\xff", "a map of 4,294,967,295 entries cannot fit"),
    (b"\x81\xa1k\xdd\xff\xff\xff\xf0", "an array of 4,294,967,280 items cannot fit"),
    (b"\x81\xa1k\xc6\x7f\xff\xff\xff", "bin data needs 2,147,483,647 bytes"),
    (b"\x81\xa1k\xc9\x7f\xff\xff\xff\x01", "extension data needs"),
    (b"\x81\xa1k" + b"\x81\xa1k" * 70 + b"\xc0", "nested more than 64"),
    (b"\x82\xa1k\xc0\xa1k\xc0", "duplicate key 'k'"),
    (b"\x81\xa1k\xc1", "starts no msgpack value"),
])
def test_counts_and_lengths_the_file_cannot_hold_are_refused(tmp_path, blob, fragment):
    path = tmp_path / "bad.msgpack"
    path.write_bytes(blob)
    with pytest.raises(CorruptFileError, match=fragment):
        hubscan.analyze(path)


def test_an_array_whose_data_does_not_fit_its_shape_is_refused(tmp_path):
    payload = msgpack.packb(((1000, 1000), "float32", b"\0" * 64), use_bin_type=True)
    write(tmp_path / "m.msgpack", {"w": {"kernel": msgpack.ExtType(1, payload)}})
    with pytest.raises(CorruptFileError, match="needs 4,000,000 bytes, its data holds 64"):
        hubscan.analyze(tmp_path / "m.msgpack")
    write(tmp_path / "other.msgpack", {"w": 1})
    (tmp_path / "zip.msgpack").write_bytes(b"PK\x03\x04" + b"\0" * 30)
    with pytest.raises(CorruptFileError, match="its first bytes are those of a zip archive"):
        hubscan.analyze(tmp_path / "zip.msgpack")
