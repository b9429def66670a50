"""Hub-in-a-box: a few hundred model repositories made by the real libraries' own code, at small width.

``python -m hubscan.demo.hubbox DIR [--quick] [--jobs 2]`` writes, under ``DIR``:

* ``repos/<org>/<name>/`` — one folder per repository, as its library saved it;
* ``manifest.json`` — every repository's Hub metadata (what the Hub's API returns: downloads, likes,
  ``library_name``, ``pipeline_tag``, ``createdAt``, ``lastModified``, ``gated``; the card's ``base_model`` /
  ``base_model_relation`` and ``model-index``), how it was made, and what hubscan is expected to do with it
  (``expect``: status, why, and the capability it needs when that is not built yet), so a rehearsal can
  explain every outcome; plus the counts per kind, what did not build (and why), versions and the time taken.

``tests/hub_server.py --hubbox DIR`` serves it (``FakeHub.add_hubbox``). ``--week2`` mutates a generated box
for a second survey (:func:`mutate`: new revisions of 10 % of the repositories, new repositories, deleted
ones, one made gated) and writes ``week2/manifest.json``.

What is made (each by its library; nothing is downloaded):

=====================  ==================================================================================
kind                   how
=====================  ==================================================================================
``transformers``       every model type of ``MODEL_MAPPING_NAMES`` that builds from a shrunken config (sizes
                       capped: hidden 64, 2 layers, vocab 1000, …; ≤ 3 M parameters) within its time limit:
                       the base class, and the causal-LM class where one exists (tied embeddings as the
                       library writes them), ``save_pretrained``; some sharded (small ``max_shard_size``),
                       some bf16, some with an fp16 ``variant`` beside the fp32 files.
``timm``               50+ architectures (``create_model``, ≤ 6 M parameters), saved by timm's
                       ``save_for_hf`` (``model.safetensors`` + ``config.json`` with ``architecture``, as the
                       Hub's ``timm/`` repos; some also ``pytorch_model.bin``).
``diffusers``          a tiny Stable Diffusion pipeline (``save_pretrained``: unet / vae / text_encoder /
                       tokenizer / scheduler), its fp16 variant, and components (UNet, VAE, ControlNet,
                       SD3 transformer, DDPM UNet).
``sentence-transformers``  ``SentenceTransformer(modules=[Transformer, Pooling, (Dense,) Normalize]).save``.
``derived``            model trees of small causal LMs and encoders: fine-tunes, a linear merge (mean of two
                       fine-tunes), LoRA adapters (peft), bitsandbytes int8 / nf4 (CPU), compressed-tensors
                       FP8 (float-quantized) and W4A16 (pack-quantized), GGUF (the ``gguf`` package's writer:
                       Q8_0 + F16 in one repo, and a Q8_0 split across files), MLX 4-bit.
``reupload``           byte-identical copies of other repositories' weights under other organisations.
=====================  ==================================================================================

MLX: the ``mlx-community`` 4-bit layout is quantized by ``mlx.core.quantize`` where mlx is installed, else by
:func:`mlx_quantize`, the same arithmetic in numpy (equal bit for bit; MLX's affine scheme, ``W ≈ scales · q +
biases`` per group of 64 along the input axis, 8 values packed little-end-first into each ``uint32``) and
written with safetensors as mlx-lm saves it: ``<name>.weight`` U32 (out, in·bits/32), ``<name>.scales`` /
``<name>.biases`` BF16 (out, in / group_size), config.json ``quantization: {group_size: 64, bits: 4}``.

Generation runs the parts in parallel subprocesses (``--jobs``; a part that crashes is resumed after the
model it died on). Nothing in the pipeline imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT = 1
#: The parts, each run in its own process (the transformers types are split in two).
PARTS = ("tf0", "tf1", "derived", "timm", "diffusers", "st")
#: Largest parameter count of a "tiny" transformers model / timm model.
MAX_TF_PARAMS, MAX_TIMM_PARAMS = 3_000_000, 6_000_000
#: Seconds one model may take to build and save.
BUILD_TIMEOUT = 45
ORG = {"transformers": "tinyzoo", "timm": "timm", "diffusers": "tinydiff", "sentence-transformers": "tinysent",
       "derived": "tinyfam", "mlx": "mlx-community"}
#: Small timm architectures (those over MAX_TIMM_PARAMS are left out when built).
TIMM_ARCHS = """test_byobnet test_convnext test_convnext2 test_convnext3 test_efficientnet test_efficientnet_evos
test_efficientnet_gn test_efficientnet_ln test_mambaout test_nfnet test_resnet test_vit test_vit2 test_vit3
test_vit4 test_vit_relpos test_coatnet test_maxvit
resnet10t mobilenetv3_small_050 mobilenetv3_small_075 mobilenetv3_small_100 lcnet_035 lcnet_050 lcnet_075 lcnet_100
mobilenetv2_035 mobilenetv2_050 tinynet_e tinynet_d ghostnet_050 regnetx_002 regnety_002 mnasnet_small
efficientnet_b0 mixnet_s spnasnet_100 vit_tiny_patch16_224 deit_tiny_patch16_224 convnext_atto convnext_femto
edgenext_xx_small efficientvit_m0 efficientvit_b0 fastvit_t8 mobileone_s0 tiny_vit_5m_224 mobilevit_xxs
mobilevitv2_050 xcit_nano_12_p16_224 pit_ti_224 dla46_c dla46x_c dla60x_c mobilenetv4_conv_small
ese_vovnet19b_slim_dw rexnet_100 pvt_v2_b0 efficientformerv2_s0 regnety_004 starnet_s1 inception_next_atto
mobilenetv1_100 hardcorenas_a semnasnet_075 fbnetc_100""".split()
QUICK_TIMM = ("test_vit", "test_resnet", "test_convnext", "test_efficientnet")
QUICK_TF = ("llama", "bert", "gpt2", "t5", "vit", "qwen2")
#: Relative size of the perturbation that makes a "fine-tune" of a base.
FINETUNE_STEP = 0.05
SUCCESS = "every matrix readable by hubscan"


# ------------------------------------------------------------------------------------------------ helpers
def _quiet() -> None:
    """Single-threaded, offline, no progress bars or warnings (workers)."""
    import logging
    import warnings
    for k, v in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("HF_HUB_OFFLINE", "1"),
                 ("TRANSFORMERS_OFFLINE", "1"), ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                 ("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                 ("HF_HUB_DISABLE_TELEMETRY", "1"), ("TQDM_DISABLE", "1")):
        os.environ[k] = v
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch
    torch.set_num_threads(1)


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _limit(seconds: int):
    def fire(signum, frame):
        raise _Timeout(f"timed out after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:240]


def _repo(root: Path, repo_id: str) -> Path:
    folder = root / "repos" / repo_id
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _record(repo_id: str, kind: str, library: str, made_by: str, *, pipeline_tag: str | None = None,
            tags=(), base_model=None, relation: str | None = None, status: str = "success", why: str = SUCCESS,
            needs: str | None = None, evals: str | None = None, files: list | bool | None = None, **extra) -> dict:
    """One repository's entry (metadata the part knows; downloads, dates, gating are given by the main).

    ``expect``: the status a correct hubscan gives, why, the capability it ``needs`` when that is not built
    yet, and the weight ``files`` a complete analysis reads (default :func:`weight_files`; False: unchecked)."""
    return {"repo_id": repo_id, "folder": f"repos/{repo_id}", "kind": kind, "library": library, "made_by": made_by,
            "pipeline_tag": pipeline_tag, "tags": list(tags), "base_model": base_model, "relation": relation,
            "expect": {"status": status, "why": why, "needs": needs, "files": files}, "evals": evals, **extra}


#: Suffixes of weight files (what a complete analysis of a repository reads, see :func:`weight_files`).
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")


def weight_files(folder: Path) -> list[str]:
    """The weight files a complete analysis of one model folder reads: every weight file, less dtype variants
    (``*.fp16.safetensors`` beside the full-precision files) and pickles beside safetensors in the same
    folder (the same tensors twice). Paths relative to ``folder``, sorted."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    plain = [p for p in files if not any(f".{v}." in p.name for v in ("fp16", "bf16"))]
    files = plain or files
    safe_dirs = {p.parent for p in files if p.suffix == ".safetensors"}
    files = [p for p in files if p.suffix not in (".bin", ".pt", ".pth", ".ckpt") or p.parent not in safe_dirs]
    return sorted(p.relative_to(folder).as_posix() for p in files)


