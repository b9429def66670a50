"""Typing a stored tensor by the module that owns it (DESIGN "Typing a tensor by the module that owns it").

The library that wrote a checkpoint knows what each tensor is. For a model whose ``config.json`` names an
architecture built into the installed transformers (``model_type``; never remote code), timm
(``architecture``) or diffusers (``_class_name``, when diffusers is installed), the module tree is built on
the ``meta`` device (no memory, no weights; cached per config) and every parameter and buffer is typed by
the module that owns it (:func:`types_from_module`). The saved names are then matched to the module's
names (:meth:`ModuleMap.match`): as stored, through transformers' own checkpoint-key conversion (v5's
fused/unfused experts, renamed blocks, the base-model prefix), then by the longest dotted suffix with the
same shape. Names that match nothing are typed by the name/shape rules of :mod:`hubscan.esd.matrices`.

Kinds (``TensorKind.kind``: the plain values :func:`hubscan.esd.matrices.plan_matrices` reads, its ``KINDS``)
    ``linear``
        One (out, in) matrix: ``nn.Linear``, ``nn.MultiheadAttention``'s projections, RNN gate stacks,
        one expert of a fused container stored unfused; transformers ``Conv1D`` (stored (in, out)).
    ``embedding``
        ``nn.Embedding`` / ``nn.EmbeddingBag`` tables.
    ``conv1d``, ``conv2d``, ``conv3d``
        ``nn.ConvNd`` and ``nn.ConvTransposeNd`` weights, channels first.
    ``experts``
        A stack of (E, out, in) matrices: a fused expert container's (a bare 3-D parameter of a module
        whose class names experts or MoE, e.g. ``MixtralExperts.gate_up_proj`` (E, 2I, H)), or a bare 3-D
        ``<x>_weight`` (RecurrentGemma's block-diagonal per-head gates): one row per matrix.
    ``per_head``
        A bare (D, H, d_head) projection of an attention module (XLNet ``q``/``k``/``v``/``o``/``r``,
        Funnel ``r_kernel``): one D × H·d_head matrix.
    ``not_a_weight``
        No weight matrix; ``role`` says what it is: learned tokens, position table, bias, state-space
        parameter, token-shift mix, layer scale, segment table, decay mask, weight-norm magnitude,
        normalisation, buffer.
    ``parameter``
        A bare 2-D parameter of another role (a projection stored as a parameter): one matrix.

A bare parameter of rank ≥ 3 of no known role is ``parameter`` too, and the name/shape rules decide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import re
import warnings
from typing import Callable, Mapping

import torch

__all__ = ["TensorKind", "ModuleMap", "module_kind", "types_from_module", "types_from_config", "module_map", "build_meta"]

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class TensorKind:
    """What a tensor is, from the module that owns it.

    Attributes
    ----------
    kind : str
        One of ``hubscan.esd.matrices.KINDS`` (module docstring).
    module : str
        Class name of the owning module (``Linear``, ``MixtralExperts``, ``ViTEmbeddings`` …); for a
        parametrized weight, the module the parametrization is on.
    attr : str
        The attribute of that module (``weight``, ``gate_up_proj``, ``position_embeddings`` …).
    role : str
        For ``not_a_weight``: what it is instead (``position table``, ``buffer`` …); for a piece of a
        fused container stored unfused: ``one expert``; else ``""``.
    shape : tuple of int
        The module's tensor shape (the saved tensor is matched on it).
    """

    kind: str
    module: str
    attr: str
    role: str = ""
    shape: tuple = ()


# -- roles of bare parameters (by attribute name, then by the owning module's class name) ---------------
_ROLES = (  # (role, regex on the attribute name, lower case), first match wins
    ("state-space parameter", re.compile(r"^(a_log|a|d|dt_bias|a_logs|ds|time_(decay|first|faaaa))$")),
    ("bias", re.compile(r"(^|_)bias(es)?(_|$)")),
    ("learned tokens", re.compile(r"token|(^|_)cls(_|$)|mask_emb|latent|(^|_)quer(y|ies)(_|$)|register|newline|"
                                  r"(^|_)probe$|(^|_)prompts?$")),
    ("position table", re.compile(r"pos(ition(al)?)?_?(emb|enc|bias|table|ids)|(^|_)pos(_|$)|(^|_)rel(ative)?(_|$)|"
                                  r"rel(ative)?_pos|position|(time|temporal)_emb|^ape$")),
    ("token-shift mix", re.compile(r"^time_(mix|maa)")),
    ("layer scale", re.compile(r"gamma|lambda|^alpha|scale|(^|_)ls\d?$")),
    ("segment table", re.compile(r"^seg(ment)?_?emb")),
    ("decay mask", re.compile(r"decay")),
    ("normalisation", re.compile(r"norm")),
)
_PER_HEAD_OWNER = re.compile(r"attention|attn", re.IGNORECASE)
_POSITION_OWNER = re.compile(r"position|positional", re.IGNORECASE)


def _bare_kind(owner: str, attr: str, shape: tuple) -> tuple[str, str]:
    """(kind, role) of a parameter that is not a standard module's weight (module docstring)."""
    a, rank = attr.lower(), len(shape)
    if owner.endswith("Norm"):
        return "not_a_weight", "normalisation"
    if attr == "weight":  # a module class of its own (ibert QuantLinear / QuantEmbedding, custom convolutions)
        for word, kind in (("Embedding", "embedding"), ("Linear", "linear")):
            if word in owner and rank == 2:
                return kind, ""
        if "Conv" in owner and rank in (3, 4, 5):
            return f"conv{rank - 2}d", ""
    for role, pattern in _ROLES:
        if pattern.search(a):
            return "not_a_weight", role
    if _POSITION_OWNER.search(owner):  # mllama MllamaPrecomputedPositionEmbedding.embedding
        return "not_a_weight", "position table"
    if rank == 3 and (re.search(r"experts?(?![a-z])|moe", owner, re.IGNORECASE) or a.endswith("weight")):
        return "experts", ""  # fused experts (E, out, in); RG-LRU block-diagonal gates (heads, d, d)
    if rank == 3 and _PER_HEAD_OWNER.search(owner) and shape[0] >= max(shape[1:]):
        return "per_head", ""
    return "parameter", ""


