"""``hubscan.analyze(obj)`` on models in memory (hubscan/weights/memory.py), against WeightWatcher 0.7.7 on
the same objects, against the same model's saved files, and against numpy on the effective weights.

Models are random-init (seeded) at small widths; WW runs its native in-memory path
(``WeightWatcher(model=module).analyze()``: its ``named_modules()`` walk). Columns and bounds are those
of tests/test_vs_weightwatcher.py (``COMPARE``: float64 bounds, 1e-9 relative on the eigenvalue columns).
Where WW names a tied alias (GPT-2's ``lm_head`` is ``transformer.wte``), its row is compared with the
row of the parameter it is (hubscan gives a parameter one row, under its first name).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch

import hubscan
from hubscan.weights.modules import checkpoint_names

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore")
ww = pytest.importorskip("weightwatcher")
from test_vs_weightwatcher import COMPARE, _deviation  # noqa: E402

logging.getLogger("weightwatcher").setLevel(logging.WARNING)
logging.getLogger("transformers").setLevel(logging.ERROR)

#: Row columns that say where and when, not what: left out of "identical rows".
_NOT_COMPARED = {"layer_id", "seconds", "device"}


# -- models ------------------------------------------------------------------------------------------------

def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def tv_resnet18():
    import torchvision
    return _seeded(lambda: torchvision.models.resnet18(num_classes=32))


def tv_vgg11_narrow():
    """torchvision's VGG class with vgg11's layer plan at a quarter of its widths (vgg11 itself: slow test)."""
    import torchvision
    from torchvision.models.vgg import VGG, make_layers
    plan = [16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"]
    model = _seeded(lambda: VGG(make_layers(plan), num_classes=32))
    model.classifier = _seeded(lambda: torch.nn.Sequential(torch.nn.Linear(128 * 49, 256), torch.nn.ReLU(),
                                                           torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                                           torch.nn.Linear(256, 32))).eval()
    assert isinstance(model, torchvision.models.VGG)
    return model


def tv_vgg11():
    import torchvision
    return _seeded(lambda: torchvision.models.vgg11())


def timm_vit():
    import timm
    return _seeded(lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=32))


def timm_convnext():
    import timm
    return _seeded(lambda: timm.create_model("convnext_atto", pretrained=False, num_classes=32))


def hf_bert():
    from transformers import BertConfig, BertModel
    return _seeded(lambda: BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                intermediate_size=128, vocab_size=300, max_position_embeddings=64)))


def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    return _seeded(lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300,
                                                      n_positions=64, bos_token_id=0, eos_token_id=0)))


def hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    return _seeded(lambda: LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                        num_attention_heads=4, num_key_value_heads=2,
                                                        vocab_size=300, max_position_embeddings=64)))


def hf_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM
    return _seeded(lambda: MixtralForCausalLM(MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                            num_attention_heads=4, num_key_value_heads=2,
                                                            num_local_experts=4, num_experts_per_tok=2,
                                                            vocab_size=300, max_position_embeddings=64)))


def hf_t5():
    from transformers import T5Config, T5ForConditionalGeneration
    return _seeded(lambda: T5ForConditionalGeneration(T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                               num_heads=4, vocab_size=300)))


def hf_vit():
    """transformers v5's ViT: its modules renamed from the checkpoint keys save_pretrained writes."""
    from transformers import ViTConfig, ViTModel
    return _seeded(lambda: ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=128, image_size=32, patch_size=8)))


