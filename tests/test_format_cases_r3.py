"""The Hub round-3 format cases (``tests/data/cases/hub-r3/1_formats``, SOURCE.md there): each folder is one model
repository, read as its table says, from a local folder and through the (fake) Hub alike. Reference alphas:
``refs.json`` (matrices dequantized independently); for the TF / Keras / Flax cases, the alpha of the same
matrix read by h5py / msgpack and written as safetensors."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import msgpack
import numpy as np
import pytest
from safetensors.numpy import save_file

import hubscan
from hubscan.errors import UnreadFormatError
from hubscan.hub import HubClient
from hubscan.survey import error_status

from conftest import DATA

CASES = DATA / "cases" / "hub-r3" / "1_formats"
REFS = json.loads((CASES / "refs.json").read_text())
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    from hub_server import FakeHub, isolated_hf_client

    with isolated_hf_client(tmp_path_factory.mktemp("hfcache")), FakeHub() as h:
        for name in NAMES:
            h.add_model_from_dir(f"r3/{name}", CASES / name)
        yield h


@pytest.fixture
def client(hub):
    return HubClient(endpoint=hub.endpoint, max_retries=2, backoff=0.1)


def both(case: str, client):
    """The case analyzed from its folder and through the Hub: [(where, result or the error)]."""
    out = []
    for where, model in (("local", CASES / case), ("hub", f"hf:r3/{case}")):
        try:
            out.append((where, hubscan.analyze(model, client=client)))
        except hubscan.errors.HubscanError as exc:
            out.append((where, exc))
    return out


def rows(result) -> dict:
    return {r["name"]: r for r in result.rows}


def alpha_of(matrix: np.ndarray, tmp_path, name: str = "w.weight") -> float:
    """hubscan's alpha of a float32 matrix stored as plain safetensors (the reference path of refs.json)."""
    path = tmp_path / f"ref-{abs(hash(matrix.tobytes()))}.safetensors"
    save_file({name: np.ascontiguousarray(matrix, np.float32)}, str(path))
    return rows(hubscan.analyze(path))[name]["alpha"]


def test_every_case_folder_is_one_model_of_the_local_source_and_of_the_hub(client):
    from hubscan.sources import enumerate_models

    local = sorted(r.id for r, _ in enumerate_models(f"local:{CASES}"))
    assert local == NAMES  # no framework-only folder vanishes, the split GGUF is one model
    listed = {r.id: r for r, _ in enumerate_models("hf", client=client)}
    assert sorted(listed) == [f"r3/{n}" for n in NAMES]
    assert listed["r3/gguf_split_3_shards"].files == tuple(f"tiny-Q8_0-0000{k}-of-00003.gguf" for k in (1, 2, 3))
    assert listed["r3/openvino_only"].files == ()  # nothing to read: resolving says why (skipped)


def test_diffusers_sharded_component_read_through_its_index(client, hub):
    expected = set(REFS["diffusers_sharded"]["names"])
    results = both("diffusers_sharded", client)
    for where, res in results:
        assert set(rows(res)) == expected and res.summary["status"] == "success", where
        assert all(r["status"] == "success" for r in res.rows), where
        assert sorted(res.metadata["files_not_read"]) == [
            "text_encoder/model.fp16.safetensors",
            "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"], where
    (_, local), (_, remote) = results
    assert {n: r["alpha"] for n, r in rows(local).items()} == {n: r["alpha"] for n, r in rows(remote).items()}
    for path in ("text_encoder/model.fp16.safetensors", "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors"):
        assert hub.bytes_sent(repo_id="r3/diffusers_sharded", path=path) == 0  # variants never fetched


def test_gguf_split_is_one_model_through_all_parts(client):
    for where, res in both("gguf_split_3_shards", client):
        got = {n: r["alpha"] for n, r in rows(res).items()}
        assert got == pytest.approx(REFS["gguf_split_3_shards"], rel=1e-6), where
        assert res.summary["status"] == "success" and res.summary["num_missing"] == 0, where


def test_gguf_split_with_a_part_absent_is_incomplete(tmp_path):
    for k in (1, 3):
        name = f"tiny-Q8_0-0000{k}-of-00003.gguf"
        (tmp_path / name).write_bytes((CASES / "gguf_split_3_shards" / name).read_bytes())
    res = hubscan.analyze(tmp_path)
    assert len(res.rows) == 4 and res.summary["status"] == "incomplete"
    assert res.missing == [("tiny-Q8_0-00002-of-00003.gguf", "split part 2 of 3 is absent: its tensors are not read")]