def module_kind(module: torch.nn.Module, attr: str) -> tuple[str, str] | None:
    """(kind, role) of a standard module's tensor ``attr``, or None when the module is not a standard one
    (or ``attr`` is not its weight)."""
    nn = torch.nn
    try:
        from transformers.pytorch_utils import Conv1D as HFConv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        HFConv1D = ()
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)):
        return "not_a_weight", "normalisation"
    weight = attr in ("weight", "weight_v", "original", "original1")
    if attr in ("weight_g", "original0"):
        return "not_a_weight", "weight-norm magnitude"
    if isinstance(module, HFConv1D) or isinstance(module, nn.Linear):
        return ("linear", "") if weight else None
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return ("embedding", "") if weight else None
    for n, classes in ((1, (nn.Conv1d, nn.ConvTranspose1d)), (2, (nn.Conv2d, nn.ConvTranspose2d)),
                       (3, (nn.Conv3d, nn.ConvTranspose3d))):
        if isinstance(module, classes):
            return (f"conv{n}d", "") if weight else None
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)) and attr.startswith("weight_"):
        return "linear", ""
    if isinstance(module, nn.MultiheadAttention) and attr.endswith("proj_weight"):
        return "linear", ""
    if isinstance(module, nn.MultiheadAttention) and attr.startswith("bias_"):
        return "not_a_weight", "bias"
    return None


def types_from_module(module: torch.nn.Module) -> dict[str, TensorKind]:
    """Type every parameter and buffer of a module tree by the module that owns it.

    Works on any ``torch.nn.Module`` (a meta-device model built from a config, or a live one).

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    dict of str to TensorKind
        Keyed by the names ``module.state_dict()`` would use (tied names each), tensors of every rank.
        A parametrized weight (``<m>.parametrizations.weight.original0/1``) is typed by its host module.
    """
    from torch.nn.utils import parametrize

    modules = dict(module.named_modules(remove_duplicate=False))
    out: dict[str, TensorKind] = {}
    for mname, mod in modules.items():
        tensors = [(a, t, False) for a, t in mod.named_parameters(recurse=False)]
        tensors += [(a, t, True) for a, t in mod.named_buffers(recurse=False) if t is not None]
        for attr, t, is_buffer in tensors:
            full = f"{mname}.{attr}" if mname else attr
            owner, owner_attr = mod, attr
            if isinstance(mod, parametrize.ParametrizationList) and mname.count(".") >= 1:
                host_name, _, param = mname.rpartition(".parametrizations.")
                owner = modules.get(host_name, mod)
                owner_attr = attr if param == "weight" or attr in ("original0", "original1") else param
            cls = parametrize.type_before_parametrizations(owner).__name__
            shape = tuple(t.shape)
            if is_buffer:
                kind, role = "not_a_weight", "buffer"
            else:
                kind, role = module_kind(owner, owner_attr) or _bare_kind(cls, owner_attr, shape)
            out[full] = TensorKind(kind, cls, owner_attr, role, shape)
    return out