def peft_lora():
    from peft import LoraConfig, get_peft_model
    base = hf_llama()
    model = get_peft_model(base, LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # a trained adapter: B ≠ 0
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model.eval()


MODELS = {f.__name__: f for f in (tv_resnet18, tv_vgg11_narrow, timm_vit, timm_convnext, hf_bert, hf_gpt2,
                                  hf_llama, hf_mixtral, hf_t5, peft_lora)}


def keras_model():
    """A Keras 3 model (torch backend): embedding, Conv1D, Dense."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras 3 runs on another backend here (KERAS_BACKEND=torch)")
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(300, 32, name="embedding"),
                             keras.layers.Conv1D(48, 3, name="conv1d"), keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(64, name="dense"), keras.layers.Dense(40, name="dense_1")],
                            name="sequential")  # names fixed: Keras numbers unnamed layers per process


# -- helpers -----------------------------------------------------------------------------------------------

def _by_name(result) -> dict:
    return {r.key: r for r in result.rows}


def _same(x, y, what: str, skip=()) -> None:
    """Two rows equal on every column but where and when (and ``skip``); NaN equals NaN."""
    x, y = dict(x), dict(y)
    assert set(x) == set(y), what
    for col in set(x) - _NOT_COMPARED - set(skip):
        same = x[col] == y[col] or (isinstance(x[col], float) and math.isnan(x[col]) and math.isnan(y[col]))
        assert same, f"{what} {col}: {x[col]!r} != {y[col]!r}"


def _same_rows(a, b, *, what: str) -> None:
    """Every row of ``a`` equals the row of the same name and part in ``b`` (:func:`_same`), and the two
    name the same matrices."""
    ra, rb = _by_name(a), _by_name(b)
    assert set(ra) == set(rb), (what, set(ra) ^ set(rb))
    for key, x in ra.items():
        _same(x, rb[key], f"{what}: {key}")


def _name_of_tensor(model) -> dict:
    """id(tensor) → the first state-dict name it has, as save_pretrained names it (the row hubscan gives it;
    test_module_equals_its_save_pretrained_folder checks those names against the saved files)."""
    saved = checkpoint_names(model)
    out: dict = {}
    for name, t in model.state_dict(keep_vars=True).items():
        out.setdefault(id(t), saved.get(name, name))
    return out


def _compare_ww(model, wdf, res, *, twin=None) -> tuple[dict, set]:
    """Each WW row against the hubscan row of the same tensor (tied aliases and PEFT wrappers resolved
    through the tensor object); returns the worst deviation per column and the names compared."""
    names = _name_of_tensor(twin or model)
    rows = _by_name(res)
    cols = dict(COMPARE, N=("eq", 0), M=("eq", 0))
    worst = {c: 0.0 for c in cols}
    compared, failures = set(), []
    for _, w in wdf.iterrows():
        name = names[id((twin or model).get_submodule(w["longname"]).weight)]
        h = rows[name]
        if w["rf"] > 1 and h["status"] == "skipped" and "M = 1" in h["reason"]:
            continue  # depthwise convolution: each slice a vector (README "deliberate differences")
        assert h["status"] == "success", (name, h["reason"])
        compared.add(name)
        for col, (kind, bound) in cols.items():
            d = _deviation(kind, h[col], w[col])
            worst[col] = max(worst[col], d)
            if d > bound:
                failures.append(f"{name} {col}: hubscan {h[col]!r} WW {w[col]!r}")
    assert not failures, "\n".join(failures[:20])
    return worst, compared


def _ww(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze()


def _invariant(model, res) -> None:
    """Every parameter and buffer of rank ≥ 2 (each tensor once) is in exactly one row's name or
    companions, or in ``missing``."""
    sd, saved = model.state_dict(keep_vars=True), checkpoint_names(model)
    tensors = {}
    for name, t in sd.items():
        tensors.setdefault(id(t), (saved.get(name, name), t))
    wanted = {name for name, t in tensors.values() if t.dim() >= 2}
    seen = [r["name"] for r in res.rows if not r["part"] or r["part"] in ("0", "0,0", "")]
    seen = {r["name"] for r in res.rows} | {c for r in res.rows for c in r["companions"]}
    assert wanted <= seen | {n for n, _ in res.missing}, wanted - seen
    firsts = {}
    for r in res.rows:
        firsts.setdefault(r["name"], r["layer_id"])
    assert len(firsts) == len({r["name"] for r in res.rows})


# -- WeightWatcher on the same objects ----------------------------------------------------------------------

FAST = ["tv_vgg11_narrow", "timm_vit", "timm_convnext", "hf_bert", "hf_gpt2", "hf_llama", "hf_mixtral", "hf_t5",
        "peft_lora"]


@pytest.mark.parametrize("name", FAST + [pytest.param("tv_resnet18", marks=pytest.mark.slow)])
def test_matches_ww_in_memory(name):
    model = MODELS[name]()
    res = hubscan.analyze(model)
    wdf = _ww(model)
    worst, compared = _compare_ww(model, wdf, res)
    print(f"\n[{name}] {len(compared)} layers, max deviation vs WW 0.7.7: "
          + ", ".join(f"{k}={v:.1e}" for k, v in worst.items() if v))
    assert compared and res.summary["status"] == "success"
    _invariant(model, res)
    assert res.format == "module" and res.files == [f"<{type(model).__name__} in memory>"]


@pytest.mark.slow
def test_vgg11_full_width_matches_ww():
    model = tv_vgg11()
    worst, compared = _compare_ww(model, _ww(model), hubscan.analyze(model))
    assert len(compared) == 11


def test_module_typing_in_memory():
    """The owning module decides: GPT-2's Conv1D (in, out) is a dense (out, in) matrix, Mixtral's fused
    experts one row per expert, T5's tied embeddings one row, a LoRA's base layer dense."""
    gpt2 = _by_name(hubscan.analyze(hf_gpt2()))
    attn = gpt2["transformer.h.0.attn.c_attn.weight"]
    assert (attn["layer_type"], attn["module_type"], attn["typed_by"]) == ("dense", "Conv1D", "module")
    assert (attn["N"], attn["M"], attn["shape"]) == (192, 64, [64, 192])
    assert "lm_head.weight" not in gpt2  # tied to transformer.wte: one parameter, one row
    mix = hubscan.analyze(hf_mixtral())
    experts = [r for r in mix.rows if r["name"].endswith("experts.gate_up_proj") and ".0." in r["name"]]
    assert [r["part"] for r in experts] == ["0", "1", "2", "3"]
    assert {(r["N"], r["M"], r["module_type"]) for r in experts} == {(192, 64, "MixtralExperts")}
    t5 = hubscan.analyze(hf_t5())
    assert [r["name"] for r in t5.rows if r["layer_type"] == "embedding" and "relative" not in r["name"]] \
        == ["shared.weight"]


# -- the same model from memory and from its files ----------------------------------------------------------

@pytest.mark.parametrize("name", ["hf_bert", "hf_gpt2", "hf_llama", "hf_t5", "hf_vit"])
def test_module_equals_its_save_pretrained_folder(name, tmp_path):
    """Row for row (layer_id aside: the position in the module's state dict vs in the file), the module
    typing included: the folder is typed from its config.json's meta-device model, the module from itself.
    ViT's module names (``layers.0.attention.q_proj``) differ from its saved keys: its rows are named as saved."""
    model = hf_vit() if name == "hf_vit" else MODELS[name]()
    model.save_pretrained(tmp_path)
    mem, folder = hubscan.analyze(model), hubscan.analyze(tmp_path)
    _same_rows(mem, folder, what=name)
    assert mem.summary["status"] == folder.summary["status"] == "success"


def test_mixtral_module_and_its_unfused_folder(tmp_path):
    """transformers 5 fuses Mixtral's experts in the module (``mlp.experts.gate_up_proj`` (E, 2I, H),
    ``down_proj`` (E, H, I)) and writes them unfused (``block_sparse_moe.experts.e.w1/w3/w2``, the router
    ``block_sparse_moe.gate``): the rows
    that are one matrix in both (attention, router, ``down_proj`` expert e = ``w2``) are equal; a fused
    gate_up expert is [w1; w3] stacked, its eigenvalues those of the stack."""
    model = hf_mixtral()
    model.save_pretrained(tmp_path)
    mem = _by_name(hubscan.analyze(model))
    folder = _by_name(hubscan.analyze(tmp_path))  # the router: mlp.gate in the module, named as saved
    unfused = {k for k in folder if ".experts." in k}
    assert {k for k in mem if ".experts." not in k} == set(folder) - unfused
    for key in set(folder) - unfused:
        _same(mem[key], folder[key], key, skip=("name",))
    from safetensors.torch import load_file
    sd = load_file(str(tmp_path / "model.safetensors"))
    for layer in range(2):
        for e in range(4):
            old = f"model.layers.{layer}.block_sparse_moe.experts.{e}"
            down, w2 = dict(mem[f"model.layers.{layer}.mlp.experts.down_proj:{e}"]), dict(folder[f"{old}.w2.weight"])
            for col in COMPARE:
                assert _deviation(COMPARE[col][0], down[col], w2[col]) <= COMPARE[col][1], (old, col)
            stack = torch.cat([sd[f"{old}.w1.weight"], sd[f"{old}.w3.weight"]]).double().numpy()
            lam = np.linalg.svd(stack, compute_uv=False) ** 2
            gu = mem[f"model.layers.{layer}.mlp.experts.gate_up_proj:{e}"]
            assert gu["lambda_max"] == pytest.approx(lam.max(), rel=1e-12)
            assert gu["norm"] == pytest.approx(lam.sum(), rel=1e-12)


def test_state_dict_equals_its_safetensors_file_and_bytes(tmp_path):
    from safetensors.torch import save, save_file

    sd = {k: v.detach().contiguous() for k, v in timm_vit().state_dict().items()}
    save_file(sd, str(tmp_path / "m.safetensors"))
    f = hubscan.analyze(tmp_path / "m.safetensors")
    _same_rows(hubscan.analyze(sd), f, what="state dict")
    _same_rows(hubscan.analyze({k: v.numpy() for k, v in sd.items()}), f, what="numpy state dict")
    _same_rows(hubscan.analyze(save(sd)), f, what="safetensors bytes")


def test_nothing_is_copied_when_opened():
    """Entries load the live tensors (same storage), and the set holds no tensor of its own."""
    from hubscan.sources import open_model

    model = hf_llama()
    ws = open_model(model).weights
    sd = model.state_dict()
    for e in ws.entries():
        assert e.load().data_ptr() == sd[e.name].data_ptr(), e.name
    sd_np = {k: v.numpy() for k, v in sd.items()}
    for e in open_model(sd_np).weights.entries():
        assert e.load().data_ptr() == sd_np[e.name].ctypes.data


# -- parametrizations ---------------------------------------------------------------------------------------

def test_parametrizations_read_as_the_effective_weight(tmp_path):
    from torch.nn.utils import parametrizations as P
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = torch.nn.Sequential(P.spectral_norm(torch.nn.Linear(48, 64)),          # 0
                                P.weight_norm(torch.nn.Conv2d(16, 24, 3)),         # 1
                                torch.nn.utils.spectral_norm(torch.nn.Linear(40, 56)),  # 2: the older hook
                                P.orthogonal(torch.nn.Linear(32, 32)))             # 3
    model.train()  # spectral_norm iterates in train mode: reading the weight must not
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    res = _by_name(hubscan.analyze(model))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    model.eval()
    with torch.no_grad():
        model[2](torch.zeros(1, 40))  # the older hook sets .weight in a forward (eval: no power iteration)
        effective = {"0.parametrizations.weight.original": model[0].weight, "2.weight_orig": model[2].weight,
                     "3.parametrizations.weight.original": model[3].weight}
    for name, W in effective.items():
        r = res[name]
        lam = np.linalg.svd(W.double().numpy(), compute_uv=False) ** 2
        assert r["status"] == "success" and "effective weight" in r["reason"], (name, r["reason"])
        assert r["lambda_max"] == pytest.approx(lam.max(), rel=1e-12)
        assert r["norm"] == pytest.approx(lam.sum(), rel=1e-12)
    # σ_max ≈ 1 (power-iteration estimate of σ)
    assert res["0.parametrizations.weight.original"]["lambda_max"] == pytest.approx(1.0, rel=1e-2)
    # weight_norm: g·v/‖v‖ as for the saved file (the same rows); g keeps its own (skipped) row
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    saved = _by_name(hubscan.analyze(tmp_path / "m.safetensors"))
    for name in ("1.parametrizations.weight.original1", "1.parametrizations.weight.original0"):
        _same(res[name], saved[name], name, skip=("typed_by", "module_type"))  # a bare file: typed by name
    assert res["1.parametrizations.weight.original0"]["status"] == "skipped"
    _invariant(model, hubscan.analyze(model))


# -- Keras 3 ----------------------------------------------------------------------------------------------------

def test_keras_model_matches_ww_on_its_weights():
    """WW 0.7.7 reads Keras models through tf.keras (TensorFlow, not installed here); its result on a
    torch twin holding the same weights (Dense kernel (in, out) → Linear (out, in), Conv1D (k, in, out) →
    Conv1d (out, in, k)) is compared with hubscan's rows of the Keras model."""
    model = keras_model()
    res = hubscan.analyze(model)
    rows = _by_name(res)
    assert res.format == "keras" and res.summary["status"] == "success"
    assert {n: (r["layer_type"], r["module_type"]) for n, r in rows.items()} == {
        "sequential.embedding.weight": ("embedding", "Embedding"), "sequential.conv1d.weight": ("conv1d", "Conv1D"),
        "sequential.dense.weight": ("dense", "Dense"), "sequential.dense_1.weight": ("dense", "Dense")}
    w = {v.path: v.value.detach() for v in model.weights}
    twin = torch.nn.ModuleDict({"emb": torch.nn.Embedding(300, 32), "dense": torch.nn.Linear(480, 64),
                                "dense_1": torch.nn.Linear(64, 40)})
    with torch.no_grad():
        twin["emb"].weight.copy_(w["sequential/embedding/embeddings"])
        twin["dense"].weight.copy_(w["sequential/dense/kernel"].T)
        twin["dense_1"].weight.copy_(w["sequential/dense_1/kernel"].T)
    tw = _by_name(hubscan.analyze(twin))
    for ours, theirs in (("sequential.embedding.weight", "emb.weight"), ("sequential.dense.weight", "dense.weight"),
                         ("sequential.dense_1.weight", "dense_1.weight")):
        for col in COMPARE:
            assert _deviation(*COMPARE[col][:1], rows[ours][col], tw[theirs][col]) <= COMPARE[col][1], (ours, col)
    _compare_ww(twin, _ww(twin), hubscan.analyze(twin))
    # Conv1D: per-tap slices of the (out, in, k) kernel, each slice's eigenvalues by numpy
    k = w["sequential/conv1d/kernel"].double().numpy()  # (k, in, out)
    lam = np.sort(np.concatenate([np.linalg.svd(k[i], compute_uv=False) ** 2 for i in range(k.shape[0])]))
    conv = rows["sequential.conv1d.weight"]
    assert conv["num_evals"] == len(lam) and conv["lambda_max"] == pytest.approx(lam[-1] * 0.5, rel=1e-12) \
        or conv["lambda_max"] == pytest.approx(lam[-1], rel=1e-12)


# -- errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("obj", [3, [torch.zeros(3, 3)], {"w": [1, 2]}, {0: torch.zeros(3, 3)}, object()])
def test_anything_else_is_a_one_line_type_error(obj):
    with pytest.raises(TypeError) as exc:
        hubscan.analyze(obj)
    msg = str(exc.value)
    assert "\n" not in msg and "torch.nn.Module" in msg and "state dict" in msg and "Keras 3" in msg


def test_meta_module_is_incomplete_not_success():
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 48))
    res = hubscan.analyze(model)
    assert res.summary["status"] != "success"
    assert all(r["status"] == "skipped" and "meta" in r["reason"] for r in res.rows)


