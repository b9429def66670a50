"""numba-compiled kernels: the decorator hubscan's compiled modules use and their first load in a process.

numba compiles a kernel on its first call and caches the machine code on disk (``cache=True``: next to the
module, else in the user's cache folder or ``NUMBA_CACHE_DIR``); where no folder is writable it compiles
once per process instead. A damaged cache file (a full disk, a killed process) would fail every call, every
run: :func:`load` removes the module's cache files and compiles again, with a warning naming the folder.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Callable

from numba import njit

log = logging.getLogger(__name__)


def compiled(fn):
    """``numba.njit`` without fast-math, with its machine code cached on disk; where numba finds no cache
    folder, compiled once per process instead."""
    try:
        return njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(cache=False, nogil=True, error_model="numpy")(fn)


def load(module: str, kernel, probe: Callable[[], object], what: str) -> None:
    """Run ``probe`` (calls of the module's kernels on small inputs, so that each is loaded or compiled);
    when it fails, remove the cache files of ``module`` (a dotted module name) in ``kernel``'s cache folder,
    warn and probe again.

    Raises
    ------
    RuntimeError
        The kernels still cannot be loaded or compiled (e.g. a damaged cache in a folder this process may not
        change): ``what``, the folder and what to do.
    """
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - numba's unpickling of a damaged file raises anything
        folder = kernel.stats.cache_path
        log.warning("%s's compiled code cached in %s could not be read (%s): compiling it again", what, folder,
                    " ".join(str(exc).split())[:200] or type(exc).__name__)
        for path in glob.glob(os.path.join(folder, module.rpartition(".")[2] + ".*")):
            try:
                os.remove(path)
            except OSError:
                pass
        try:
            probe()
        except Exception as again:  # noqa: BLE001
            raise RuntimeError(f"{what}'s compiled code cannot be loaded from {folder} "
                               f"({' '.join(str(again).split())[:200] or type(again).__name__}): remove that "
                               "folder, or set NUMBA_CACHE_DIR to a writable one") from None