@dataclasses.dataclass
class ModuleMap:
    """A module tree's tensor types and how saved names reach them.

    Attributes
    ----------
    types : dict of str to TensorKind
        :func:`types_from_module` of the tree.
    prefixes : tuple of str
        Base-model prefixes (``model``, ``transformer`` …) a saved name may carry or lack.
    rename : callable (str) -> (str, bool), optional
        The library's own checkpoint-key conversion (transformers v5: legacy names, unfused experts):
        the module's name for a saved name, and whether the tensor is converted on loading (fused, split,
        transposed: its shape may differ from the module tensor's).
    """

    types: dict
    prefixes: tuple = ()
    rename: Callable[[str], tuple] | None = None

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> "ModuleMap":
        """The map of a live (or meta) module: its types, its base-model prefix and, for a transformers
        model, its checkpoint-key conversion."""
        prefix = getattr(module, "base_model_prefix", "") or ""
        return cls(types_from_module(module), (prefix,) if prefix else (), _transformers_rename(module))

    def match(self, shapes: Mapping[str, tuple]) -> dict[str, TensorKind]:
        """Type saved tensors by name and shape.

        Parameters
        ----------
        shapes : mapping of str to shape
            Saved name → stored shape (tensors of rank ≥ 2 are typed; others ignored).

        Returns
        -------
        dict of str to TensorKind
            The saved names matched (same shape, or one expert of a fused container: its (out, in)
            with a (E, out·k, in) or (E, in, out·k) container); names left out are typed by name.
        """
        by_tail: dict[str, list[str]] = {}
        for name in self.types:
            by_tail.setdefault(_tail(name), []).append(name)
        out = {}
        for saved, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            if len(shape) >= 2:
                kind = self._match_one(saved, shape, by_tail)
                if kind is not None:
                    out[saved] = kind
        return out

    def _match_one(self, saved: str, shape: tuple, by_tail: dict) -> TensorKind | None:
        names = [saved]
        if self.rename is not None:
            try:
                renamed, converted = self.rename(saved)
            except Exception:  # noqa: BLE001 - the library's conversion is a hint; names remain
                log.debug("%s: key conversion failed", saved, exc_info=True)
            else:
                kind = self.types.get(renamed)
                if converted and kind is not None and len(kind.shape) == len(shape) and kind.kind in _MATRICES:
                    return dataclasses.replace(kind, shape=shape)  # fused / split / transposed on loading
                names.append(renamed)
        for p in self.prefixes:
            names += [saved.removeprefix(p + "."), f"{p}.{saved}"]
        for name in names:
            kind = self.types.get(name)
            if kind is not None and (fit := _fits(kind, shape)) is not None:
                return fit
        # the longest dotted suffix with the same shape, when one module tensor has it
        parts = saved.split(".")
        best, best_len = [], 1
        for name in by_tail.get(_tail(saved), ()):
            kind = self.types[name]
            if kind.shape != shape:
                continue
            n = _common_suffix(parts, name.split("."))
            if n > best_len:
                best, best_len = [kind], n
            elif n == best_len and best:
                best.append(kind)
        if best and len({(k.kind, k.module, k.role) for k in best}) == 1:
            return best[0]
        return None


#: Kinds whose tensor stays the same kind of matrix when transformers fuses, splits or transposes it.
_MATRICES = ("linear", "embedding", "experts", "conv1d", "conv2d", "conv3d")