def test_mlx_4bit_dequantized_with_its_companions_folded(client):
    for where, res in both("mlx_4bit", client):
        got = rows(res)
        assert {n: r["alpha"] for n, r in got.items()} == pytest.approx(REFS["mlx_4bit"], abs=1e-6), where
        assert all(r["reason"] == "dequantized (mlx 4-bit group 64)" for r in got.values()), where
        for name, r in got.items():
            module = name.removesuffix(".weight")
            assert r["companions"] == [module + ".scales", module + ".biases"], where
        assert res.summary["num_layers"] == 5 and res.summary["status"] == "success", where
        assert res.summary["alpha"] == pytest.approx(np.mean(list(REFS["mlx_4bit"].values())), abs=1e-6), where


def test_gguf_quants_read_and_q8_k_skipped(client):
    for where, res in both("gguf_quants", client):
        got = rows(res)
        assert {n: r["alpha"] for n, r in got.items() if r["status"] == "success"} == pytest.approx(
            REFS["gguf_quants"], rel=1e-6), where
        assert got["blk.0.attn_k.weight"]["reason"] == "quantized (q8_k)", where
        assert res.summary["status"] == "incomplete", where


def test_tf_keras_flax_only_repos_are_read(client, tmp_path):
    with h5py.File(CASES / "tf_only" / "tf_model.h5") as f:
        tf_kernel = f["bert/encoder/layer_0/attention/self/query/kernel:0"][()]
    with zipfile.ZipFile(CASES / "keras_only" / "model.keras") as z, \
            h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        keras_kernel = f["layers/dense/vars/0"][()]
    tree = msgpack.unpackb((CASES / "flax_only" / "flax_model.msgpack").read_bytes(), raw=False,
                           ext_hook=lambda code, data: msgpack.unpackb(data, raw=True))
    shape, dtype, buf = tree["params"]["dense"]["kernel"]
    flax_kernel = np.frombuffer(buf, dtype=dtype.decode()).reshape(shape)
    expected = {"tf_only": ("keras", "bert.encoder.layer_0.attention.self.query.weight", tf_kernel),
                "keras_only": ("keras", "layers.dense.vars.0", keras_kernel),
                "flax_only": ("flax", "dense.weight", flax_kernel)}
    for case, (fmt, name, kernel) in expected.items():
        ref = alpha_of(kernel.T, tmp_path)  # stored (in, out): read as (out, in), the same ESD
        assert ref == pytest.approx(alpha_of(kernel, tmp_path), rel=1e-9)
        for where, res in both(case, client):
            assert res.format == fmt and res.summary["status"] == "success", (case, where)
            (row,) = res.rows
            assert row["name"] == name and row["alpha"] == pytest.approx(ref, rel=1e-9), (case, where)


def test_openvino_only_is_skipped_naming_the_format(client):
    for where, exc in both("openvino_only", client):
        assert isinstance(exc, UnreadFormatError) and error_status(exc) == "skipped", where
        assert "OpenVINO IR" in str(exc) and "does not read" in str(exc), where


@pytest.mark.parametrize("case,weight,scheme", [("hqq_like", "model.layers.0.mlp.down_proj.W_q", "hqq"),
                                                ("exl2_like", "model.layers.0.self_attn.q_proj.q_weight", "exl2")])
def test_hqq_and_exl2_skipped_by_scheme_with_companions_folded(client, case, weight, scheme):
    for where, res in both(case, client):
        got = rows(res)
        assert set(got) == {"model.layers.0.self_attn.o_proj.weight", weight}, where  # no companion row
        assert got[weight]["status"] == "skipped" and got[weight]["reason"] == f"quantized ({scheme})", where
        assert got[weight]["companions"] and all(c.startswith(weight.rsplit(".", 1)[0]) for c in got[weight]["companions"])
        assert res.summary["status"] == "incomplete" and res.summary["num_layers"] == 2, where
        if case in REFS:
            assert got["model.layers.0.self_attn.o_proj.weight"]["alpha"] == pytest.approx(
                REFS[case]["model.layers.0.self_attn.o_proj.weight"], rel=1e-9)


def test_bin_and_safetensors_reads_the_safetensors_only(client):
    for where, res in both("bin_and_safetensors", client):
        assert res.files[0].endswith("model.safetensors") and len(res.files) == 1, where
        assert {n: r["alpha"] for n, r in rows(res).items() if r["status"] == "success"} == pytest.approx(
            REFS["bin_and_safetensors"], rel=1e-9), where
        assert res.metadata["files_not_read"] == ["pytorch_model.bin"], where


