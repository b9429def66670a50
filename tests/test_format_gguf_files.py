"""GGUF files as models: a split file (written by ``gguf.GGUFWriter(split_max_tensors=…)``, gguf-split's naming)
is one model read through all its parts; several quantizations of one model are one model whose
highest-precision file is read (the others listed as not read), locally and through the fake Hub."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

import hubscan
from hubscan.errors import CorruptFileError
from hubscan.hub import HubClient
from hubscan.weights.files import choose_weight_files, files_not_read, one_model
from hubscan.weights.gguf import gguf_copy

from test_formats import _write_gguf

Q = gguf.GGMLQuantizationType
RNG = np.random.default_rng(11)
MATRICES = {f"blk.{i}.attn_q.weight": RNG.standard_t(4, (48 + 8 * i, 64)).astype(np.float32) for i in range(5)}


def write(path, qtype=None, split: int = 0) -> None:
    _write_gguf(path, {name: (a, qtype) for name, a in MATRICES.items()}, split)


def alphas(res) -> dict:
    return {r["name"]: r["alpha"] for r in res.rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "float.safetensors"
    save_file(MATRICES, str(path))
    return alphas(hubscan.analyze(path))


def test_split_file_is_one_model_through_all_parts(tmp_path, reference):
    write(tmp_path / "m-F32.gguf", split=2)
    parts = sorted(p.name for p in tmp_path.iterdir())
    assert parts == [f"m-F32-0000{k}-of-00003.gguf" for k in (1, 2, 3)] and one_model(parts)
    for model in (tmp_path, tmp_path / parts[1]):  # the folder, or any part
        res = hubscan.analyze(model)
        assert alphas(res) == reference and res.summary["status"] == "success" and len(res.files) == 3
    (tmp_path / parts[2]).unlink()
    res = hubscan.analyze(tmp_path)
    assert set(alphas(res)) == set(list(MATRICES)[:4]) and res.summary["status"] == "incomplete"
    assert res.missing == [(parts[2], "split part 3 of 3 is absent: its tensors are not read")]


def test_split_parts_that_disagree_are_refused(tmp_path):
    write(tmp_path / "a.gguf", split=2)
    (tmp_path / "a-00002-of-00003.gguf").rename(tmp_path / "keep.gguf")
    (tmp_path / "a-00003-of-00003.gguf").rename(tmp_path / "a-00002-of-00003.gguf")
    (tmp_path / "keep.gguf").rename(tmp_path / "a-00003-of-00003.gguf")
    with pytest.raises(CorruptFileError, match="split metadata .* disagrees with its name"):
        hubscan.analyze(tmp_path / "a-00001-of-00003.gguf")


def test_precision_order_of_quantization_tags():
    names = ["m-IQ2_XXS.gguf", "m-Q4_0.gguf", "m-IQ4_XS.gguf", "m-Q2_K.gguf", "m-Q8_0.gguf", "m-Q6_K.gguf",
             "m-Q4_K_S.gguf", "m-Q4_K_M.gguf", "m-BF16.gguf", "m-f16.gguf", "m-F32.gguf", "m-Q5_K_M.gguf", "m.gguf"]
    order = sorted(names, key=lambda n: gguf_copy(n)[1])
    assert order == ["m-F32.gguf", "m-BF16.gguf", "m-f16.gguf", "m-Q8_0.gguf", "m-Q6_K.gguf", "m-Q5_K_M.gguf",
                     "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "m-Q4_0.gguf", "m-Q2_K.gguf", "m-IQ4_XS.gguf",
                     "m-IQ2_XXS.gguf", "m.gguf"]
    assert gguf_copy("Llama-3.2-1B-Instruct-UD-Q4_K_XL.gguf")[0] == "Llama-3.2-1B-Instruct"
    assert gguf_copy("mmproj-model-f16.gguf")[0] is None
    listing = ["Q8_0/m-Q8_0-00001-of-00002.gguf", "Q8_0/m-Q8_0-00002-of-00002.gguf", "m-Q4_K_M.gguf",
               "mmproj-m-F16.gguf", "README.md"]
    chosen, fmt = choose_weight_files(listing)
    assert fmt == "gguf" and chosen == ("Q8_0/m-Q8_0-00001-of-00002.gguf", "Q8_0/m-Q8_0-00002-of-00002.gguf")
    assert files_not_read(listing, chosen) == ("m-Q4_K_M.gguf", "mmproj-m-F16.gguf")


def test_quantizations_of_one_model_are_one_model_locally_and_on_the_hub(tmp_path, reference):
    from hub_server import FakeHub, isolated_hf_client
    from hubscan.sources import enumerate_models

    folder = tmp_path / "repo"
    folder.mkdir()
    for tag, qtype in (("Q4_0", Q.Q4_0), ("Q8_0", Q.Q8_0), ("F32", None)):
        write(folder / f"tiny-{tag}.gguf", qtype)
    (tmp_path / "other.gguf").write_bytes((folder / "tiny-Q8_0.gguf").read_bytes())
    listed = {r.id: meta for r, meta in enumerate_models(f"local:{tmp_path}")}
    assert sorted(listed) == ["other.gguf", "repo"]
    assert listed["repo"]["files_not_read"] == ["tiny-Q4_0.gguf", "tiny-Q8_0.gguf"]
    local = hubscan.analyze(folder)
    assert local.files == [str(folder / "tiny-F32.gguf")] and alphas(local) == reference
    with isolated_hf_client(tmp_path / "cache"), FakeHub() as hub:
        hub.add_model_from_dir("org/tiny-GGUF", folder)
        remote = hubscan.analyze("hf:org/tiny-GGUF", client=HubClient(endpoint=hub.endpoint))
        assert remote.ref.files == ("tiny-F32.gguf",) and alphas(remote) == reference
        assert remote.metadata["files_not_read"] == ["tiny-Q4_0.gguf", "tiny-Q8_0.gguf"]
        for name in ("tiny-Q4_0.gguf", "tiny-Q8_0.gguf"):
            assert hub.bytes_sent(repo_id="org/tiny-GGUF", path=name) == 0