def _tail(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def _common_suffix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _fits(kind: TensorKind, shape: tuple) -> TensorKind | None:
    if kind.shape == shape:
        return kind
    if kind.kind == "experts" and len(shape) == 2 and len(kind.shape) == 3:
        _, a, b = kind.shape
        if (shape[1] == b and a % shape[0] == 0) or (shape[0] == a and b % shape[1] == 0) \
                or (shape[0] == b and a % shape[1] == 0) or (shape[1] == a and b % shape[0] == 0):
            return dataclasses.replace(kind, kind="linear", role="one expert", shape=shape)
    return None


def checkpoint_names(model: torch.nn.Module) -> dict[str, str]:
    """The names ``save_pretrained`` stores a transformers model's tensors under, where they differ from
    its ``state_dict()`` names (transformers v5 renames legacy checkpoint keys when loading and reverts the
    renaming when saving: ViT's ``layers.0.attention.q_proj.weight`` is saved as
    ``encoder.layer.0.attention.attention.query.weight``).

    Only one-to-one renamings are reverted; tensors transformers converts (fuses, splits) keep their module
    names (their saved tensors are other tensors). Empty for a model that is not a transformers model,
    with an older transformers, or when two names would be saved under one.
    """
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (PrefixChange, WeightConverter, WeightRenaming, apply_converters,
                                                     apply_renamings)
    except ImportError:
        return {}
    if not isinstance(model, PreTrainedModel):
        return {}
    try:  # as transformers' revert_weight_conversion chooses the conversions it reverts
        conversions = getattr(model, "_weight_conversions", None)
        if conversions is None:
            conversions = [c for c in get_model_conversion_mapping(model, add_legacy=False)
                           if not isinstance(c, PrefixChange)]
        reverse = [c.reverse_transform() for c in (conversions or [])[::-1]]
        renamings = [c for c in reverse if isinstance(c, WeightRenaming)]
        converters = [c for c in reverse if isinstance(c, WeightConverter)]
        if not renamings:
            return {}
        out = {}
        for key in model.state_dict(keep_vars=True):
            if apply_converters(key, converters)[1] is None and (saved := apply_renamings(key, renamings)) != key:
                out[key] = saved
    except Exception:  # noqa: BLE001 - the names are a convenience: the module's own names remain
        log.debug("no checkpoint names for %s", type(model).__name__, exc_info=True)
        return {}
    return out if len(set(out.values())) == len(out) else {}


def _transformers_rename(model: torch.nn.Module) -> Callable[[str], tuple] | None:
    """transformers' conversion of checkpoint keys to the model's names (what ``from_pretrained`` applies)."""
    try:
        from transformers import PreTrainedModel
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # older transformers: names and suffixes only
        return None
    if not isinstance(model, PreTrainedModel):
        return None
    try:
        mapping = get_model_conversion_mapping(model)
    except Exception:  # noqa: BLE001
        log.debug("no checkpoint conversion for %s", type(model).__name__, exc_info=True)
        return None
    renamings = [t for t in mapping if isinstance(t, WeightRenaming)]
    converters = [t for t in mapping if isinstance(t, WeightConverter)]
    keys = dict.fromkeys(model.state_dict(), True)
    prefix = model.base_model_prefix

    def rename(key: str) -> tuple[str, bool]:
        renamed, pattern = rename_source_key(key, renamings, converters, prefix, keys)
        return renamed, pattern is not None

    return rename


# -- building the module tree of a config on the meta device ---------------------------------------------
@contextlib.contextmanager
def _quiet(library: str):
    """The library's warnings and log records below ERROR silenced while it builds a module tree. Only the
    library's own logger is touched, and only when it would let them through: every ``setLevel`` clears
    the level caches of all loggers (hundreds once transformers' model modules are imported). The library is
    imported first: transformers sets its logger's level when it is first imported, which would undo ours."""
    try:
        importlib.import_module(library)
    except ImportError:  # not installed: its builder returns None
        pass
    logger = logging.getLogger(library)
    level = logger.level
    if logger.getEffectiveLevel() < logging.ERROR:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if logger.level != level:
            logger.setLevel(level)


def _transformers_model(config: dict) -> torch.nn.Module | None:
    import transformers
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return None  # not built into the installed transformers: never remote code
    # what ``from_dict`` does without keyword arguments, less its log line that formats the whole config
    cfg = CONFIG_MAPPING[model_type](**{k: v for k, v in config.items() if k != "auto_map"})
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs and isinstance(archs[0], str) else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):  # the base model class
        base = MODEL_MAPPING_NAMES.get(model_type)
        cls = getattr(transformers, base[0] if isinstance(base, (list, tuple)) else base, None) if base else None
    if cls is None:
        return None
    # on the meta device, torch's weight initialisation skipped as ``from_pretrained`` skips it (no_init_weights
    # swaps torch.nn.init's functions for no-ops process-wide while the tree is built, as from_pretrained
    # does); it also skips the ties ``post_init`` makes, made after (a tied name is typed as its target)
    with torch.device("meta"):
        with _no_init_weights():
            model = cls(cfg)
        model.tie_weights()
    return model


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: initialise (on the meta device: no data, only time)
        return contextlib.nullcontext()
    return no_init_weights()


