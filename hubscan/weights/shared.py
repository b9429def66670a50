"""One opened model read by several analyses: each stored tensor is read from its files once.

Used by the model-tree census (:mod:`hubscan.census`): a child's own analysis and its delta against
its parent take the same stored tensors (read once for both), and a parent is read once for a batch
of its children.

Rule: a tensor is read the first time any reader loads it and kept until ``readers`` loads have taken
it; with a ``window``, also dropped once ``window`` other tensors have been read since (a reader that
never takes it, e.g. a delta analysis for a tensor the parent lacks, must not pin it). A tensor dropped
early is read again if a reader still asks for it: the window costs bytes, never correctness.
Concurrent loads of one tensor (a reader's prefetch thread) wait for the one read in progress.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

from hubscan.weights.base import TensorEntry, WeightSet


class SharedReads:
    """A :class:`~hubscan.weights.base.WeightSet` whose stored tensors are read once for several readers.

    Parameters
    ----------
    ws : WeightSet
        The model, opened; its entries as stored (layouts are decoded by each reader).
    readers : int
        Loads of one tensor expected (readers that take it); after the last it leaves memory.
    window : int or None
        Drop a kept tensor once this many other tensors have been read after it (None: keep it until
        ``readers`` loads took it, or :meth:`close`). Memory: at most ``window + 1`` tensors.

    Attributes
    ----------
    reads : Counter
        Tensor name → times read from the files (1 each when shared as intended).
    """

    def __init__(self, ws: WeightSet, readers: int, window: int | None = None):
        self.ws, self.readers, self.window = ws, max(1, int(readers)), window
        self._entries = list(ws.entries())
        self._cache: dict = {}      # name -> [tensor, loads taken, read number]
        self._reading: dict = {}    # name -> lock held while the one read is in progress
        self._lock = threading.Lock()
        self._count = 0
        self.reads: Counter = Counter()

    def _load(self, e: TensorEntry):
        with self._lock:
            busy = self._reading.setdefault(e.name, threading.Lock())
        with busy:
            with self._lock:
                hit = self._cache.get(e.name)
                if hit is not None:
                    return self._take(e.name, hit)
            tensor = e.load()  # raises: nothing kept, the next reader tries again
            with self._lock:
                self.reads[e.name] += 1
                self._count += 1
                if self.window is not None:
                    for name in [n for n, (_, _, at) in self._cache.items() if self._count - at > self.window]:
                        del self._cache[name]
                item = self._cache[e.name] = [tensor, 0, self._count]
                return self._take(e.name, item)

    def _take(self, name: str, item: list):
        item[1] += 1
        if item[1] >= self.readers:
            del self._cache[name]
        return item[0]

    def view(self) -> WeightSet:
        """The model for one reader: its entries load through the shared reads; closing the view
        does not close the model (:meth:`close` does); ``stats`` are the model's (bytes read once)."""
        entries = [dataclasses.replace(e, load=lambda e=e: self._load(e)) for e in self._entries]
        return WeightSet(files=list(self.ws.files), format=self.ws.format, entries=lambda: iter(entries),
                         missing=list(self.ws.missing), close=lambda: None, stats=self.ws.stats,
                         config=self.ws.config, types=self.ws.types)

    def views(self, n: int) -> list[WeightSet]:
        """``n`` views (:meth:`view`) that close the model once every one of them is closed: for readers
        that each close what they are given (an analysis closes its weight set when it ends)."""
        left = [n]
        lock = threading.Lock()

        def close_one() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                self.close()

        out = []
        for _ in range(n):
            v = self.view()
            v.close = close_one
            out.append(v)
        return out

    @property
    def bytes_read(self) -> int:
        """Bytes of the model's files read so far (the reader's ``stats['bytes_read']``)."""
        return int(self.ws.stats.get("bytes_read", 0))

    def close(self) -> None:
        """Drop what is kept and close the model."""
        with self._lock:
            self._cache.clear()
        self.ws.close()
