"""A real model tree, trained in seconds on scikit-learn's digits: a base MLP and its descendants.

Every child is derived for real from its parent's weights, and written as a Hugging Face repository
folder (``config.json``, weights, ``README.md`` whose front matter declares ``base_model`` and
``base_model_relation`` as the Hub's model cards do, and a ``model-index`` with the test accuracy):

======================  ===============  ==========================================================
repo                    parent(s)        how it is made
======================  ===============  ==========================================================
``tree/base``           —                MLP 64→128→128→10, plain SGD (lr 0.05, batch 16, 12 epochs)
``tree/ft-lr0.01``      base             fine-tuned on the same task, lr 0.01, 6 epochs
``tree/ft-lr0.1``       base             fine-tuned on the same task, lr 0.1, 6 epochs
``tree/ft-shift``       base             fine-tuned on a shifted label subset (digits 5–9 only), lr 0.05
``tree/lora``           base             a LoRA adapter (r = 4, lora_alpha = 8) on fc1 and fc2,
                                         trained by hand with the base frozen (PEFT layout:
                                         ``adapter_model.safetensors`` + ``adapter_config.json``)
``tree/int8``           base             int8 per-channel symmetric quantization (compressed-tensors
                                         layout: ``weight`` int8 + ``weight_scale`` (out, 1)); its card
                                         names the base but no relation (the Hub infers one)
``tree/merge``          ft-lr0.01,       the element-wise mean of the two fine-tunes (a "model soup")
                        ft-shift
``tree/ft-lr0.01-ft``   ft-lr0.01        a grandchild: ft-lr0.01 fine-tuned again, lr 0.05, 4 epochs
======================  ===============  ==========================================================

``python -m hubscan.demo.tree DIR`` writes the folders under ``DIR``; the tests serve them through the
loopback fake Hub (``tests/hub_server.py``), which adds the tags the Hub derives from the cards
(``base_model:<id>``, ``base_model:<relation>:<id>``).

:func:`lr_effect` is the measurement of README's "model tree" section: fine-tune the same base at two
learning rates with several seeds and compare how much each changes the layers' alpha.

Nothing in the pipeline imports this module (it trains with torch and reads sklearn's data).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hubscan.records import RowStatus

ORG = "tree"
WIDTH = 128
HIDDEN = ("fc1", "fc2")  # the layers with enough eigenvalues for a power-law fit (fc3 has M = 10)
LORA_R, LORA_ALPHA = 4, 8
CONFIG = {"model_type": "digits-mlp", "architectures": ["DigitsMLP"], "hidden_size": WIDTH, "num_labels": 10}


@dataclasses.dataclass(frozen=True)
class TreeNode:
    """One repository of the tree.

    Attributes
    ----------
    repo_id : str
    parents : tuple of str
        Repo ids of its base model(s) (empty for the root).
    relation : str or None
        ``finetune``, ``adapter``, ``quantized`` or ``merge`` as the Hub names it (None for the root).
    folder : Path
    accuracy : float
        Test accuracy on the digits split (fraction); for the adapter, of base + ΔW.
    card_relation : bool
        Whether the card states ``base_model_relation`` (else the Hub / hubscan infer it).
    """

    repo_id: str
    parents: tuple
    relation: str | None
    folder: Path
    accuracy: float
    card_relation: bool = True


# ------------------------------------------------------------------------------------------- data, model
def digits(seed: int = 0):
    """scikit-learn's 8×8 digits, standardized with the training split's statistics.

    Returns
    -------
    (X_train, y_train, X_test, y_test) : torch.Tensor
        float32 (n, 64) and int64 (n,); a stratified 75/25 split fixed by ``seed``.

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install 'hubscan[experiments]'``).
    """
    from hubscan.demo.digits import digits_split

    return tuple(torch.from_numpy(a.copy()) for a in digits_split(seed))  # its own copy: the split is cached


def mlp(seed: int) -> nn.Sequential:
    """The tree's architecture: Linear 64→128, ReLU, Linear 128→128, ReLU, Linear 128→10
    (state-dict names ``fc1.weight`` …), initialized with ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, WIDTH), act1=nn.ReLU(), fc2=nn.Linear(WIDTH, WIDTH),
                                     act2=nn.ReLU(), fc3=nn.Linear(WIDTH, 10)))