_NOT_A_MODEL_ARG = re.compile(r"pretrained|checkpoint|path|dir|file|url|hub", re.IGNORECASE)


def _timm_model(config: dict) -> torch.nn.Module | None:
    import timm

    arch = config["architecture"]
    if not timm.is_model(arch):
        return None
    kwargs = {k: v for k, v in dict(config.get("model_args") or {}).items()
              if not _NOT_A_MODEL_ARG.search(k)}  # nothing that makes timm read a file or the network
    if isinstance(config.get("num_classes"), int):
        kwargs.setdefault("num_classes", config["num_classes"])
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, **kwargs)


def _diffusers_model(config: dict) -> torch.nn.Module | None:
    try:
        import diffusers
    except ImportError:  # optional: the names decide
        return None
    cls = getattr(diffusers, config["_class_name"], None)
    if not isinstance(cls, type) or not issubclass(cls, diffusers.ModelMixin):
        return None
    with torch.device("meta"):
        return cls.from_config(config)


def build_meta(config: dict) -> torch.nn.Module | None:
    """The module tree a config describes, on the meta device, or None when no installed library
    builds it (or building fails: logged, the names decide).

    ``model_type`` → transformers (built-in architectures only; the class in ``architectures`` when
    transformers has it, else the model type's base model class); ``architecture`` → ``timm.create_model(pretrained=False)``;
    ``_class_name`` with ``_diffusers_version`` → that diffusers model class (when installed).
    """
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("_class_name"), str) and "_diffusers_version" in config:
        build, library = _diffusers_model, "diffusers"
    elif isinstance(config.get("model_type"), str):
        build, library = _transformers_model, "transformers"
    elif isinstance(config.get("architecture"), str):
        build, library = _timm_model, "timm"
    else:
        return None
    try:
        with _quiet(library):
            return build(config)
    except Exception as exc:  # noqa: BLE001 - an unbuildable config leaves the names to decide
        log.info("module tree not built (%s): %s", type(exc).__name__, " ".join(str(exc).split())[:200])
        return None


@functools.lru_cache(maxsize=32)
def _cached_map(config_json: str) -> ModuleMap | None:
    model = build_meta(json.loads(config_json))
    return None if model is None else ModuleMap.from_module(model)


def types_from_config(config: dict) -> ModuleMap | None:
    """The :class:`ModuleMap` of the model a ``config.json`` describes (built on the meta device; cached
    per config), or None when no installed library builds it (:func:`build_meta`)."""
    try:
        key = json.dumps(config, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    return _cached_map(key)


def module_map(config: dict | None, shapes: Mapping[str, tuple]) -> dict[str, TensorKind]:
    """Type a model's saved tensors by their owning modules.

    Parameters
    ----------
    config : dict or None
        ``WeightSet.config``: the model's ``config.json``, or ``{"components": {folder: config}}`` for a
        model of components (diffusers), whose tensors are named ``<folder>/<name>``.
    shapes : mapping of str to shape
        Saved name → stored shape.

    Returns
    -------
    dict of str to TensorKind
        The saved names the module tree types (others are left to the name/shape rules).
    """
    if not config:
        return {}
    components = config.get("components") if isinstance(config.get("components"), dict) else None
    if components is None:
        found = types_from_config(config)
        return found.match(shapes) if found is not None else {}
    out = {}
    for folder, sub in components.items():
        found = types_from_config(sub) if isinstance(sub, dict) else None
        if found is None:
            continue
        head = folder.rstrip("/") + "/"
        mine = {n[len(head):]: s for n, s in shapes.items() if n.startswith(head)}
        out.update({head + n: k for n, k in found.match(mine).items()})
    return out
