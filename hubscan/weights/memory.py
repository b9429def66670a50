"""Models in memory as a :class:`~hubscan.weights.base.WeightSet`: a torch module, a state dict, safetensors
bytes, a Keras 3 model (:func:`open_object`; ``hubscan.analyze(obj)`` reaches it through
:func:`hubscan.sources.open_model`).

Nothing is copied when the set is opened: each entry's ``load`` returns the live tensor (detached, on its
device, in its dtype) or a view of it, so the only copy is the one the analysis makes of the tensor it is
decomposing (float64 or float32, on the analysis device). A CUDA module is analyzed on its device
(``hubscan.analyze`` uses the module's device unless one is given).

torch modules
    The entries are ``module.state_dict(keep_vars=True)``, in its order and with its names (what
    ``save_pretrained`` / ``torch.save(model.state_dict())`` store; for a transformers model the names
    ``save_pretrained`` writes where transformers renames checkpoint keys, e.g. v5's ViT
    ``layers.0.attention.q_proj.weight`` as ``encoder.layer.0.attention.attention.query.weight``:
    :func:`hubscan.weights.modules.checkpoint_names`, so the rows join the saved folder's by name), each
    tensor typed by the module that owns
    it (:func:`hubscan.weights.modules.types_from_module`: ``WeightSet.types``), so transformers' ``Conv1D``
    (stored (in, out)), ``nn.ConvTranspose*``, RNN gate stacks and fused expert containers read as what they
    are. A tensor reachable under several names (a tied embedding and output head) is one parameter: it has
    one entry, under its first name (the name ``save_pretrained`` keeps). Parametrized weights are analyzed as
    the module uses them:

    * ``torch.nn.utils.parametrizations.weight_norm`` (and the older hook ``weight_norm``): ``original1``
      (``weight_v``) loads the effective weight g·v/‖v‖ exactly as for a saved file
      (:mod:`hubscan.weights.weight_norm`); ``original0`` (``weight_g``) keeps its own row;
    * any other parametrization (``spectral_norm``, ``orthogonal``, a ``torch.nn.utils.parametrize`` of
      your own) and the older ``spectral_norm`` hook: the first original (``…parametrizations.weight.original``,
      ``weight_orig``) loads the effective weight ``module.weight``, computed without a power iteration or
      any other change to the module (parametrizations in eval mode while it is read); the other originals
      are its companions.

    A tensor on the ``meta`` device has no values: skipped, not understood (the model is ``incomplete``).

state dicts
    Any ``Mapping[str, torch.Tensor | numpy.ndarray]``: entries in its order, typed by name and shape as a
    file's are; numpy arrays are viewed with ``torch.from_numpy`` (an array of a dtype torch has not is
    skipped, not understood); tensors sharing storage are ties, as in a torch file.

safetensors bytes
    ``bytes`` / ``bytearray`` / ``memoryview`` holding a safetensors file: its header validated as a file's
    (:func:`hubscan.weights.safetensors.parse_header`), each tensor a view of the buffer.

Keras 3 models (extra ``keras``; any backend, torch's without a copy)
    ``model.weights`` under their paths (``dense/kernel`` → ``dense.weight``), each typed by its layer's class
    (``Dense`` / ``EinsumDense`` → linear, ``ConvND`` / ``ConvNDTranspose`` → convNd, ``Embedding``), kernels
    loaded in PyTorch's orientation (:func:`hubscan.weights.keras.tf_to_pt_layout`; a transpose leaves the
    ESD unchanged).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from hubscan.weights.base import TensorEntry, WeightSet
from hubscan.weights.modules import TensorKind, checkpoint_names, module_kind, types_from_module

__all__ = ["ACCEPTED", "in_memory", "is_keras", "open_object", "module_device"]

#: What :func:`open_object` (and ``hubscan.analyze``) take from memory, as the TypeError says it.
ACCEPTED = ("a torch.nn.Module, a state dict (mapping of str to torch.Tensor or numpy.ndarray), safetensors bytes "
            "or a Keras 3 model")

#: The layout of an effective weight computed by a module's parametrization, as the row's ``reason`` shows it.
PARAMETRIZED = "parametrized ({}): effective weight"


def is_keras(obj) -> bool:
    """True for an object of a Keras (or tf.keras) class, checked without importing Keras."""
    root = type(obj).__module__.split(".")[0]
    return root in ("keras", "tf_keras") or (root == "tensorflow" and "keras" in type(obj).__module__)


def in_memory(obj) -> bool:
    """True for an object :func:`open_object` reads (a module, a mapping, bytes, a Keras model)."""
    return (isinstance(obj, (torch.nn.Module, Mapping, bytes, bytearray, memoryview)) or is_keras(obj))


def module_device(obj) -> str | None:
    """The device of a torch module's first tensor (``cuda:0`` …), None for other objects or CPU."""
    if not isinstance(obj, torch.nn.Module) or is_keras(obj):
        return None
    t = next(iter(obj.state_dict(keep_vars=True).values()), None)
    return str(t.device) if t is not None and t.device.type not in ("cpu", "meta") else None