def _perturb(state: dict, seed: int, step: float = FINETUNE_STEP) -> dict:
    """A "fine-tune": every floating tensor plus Gaussian noise of ``step`` × its own standard deviation."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.numel() > 1:  # in float32, stored back in the tensor's dtype (fp8 too)
            f = v.float()
            out[k] = (f + step * f.std() * torch.randn(v.shape, generator=g)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


# ------------------------------------------------------------------------------------- tiny transformers
_CAPS = [  # (keys, cap) for integer config fields; a sub-config dict is shrunk the same way
    ({"num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
      "num_encoder_layers", "num_decoder_layers", "depth", "encoder_depth", "decoder_depth", "num_blocks",
      "num_text_layers", "num_vision_layers"}, 2),
    ({"hidden_size", "d_model", "n_embd", "n_embed", "embed_dim", "dim", "model_dim", "d_embed", "embedding_size",
      "word_embed_proj_dim", "embedding_dim", "encoder_hidden_size", "projection_dim", "text_embed_dim",
      "vision_embed_dim", "emb_dim", "width", "proj_dim", "output_hidden_size", "decoder_hidden_size",
      "mm_hidden_size", "vision_hidden_size", "text_hidden_size", "latent_dim", "attention_hidden_size",
      "codebook_dim", "upsample_initial_channel", "num_filters", "encoder_embed_dim", "decoder_embed_dim"}, 64),
    ({"intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim", "intermediate_dim",
      "hidden_dim", "ffn_hidden_size", "decoder_intermediate_size", "mlp_dim", "encoder_intermediate_size",
      "dim_feedforward", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "feed_forward_size", "ff_dim",
      "inner_dim"}, 128),
    ({"moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size",
      "moe_ffn_hidden_size", "intermediate_size_mlp", "moe_intermediate_dim"}, 64),
    ({"num_attention_heads", "n_head", "n_heads", "encoder_attention_heads", "decoder_attention_heads", "num_heads",
      "attention_heads", "encoder_num_attention_heads", "decoder_num_attention_heads"}, 4),
    ({"num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num", "n_head_kv"}, 2),
    ({"head_dim", "attention_head_dim", "kv_channels", "d_kv", "attention_head_size", "head_size", "v_head_dim",
      "qk_nope_head_dim", "d_head"}, 16),
    ({"qk_rope_head_dim"}, 8),
    ({"kv_lora_rank", "q_lora_rank"}, 32),
    ({"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "n_experts"}, 4),
    ({"num_experts_per_tok", "moe_topk", "top_k_experts", "num_experts_per_token", "router_top_k"}, 2),
    ({"n_shared_experts", "num_shared_experts", "first_k_dense_replace", "n_group", "topk_group"}, 1),
    ({"vocab_size", "text_vocab_size"}, 1000),
    ({"max_position_embeddings", "n_positions", "n_ctx", "max_target_positions", "max_text_positions",
      "max_seq_len", "max_sequence_length", "seq_length"}, 128),
    ({"image_size", "img_size"}, 32),
    ({"patch_size"}, 8),
]
_CAP = {k: cap for keys, cap in _CAPS for k in keys}
_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
            "cls_token_id", "mask_token_id", "unk_token_id")


def _shrink(d: dict, layers: int | None = None) -> dict:
    """A config dict with sizes capped (:data:`_CAP`); token ids beyond the small vocabulary mapped into it;
    per-layer lists cut to the first two layers."""
    d = dict(d)
    for k in ("out_features", "out_indices", "stage_names"):
        d.pop(k, None)
    n = next((d[k] for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers",
                            "decoder_layers") if isinstance(d.get(k), int) and not isinstance(d.get(k), bool)), layers)
    for k, v in list(d.items()):
        if k in ("id2label", "label2id", "rope_scaling", "rope_parameters", "quantization_config"):
            continue
        if isinstance(v, dict):
            d[k] = _shrink(v, n)
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if k in _CAP:
                d[k] = min(v, _CAP[k])
            elif k in _ID_KEYS and v >= 1000:
                d[k] = 999 - _ID_KEYS.index(k)
        elif isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            if k in ("depths", "num_layers_per_stage", "stage_depths", "layer_depths"):
                d[k] = [min(x, 1) for x in v]
            elif k in ("hidden_sizes", "embed_dims", "hidden_dims", "widths", "channels", "dims", "stage_dims"):
                f = max(1.0, max(v) / 64)
                d[k] = [max(8, int(round(x / f / 8)) * 8) for x in v]
            elif k in ("image_size", "img_size"):
                d[k] = [min(x, 32) for x in v]
            elif k == "patch_size":
                d[k] = [min(x, 8) for x in v]
            elif k.endswith("_token_id") or k.endswith("_token_ids"):
                d[k] = [x if x < 1000 else 999 - i for i, x in enumerate(v)]
            elif n and n > 2 and len(v) == n:
                d[k] = v[:2]
        elif isinstance(v, (list, str)) and n and n > 2 and len(v) == n and (isinstance(v, list) or k.endswith("pattern")):
            d[k] = v[:2]
    return d


def tiny_config(model_type: str):
    """A transformers config of ``model_type`` with every size capped (see :func:`_shrink`)."""
    from transformers import AutoConfig
    base = AutoConfig.for_model(model_type)
    d = _shrink(base.to_dict())
    d.pop("transformers_version", None)
    return type(base).from_dict(d)


def _tf_classes(model_type: str) -> list[tuple[str, str, str]]:
    """(variant, class name, pipeline tag) to build for a model type: the base class, and the causal-LM
    class where one exists."""
    from transformers.models.auto import modeling_auto as ma

    def first(v):
        return v[0] if isinstance(v, (list, tuple)) else v
    vision = model_type in getattr(ma, "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", {})
    audio = model_type in getattr(ma, "MODEL_FOR_CTC_MAPPING_NAMES", {}) or \
        model_type in getattr(ma, "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", {})
    out = [("base", first(ma.MODEL_MAPPING_NAMES[model_type]),
            "image-feature-extraction" if vision else "feature-extraction" if not audio else "audio-classification")]
    if model_type in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        out.append(("lm", first(ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]), "text-generation"))
    return out


def _layout_notes(folder: Path) -> tuple[str, str]:
    """(expected status, why) from the saved safetensors files of a folder (the names as saved, which may
    differ from the module's: transformers v5 writes fused experts back under the checkpoint's names).

    ``success`` with what is notable about the layout (tensors of rank ≥ 3 that are not convolutions,
    weight-norm parametrizations); when every matrix has ‖W‖²_F < 1e-5 (the eigenvalues of WᵀW sum to
    ‖W‖²_F, so none is above WeightWatcher's 1e-5 threshold: some libraries' inits are near zero) the why
    says that every row is measured with alpha null (README "What a status means": a degenerate spectrum is
    a measurement)."""
    from safetensors.torch import load_file
    state = {}
    for f in weight_files(folder):
        if f.endswith(".safetensors"):
            state.update(load_file(str(folder / f)))
    mats = {k: v for k, v in state.items() if v.dim() >= 2 and v.is_floating_point()}
    if mats and all(float(v.float().pow(2).sum()) < 1e-5 for v in mats.values()):
        return "success", ("every matrix has ‖W‖²_F < 1e-5 as the library initialized it: measured (norms, "
                           "lambda_max), alpha null in every row, no model mean")
    notes = []
    nd = [k for k, v in mats.items() if v.dim() >= 3 and not any(w in k for w in ("conv", "patch", "embed", "pos"))]
    if nd:
        notes.append(f"tensors of rank ≥ 3 that are not convolutions ({', '.join(nd[:2])}{' …' if len(nd) > 2 else ''}"
                     f": e.g. fused experts (E, out, in))")
    if any("parametrizations." in k for k in state):
        notes.append("weight-norm parametrization (original0 = g, original1 = v: W = g·v/‖v‖)")
    return "success", SUCCESS + ("; " + "; ".join(notes) if notes else "")


def part_transformers(root: Path, index: int, of: int, quick: bool, done: set, emit) -> None:
    """Every model type (every ``of``-th from ``index``) that builds tiny, saved by ``save_pretrained``."""
    import torch
    import transformers
    from transformers.models.auto import modeling_auto as ma
    transformers.utils.logging.disable_progress_bar()

    types = list(QUICK_TF) if quick else sorted(ma.MODEL_MAPPING_NAMES)
    for i, mt in enumerate(types):
        if i % of != index:
            continue
        for variant, cname, tag in _tf_classes(mt):
            if quick and variant == "lm" and mt not in ("llama", "gpt2"):
                continue
            repo_id = f"{ORG['transformers']}/{mt.replace('_', '-')}" + ("-lm" if variant == "lm" else "")
            if repo_id in done:
                continue
            emit({"in_progress": repo_id})
            h = int(hashlib.sha256(repo_id.encode()).hexdigest()[:8], 16)
            how = ("sharded" if h % 10 == 3 else "bf16" if h % 12 == 5 else "fp16-variant" if h % 15 == 7 else "")
            try:
                with _limit(BUILD_TIMEOUT):
                    cfg = tiny_config(mt)
                    cls = getattr(transformers, cname)
                    with torch.device("meta"):
                        n = sum(p.numel() for p in cls._from_config(cfg).parameters())
                    if n > MAX_TF_PARAMS:
                        raise ValueError(f"not tiny: {n:,} parameters after shrinking")
                    torch.manual_seed(h % 10_000)
                    model = cls._from_config(cfg).eval()
                    folder = _repo(root, repo_id)
                    if how == "bf16":
                        model = model.to(torch.bfloat16)
                    model.save_pretrained(folder, max_shard_size="64KB" if how == "sharded" else "50GB")
                    if how == "fp16-variant":
                        model.half().save_pretrained(folder, variant="fp16")
                    status, why = _layout_notes(folder)
            except Exception as exc:  # noqa: BLE001 - a type that does not build is recorded, not fatal
                shutil.rmtree(root / "repos" / repo_id, ignore_errors=True)
                emit({"not_built": repo_id, "kind": "transformers", "reason": _why(exc)})
                continue
            made = f"transformers {transformers.__version__} {cname}.save_pretrained" + (f" ({how})" if how else "")
            emit(_record(repo_id, "transformers", "transformers", made, pipeline_tag=tag, tags=[mt],
                         model_type=mt, params=n, evals="lm" if variant == "lm" and h % 3 == 0 else None,
                         status=status, why=why + (" (the fp32 files; the fp16 variant is the same model)"
                                                   if how == "fp16-variant" else "")))


# ------------------------------------------------------------------------------------------------- timm
def part_timm(root: Path, quick: bool, done: set, emit) -> None:
    """Small timm architectures saved as the Hub's ``timm/`` repositories (``save_for_hf``)."""
    import timm
    import torch
    from timm.models import save_for_hf

    for i, arch in enumerate(QUICK_TIMM if quick else TIMM_ARCHS):
        repo_id = f"{ORG['timm']}/{arch}.hubbox_in1k"
        if repo_id in done:
            continue
        emit({"in_progress": repo_id})
        try:
            with _limit(BUILD_TIMEOUT):
                torch.manual_seed(i)
                model = timm.create_model(arch, pretrained=False).eval()
                n = sum(p.numel() for p in model.parameters())
                if n > MAX_TIMM_PARAMS:
                    raise ValueError(f"not tiny: {n:,} parameters")
                folder = _repo(root, repo_id)
                both = i % 7 == 2  # some repos also carry the pickle, as older timm uploads do
                save_for_hf(model, str(folder), safe_serialization="both" if both else True)
        except Exception as exc:  # noqa: BLE001
            shutil.rmtree(root / "repos" / repo_id, ignore_errors=True)
            emit({"not_built": repo_id, "kind": "timm", "reason": _why(exc)})
            continue
        emit(_record(repo_id, "timm", "timm", f"timm {timm.__version__} create_model + save_for_hf"
                     + (" (safetensors and pytorch_model.bin)" if both else ""),
                     pipeline_tag="image-classification", tags=["image-classification", arch.split("_")[0]],
                     model_type=arch, params=n, evals="imagenet",
                     why=SUCCESS + (" (from model.safetensors; the .bin holds the same tensors)" if both else "")))


