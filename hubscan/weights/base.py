"""The reader interface: a weight file (or a folder of them) opened as a lazy set of tensors.

A reader never materialises a tensor until its :meth:`TensorEntry.load` is called, so the analysis
can skip 1-D tensors, norms and buffers without reading them, and holds at most one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, Iterator

import torch

#: Bytes a reader may spend beyond twice a file's size (see :func:`memory_budget`).
MEMORY_SLACK = 128 << 20


def memory_budget(file_size: int) -> int:
    """The most memory a reader may spend on what a file *claims* rather than on tensors it maps: its
    parsed structure (headers, metadata, pickled objects) and the allocations it asks for (a pickled
    ``bytearray(n)``, a sparse tensor's dense form, a compressed entry's expansion).

    ``2 * file_size + MEMORY_SLACK`` bytes: a file can justify holding its own bytes (twice: the raw bytes
    and their decoded form) and a fixed amount more, never a size it merely states. Readers refuse a file
    that would need more (:class:`~hubscan.errors.CorruptFileError`), which keeps reading any file, hostile
    or not, within the README's bound (RSS growth at most twice the file's size plus 256 MB).

    Parameters
    ----------
    file_size : int
        The file's size in bytes.

    Returns
    -------
    int
        Bytes.
    """
    return 2 * max(int(file_size), 0) + MEMORY_SLACK


class WeightKind(enum.StrEnum):
    """What a :class:`WeightSet`'s tensors are (the analysis reads them alike; what a row means differs)."""

    WEIGHTS = "weights"  #: the model's weights as stored (decoded when quantized)
    DELTA = "delta"      #: ΔW = W − W_base per tensor matched with a base model (:mod:`hubscan.weights.delta`)
    ADAPTER = "adapter"  #: a LoRA adapter's ΔW = s·B·A per module, plus W + ΔW with a base (weights/peft.py)


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One stored tensor, not yet read.

    Attributes
    ----------
    name : str
        Full parameter name as stored (e.g. ``encoder.layer.0.attention.self.query.weight``).
    shape : tuple of int
        Shape as stored.
    dtype : str
        Storage dtype as a torch dtype name without the ``torch.`` prefix (``float32``, ``bfloat16``,
        ``float8_e4m3fn``, ``int8``, ``int32`` …).
    file : str
        Path (or URL) of the file that holds it.
    load : callable () -> torch.Tensor
        Reads the tensor (CPU, stored dtype, possibly memory-mapped). Raises
        :class:`hubscan.errors.CorruptFileError` when its bytes are unreadable, and
        :class:`hubscan.errors.SkippedTensor` when, once read, it turns out not to be analyzed (a tied twin).
    companions : tuple of str
        Tensors folded into this one by :mod:`hubscan.weights.layouts` (FP8 scales, GPTQ ``qzeros`` /
        ``scales`` / ``g_idx``, bitsandbytes ``absmax`` …): they get no row of their own and are named in
        this tensor's row.
    layout : str
        How the stored bytes were turned into the tensor ``load`` returns (``fp8 block-scaled``,
        ``gptq 4-bit`` …); ``""`` when read as stored.
    skip_reason : str or None
        Set when the tensor is known not to be analyzable before it is read (an unknown dtype, a nested
        tensor, a quantization scheme hubscan does not decode): its row is skipped with this reason.
    understood : bool
        False when ``skip_reason`` is a layout hubscan does not understand (the model is then
        ``incomplete``, never a quiet ``success``).
    storage : tuple or None
        Identity of the bytes behind the tensor when the format can share them (torch storages):
        two entries with equal ``storage`` are one tensor stored once (tied weights).
    """

    name: str
    shape: tuple
    dtype: str
    file: str
    load: Callable[[], torch.Tensor] = dataclasses.field(repr=False, compare=False)
    companions: tuple = ()
    layout: str = ""
    skip_reason: str | None = None
    understood: bool = True
    storage: tuple | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class WeightSet:
    """The weight tensors of one model, as found in its files.

    Attributes
    ----------
    files : list of str
        The weight files the set was read from.
    format : str
        ``safetensors``, ``torch`` … (the reader's name).
    entries : callable () -> iterator of TensorEntry
        Yields the tensors in file order, one at a time.
    stats : dict
        Counters a reader keeps, e.g. ``bytes_read`` (bytes fetched over the network).
    missing : list of (str, str)
        Tensors the model's index names but that could not be found, with the reason
        (e.g. a shard file that is absent). Filled before ``entries`` is iterated.
    config : dict or None
        The model's ``config.json`` when the opener found one (a local folder's; None otherwise); for a
        model of components (diffusers sub-folders) ``{"components": {folder: that folder's config}}``.
        The analysis types tensors by their owning modules from it (:mod:`hubscan.weights.modules`).
    kind : WeightKind
        What the tensors are: the weights, or differences from a base model.
    types : dict of str to TensorKind or None
        Tensor name → what its owning module says it is, when the reader holds the live module (a model in
        memory, :mod:`hubscan.weights.memory`); the analysis then uses it instead of typing from ``config``.
    """

    files: list
    format: str
    entries: Callable[[], Iterator[TensorEntry]]
    missing: list = dataclasses.field(default_factory=list)
    close: Callable[[], None] = dataclasses.field(default=lambda: None, repr=False)
    stats: dict = dataclasses.field(default_factory=dict)
    config: dict | None = None
    kind: WeightKind = WeightKind.WEIGHTS
    types: dict | None = None

    def __enter__(self) -> "WeightSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