def test_base_model_in_memory_gives_delta_rows():
    """``base=`` takes a model in memory too: each row is ΔW = W − W_base of the same tensor."""
    base, tuned = hf_llama(), hf_llama()
    torch.manual_seed(5)
    with torch.no_grad():
        tuned.model.layers[0].self_attn.q_proj.weight.add_(0.01 * torch.randn(64, 64))
    rows = _by_name(hubscan.analyze(tuned, base=base))
    q = rows["model.layers.0.self_attn.q_proj.weight"]
    d = (tuned.model.layers[0].self_attn.q_proj.weight - base.model.layers[0].self_attn.q_proj.weight).double()
    assert q["status"] == "success" and q["delta_W"] == pytest.approx(float(torch.linalg.norm(d)), rel=1e-12)
    assert q["lambda_max"] == pytest.approx(float(torch.linalg.matrix_norm(d, 2)) ** 2, rel=1e-9)
    assert rows["model.layers.1.self_attn.q_proj.weight"]["status"] == "skipped"  # unchanged from base


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_module_is_analyzed_on_its_device():
    model = hf_bert().cuda()
    res = hubscan.analyze(model)
    cpu = _by_name(hubscan.analyze(hf_bert()))
    for key, r in _by_name(res).items():
        if r["status"] == "success":
            assert r["device"].startswith("cuda")
            assert r["lambda_max"] == pytest.approx(cpu[key]["lambda_max"], rel=1e-9)


def test_numpy_views_and_dtypes_torch_lacks():
    """A reversed numpy view (negative strides) is read (copied when read); a dtype torch has not is a
    skipped row, not understood (the model incomplete), never an exception."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48))
    ours, ref = hubscan.analyze({"w": a[::-1]}).rows[0], hubscan.analyze({"w": np.ascontiguousarray(a[::-1])}).rows[0]
    _same(ours, ref, "reversed view")
    res = hubscan.analyze({"w": a, "s": np.array([["x"] * 4] * 4)})
    s = _by_name(res)["s"]
    assert s["status"] == "skipped" and "numpy dtype" in s["reason"] and res.summary["status"] == "incomplete"