# -------------------------------------------------------------------------------------------- diffusers
def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def part_diffusers(root: Path, quick: bool, done: set, emit) -> None:
    """A tiny Stable Diffusion pipeline (and its fp16 variant) and diffusers components."""
    import diffusers
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, DDPMScheduler, SD3Transformer2DModel, StableDiffusionPipeline,
                           UNet2DConditionModel, UNet2DModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    org, ver = ORG["diffusers"], f"diffusers {diffusers.__version__}"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=8, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      vocab_size=1000, max_position_embeddings=77, projection_dim=32, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1))
    tok = _clip_tokenizer(root / "tmp" / "clip-tokenizer")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=DDPMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline_why = ("a pipeline folder: unet, vae and text_encoder are three models in one repo; every matrix of "
                    "each is readable")
    jobs = [
        (f"{org}/tiny-sd", lambda f: pipe.save_pretrained(f), "StableDiffusionPipeline.save_pretrained",
         "text-to-image", None, None, pipeline_why),
        (f"{org}/tiny-sd-fp16", lambda f: pipe.to(torch.float16).save_pretrained(f, variant="fp16"),
         "StableDiffusionPipeline.save_pretrained(variant='fp16')", "text-to-image", f"{org}/tiny-sd", "quantized",
         pipeline_why + " (fp16 variant files only)"),
        (f"{org}/tiny-unet", lambda f: unet.save_pretrained(f), "UNet2DConditionModel.save_pretrained", None,
         f"{org}/tiny-sd", "finetune", SUCCESS),
        (f"{org}/tiny-vae", lambda f: vae.save_pretrained(f), "AutoencoderKL.save_pretrained", None, None, None, SUCCESS),
        (f"{org}/tiny-controlnet", lambda f: ControlNetModel.from_unet(unet.float()).save_pretrained(f),
         "ControlNetModel.from_unet(...).save_pretrained", "text-to-image", f"{org}/tiny-sd", "adapter", SUCCESS),
        (f"{org}/tiny-sd3-transformer", lambda f: SD3Transformer2DModel(
            sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
            joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32, out_channels=4).save_pretrained(f),
         "SD3Transformer2DModel.save_pretrained", None, None, None, SUCCESS),
        (f"{org}/tiny-ddpm", lambda f: UNet2DModel(sample_size=16, block_out_channels=(16, 32), layers_per_block=1,
                                                    norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                                    up_block_types=("AttnUpBlock2D", "UpBlock2D")).save_pretrained(f),
         "UNet2DModel.save_pretrained", "unconditional-image-generation", None, None, SUCCESS),
    ]
    if quick:
        jobs = jobs[:1] + jobs[2:3]
    for repo_id, save, how, tag, base, rel, why in jobs:
        if repo_id in done:
            continue
        emit({"in_progress": repo_id})
        try:
            with _limit(BUILD_TIMEOUT * 2):
                torch.manual_seed(len(repo_id))
                save(_repo(root, repo_id))
        except Exception as exc:  # noqa: BLE001
            shutil.rmtree(root / "repos" / repo_id, ignore_errors=True)
            emit({"not_built": repo_id, "kind": "diffusers", "reason": _why(exc)})
            continue
        emit(_record(repo_id, "diffusers", "diffusers", f"{ver} {how}", pipeline_tag=tag, tags=["diffusers"],
                     base_model=base, relation=rel, why=why))


