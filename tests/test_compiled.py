"""The numba-compiled searches (:mod:`hubscan.esd.compiled`): a damaged cache on disk is recovered from.

numba caches a kernel's machine code on disk; a damaged cache file (a full disk, a killed process) made every
layer's fit fail with "Ran out of input" on every run. Now the process removes that module's cache files,
compiles again (the same result) and says so once, naming the folder; the next run reads the new cache.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hubscan.esd.mp import fit_mp
from hubscan.esd.powerlaw import fit_powerlaw

#: (module whose cache is damaged, what the warning names, code printing a result, the same result here)
KERNELS = {
    "mp_kernels.mp_search": ("the MP fit", "from hubscan.esd.mp import fit_mp as f; "
                             "print(repr(f(np.arange(1.0, 65.0) ** 2, 128, 64).sigma_mp))",
                             lambda: repr(fit_mp(np.arange(1.0, 65.0) ** 2, 128, 64).sigma_mp)),
    "powerlaw_kernels.ks_search": ("the power-law fit", "from hubscan.esd.powerlaw import fit_powerlaw as f; "
                                   "r = f(np.arange(1.0, 200.0) ** 2); print(repr((r.alpha, r.xmin, r.D)))",
                                   lambda: repr((lambda r: (r.alpha, r.xmin, r.D))(
                                       fit_powerlaw(np.arange(1.0, 200.0) ** 2)))),
}


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_a_damaged_cache_is_compiled_again(tmp_path, kernel):
    what, code, here = KERNELS[kernel]
    code = "import logging, numpy as np; logging.basicConfig(format='%(levelname)s %(message)s'); " + code
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run():
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip(), p.stderr
    first, err = run()
    assert first == here() and "WARNING" not in err, err
    damaged = list(tmp_path.rglob(f"{kernel}-*.nbc"))
    assert damaged
    for f in damaged:
        f.write_bytes(b"")
    again, err = run()
    assert again == first
    assert f"WARNING {what}'s compiled code cached in " in err and "(Ran out of input): compiling it again" in err
    assert str(damaged[0].parent) in err, err
    third, err = run()
    assert third == first and "WARNING" not in err, err
