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