# --------------------------------------------------------------------------------- sentence-transformers
def _bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + \
        ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return BertTokenizerFast(str(folder / "vocab.txt")), len(words)


def part_st(root: Path, quick: bool, done: set, emit) -> None:
    """SentenceTransformer models (a tiny BERT + pooling, with and without a Dense head), saved by the library."""
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    org = ORG["sentence-transformers"]
    jobs = [("tiny-mean", False, "mean"), ("tiny-dense", True, "cls"), ("tiny-max", False, "max")]
    for i, (name, dense, pool) in enumerate(jobs[:1] if quick else jobs):
        repo_id = f"{org}/{name}"
        if repo_id in done:
            continue
        emit({"in_progress": repo_id})
        try:
            with _limit(BUILD_TIMEOUT * 2):
                src = root / "tmp" / f"st-bert-{i}"
                tok, vocab = _bert_tokenizer(src)
                tok.save_pretrained(src)
                torch.manual_seed(100 + i)
                BertModel(BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128)).save_pretrained(src)
                tr = models.Transformer(str(src), max_seq_length=64)
                mods = [tr, models.Pooling(tr.get_word_embedding_dimension(), pool)]
                if dense:
                    mods.append(models.Dense(64, 32, activation_function=torch.nn.Tanh()))
                mods.append(models.Normalize())
                SentenceTransformer(modules=mods).save(str(_repo(root, repo_id)))
        except Exception as exc:  # noqa: BLE001
            shutil.rmtree(root / "repos" / repo_id, ignore_errors=True)
            emit({"not_built": repo_id, "kind": "sentence-transformers", "reason": _why(exc)})
            continue
        emit(_record(repo_id, "sentence-transformers", "sentence-transformers",
                     f"sentence-transformers {sentence_transformers.__version__} SentenceTransformer.save"
                     + (" (with a Dense module in 2_Dense/)" if dense else ""), pipeline_tag="sentence-similarity",
                     tags=["sentence-transformers", "feature-extraction"],
                     why=SUCCESS + (" (the transformer and the Dense module's weights)" if dense else "")))


# -------------------------------------------------------------------------------------------- derived
def _gguf_name_map(cfg) -> dict:
    """llama.cpp's GGUF tensor names for a llama-layout transformers checkpoint."""
    m = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        for hf, gg in (("input_layernorm.weight", "attn_norm.weight"), ("post_attention_layernorm.weight", "ffn_norm.weight"),
                       ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
                       ("self_attn.v_proj.weight", "attn_v.weight"), ("self_attn.o_proj.weight", "attn_output.weight"),
                       ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"),
                       ("self_attn.v_proj.bias", "attn_v.bias"), ("mlp.gate_proj.weight", "ffn_gate.weight"),
                       ("mlp.up_proj.weight", "ffn_up.weight"), ("mlp.down_proj.weight", "ffn_down.weight")):
            m[p + hf] = b + gg
    return m