def open_object(obj) -> WeightSet:
    """The tensors of a model in memory (module docstring).

    Parameters
    ----------
    obj : torch.nn.Module, Mapping[str, torch.Tensor | numpy.ndarray], bytes or keras.Model

    Returns
    -------
    WeightSet
        ``format`` ``module`` / ``state dict`` / ``safetensors`` / ``keras``; ``files`` one name for the object
        (``"<ResNet in memory>"``); ``types`` the module typing of a module or Keras model.

    Raises
    ------
    TypeError
        ``obj`` is none of these, a mapping has a key that is not a str or a value that is not a tensor or
        array (one line, naming what is accepted).
    ImportError
        A Keras model while Keras 3 is not installed (names the extra ``hubscan[keras]``).
    hubscan.errors.CorruptFileError
        Safetensors bytes whose header is malformed or does not fit the buffer.
    """
    if is_keras(obj):  # before torch: on the torch backend a Keras layer is a torch module too
        return _open_keras_model(obj)
    if isinstance(obj, torch.nn.Module):
        return _open_module(obj)
    if isinstance(obj, Mapping):
        return _open_mapping(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _open_bytes(obj)
    raise TypeError(f"hubscan cannot read a {type(obj).__name__} from memory: expected {ACCEPTED}")


def _where(obj) -> str:
    return f"<{type(obj).__name__} in memory>"


def _storage(t: torch.Tensor) -> tuple | None:
    if t.is_meta or t.layout != torch.strided:
        return None
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _entry(name: str, t: torch.Tensor, where: str, load=None, **kw) -> TensorEntry:
    if t.is_meta:
        kw.update(skip_reason="on the meta device (no values)", understood=False)
    return TensorEntry(name, tuple(t.shape), _dtype(t), where, load or (lambda: t.detach()),
                       storage=_storage(t), **kw)


# -- torch modules ----------------------------------------------------------------------------------------

def _effective(module: torch.nn.Module, compute) -> torch.Tensor:
    """A parametrized weight as the module computes it, its parametrizations in eval mode while it is read
    (spectral_norm then runs no power iteration and changes no buffer)."""
    mods = list(module.modules())
    modes = [m.training for m in mods]
    try:
        for m in mods:
            m.training = False
        with torch.no_grad():
            return compute().detach()
    finally:
        for m, mode in zip(mods, modes):
            m.training = mode


def _parametrized(module: torch.nn.Module) -> dict[str, tuple]:
    """First original's state-dict name → (host module, attribute, other originals' names, layout, loader)
    for each weight a parametrization (other than weight_norm, which the layouts fold) computes."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm

    out = {}
    for mname, mod in module.named_modules():
        head = f"{mname}." if mname else ""
        if parametrize.is_parametrized(mod):
            for attr, plist in mod.parametrizations.items():
                classes = [type(p).__name__ for p in plist]
                if classes == ["_WeightNorm"]:  # folded as g·v/‖v‖, as for a saved file
                    continue
                names = [f"{head}parametrizations.{attr}.{n}" for n, _ in plist.named_parameters(recurse=False)]
                if names:
                    load = functools.partial(_effective, mod, functools.partial(getattr, mod, attr))
                    out[names[0]] = (mod, attr, tuple(names[1:]), PARAMETRIZED.format(", ".join(classes)), load)
        for hook in mod._forward_pre_hooks.values():  # the older hook form
            if isinstance(hook, SpectralNorm):
                load = functools.partial(_effective, mod, functools.partial(hook.compute_weight, mod,
                                                                           do_power_iteration=False))
                out[f"{head}{hook.name}_orig"] = (mod, hook.name, (), PARAMETRIZED.format("SpectralNorm"), load)
    return out


def _open_module(module: torch.nn.Module) -> WeightSet:
    where = _where(module)
    types = types_from_module(module)
    effective = _parametrized(module)
    state = module.state_dict(keep_vars=True)
    companions = {c for _, _, cs, _, _ in effective.values() for c in cs}
    saved = checkpoint_names(module)  # a transformers model: the names save_pretrained stores
    seen: set[int] = set()
    entries = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or id(t) in seen or name in companions:
            continue
        seen.add(id(t))
        if name in effective:
            mod, attr, others, layout, load = effective[name]
            kind = module_kind(mod, attr)
            if kind is not None:
                types[name] = TensorKind(kind[0], type(mod).__name__, attr, kind[1], tuple(t.shape))
            entries.append(_entry(name, t, where, load, companions=others, layout=layout))
        elif name in saved and saved[name] not in state:
            if name in types:
                types[saved[name]] = types[name]
            entries.append(_entry(saved[name], t, where))
        else:
            entries.append(_entry(name, t, where))
    return WeightSet(files=[where], format="module", entries=lambda: iter(entries), types=types)


# -- state dicts and bytes ----------------------------------------------------------------------------------

def _open_mapping(mapping: Mapping) -> WeightSet:
    where = _where(mapping)
    entries = []
    for name, value in mapping.items():
        if not isinstance(name, str):
            raise TypeError(f"hubscan cannot read a state dict keyed by {type(name).__name__} ({name!r}): "
                            f"expected {ACCEPTED}")
        if isinstance(value, torch.Tensor):
            entries.append(_entry(name, value, where))
        elif isinstance(value, np.ndarray):
            try:
                with warnings.catch_warnings():  # a read-only array: the analysis only reads it
                    warnings.simplefilter("ignore", UserWarning)
                    t = torch.from_numpy(value)
            except TypeError:
                entries.append(TensorEntry(name, tuple(value.shape), f"numpy {value.dtype}", where,
                                           lambda: None, skip_reason=f"numpy dtype {value.dtype} (torch has none)",
                                           understood=False))
                continue
            except ValueError:  # negative strides (a reversed view): copied when read, not before
                t = torch.from_numpy(np.empty(0, value.dtype))  # its dtype
                entries.append(TensorEntry(name, tuple(value.shape), _dtype(t), where,
                                           lambda v=value: torch.from_numpy(np.ascontiguousarray(v))))
                continue
            entries.append(_entry(name, t, where))
        else:
            raise TypeError(f"hubscan cannot read state dict entry {name!r}, a {type(value).__name__}: "
                            f"expected {ACCEPTED}")
    return WeightSet(files=[where], format="state dict", entries=lambda: iter(entries))


def _open_bytes(buf) -> WeightSet:
    from hubscan.weights.safetensors import header_length, parse_header, tensor_entries

    where = f"<{len(buf)} bytes of safetensors in memory>"
    view = memoryview(buf).cast("B")
    n = header_length(bytes(view[:8]), len(view), where)
    unknown: list = []
    tensors, _ = parse_header(bytes(view[8:8 + n]), len(view), where, unknown)

    def load(info) -> torch.Tensor:
        if info.end == info.begin:
            return torch.empty(info.shape, dtype=info.dtype)
        with warnings.catch_warnings():  # bytes are read-only: the analysis only reads them
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(view, dtype=torch.uint8, count=info.end - info.begin, offset=8 + n + info.begin)
        return raw.view(info.dtype).reshape(info.shape)

    entries = tensor_entries(tensors, unknown, where, load)
    return WeightSet(files=[where], format="safetensors", entries=lambda: iter(entries))


# -- Keras 3 -------------------------------------------------------------------------------------------------

#: Keras layer class → hubscan kind of its ``kernel`` / ``embeddings`` (others: the name/shape rules decide).
_KERAS_KINDS = {"Dense": "linear", "EinsumDense": "linear", "Embedding": "embedding",
                "Conv1D": "conv1d", "Conv2D": "conv2d", "Conv3D": "conv3d",
                "Conv1DTranspose": "conv1d", "Conv2DTranspose": "conv2d", "Conv3DTranspose": "conv3d"}


def _keras_layers(model):
    """(layer, its variables) for every layer, nested ones included (a layer's own variables only)."""
    stack, seen = [model], set()
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        subs = list(getattr(layer, "_layers", None) or getattr(layer, "layers", None) or [])
        mine = {id(v) for s in subs for v in s.weights}
        yield layer, [v for v in layer.weights if id(v) not in mine]
        stack.extend(subs)


def _open_keras_model(model) -> WeightSet:
    from hubscan.weights.keras import tf_to_pt_layout

    try:
        import keras
    except ImportError as e:
        raise ImportError("reading a Keras model needs Keras 3: pip install 'hubscan[keras]'") from e
    if not isinstance(model, keras.Layer):
        raise TypeError(f"hubscan cannot read a {type(model).__name__} (not a Keras 3 layer or model; "
                        f"tf.keras 2 models: save them and analyze the file): expected {ACCEPTED}")
    where = _where(model)
    entries, types = [], {}
    for layer, variables in _keras_layers(model):
        cls = type(layer).__name__
        for v in variables:
            name = v.path.replace("/", ".")
            attr = name.rsplit(".", 1)[-1]
            value = v.value
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(value)))
            kind = _KERAS_KINDS.get(cls) if attr in ("kernel", "embeddings") else None
            perm = tf_to_pt_layout(tuple(t.shape)) if attr == "kernel" and kind != "embedding" else None
            if attr in ("kernel", "embeddings"):
                name = name.rsplit(".", 1)[0] + ".weight"
            shape = tuple(t.shape[i] for i in perm) if perm else tuple(t.shape)
            load = (lambda t=t, perm=perm: t.detach().permute(perm)) if perm else (lambda t=t: t.detach())
            entries.append(TensorEntry(name, shape, _dtype(t), where, load, storage=_storage(t)))
            if kind is not None and len(shape) in (2, 3, 4, 5):
                types[name] = TensorKind(kind, cls, attr, "", shape)
    return WeightSet(files=[where], format="keras", entries=lambda: iter(entries), types=types)