def test_choice_reads_components_not_root_copies_and_names_unread_formats():
    from hubscan.weights.files import choose_weight_files, files_not_read, unread_files

    sd = ["model_index.json", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt",
          "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
          "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "safety_checker/pytorch_model.bin"]
    chosen, fmt = choose_weight_files(sd)
    assert chosen == ("safety_checker/pytorch_model.bin", "text_encoder/model.safetensors",
                      "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors")
    assert fmt == "safetensors+torch"
    assert files_not_read(sd, chosen) == ("unet/diffusion_pytorch_model.fp16.safetensors", "v1-5-pruned-emaonly.safetensors",
                                          "v1-5-pruned.ckpt", "v1-5-pruned.safetensors")
    # without model_index.json a root file is the model (components are then not looked for)
    assert choose_weight_files(sd[1:2] + sd[4:]) == (("v1-5-pruned.safetensors",), "safetensors")
    # only fp16 variants of a sharded component: the fp16 index is read
    fp16 = ["model_index.json", "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
            "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"]
    assert choose_weight_files(fp16)[0] == ("transformer/diffusion_pytorch_model.safetensors.index.fp16.json",)
    # an OpenVINO .bin is not a torch file; beside readable weights it is listed as not read
    ov = ["openvino_model.xml", "openvino_model.bin", "config.json"]
    with pytest.raises(UnreadFormatError, match=r"OpenVINO IR \(openvino_model.xml, openvino_model.bin\)"):
        choose_weight_files(ov)
    assert unread_files(ov) == ["openvino_model.bin", "openvino_model.xml"]
    assert choose_weight_files(ov + ["model.safetensors"]) == (("model.safetensors",), "safetensors")
    for listing, fmt in ((["model.tflite"], "TensorFlow Lite"), (["model.bin", "shared_vocabulary.json"], "CTranslate2"),
                         (["model.json", "group1-shard1of2.bin", "group1-shard2of2.bin"], "TensorFlow.js"),
                         (["rust_model.ot"], "rust-bert"), (["m.mlpackage/Data/weights/weight.bin"], "Core ML")):
        with pytest.raises(UnreadFormatError, match=fmt):
            choose_weight_files(listing)


def test_files_not_read_reaches_the_models_row():
    from hubscan.refs import ModelRef
    from hubscan.survey import model_row

    row = model_row(ModelRef("hf", "o/m", "a" * 40, ("model.safetensors",), "o/m"),
                    {"files_not_read": ["pytorch_model.bin"]}, "k", "h", "s", "success", "")
    assert row["files_not_read"] == ["pytorch_model.bin"] and row["files"] == ["model.safetensors"]


STATUS = {"bin_and_safetensors": "success", "diffusers_sharded": "success", "exl2_like": "incomplete",
          "flax_only": "success", "gguf_quants": "incomplete", "gguf_split_3_shards": "success",
          "hqq_like": "incomplete", "keras_only": "success", "mlx_4bit": "success", "openvino_only": "skipped",
          "tf_only": "success"}


@pytest.mark.slow
def test_surveys_of_the_cases_record_every_model(hub, ray_with_tests_on_path, tmp_path):
    """A survey of the cases folder and of the Hub: every case one models row, with its status, the unread
    format named in the reason, and the files its choice left unread."""
    from hubscan.query import connect
    from hubscan.survey import SurveyConfig, survey

    assert sorted(STATUS) == NAMES
    for source, prefix, settings in ((f"local:{CASES}", "", {}), ("hf", "r3/", {"endpoint": hub.endpoint})):
        out = tmp_path / ("ds-" + source.partition(":")[0])
        survey(SurveyConfig(source=source, out=str(out), actors=1, progress=False, keep_esd=False, hub=settings))
        got = {m.removeprefix(prefix): (s, r, f) for m, s, r, f in connect(str(out)).execute(
            "SELECT model_id, status, reason, files_not_read FROM models").fetchall()}
        assert {m: s for m, (s, _, _) in got.items()} == STATUS, source
        assert "OpenVINO IR" in got["openvino_only"][1], source
        assert list(got["bin_and_safetensors"][2]) == ["pytorch_model.bin"], source
        assert list(got["openvino_only"][2]) == ["openvino_model.bin", "openvino_model.xml"], source