def sgd(model: nn.Module, X, y, *, lr: float, epochs: int, seed: int, batch: int = 16, params=None,
        forward=None) -> nn.Module:
    """Plain SGD (no momentum, no weight decay) on cross-entropy, shuffled mini-batches drawn with
    ``seed``; ``params`` (default: all) are the ones updated, ``forward`` (default: the model) maps X to
    logits."""
    params = list(params if params is not None else model.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    forward = forward or model
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=g).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(forward(X[idx]), y[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def accuracy(forward, X, y) -> float:
    """Fraction of ``X`` classified as ``y``."""
    return float((forward(X).argmax(1) == y).float().mean())


def _copy(model: nn.Module) -> nn.Sequential:
    new = mlp(0)
    new.load_state_dict(model.state_dict())
    return new


def finetune(parent: nn.Module, X, y, *, lr: float, epochs: int, seed: int) -> nn.Sequential:
    """A copy of ``parent`` trained further with :func:`sgd`."""
    return sgd(_copy(parent), X, y, lr=lr, epochs=epochs, seed=seed)


def train_lora(parent: nn.Module, X, y, *, r: int = LORA_R, lora_alpha: float = LORA_ALPHA, lr: float = 0.05,
               epochs: int = 6, seed: int = 0) -> dict:
    """A LoRA adapter on ``fc1`` and ``fc2`` trained with the parent frozen (Hu et al. 2021, PEFT's
    initialisation: A Kaiming-uniform, B zero; forward W·x + s·B·A·x with s = lora_alpha / r).

    Returns
    -------
    dict of str to torch.Tensor
        ``fc1.lora_A`` (r, in), ``fc1.lora_B`` (out, r), … (float32).
    """
    torch.manual_seed(seed)
    base = _copy(parent).requires_grad_(False)
    s = lora_alpha / r
    factors = {}
    for m in HIDDEN:
        lin = getattr(base, m)
        A = torch.empty(r, lin.in_features)
        nn.init.kaiming_uniform_(A, a=5 ** 0.5)
        factors[m] = (A.requires_grad_(), torch.zeros(lin.out_features, r, requires_grad=True))

    def forward(x):
        for name, layer in base.named_children():
            x = layer(x) + (s * x @ factors[name][0].T @ factors[name][1].T if name in factors else 0)
        return x

    sgd(base, X, y, lr=lr, epochs=epochs, seed=seed, params=[t for ab in factors.values() for t in ab],
        forward=forward)
    out = {f"{m}.lora_{ab}": t.detach().clone() for m, (A, B) in factors.items() for ab, t in (("A", A), ("B", B))}
    out["accuracy"] = forward
    return out


def quantize_int8(state: dict) -> dict:
    """Symmetric per-output-channel int8 quantization of the 2-D weights (biases kept in float32):
    ``weight`` = round(W / s) clipped to [−127, 127] (int8), ``weight_scale`` = max|W_row| / 127, shape
    (out, 1), float32 — the compressed-tensors ``int-quantized`` channel layout hubscan dequantizes as
    W = weight · weight_scale."""
    out = {}
    for name, W in state.items():
        if W.dim() == 2 and name.endswith("weight"):
            s = (W.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
            out[name] = torch.round(W / s).clamp(-127, 127).to(torch.int8)
            out[name + "_scale"] = s.float()
        else:
            out[name] = W.clone()
    return out


# ------------------------------------------------------------------------------------------- writing
def card(parents: tuple, relation: str | None, acc: float, *, with_relation: bool = True) -> str:
    """README.md with the front matter the Hub reads: ``base_model`` (one id or a list),
    ``base_model_relation`` and a ``model-index`` holding the test accuracy."""
    import yaml

    meta: dict = {"library_name": "pytorch", "tags": ["hubscan-demo", "digits"]}
    if parents:
        meta["base_model"] = parents[0] if len(parents) == 1 else list(parents)
        if with_relation and relation:
            meta["base_model_relation"] = relation
    meta["model-index"] = [{"name": "digits-mlp", "results": [{
        "task": {"type": "image-classification"},
        "dataset": {"type": "digits", "name": "scikit-learn digits", "split": "test"},
        "metrics": [{"type": "accuracy", "value": round(acc, 6)}]}]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\nA model of hubscan's demo tree.\n"


def write_repo(folder: Path, tensors: dict, readme: str, *, config: dict | None = None,
               adapter_config: dict | None = None) -> Path:
    """One repository folder: ``model.safetensors`` (or ``adapter_model.safetensors`` with
    ``adapter_config.json``), ``config.json``, ``README.md``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if adapter_config is not None:
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps(adapter_config, indent=1))
    else:
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config or CONFIG, indent=1))
    (folder / "README.md").write_text(readme)
    return folder


def build_tree(root: str | os.PathLike, *, seed: int = 0) -> list[TreeNode]:
    """Train the tree of the module docstring and write it under ``root`` (one folder per repo,
    ``root/<name>`` for ``tree/<name>``). About 5 s on one core.

    Returns
    -------
    list of TreeNode
        Root first, then children in the order they were made.
    """
    root = Path(root)
    Xtr, ytr, Xte, yte = digits()
    nodes: list[TreeNode] = []
    models: dict[str, nn.Module] = {}

    def add(name, parents, relation, model=None, tensors=None, acc=None, with_relation=True, **kw):
        repo = f"{ORG}/{name}"
        acc = accuracy(model, Xte, yte) if acc is None else acc
        write_repo(root / name, tensors if tensors is not None else model.state_dict(),
                   card(parents, relation, acc, with_relation=with_relation), **kw)
        nodes.append(TreeNode(repo, parents, relation, root / name, acc, with_relation))
        if model is not None:
            models[repo] = model
        return repo

    base = add("base", (), None, sgd(mlp(seed), Xtr, ytr, lr=0.05, epochs=12, seed=seed))
    bm = models[base]
    small = add("ft-lr0.01", (base,), "finetune", finetune(bm, Xtr, ytr, lr=0.01, epochs=6, seed=seed + 1))
    add("ft-lr0.1", (base,), "finetune", finetune(bm, Xtr, ytr, lr=0.1, epochs=6, seed=seed + 1))
    keep = ytr >= 5
    shift = add("ft-shift", (base,), "finetune", finetune(bm, Xtr[keep], ytr[keep], lr=0.05, epochs=6, seed=seed + 2))
    lora = train_lora(bm, Xtr, ytr, seed=seed + 3)
    forward = lora.pop("accuracy")
    add("lora", (base,), "adapter", tensors={f"base_model.model.{k}.weight": v for k, v in lora.items()},
        acc=accuracy(forward, Xte, yte),
        adapter_config={"peft_type": "LORA", "r": LORA_R, "lora_alpha": LORA_ALPHA, "target_modules": list(HIDDEN),
                        "base_model_name_or_path": base, "lora_dropout": 0.0, "bias": "none"})
    q = quantize_int8(bm.state_dict())
    deq = _copy(bm)
    deq.load_state_dict({k: (q[k].float() * q[k + "_scale"] if k + "_scale" in q else q[k]) for k in bm.state_dict()})
    add("int8", (base,), "quantized", tensors=q, acc=accuracy(deq, Xte, yte), with_relation=False,
        config={**CONFIG, "quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized",
                                                  "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                                                      "num_bits": 8, "type": "int", "strategy": "channel",
                                                      "symmetric": True}}}}})
    soup = _copy(models[small])
    soup.load_state_dict({k: (v + models[shift].state_dict()[k]) / 2 for k, v in models[small].state_dict().items()})
    add("merge", (small, shift), "merge", soup)
    add("ft-lr0.01-ft", (small,), "finetune", finetune(models[small], Xtr, ytr, lr=0.05, epochs=4, seed=seed + 4))
    return nodes


# ------------------------------------------------------------------------------------------- science
def _mean_alpha(result) -> float:
    vals = [r["alpha"] for r in result.rows if r["name"].split(".")[0] in HIDDEN and r["status"] == RowStatus.SUCCESS]
    return float(np.mean(vals))


def lr_effect(work: str | os.PathLike, *, seeds=(0, 1, 2, 3, 4), lrs=(0.01, 0.1), epochs: int = 6) -> dict:
    """Does a larger fine-tuning learning rate change alpha more than a smaller one?

    For each seed: a base trained as in :func:`build_tree` (its own seed), fine-tuned at each learning
    rate (same data order); each model analyzed with :func:`hubscan.analyze`, and each fine-tune's deltas
    against its base with ``hubscan.analyze(child, base=parent)``.

    Returns
    -------
    dict
        ``per_seed``: list of dicts (seed, lr, alpha of base and child — mean over fc1, fc2 —, Δalpha,
        |Δalpha|, mean ``delta_W_rel`` over fc1, fc2, test accuracy); ``summary`` per lr: mean and sd of
        Δalpha, |Δalpha|, delta_W_rel; ``wilcoxon_p``: paired one-sided Wilcoxon signed-rank p-value of
        |Δalpha| larger at the larger lr (scipy.stats.wilcoxon), and ``larger_in`` seeds out of ``n``.
    """
    from scipy import stats

    import hubscan

    work = Path(work)
    Xtr, ytr, Xte, yte = digits()
    rows = []
    for seed in seeds:
        base = sgd(mlp(seed), Xtr, ytr, lr=0.05, epochs=12, seed=seed)
        bdir = write_repo(work / f"base-{seed}", base.state_dict(), card((), None, accuracy(base, Xte, yte)))
        a_base = _mean_alpha(hubscan.analyze(bdir))
        for lr in lrs:
            child = finetune(base, Xtr, ytr, lr=lr, epochs=epochs, seed=seed + 1000)
            cdir = write_repo(work / f"ft-{seed}-{lr}", child.state_dict(),
                              card((str(bdir),), "finetune", accuracy(child, Xte, yte)))
            a_child = _mean_alpha(hubscan.analyze(cdir))
            delta = hubscan.analyze(cdir, base=bdir)
            rel = float(np.mean([r["delta_W_rel"] for r in delta.rows if r["name"].split(".")[0] in HIDDEN]))
            rows.append({"seed": seed, "lr": lr, "alpha_base": a_base, "alpha_child": a_child,
                         "delta_alpha": a_child - a_base, "abs_delta_alpha": abs(a_child - a_base),
                         "delta_W_rel": rel, "accuracy": accuracy(child, Xte, yte)})
    summary = {}
    for lr in lrs:
        sel = [r for r in rows if r["lr"] == lr]
        summary[lr] = {k: (float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel], ddof=1)))
                       for k in ("delta_alpha", "abs_delta_alpha", "delta_W_rel", "accuracy")}
    lo = np.array([r["abs_delta_alpha"] for r in rows if r["lr"] == lrs[0]])
    hi = np.array([r["abs_delta_alpha"] for r in rows if r["lr"] == lrs[-1]])
    p = float(stats.wilcoxon(hi, lo, alternative="greater").pvalue) if len(seeds) > 1 else float("nan")
    return {"per_seed": rows, "summary": summary, "wilcoxon_p": p, "larger_in": int((hi > lo).sum()),
            "n": len(seeds)}


def main(argv: list[str]) -> int:
    """``python -m hubscan.demo.tree DIR`` (write the tree) or ``DIR --lr-effect [SEEDS]`` (README's table)."""
    if not argv or argv[0].startswith("-") or (len(argv) > 1 and argv[1] != "--lr-effect") or len(argv) > 3:
        print("usage: python -m hubscan.demo.tree DIR [--lr-effect [SEEDS]]", file=sys.stderr)
        return 2
    if len(argv) > 1:
        r = lr_effect(argv[0], seeds=tuple(range(int(argv[2]) if len(argv) > 2 else 10)))
        for lr, stats in r["summary"].items():
            print(f"lr {lr}: " + ", ".join(f"{k} {m:+.4f} ± {sd:.4f}" for k, (m, sd) in stats.items()))
        print(f"|Δα| larger at the larger lr in {r['larger_in']} of {r['n']} seeds; "
              f"paired one-sided Wilcoxon p = {r['wilcoxon_p']:.2g}")
        return 0
    for n in build_tree(argv[0]):
        print(f"{n.repo_id:22s} {n.relation or 'root':10s} acc {n.accuracy:.3f}  <- {', '.join(n.parents) or '-'}")
    return 0


if __name__ == "__main__":  # pragma: no cover - a demo entry point
    sys.exit(main(sys.argv[1:]))
