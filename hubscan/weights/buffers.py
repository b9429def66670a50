"""Host buffers reused across the tensor reads of one weight set.

A tensor read into freshly allocated memory pays that memory's page faults (the kernel zeroes each page on
first touch): reading all-MiniLM-L6-v2's 90 MB into new buffers costs about twice the copy itself. A reader
that reads tensor after tensor of similar sizes (a model's repeated blocks) can instead read into a buffer
that an earlier tensor no longer uses.

A buffer is handed out again only when nothing refers to the memory of the tensor read into it: the tensor
is made with ``torch.from_numpy`` on a numpy view of the buffer, its storage holds that view and the view
holds the buffer, so the buffer's reference count says whether any tensor (or view of one) read into it is
alive. A tensor the caller keeps is therefore never overwritten. Where reference counts do not say that
(a free-threaded CPython build, an interpreter without ``sys.getrefcount``) every read gets its own memory.
"""

from __future__ import annotations

import sys
import sysconfig
import threading

import numpy as np
import torch


#: Whether reference counts tell when a buffer is free (not on a free-threaded build: counts are deferred).
REUSE = hasattr(sys, "getrefcount") and not sysconfig.get_config_var("Py_GIL_DISABLED")


class ReadBuffers:
    """A few reusable byte buffers (see the module docstring).

    Parameters
    ----------
    keep : int
        Buffers held at most (the analysis holds about three tensors at a time: the one analyzed, the one
        prefetched, the next read).
    min_bytes, max_bytes : int
        Reads outside [min_bytes, max_bytes] get their own memory: small ones cost little to allocate; a
        large one is freed after use (its page faults are small beside its eigensolver's time, and a held
        buffer of that size would raise the analysis's peak memory: 16 MiB by default).
    """

    def __init__(self, keep: int = 4, min_bytes: int = 1 << 16, max_bytes: int = 16 << 20):
        self.keep, self.min_bytes, self.max_bytes = keep, min_bytes, max_bytes
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def _free(self, i: int) -> bool:
        # held by the list and by getrefcount's argument only: no tensor read into it is alive
        return sys.getrefcount(self._bufs[i]) <= 2

    def tensor(self, nbytes: int) -> torch.Tensor:
        """A uint8 CPU tensor of ``nbytes`` bytes to read into (its contents are undefined).

        Returns
        -------
        torch.Tensor, shape (nbytes,), dtype uint8
            Memory of a buffer no live tensor uses (at most twice ``nbytes``), else new memory.
        """
        if not REUSE or not self.min_bytes <= nbytes <= self.max_bytes:
            return torch.empty(nbytes, dtype=torch.uint8)
        with self._lock:
            free = [i for i in range(len(self._bufs)) if self._free(i)]
            fits = [i for i in free if nbytes <= self._bufs[i].nbytes <= 2 * nbytes]
            if fits:
                buf = self._bufs[min(fits, key=lambda i: self._bufs[i].nbytes)]
            else:
                buf = np.empty(nbytes, dtype=np.uint8)
                if len(self._bufs) >= self.keep and free:  # make room: drop the smallest free buffer
                    del self._bufs[min(free, key=lambda i: self._bufs[i].nbytes)]
                if len(self._bufs) < self.keep:
                    self._bufs.append(buf)
            view = buf[:nbytes]
            del buf
        return torch.from_numpy(view)

    def clear(self) -> None:
        """Let go of every buffer (tensors still alive keep their own memory)."""
        with self._lock:
            self._bufs.clear()