def write_gguf(folder: Path, stem: str, state: dict, cfg, qtype: str, *, split_max_tensors: int = 0) -> list[str]:
    """A llama-layout checkpoint as GGUF with the ``gguf`` package's writer (names, q/k permutation and
    metadata as llama.cpp's ``convert_hf_to_gguf.py``); 2-D weights in ``qtype`` (``Q8_0`` or ``F16``), norms
    and biases F32; ``split_max_tensors`` > 0 writes ``<stem>-0000k-of-0000n.gguf`` shards. Returns the files."""
    import gguf
    import numpy as np

    names = _gguf_name_map(cfg)
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads

    def permute(w, n_head):  # llama.cpp's rotary permutation of q/k rows (a row permutation: same spectrum)
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = gguf.GGUFWriter(str(folder / f"{stem}.gguf"), "llama", split_max_tensors=split_max_tensors)
    w.add_name(stem)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    for k, t in state.items():
        if k not in names or (k == "lm_head.weight" and cfg.tie_word_embeddings):
            continue  # a tied output matrix is not written (llama.cpp reuses token_embd)
        a = t.float().numpy()
        if k.endswith("q_proj.weight"):
            a = permute(a, heads)
        elif k.endswith("k_proj.weight"):
            a = permute(a, kv)
        if a.ndim == 2 and qtype == "Q8_0" and a.shape[1] % 32 == 0:
            w.add_tensor(names[k], gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif a.ndim == 2:
            w.add_tensor(names[k], a.astype(np.float16))
        else:
            w.add_tensor(names[k], a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(p.name for p in folder.glob(f"{stem}*.gguf"))


def mlx_quantize(w, group_size: int = 64, bits: int = 4):
    """MLX's affine group quantization (``mlx.core.quantize``, its CPU kernel's arithmetic) in numpy.

    Per group of ``group_size`` along the last axis, from its min and max: ``scale = (max − min) / (2**bits − 1)``,
    negated when the max has the larger magnitude; the edge (min, or max) is made exactly representable
    (``scale = edge / round(edge / scale)``) and is the bias; ``q = round((w − bias) / scale)`` clipped to
    ``[0, 2**bits − 1]``; ``w ≈ scale · q + bias``. Equal to ``mlx.core.quantize`` bit for bit on float32
    input (tests/test_hubbox.py compares them where mlx is installed).

    Parameters
    ----------
    w : ndarray, shape (out, in), float32
        ``in`` a multiple of ``group_size``.
    group_size, bits : int

    Returns
    -------
    (packed, scales, biases)
        ``packed`` uint32 (out, in · bits / 32), ``32 // bits`` values per word, the first in the lowest bits;
        ``scales``, ``biases`` float32 (out, in / group_size).
    """
    import numpy as np
    out, n = w.shape
    g = w.reshape(out, n // group_size, group_size).astype(np.float32)
    lo, hi = g.min(-1), g.max(-1)
    levels = 2 ** bits - 1
    scale = np.maximum((hi - lo) / levels, 1e-7).astype(np.float32)
    side = np.abs(lo) > np.abs(hi)
    scale = np.where(side, scale, -scale)
    edge = np.where(side, lo, hi)
    q0 = np.rint(edge / scale)
    nz = q0 != 0
    scale = np.where(nz, edge / np.where(nz, q0, 1), scale).astype(np.float32)
    bias = np.where(nz, edge, 0).astype(np.float32)
    q = np.clip(np.rint((g - bias[..., None]) / scale[..., None]), 0, levels).astype(np.uint32).reshape(out, n)
    per = 32 // bits
    q = q.reshape(out, n // per, per)
    packed = np.zeros((out, n // per), np.uint32)
    for j in range(per):
        packed |= q[..., j] << np.uint32(bits * j)
    return packed, scale, bias


def _quantize_mlx(w, group_size: int, bits: int):
    """``mlx.core.quantize`` where mlx is installed (the library's own code), else :func:`mlx_quantize`."""
    import numpy as np
    try:
        import mlx.core as mx
    except ImportError:
        return mlx_quantize(w, group_size, bits)
    return tuple(np.array(x) for x in mx.quantize(mx.array(w), group_size=group_size, bits=bits))


def write_mlx(folder: Path, state: dict, config: dict, group_size: int = 64, bits: int = 4) -> None:
    """The mlx-community 4-bit layout (see the module docstring): Linear and Embedding weights whose input
    size is a multiple of ``group_size`` quantized, everything else as it is (BF16)."""
    import torch
    from safetensors.torch import save_file
    out = {}
    for k, t in state.items():
        if k.endswith(".weight") and t.dim() == 2 and t.shape[1] % group_size == 0 and "norm" not in k:
            p, s, b = _quantize_mlx(t.float().numpy(), group_size, bits)
            stem = k[: -len(".weight")]
            out[k] = torch.from_numpy(p.view("int32")).view(torch.uint32)
            out[stem + ".scales"] = torch.from_numpy(s).to(torch.bfloat16)
            out[stem + ".biases"] = torch.from_numpy(b).to(torch.bfloat16)
        else:
            out[k] = t.to(torch.bfloat16)
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "mlx"})
    size = sum(t.numel() * t.element_size() for t in out.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": size}, "weight_map": {k: "model.safetensors" for k in sorted(out)}}, indent=4))
    cfg = {**config, "quantization": {"group_size": group_size, "bits": bits},
           "quantization_config": {"group_size": group_size, "bits": bits}}
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))


def _quantize_ct(model, scheme_name: str, group_size: int = 32):
    """compressed-tensors: apply a preset scheme, set each weight's scale / zero point from its min and max
    (``calculate_qparams``, what an observer does), compress. Returns the compressor (for ``update_config``)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = preset_name_to_scheme(scheme_name, ["Linear"])
    if scheme.weights.group_size:
        scheme.weights.group_size = group_size
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    for _, mod in model.named_modules():
        if hasattr(mod, "weight_scale"):
            w, args = mod.weight.data, mod.quantization_scheme.weights
            if args.group_size:
                g = w.reshape(w.shape[0], -1, args.group_size)
                lo, hi = g.amin(-1), g.amax(-1)
            else:
                lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
            s, z = calculate_qparams(lo, hi, args)
            mod.weight_scale.data = s.to(mod.weight_scale.dtype).reshape(mod.weight_scale.shape)
            if hasattr(mod, "weight_zero_point"):
                mod.weight_zero_point.data = z.to(mod.weight_zero_point.dtype).reshape(mod.weight_zero_point.shape)
    with torch.no_grad():
        comp = ModelCompressor.from_pretrained_model(model)
        comp.compress_model(model)
    return comp


def _families():
    """(short name, builder of (config, model class), pipeline tag, LoRA target modules) of the trees."""
    from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM, ViTConfig, ViTForImageClassification)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    return [
        ("llama", lambda: (LlamaConfig(**small, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=128,
                                       tie_word_embeddings=False), LlamaForCausalLM), "text-generation",
         ["q_proj", "v_proj"]),
        ("qwen2", lambda: (Qwen2Config(**small, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=128,
                                       tie_word_embeddings=True), Qwen2ForCausalLM), "text-generation",
         ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("gpt2", lambda: (GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128), GPT2LMHeadModel),
         "text-generation", ["c_attn"]),
        ("bert", lambda: (BertConfig(**small, vocab_size=1000, max_position_embeddings=128), BertForMaskedLM),
         "fill-mask", ["query", "value"]),
        ("vit", lambda: (ViTConfig(**small, image_size=32, patch_size=8, num_labels=10), ViTForImageClassification),
         "image-classification", ["q_proj", "v_proj"]),
    ]


def part_derived(root: Path, quick: bool, done: set, emit) -> None:
    """Model trees: a base per family and its fine-tunes, merge, LoRA adapter; for the causal LMs also
    bitsandbytes, compressed-tensors, GGUF and MLX quantizations, each made by its tool."""
    import peft
    import torch
    import transformers
    from transformers import BitsAndBytesConfig
    transformers.utils.logging.disable_progress_bar()

    org, tv = ORG["derived"], f"transformers {transformers.__version__}"
    fams = _families()[:2] if quick else _families()
    for fi, (fam, build, tag, targets) in enumerate(fams):
        cfg, cls = build()
        base_id = f"{org}/{fam}-base"
        torch.manual_seed(1000 + fi)
        base = cls(cfg).eval()
        base_dir = root / "repos" / base_id

        def make(repo_id, fn, how, *, base_model=base_id, relation="finetune", kind="derived", library="transformers",
                 why=SUCCESS, needs=None, status="success", pipeline=tag, extra_tags=(), evals=None, files=None):
            if repo_id in done:
                return
            emit({"in_progress": repo_id})
            try:
                with _limit(BUILD_TIMEOUT * 3):
                    fn(_repo(root, repo_id))
            except Exception as exc:  # noqa: BLE001
                shutil.rmtree(root / "repos" / repo_id, ignore_errors=True)
                emit({"not_built": repo_id, "kind": kind, "reason": _why(exc)})
                return
            emit(_record(repo_id, kind, library, how, pipeline_tag=pipeline, tags=[fam, *extra_tags],
                         base_model=base_model, relation=relation if base_model else None, why=why, needs=needs,
                         status=status, model_type=fam, evals=evals, family_tree=fam, files=files))

        make(base_id, lambda f: base.save_pretrained(f), f"{tv} {cls.__name__}.save_pretrained", base_model=None,
             evals="lm" if tag == "text-generation" else "imagenet" if fam == "vit" else None)
        fts = []
        for j, name in enumerate(("ft-a", "ft-b")):
            rid = f"{org}/{fam}-{name}"
            ft = cls(cfg).eval()
            ft.load_state_dict(_perturb(base.state_dict(), 10 * fi + j))

            make(rid, lambda f, ft=ft: ft.save_pretrained(f), f"{tv} {cls.__name__}.save_pretrained (base + noise)",
                 evals="lm" if tag == "text-generation" else None)
            fts.append((rid, ft))
        merged = cls(cfg).eval()
        sa, sb = fts[0][1].state_dict(), fts[1][1].state_dict()
        merged.load_state_dict({k: (sa[k] + sb[k]) / 2 if sa[k].is_floating_point() else sa[k] for k in sa})
        make(f"{org}/{fam}-merge", lambda f: merged.save_pretrained(f),
             f"{tv} save_pretrained of the linear merge (mean) of the two fine-tunes",
             base_model=[fts[0][0], fts[1][0]], relation="merge")

        def lora(f, fam=fam, targets=targets):
            lcfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=fam == "gpt2",
                                   init_lora_weights="gaussian")
            pm = peft.get_peft_model(cls(cfg).eval(), lcfg)
            g = torch.Generator().manual_seed(7 + fi)
            for n, p in pm.named_parameters():  # "trained" B matrices (peft initializes B = 0)
                if "lora_B" in n:
                    p.data = 0.05 * torch.randn(p.shape, generator=g)
            pm.save_pretrained(f)
            cfgfile = f / "adapter_config.json"
            c = json.loads(cfgfile.read_text())
            c["base_model_name_or_path"] = base_id
            cfgfile.write_text(json.dumps(c, indent=2))
        make(f"{org}/{fam}-lora", lora, f"peft {peft.__version__} get_peft_model(LoraConfig(r=4)).save_pretrained",
             relation="adapter", library="peft", kind="derived",
             why="a LoRA adapter: hubscan analyzes B·A (scaled) per target module")
        if tag != "text-generation" or (quick and fam != "llama") or not base_dir.exists():
            continue

        def bnb(f, mode):
            q = BitsAndBytesConfig(load_in_8bit=True) if mode == "8bit" else \
                BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
            cls.from_pretrained(base_dir, quantization_config=q, device_map="cpu").save_pretrained(f)
        import bitsandbytes
        for mode in ("8bit", "4bit"):
            make(f"{org}/{fam}-bnb-{mode}", lambda f, mode=mode: bnb(f, mode),
                 f"bitsandbytes {bitsandbytes.__version__} {'int8' if mode == '8bit' else 'nf4'} via "
                 "from_pretrained(quantization_config=BitsAndBytesConfig).save_pretrained (CPU)",
                 relation="quantized", why="bitsandbytes layout: hubscan dequantizes (int8 · SCB / nf4 + absmax)")
        import compressed_tensors

        def ct(f, scheme):
            m = cls.from_pretrained(base_dir).eval()
            comp = _quantize_ct(m, scheme)
            m.save_pretrained(f)
            comp.update_config(str(f))
        for scheme, name in (("FP8_DYNAMIC", "FP8-dynamic"), ("W4A16", "W4A16")):
            make(f"{org}/{fam}-{name}", lambda f, scheme=scheme: ct(f, scheme),
                 f"compressed-tensors {compressed_tensors.__version__} {scheme} "
                 f"({'float-quantized' if scheme.startswith('FP8') else 'pack-quantized, group 32'})",
                 relation="quantized", why="compressed-tensors layout: hubscan dequantizes (weight_scale, packed int4)")
        if fam in ("llama", "qwen2"):
            state = base.state_dict()

            def gg(f):
                write_gguf(f, f"{fam}-base-Q8_0", state, cfg, "Q8_0")
                write_gguf(f, f"{fam}-base-F16", state, cfg, "F16")
            make(f"{org}/{fam}-base-GGUF", gg, f"gguf {_version('gguf')} GGUFWriter: Q8_0 and F16 files in one repo",
                 relation="quantized", library="gguf", files=False,
                 why="two GGUF files of the same model (Q8_0, F16): two quantizations, each a whole model")
            make(f"{org}/{fam}-base-GGUF-split",
                 lambda f: write_gguf(f, f"{fam}-base-Q8_0", state, cfg, "Q8_0", split_max_tensors=12),
                 f"gguf {_version('gguf')} GGUFWriter(split_max_tensors=12): one Q8_0 model in several files",
                 relation="quantized", library="gguf", needs="gguf-split",
                 why="a GGUF split across files (-00001-of-0000n …): one model, its tensors spread over the parts")
            make(f"{ORG['mlx']}/{fam}-base-4bit",
                 lambda f: write_mlx(f, {k: v for k, v in state.items() if k != "lm_head.weight" or not cfg.tie_word_embeddings},
                                     cfg.to_dict()),
                 "mlx.core.quantize (or the same arithmetic in numpy where mlx is absent), group 64, 4 bits; "
                 "safetensors in mlx-lm's layout",
                 relation="quantized", library="mlx", kind="derived", needs="mlx-reader",
                 why="MLX 4-bit layout: U32 packed weights with BF16 scales/biases (W = scales·q + biases)")


# ----------------------------------------------------------------------------------------------- driver
def _worker(root: Path, part: str, quick: bool) -> None:
    """Run one part, appending a JSON line per repository (or ``not_built`` entry) to parts/<part>.jsonl;
    entries already there are skipped (a part resumed after a crash)."""
    _quiet()
    out = root / "parts" / f"{part}.jsonl"
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add(r.get("repo_id") or r.get("not_built") or r.get("in_progress"))
    f = out.open("a")

    def emit(rec: dict) -> None:
        if "repo_id" in rec:  # what a complete analysis reads (False: no single answer, left unchecked)
            files = rec["expect"].get("files")
            rec["expect"]["files"] = None if files is False else files or weight_files(root / rec["folder"])
        f.write(json.dumps(rec) + "\n")
        f.flush()

    if part.startswith("tf"):
        part_transformers(root, int(part[2:]), 2, quick, done, emit)
    else:
        {"derived": part_derived, "timm": part_timm, "diffusers": part_diffusers, "st": part_st}[part](
            root, quick, done, emit)
    f.close()


def _run_parts(root: Path, quick: bool, jobs: int) -> dict:
    """Run the parts in subprocesses, ``jobs`` at a time; a part that dies is restarted (it skips what it
    wrote, and the model it died on), at most 3 times. Returns part → seconds."""
    (root / "parts").mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    todo, tries, seconds = list(PARTS), dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0.0)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    while todo or running:
        while todo and len(running) < jobs:
            part = todo.pop(0)
            cmd = [sys.executable, "-m", "hubscan.demo.hubbox", str(root), "--part", part] + (["--quick"] if quick else [])
            running[part] = (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                             time.monotonic())
        time.sleep(0.2)
        for part, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            err = proc.stderr.read().decode(errors="replace")
            del running[part]
            seconds[part] += time.monotonic() - t0
            if proc.returncode != 0:
                tries[part] += 1
                _note_crash(root, part, err)
                if tries[part] <= 3:
                    todo.insert(0, part)
                else:
                    print(f"hubbox: part {part} died {tries[part]} times; last error:\n{err[-2000:]}", file=sys.stderr)
    return seconds


def _note_crash(root: Path, part: str, err: str) -> None:
    """Record the model a part died on as not built (so the restarted part skips it)."""
    out = root / "parts" / f"{part}.jsonl"
    lines = out.read_text().splitlines() if out.exists() else []
    last = next((json.loads(x) for x in reversed(lines) if "in_progress" in json.loads(x)), None)
    finished = {json.loads(x).get("repo_id") or json.loads(x).get("not_built") for x in lines}
    if last and last["in_progress"] not in finished:
        with out.open("a") as f:
            f.write(json.dumps({"not_built": last["in_progress"], "kind": part,
                                "reason": "the process died building it: " + " ".join(err.split()[-12:])}) + "\n")


def _collect(root: Path) -> tuple[list[dict], list[dict]]:
    repos, failed = {}, {}
    for part in PARTS:
        p = root / "parts" / f"{part}.jsonl"
        for line in p.read_text().splitlines() if p.exists() else []:
            r = json.loads(line)
            if "repo_id" in r:
                repos[r["repo_id"]] = r
            elif "not_built" in r:
                failed[r["not_built"]] = r
    return [repos[k] for k in sorted(repos)], [failed[k] for k in sorted(failed) if k not in repos]


def _link_tree(src: Path, dst: Path) -> None:
    """A byte-identical copy of a repository folder (hard links where the filesystem allows)."""
    for p in sorted(src.rglob("*")):
        q = dst / p.relative_to(src)
        if p.is_dir():
            q.mkdir(parents=True, exist_ok=True)
            continue
        q.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, q)
        except OSError:
            shutil.copy2(p, q)


def _reuploads(root: Path, repos: list[dict], quick: bool) -> list[dict]:
    """Byte-identical copies of some repositories' weights under other organisations."""
    weights = [r for r in repos if r["kind"] in ("transformers", "timm", "derived") and r["expect"]["needs"] is None
               and r["library"] in ("transformers", "timm", "gguf")]
    rng = random.Random(1)
    picks = rng.sample(weights, min(len(weights), 3 if quick else 12))
    out = []
    for i, r in enumerate(picks):
        org = ("mirror-hub", "reupload-co", "community-backup")[i % 3]
        rid = f"{org}/{r['repo_id'].split('/', 1)[1]}"
        dst = root / "repos" / rid
        shutil.rmtree(dst, ignore_errors=True)
        _link_tree(root / r["folder"], dst)
        readme = dst / "README.md"
        if readme.exists():
            readme.unlink()  # its own card (written below), the weights byte-identical
        out.append({**r, "repo_id": rid, "folder": f"repos/{rid}", "kind": "reupload", "same_as": r["repo_id"],
                    "made_by": f"byte-identical copy of {r['repo_id']}",
                    "base_model": r["repo_id"] if i % 2 == 0 else None, "relation": None,
                    "expect": {**r["expect"], "why": f"same bytes as {r['repo_id']}: the same rows"}})
    return out


def _eval_results(kind: str, rng: random.Random, repo_id: str) -> list:
    if kind == "imagenet":
        v = round(rng.uniform(45, 85), 2)
        return [{"name": repo_id, "results": [{"task": {"type": "image-classification"},
                                               "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k"},
                                               "metrics": [{"type": "top1", "value": v, "name": "Top-1 accuracy"}]}]}]
    v = round(rng.uniform(25, 60), 2)
    return [{"name": repo_id, "results": [{"task": {"type": "text-generation"},
                                           "dataset": {"name": "HellaSwag", "type": "hellaswag"},
                                           "metrics": [{"type": "acc_norm", "value": v, "name": "normalized accuracy"}]}]}]


def _card(folder: Path, front: dict, title: str) -> None:
    """Write README.md: the library's card body (if it wrote one) under this front matter (merged over its own)."""
    import yaml
    body, old = f"\n# {title}\n\nA tiny model of the hub-in-a-box (hubscan.demo.hubbox); random weights.\n", {}
    p = folder / "README.md"
    if p.exists():
        text = p.read_text()
        if text.startswith("---"):
            _, fm, rest = text.split("---", 2)
            old = yaml.safe_load(fm) or {}
            body = rest
        else:
            body = "\n" + text
    meta = {**old, **{k: v for k, v in front.items() if v not in (None, [], "")}}
    p.write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---" + body)


def _metadata(root: Path, repos: list[dict], quick: bool) -> None:
    """Hub metadata: Zipf downloads, likes, dates, gated and deleted repositories, cards (README.md)."""
    rng = random.Random(0)
    order = list(range(len(repos)))
    rng.shuffle(order)
    t0 = dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)
    span = (dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc) - t0).total_seconds()
    candidates = [r for r in repos if r["kind"] == "transformers" and r["pipeline_tag"] == "text-generation"]
    gated = {r["repo_id"] for r in rng.sample(candidates, min(len(candidates), 1 if quick else 3))}
    rest = [r for r in repos if r["kind"] == "transformers" and r["repo_id"] not in gated]
    deleted = {r["repo_id"] for r in rng.sample(rest, min(len(rest), 1 if quick else 2))}
    for rank, i in enumerate(order, start=1):
        r = repos[i]
        downloads = int(2_000_000 / rank ** 1.07)
        created = t0 + dt.timedelta(seconds=rng.uniform(0, span))
        modified = created + dt.timedelta(days=rng.uniform(0, 200))
        library = r["library"]
        info = {"downloads": downloads, "likes": downloads // 2000 + rng.randint(0, 3), "library_name": library,
                "createdAt": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "lastModified": modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        if r["pipeline_tag"]:
            info["pipeline_tag"] = r["pipeline_tag"]
        r["hub"] = {"gated": None, "delete_after_listing": False}
        if r["repo_id"] in gated:
            info["gated"] = r["hub"]["gated"] = "manual" if len(gated) < 3 or rank % 2 else "auto"
            r["expect"] = {"status": "skipped", "why": "gated repository (401 without a granted token)",
                           "needs": None}
        if r["repo_id"] in deleted:
            r["hub"]["delete_after_listing"] = True
            r["expect"] = {"status": "failed", "why": "deleted between the listing and the first read (404)",
                           "needs": None}
        r["info"] = info
        front = {"library_name": library, "pipeline_tag": r["pipeline_tag"], "license": "apache-2.0",
                 "tags": r["tags"], "base_model": r["base_model"],
                 "base_model_relation": r["relation"] if r["base_model"] else None}
        if r.get("evals"):
            front["model-index"] = _eval_results(r["evals"], rng, r["repo_id"])
        _card(root / r["folder"], front, r["repo_id"])


def generate(root: str | os.PathLike, *, quick: bool = False, jobs: int = 2) -> dict:
    """Generate the hub-in-a-box under ``root`` (see the module docstring); returns the manifest.

    Parameters
    ----------
    root : path
    quick : bool
        A small box (about 25 repositories, every kind) for tests.
    jobs : int
        Parts run at once (processes).
    """
    root = Path(root)
    t = time.monotonic()
    shutil.rmtree(root / "parts", ignore_errors=True)
    shutil.rmtree(root / "repos", ignore_errors=True)
    seconds = _run_parts(root, quick, jobs)
    repos, not_built = _collect(root)
    repos += _reuploads(root, repos, quick)
    _metadata(root, repos, quick)
    shutil.rmtree(root / "tmp", ignore_errors=True)
    counts: dict[str, int] = {}
    for r in repos:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    versions = {pkg: _version(pkg) for pkg in ("transformers", "timm", "diffusers", "sentence-transformers", "peft",
                                               "bitsandbytes", "compressed-tensors", "gguf", "torch", "safetensors")}
    import resource
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    manifest = {"format": FORMAT, "generator": "hubscan.demo.hubbox", "quick": quick, "jobs": jobs,
                "seconds": round(time.monotonic() - t, 1), "cpu_seconds": round(cpu.ru_utime + cpu.ru_stime, 1),
                "part_seconds": {k: round(v, 1) for k, v in seconds.items()},
                "counts": counts, "repos_total": len(repos), "versions": versions, "not_built": not_built,
                "repos": repos}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _revise_safetensors(src: Path, dst: Path, seed: int) -> list[str]:
    """Copy a repository folder with its first safetensors file rewritten: one floating tensor of rank ≥ 2
    perturbed (a new revision of the weights). Returns the files changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    _link_tree(src, dst)
    for f in sorted(dst.rglob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            meta = h.metadata()
        tensors = load_file(str(f))
        names = [k for k, v in tensors.items() if v.dim() >= 2 and v.is_floating_point()]
        if not names:
            continue
        tensors[names[0]] = _perturb({names[0]: tensors[names[0]]}, seed)[names[0]]
        f.unlink()  # a hard link: never write through it into week 1's file
        save_file(tensors, str(f), metadata=meta)
        return [f.relative_to(dst).as_posix()]
    return []


def mutate(root: str | os.PathLike, *, fraction: float = 0.10, new: int = 5, deleted: int = 2, gated: int = 1,
           seed: int = 2) -> dict:
    """Week 2 of a generated box: ``fraction`` of the repositories get a new revision (one tensor of one
    safetensors file changed), ``new`` new repositories (fine-tunes of existing ones), ``deleted``
    repositories deleted and ``gated`` made gated. Writes ``ROOT/week2/`` (changed and new folders) and
    ``ROOT/week2/manifest.json``: ``changes`` (what ``FakeHub.add_hubbox(ROOT, week=2)`` applies) and
    ``repos``, every repository of week 2 with ``week2`` saying what happened to it and ``expect`` what a
    second survey should do (read it again or not)."""
    from safetensors.torch import load_file, save_file

    root = Path(root)
    week1 = load(root)
    shutil.rmtree(root / "week2", ignore_errors=True)
    rng = random.Random(seed)
    stable = [r for r in week1["repos"] if not r["hub"]["gated"] and not r["hub"]["delete_after_listing"]
              and any((root / r["folder"]).rglob("*.safetensors"))]
    picked = rng.sample(stable, len(stable))
    n_rev = max(1, round(fraction * len(week1["repos"])))
    revised, picked = picked[:n_rev], picked[n_rev:]
    gone, picked = picked[:deleted], picked[deleted:]
    closed, picked = picked[:gated], picked[gated:]
    now = dt.datetime(2026, 11, 8, tzinfo=dt.timezone.utc)
    changes, by_id = [], {r["repo_id"]: {**r, "week2": "unchanged",
                                         "expect": {**r["expect"], "read": False}} for r in week1["repos"]}
    for r in by_id.values():
        if r["hub"]["delete_after_listing"]:  # deleted in week 1
            r.update(week2="deleted in week 1", expect={"status": None, "why": "deleted in week 1", "read": False,
                                                         "needs": None})
    for i, r in enumerate(revised):
        folder = f"week2/repos/{r['repo_id']}"
        files = _revise_safetensors(root / r["folder"], root / folder, seed * 1000 + i)
        info = {**r["info"], "lastModified": now.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        changes.append({"repo_id": r["repo_id"], "change": "revision", "folder": folder, "files": files, "info": info,
                        "title": "Update weights"})
        by_id[r["repo_id"]].update(week2="new revision", folder=folder, info=info,
                                   expect={**r["expect"], "read": True, "why": r["expect"]["why"] + "; a new revision: read again"})
    for r in gone:
        changes.append({"repo_id": r["repo_id"], "change": "deleted"})
        by_id[r["repo_id"]].update(week2="deleted", expect={"status": r["expect"]["status"], "read": False,
                                                            "why": "deleted before week 2: its rows stay, marked unseen",
                                                            "needs": None})
    for r in closed:
        changes.append({"repo_id": r["repo_id"], "change": "gated", "gated": "manual"})
        by_id[r["repo_id"]].update(week2="made gated", expect={"status": r["expect"]["status"], "read": False,
                                                               "why": "gated in week 2 (same revision): nothing to read",
                                                               "needs": None})
    sources = [r for r in picked if r["kind"] in ("transformers", "derived") and r["library"] == "transformers"
               and r["relation"] in (None, "finetune", "merge")]  # full-precision weights, not quantized layouts
    for i, r in enumerate(rng.sample(sources, min(new, len(sources)))):
        rid = f"tinyzoo-week2/{r['repo_id'].split('/', 1)[1]}-ft"
        folder = root / "week2" / "repos" / rid
        shutil.rmtree(folder, ignore_errors=True)
        _link_tree(root / r["folder"], folder)
        for f in sorted(folder.rglob("*.safetensors")):
            t = load_file(str(f))
            f.unlink()
            save_file(_perturb(t, 77 + i), str(f), metadata={"format": "pt"})
        (folder / "README.md").unlink(missing_ok=True)
        info = {**r["info"], "downloads": 10 + i, "likes": 0, "createdAt": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "lastModified": now.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        info.pop("gated", None)
        _card(folder, {"library_name": r["library"], "pipeline_tag": r["pipeline_tag"], "license": "apache-2.0",
                       "base_model": r["repo_id"], "base_model_relation": "finetune", "tags": r["tags"]}, rid)
        rec = {**r, "repo_id": rid, "folder": f"week2/repos/{rid}", "info": info, "base_model": r["repo_id"],
               "relation": "finetune", "same_as": None, "week2": "new", "kind": "week2-new",
               "made_by": f"fine-tune of {r['repo_id']} (every tensor + noise), safetensors.torch.save_file",
               "expect": {"status": "success", "why": SUCCESS + "; new in week 2: read", "read": True, "needs": None,
                          "files": r["expect"].get("files")}}
        changes.append({"repo_id": rid, "change": "new", "folder": rec["folder"], "info": info, "title": "Upload"})
        by_id[rid] = rec
    counts: dict[str, int] = {}
    for c in changes:
        counts[c["change"]] = counts.get(c["change"], 0) + 1
    manifest = {"format": FORMAT, "week": 2, "changes": changes, "changes_count": counts,
                "repos": [by_id[k] for k in sorted(by_id)]}
    (root / "week2" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load(root: str | os.PathLike, week: int = 1) -> dict:
    """The manifest of a generated box (``week=2``: of its mutation, see :func:`mutate`)."""
    root = Path(root)
    return json.loads(((root / "week2" / MANIFEST) if week == 2 else root / MANIFEST).read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hubscan.demo.hubbox", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="folder to write the box into")
    ap.add_argument("--quick", action="store_true", help="a small box (~25 repositories) for tests")
    ap.add_argument("--jobs", type=int, default=2, help="parts generated at once (default 2)")
    ap.add_argument("--week2", action="store_true", help="mutate a generated box for a second survey")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: run one part (a worker)
    args = ap.parse_args(argv)
    if args.part:
        _worker(Path(args.root), args.part, args.quick)
        return 0
    if args.week2:
        m = mutate(args.root)
        print(f"week 2 of {args.root}: {json.dumps(m['changes_count'])}")
        return 0
    m = generate(args.root, quick=args.quick, jobs=args.jobs)
    print(f"{m['repos_total']} repositories in {m['seconds']} s under {args.root}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(m["counts"].items()))
          + f"; {len(m['not_built'])} did not build (see {MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
