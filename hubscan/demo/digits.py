"""scikit-learn's 8×8 digits, split and standardized: what the demo model tree (:mod:`hubscan.demo.tree`) and the
batch-size experiment (:mod:`hubscan.experiments.batch_size`) train on. Needs scikit-learn
(``pip install 'hubscan[experiments]'``)."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def digits_split(seed: int = 0, test_size: float = 0.25) -> tuple:
    """The digits, pixel values / 16 then standardized with the training split's per-pixel mean and std
    (a pixel that is always 0 keeps sd 1); a stratified train/test split fixed by ``seed``.

    Returns
    -------
    (X_train, y_train, X_test, y_test) : numpy.ndarray
        float32 (n, 64) and int64 (n,). Cached per (seed, test_size) in the process: read them, do not
        modify them.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(f"the digits come from scikit-learn: pip install 'hubscan[experiments]' ({exc})") from exc
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X.astype(np.float64) / 16.0, y, test_size=test_size, stratify=y,
                                          random_state=seed)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd < 1e-8] = 1.0
    return (((Xtr - mu) / sd).astype(np.float32), ytr.astype(np.int64), ((Xte - mu) / sd).astype(np.float32),
            yte.astype(np.int64))
