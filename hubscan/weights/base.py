"""The reader interface: a weight file (or a folder of them) opened as a lazy set of tensors.

A reader never materialises a tensor until its :meth:`TensorEntry.load` is called, so the analysis
can skip 1-D tensors, norms and buffers without reading them, and holds at most one tensor at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import torch


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
        :class:`hubscan.errors.CorruptFileError` when its bytes are unreadable.
    """

    name: str
    shape: tuple
    dtype: str
    file: str
    load: Callable[[], torch.Tensor] = dataclasses.field(repr=False, compare=False)


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
    """

    files: list
    format: str
    entries: Callable[[], Iterator[TensorEntry]]
    missing: list = dataclasses.field(default_factory=list)
    close: Callable[[], None] = dataclasses.field(default=lambda: None, repr=False)
    stats: dict = dataclasses.field(default_factory=dict)

    def __enter__(self) -> "WeightSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
