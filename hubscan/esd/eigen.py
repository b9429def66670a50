"""Eigenvalues of X = WᵀW for a stack of weight slices, on CPU or CUDA (torch).

Method (chosen by measurement, ``benchmarks/bench_analyze.py``)
----------------------------------------------------------------
``gram`` (default): X = WᵀW (M × M, M = min(rows, cols)) accumulated in float64 over row chunks
of W (so a 128k × 4096 vocabulary matrix never exists in float64 at once), then eigvalsh (LAPACK ``syevd``
/ cuSOLVER) in float64. On CPU both steps run in torch's or numpy's linear algebra, whichever a measured
check at first use found faster on this machine (:func:`cpu_linalg`; ``HUBSCAN_CPU_LINALG`` fixes it); on
CUDA in torch's. It does the floor's arithmetic (``eigvalsh(W.T @ W)``) and is 2.5–4× faster than WW's
``scipy.linalg.svd`` of W.

``svd``: ``torch.linalg.svdvals`` of W in float64, eigenvalues = σ². WW's arithmetic; slower.

Accuracy of ``gram`` against float64 SVD (measured on all-MiniLM-L6-v2 and synthetic heavy-tailed
matrices, ``tests/test_eigen.py``): the top-10 eigenvalues agree to 1.4e-14 relative (SVD: 9.7e-15);
the smallest have absolute error ≤ 4.2e-15·λ_max (SVD: 3.3e-17·λ_max) — bounded by ~N·eps·λ_max
from forming WᵀW — so eigenvalues below that are noise. Nothing hubscan reports depends on them except the numerical rank, which
is therefore defined per method (below). Eigenvalues are clipped at 0 (eigvalsh may return −1e-17).

No 1/N normalisation (WW's default). Convolution slices are scaled by the plan's ``eig_scale``.

Range: when X = WᵀW would overflow or underflow the working precision — the largest diagonal entry of X
(the largest column sum of squares, ≤ λ_max ≤ M times it) non-finite, above ``finfo.max/(2M)`` or below
``finfo.tiny/eps`` (float64: finite weights near 1e160 or 1e-150) — W is multiplied by 2^−k, k the binary
exponent of max|w|, and decomposed again. A power of two changes no significand, so the scaled spectrum is
the exact one in units of 4^k (``ESD.scale_exp`` = k); the caller puts the units back
(:func:`hubscan.esd.metrics.layer_metrics`). Every other matrix is decomposed as it is, bit for bit as
before: the check reads only the diagonal X already has.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
from typing import Sequence

import numpy as np
import torch

from hubscan.errors import NonFiniteError  # noqa: F401 - raised here, defined with the others

log = logging.getLogger(__name__)

#: Rows (columns, for a wide W) of one float64 chunk of W while the Gram matrix is accumulated, and its
#: elements at most (64 MB). A chunk of a few hundred rows stays in the core's cache between its conversion
#: and its product: measured, one thread, conversion + lower-triangle Gram of MiniLM's 30522×384 embedding:
#: 179 ms in chunks of 21845 rows, 90 ms in chunks of 256; 4096×1024: 92 → 85 ms (fewer than ~128 rows
#: and the product itself slows down). Chunks change only the order of summation (≤ 1e-15 relative).
#: Matrices that :func:`compute_esds` may batch (≤ BATCH_MAX_LAYER_ELEMS) stay one product, so that a
#: layer's eigenvalues do not depend on whether its neighbours had its shape.
#: numpy's ``syrk`` (:func:`cpu_linalg`) wants long chunks instead: measured, one thread, conversion + Gram,
#: 30522×384: 124 ms in chunks of 256 rows, 93 in chunks of 4096 (the whole float64 product: 90);
#: 4096×1024: 133 → 80 (78); 8192×2048: 1221 → 625 (579).
CHUNK_ROWS = 256
CHUNK_ROWS_NUMPY = 4096
CHUNK_ELEMS = 8 * 1024 * 1024


@dataclasses.dataclass
class ESD:
    """The empirical spectral density of one layer (pooled over its slices).

    Attributes
    ----------
    evals : ndarray of float64, shape (M·rf,)
        Eigenvalues of X = WᵀW of every slice, times ``eig_scale``, sorted ascending, ≥ 0.
    sv_max, sv_min : float
        Largest and smallest singular value over all slices of the (scaled) W, = sqrt(λ).
        (WW reports the largest of the per-slice minima as ``sv_min`` for conv layers.)
    rank_loss : int
        Σ over slices of (M − numerical rank of the slice).
    matrix_rank : int
        Numerical rank of the pooled ESD (number of eigenvalues above the tolerance).
    method, device, precision : str
        How the eigenvalues were computed.
    scale_exp : int
        0, or k when W was multiplied by 2^−k because X = WᵀW would overflow or underflow (module
        docstring): ``evals`` are then in units of 4^k (true eigenvalues = evals·4^k, true singular
        values = sv·2^k; both may be beyond float64's range).

    Numerical rank tolerance: ``svd`` uses WW's / numpy's rule on singular values,
    σ > σ_max·N·eps; ``gram`` uses λ > λ_max·N·eps on the eigenvalues of X = WᵀW — forming X
    rounds each entry by up to ~N·eps relative, so smaller eigenvalues are noise (a tighter
    M·eps cut miscounted exactly low-rank thin matrices, e.g. rank 2 of 10000×4). The two agree
    unless W has singular values between ~1e-12·σ_max and ~sqrt(N·eps)·σ_max (1e-6 for N = 30k).
    """

    evals: np.ndarray
    sv_max: float
    sv_min: float
    rank_loss: int
    matrix_rank: int
    method: str = "gram"
    device: str = "cpu"
    precision: str = "float64"
    scale_exp: int = 0


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps`` …), whether or not this machine has one.

    Raises
    ------
    ValueError
        Not a device torch knows (one line).
    """
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r}: not a device (cpu, cuda, cuda:N, auto or another torch device type)") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; anything else as given.

    Raises
    ------
    ValueError
        Not a device (:func:`parse_device`), or ``cuda`` requested but no CUDA device is available.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def check_finite(t: torch.Tensor) -> None:
    """Raise :class:`~hubscan.errors.NonFiniteError` when ``t`` holds NaN or ±inf (O(numel))."""
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteError()


class _Scratch(threading.local):
    """One reusable buffer per thread for the float64 copies of W: a fresh allocation per layer costs its
    page faults (float32 → float64 of a 21845×384 chunk: 34 ms into new memory, 12 ms into reused)."""

    buf: torch.Tensor | None = None


_scratch = _Scratch()


def release_scratch() -> None:
    """Free this thread's conversion buffer (:func:`hubscan.analysis.analyze_entries` calls it at the end)."""
    _scratch.buf = None


def _buffer(shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A view of this thread's scratch buffer with ``shape``: valid until the next call."""
    n = math.prod(shape)
    buf = _scratch.buf
    if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
        buf = _scratch.buf = None  # the old one freed first
        buf = _scratch.buf = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


def _converted(S: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``S.to(device, dtype)`` written into the scratch buffer (valid until the next call): the same values
    and, for a contiguous S or a slice, the same contiguous layout; a transposed view gets ``.to``'s own
    result (its strides), so every Gram product sums in the same order as with ``.to``."""
    if S.dtype == dtype and S.device == device:
        return S
    if S.dim() == 2 and not S.is_contiguous() and S.t().is_contiguous():
        return S.to(device=device, dtype=dtype)
    return _buffer(tuple(S.shape), device, dtype).copy_(S)


def _stacked(stacks: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.stack(stacks)`` in ``dtype`` on ``device``, in the scratch buffer (valid until the next call)."""
    out = _buffer((len(stacks), *stacks[0].shape), device, dtype)
    for i, st in enumerate(stacks):
        out[i].copy_(st)
    return out


#: On CPU, Gram matrices of at least GRAM_BLOCK_MIN columns are formed as their lower triangle only, in
#: GRAM_BLOCKS column blocks: k(k+1)/2 block products, (k+1)/(2k) of the full product's flops (the BLAS
#: ``syrk`` saving, which torch does not expose). ``torch.linalg.eigvalsh`` reads the lower triangle only
#: (UPLO="L"), so the strict upper triangle is left 0. Each entry is the same dot product as in the full
#: product (k = 2: bitwise equal on MiniLM's shapes, MKL; k = 3: within 1e-16 relative); measured, one
#: thread: 30522×384 125 → 92 ms, 1536×384 6.0 → 4.0 ms, 384² 1.5 → 1.0 ms. Below the threshold (and on
#: CUDA, where the eigensolver dominates) the full product.
GRAM_BLOCKS = 3
GRAM_BLOCK_MIN = 192


def _gram_into(C: torch.Tensor, G: torch.Tensor | None = None) -> torch.Tensor:
    """X = CᵀC for C of shape (length, m) or (batch, length, m) (a transposed view for wide matrices: no
    copy), added to ``G`` when given (2-D only, shape (m, m)); on CPU by the library :func:`cpu_linalg`
    chose: numpy's (:func:`_gram_numpy`, the full X) or torch's (for m ≥ GRAM_BLOCK_MIN the lower triangle only,
    above)."""
    if C.device.type == "cpu" and cpu_linalg() == "numpy":
        return _gram_numpy(C, G)
    return _gram_torch(C, G)


def _gram_torch(C: torch.Tensor, G: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_gram_into` with torch (any device)."""
    m = C.shape[-1]
    if C.device.type != "cpu" or m < GRAM_BLOCK_MIN:
        return C.mT @ C if G is None else G.addmm_(C.T, C)
    if G is None:
        G = torch.zeros(*C.shape[:-2], m, m, dtype=C.dtype, device=C.device)
    e = [m * i // GRAM_BLOCKS for i in range(GRAM_BLOCKS + 1)]
    for a, b in zip(e, e[1:]):  # column block a:b of the lower triangle: rows a:m
        if C.dim() == 2:
            G[a:, a:b].addmm_(C[:, a:].T, C[:, a:b])
        else:
            G[:, a:, a:b] = C[:, :, a:].mT @ C[:, :, a:b]  # (G is new: nothing to add to)
    return G


def _gram_numpy(C: torch.Tensor, G: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_gram_into` with numpy (CPU tensors, shared memory both ways): ``a.T @ a`` of one matrix is
    BLAS ``syrk`` in numpy (half the flops of a general product, X made symmetric); a batch is the same
    product matrix by matrix, so a layer's eigenvalues do not depend on whether it was batched."""
    a = C.numpy()
    with np.errstate(over="ignore", invalid="ignore"):  # out of range: found on the diagonal by the caller
        if a.ndim == 2:
            X = a.T @ a
            if G is None:
                return torch.from_numpy(X)
            g = G.numpy()
            g += X
            return G
        X = np.empty((a.shape[0], a.shape[2], a.shape[2]), dtype=a.dtype)
        for i in range(a.shape[0]):
            np.matmul(a[i].T, a[i], out=X[i])
    return torch.from_numpy(X)


def _eigvalsh(G: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the symmetric matrices ``G`` (…, m, m), ascending, from their lower triangle: on CPU
    by the library :func:`cpu_linalg` chose (LAPACK ``syevd`` in either: torch's, or numpy's, a stack matrix
    by matrix), on CUDA ``torch.linalg.eigvalsh`` (cuSOLVER / MAGMA, :func:`choose_eigh_backend`)."""
    if G.device.type == "cpu" and cpu_linalg() == "numpy":
        return torch.from_numpy(np.linalg.eigvalsh(G.numpy(), UPLO="L"))
    return torch.linalg.eigvalsh(G)


#: The CPU linear-algebra libraries :func:`cpu_linalg` chooses between for the Gram product and eigvalsh:
#: torch's (MKL in the x86 wheels) and numpy's (OpenBLAS with its LAPACK in the wheels). Which is faster
#: depends on the processor and the builds, hence the measurement: one thread, float64, AMD EPYC: 384²
#: eigvalsh torch 5.1 ms, numpy 4.1; 30522×384 Gram 128 → 96 ms (numpy's ``syrk`` against torch's
#: lower-triangle blocks); below 128² torch's eigvalsh was ~10 % the faster. Both compute the same eigenvalues
#: to rounding (``tests/test_eigen.py``: within N·eps·λ_max of each other and of float64 SVD).
CPU_LINALG = ("torch", "numpy")
#: Environment variable fixing the choice (``torch``, ``numpy``; ``auto`` or unset: measured).
CPU_LINALG_ENV = "HUBSCAN_CPU_LINALG"
#: This process's: ``setting`` (``torch`` / ``numpy`` / ``auto``, read once; tests set it to force a library),
#: ``measured`` (:func:`choose_cpu_linalg`'s result), ``last`` ((setting, several threads, library) of the last
#: call: reused while the setting and the thread count's side stay; its library is the one in use).
_cpu_choice: dict = {}


def cpu_linalg_setting() -> str:
    """The :data:`CPU_LINALG_ENV` setting: ``torch``, ``numpy`` or ``auto`` (unset or empty).

    Raises
    ------
    ValueError
        Any other value (one line naming the variable and the values it takes).
    """
    value = os.environ.get(CPU_LINALG_ENV, "").strip().lower() or "auto"
    if value not in (*CPU_LINALG, "auto"):
        raise ValueError(f"{CPU_LINALG_ENV}={os.environ[CPU_LINALG_ENV]!r}: use torch, numpy or auto")
    return value


def cpu_linalg() -> str:
    """The library (``torch`` or ``numpy``) this process uses now for CPU Gram products and eigvalsh: the
    :data:`CPU_LINALG_ENV` setting; else (``auto``) torch's while torch runs more than
    :data:`CPU_LINALG_THREADS` thread, and on one thread the faster of the two, measured once a process by
    :func:`choose_cpu_linalg` when first needed. Each decision is logged once (INFO; a forced numpy with
    several torch threads: WARNING).

    Raises
    ------
    ValueError
        A bad :data:`CPU_LINALG_ENV` value.
    """
    setting = _cpu_choice.get("setting")
    if setting is None:
        setting = _cpu_choice["setting"] = cpu_linalg_setting()
    threads = torch.get_num_threads()
    last = _cpu_choice.get("last")  # (setting, several threads, library) of the last call: the same answer
    if last is not None and last[0] == setting and last[1] == (threads > CPU_LINALG_THREADS):
        return last[2]
    if setting != "auto":
        lib = setting
        if lib == "numpy" and threads > CPU_LINALG_THREADS:
            _say(logging.WARNING, f"CPU linear algebra: numpy ({CPU_LINALG_ENV}) with {threads} torch threads: "
                 "torch's and OpenBLAS's thread pools contend and slow each other (set OMP_NUM_THREADS=1, or "
                 f"unset {CPU_LINALG_ENV})")
        else:
            _say(logging.INFO, f"CPU linear algebra: {lib} ({CPU_LINALG_ENV})")
    elif threads > CPU_LINALG_THREADS:
        lib = "torch"
        _say(logging.INFO, f"CPU linear algebra: torch ({threads} threads; numpy's is measured and used on one "
                           "thread only)")
    else:
        chosen = _cpu_choice.get("measured")
        if chosen is None:
            chosen = _cpu_choice["measured"] = choose_cpu_linalg()
        lib = chosen["library"]
        _say(logging.INFO, f"CPU linear algebra: {lib} (one thread; one-thread CPU time of a float64 1024×256 Gram "
                           "product and eigvalsh: " + ", ".join(f"{k} {v * 1e3:.2f} ms"
                                                                 for k, v in chosen["seconds"].items()) + ")")
    _cpu_choice["last"] = (setting, threads > CPU_LINALG_THREADS, lib)
    return lib


def _say(level: int, message: str) -> None:
    """Log a :func:`cpu_linalg` decision once a process."""
    said = _cpu_choice.setdefault("said", set())
    if message not in said:
        said.add(message)
        log.log(level, message)


#: The most torch threads with which numpy's linear algebra may be chosen (:func:`cpu_linalg`): torch's
#: intra-op pool (OpenMP, whose idle threads spin before they sleep) and OpenBLAS's pool, both awake in one
#: process, take the cores from each other. Measured (AMD EPYC, 2 cores, both pools at 2 threads): a float32 →
#: float64 copy of a 1000×64 layer 3.8 ms instead of 12 µs, its ESD 8.6 ms instead of 0.26 ms, all-MiniLM-L6-v2
#: 672 ms with numpy's against 389 ms with torch's (numpy's on one thread: 424 ms).
CPU_LINALG_THREADS = 1


def cpu_linalg_chosen() -> str | None:
    """The library :func:`cpu_linalg` last gave in this process, or None when no CPU decomposition has run
    yet (for provenance: ``--out`` files record it, with the thread count)."""
    last = _cpu_choice.get("last")
    return last[2] if last is not None else None


def set_cpu_threads(n: int) -> None:
    """Use ``n`` threads (≥ 1) in both CPU libraries :func:`cpu_linalg` chooses between: torch's intra-op
    pool and the BLAS numpy loaded (OpenBLAS's pool, through ``threadpoolctl``), so that neither
    oversubscribes the CPUs a survey actor was given."""
    import threadpoolctl

    n = max(1, int(n))
    torch.set_num_threads(n)
    threadpoolctl.threadpool_limits(n, user_api="blas")


def choose_cpu_linalg(*, rows: int = 1024, size: int = 256, reps: int = 5, margin: float = 0.9) -> dict:
    """Time one float64 Gram product and eigvalsh (``rows`` × ``size``) in torch and in numpy, each the
    best of ``reps`` after a warm-up, interleaved (~40 ms in all). Both run on one thread and are timed
    by that thread's CPU clock (``time.thread_time``), so other processes on a busy machine barely move the
    figures. numpy is chosen only when its time is ≤ ``margin`` × torch's, so that a near tie keeps torch,
    the default before the measurement existed; :func:`cpu_linalg` measures and uses it only while torch runs
    one thread (:data:`CPU_LINALG_THREADS`: with more, the two libraries' thread pools contend).

    Returns
    -------
    dict
        ``library`` (``torch`` / ``numpy``) and ``seconds`` ({library: best CPU seconds}).
    """
    import time

    import threadpoolctl

    W = np.random.default_rng(0).standard_normal((rows, size))
    Wt = torch.from_numpy(W)

    def with_torch():
        torch.linalg.eigvalsh(_gram_torch(Wt))

    def with_numpy():
        np.linalg.eigvalsh(_gram_numpy(Wt).numpy(), UPLO="L")

    runs = {"torch": with_torch, "numpy": with_numpy}
    seconds = dict.fromkeys(runs, math.inf)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            for fn in runs.values():
                fn()
            for _ in range(reps):
                for name, fn in runs.items():
                    t0 = time.thread_time()
                    fn()
                    seconds[name] = min(seconds[name], time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    lib = "numpy" if seconds["numpy"] <= margin * seconds["torch"] else "torch"
    return {"library": lib, "seconds": seconds}


def _gram(S: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """X = SᵀS (or SSᵀ when S is wide), shape (m, m), m = min(S.shape), accumulated by chunks (on CPU its
    lower triangle only: :func:`_gram_into`)."""
    rows, cols = S.shape
    tall = rows >= cols
    m, length = (cols, rows) if tall else (rows, cols)
    step = max(1, CHUNK_ELEMS // m)
    if rows * cols > BATCH_MAX_LAYER_ELEMS:  # (smaller ones in one product, bit for bit as when batched)
        numpy = device.type == "cpu" and cpu_linalg() == "numpy"
        step = max(1, min(CHUNK_ROWS_NUMPY if numpy else CHUNK_ROWS, step))
    if step >= length:  # one chunk
        C = _converted(S, device, dtype)
        return _gram_into(C if tall else C.T)
    G = torch.zeros(m, m, dtype=dtype, device=device)
    for start in range(0, length, step):
        C = _converted(S[start:start + step] if tall else S[:, start:start + step], device, dtype)
        _gram_into(C if tall else C.T, G)
    return G


def _check_gram_finite(G: torch.Tensor) -> None:
    """Non-finite weights show on the Gram diagonal: each entry is a column's (row's) sum of squares,
    NaN or inf as soon as one of its elements is (or when a square overflows float64). O(M), not O(N·M)."""
    if not bool(torch.isfinite(torch.diagonal(G, dim1=-2, dim2=-1)).all()):
        raise NonFiniteError()


def _out_of_range(top: float, M: int, dtype: torch.dtype) -> bool:
    """Whether a spectrum whose largest column sum of squares (or λ_max) is ``top`` leaves the range of
    ``dtype``: non-finite, above finfo.max/(2M) (λ_max ≤ M·top would overflow) or below finfo.tiny/eps
    (the eigenvalues that count, ≥ λ_max·eps, would be subnormal; 0 also for a zero matrix, whose max|w|
    then says so)."""
    fi = torch.finfo(dtype)
    return not (fi.tiny / fi.eps <= top <= fi.max / (2 * M))


def _range_exponent(S: torch.Tensor) -> int:
    """k with max|w| = m·2^k, m ∈ [0.5, 1) (0 for a zero matrix), after checking that S is finite.

    Raises
    ------
    NonFiniteError
        S holds NaN or inf.
    """
    check_finite(S)
    amax = float(S.abs().max()) if S.numel() else 0.0
    return math.frexp(amax)[1] if amax > 0 else 0


def _scaled(S: torch.Tensor, k: int) -> torch.Tensor:
    """S·2^−k in float64 (exact: a power of two changes no significand)."""
    return torch.ldexp(S.to(torch.float64), torch.tensor(-float(k), dtype=torch.float64))


def compute_esd(slices: torch.Tensor, eig_scale: float = 1.0, *, device: str | torch.device | None = "cpu",
                method: str = "gram", precision: str = "float64") -> ESD:
    """Eigenvalues of X = WᵀW for each slice of a stack, pooled into one ESD.

    Parameters
    ----------
    slices : torch.Tensor, shape (rf, rows, cols), any float dtype (bf16, fp16, fp8 are upcast)
        The layer's matrices; each is oriented N ≥ M internally (the smaller side gives X).
    eig_scale : float
        Multiplier of every eigenvalue (0.5 for convolutions, WW's ``conv2d_norm``).
    device : str or torch.device or None
        ``cpu``, ``cuda``, ``cuda:1``, or ``None``/``"auto"`` for CUDA when available.
    method : {"gram", "svd"}
        See the module docstring.
    precision : {"float64", "float32"}
        Arithmetic precision; ``float32`` is faster and less exact (``benchmarks/bench_analyze.py``
        reports its |Δalpha| against float64).

    Returns
    -------
    ESD

    Raises
    ------
    hubscan.errors.NonFiniteError
        The slices hold NaN or inf.
    ValueError
        Unknown method / precision, or CUDA requested but absent.
    """
    if method not in ("gram", "svd"):
        raise ValueError(f"unknown eigenvalue method {method!r} (use 'gram' or 'svd')")
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(precision)
    if dtype is None:
        raise ValueError(f"unknown precision {precision!r} (use 'float64' or 'float32')")
    dev = resolve_device(device)
    if slices.dim() == 2:
        slices = slices.unsqueeze(0)
    rf, rows, cols = slices.shape
    N, M = max(rows, cols), min(rows, cols)
    eps = torch.finfo(dtype).eps

    k = 0
    if method == "gram":
        def gram(src):
            if rf == 1:
                return _gram(src[0], dev, dtype).unsqueeze(0)
            S = src.to(device=dev, dtype=dtype)
            return _gram_into(S if rows >= cols else S.mT)

        G = gram(slices)
        if _out_of_range(float(torch.diagonal(G, dim1=-2, dim2=-1).max()), M, dtype):  # NaN too
            k = _range_exponent(slices)
            if k:
                del G
                G = gram(_scaled(slices, k))
        ev = _eigvalsh(G).clamp_min_(0.0)  # (rf, M), ascending
        del G
        rank_per_slice = (ev > ev[:, -1:] * (N * eps)).sum(dim=1)
    else:
        S = slices.to(device=dev, dtype=dtype)
        if not bool(torch.isfinite(S).all()):  # NaN / inf, or float64 weights beyond a float32 precision
            k = _range_exponent(slices)
            S = _scaled(slices, k).to(device=dev, dtype=dtype)
        sv = torch.linalg.svdvals(S)  # (rf, M), descending
        top = float(sv[:, 0].max())
        if not k and _out_of_range(top * top, M, dtype):
            k = _range_exponent(slices)
            if k:
                sv = torch.linalg.svdvals(_scaled(slices, k).to(device=dev, dtype=dtype))
        del S
        rank_per_slice = (sv > sv[:, :1] * (N * eps)).sum(dim=1)
        ev = sv * sv
    return _pooled(ev, rank_per_slice, N, eig_scale, method, dev, precision, k)


def _pooled(ev: torch.Tensor, rank_per_slice: torch.Tensor, N: int, eig_scale: float, method: str,
            dev: torch.device, precision: str, k: int) -> ESD:
    """The ESD of one layer from its slices' eigenvalues ``ev`` (rf, M) (ascending for ``gram``)."""
    rf, M = ev.shape
    eps = float(torch.finfo(ev.dtype).eps)
    if eig_scale != 1.0:
        ev = ev * eig_scale
    evals = ev.reshape(-1).to("cpu", torch.float64).numpy()
    if rf > 1 or method != "gram":  # eigvalsh's are ascending already
        evals = np.sort(evals)
    rank_loss = int(M * rf - int(rank_per_slice.sum()))
    lam_max = float(evals[-1])
    if method == "gram":
        matrix_rank = int(np.count_nonzero(evals > lam_max * N * eps))
    else:
        sv_all = np.sqrt(evals)
        matrix_rank = int(np.count_nonzero(sv_all > sv_all[-1] * N * eps))
    return ESD(evals=evals, sv_max=float(np.sqrt(lam_max)), sv_min=float(np.sqrt(evals[0])),
               rank_loss=rank_loss, matrix_rank=matrix_rank, method=method, device=str(dev),
               precision=precision, scale_exp=k)


#: Layers decomposed together by :func:`compute_esds` at most, and the elements of their weights at most
#: (the batch's float64 copy: 64 MB); a layer larger than :data:`BATCH_MAX_LAYER_ELEMS` goes alone.
BATCH_MAX_LAYERS = 32
BATCH_MAX_ELEMS = 8 * 1024 * 1024
BATCH_MAX_LAYER_ELEMS = 1024 * 1024
#: On CUDA (:func:`batch_limits`): layers of up to 64M elements (an 11008 × 4096 MLP matrix is 45M) in
#: batches of up to 256M elements (their float64 copy: 2 GiB of device memory), grouped by shape over a
#: window of :data:`BATCH_WINDOW` tensors, not only consecutive ones.
CUDA_BATCH_MAX_ELEMS = 256 * 1024 * 1024
CUDA_BATCH_MAX_LAYER_ELEMS = 64 * 1024 * 1024
#: Tensors :func:`hubscan.analysis.analyze_entries` looks over for same-shape layers on CUDA (a 7B
#: transformer: 7 matrices a block, so about 9 blocks' q, k, v, o … batched together).
BATCH_WINDOW = 64


def batch_limits(device: torch.device) -> tuple[int, int, int, bool]:
    """(layers per batch, elements per batch, elements per layer, group by shape over a window) for
    ``device``: small same-shape runs on CPU (where a batched call saves only per-call overhead), large
    shape groups on CUDA (where it also fills the device)."""
    if device.type == "cuda":
        return BATCH_MAX_LAYERS, CUDA_BATCH_MAX_ELEMS, CUDA_BATCH_MAX_LAYER_ELEMS, True
    return BATCH_MAX_LAYERS, BATCH_MAX_ELEMS, BATCH_MAX_LAYER_ELEMS, False


def compute_esds(stacks: Sequence[torch.Tensor], eig_scale: float = 1.0, *,
                 device: str | torch.device | None = "cpu", precision: str = "float64") -> list[ESD | None]:
    """The ESDs of several same-shape layers (experts, heads, a model's repeated blocks) in one batched Gram
    product and one batched ``torch.linalg.eigvalsh`` call (method ``gram``), on CPU as on CUDA.

    Each layer's ESD equals :func:`compute_esd`'s up to the summation order of the batched product
    (``tests/test_eigen.py``: 1e-12 relative; measured ≤ 1e-15). A layer whose Gram matrix is out of
    range — NaN or inf weights, or a spectrum beyond the precision (module docstring, "Range") — gets
    ``None``: decompose it alone with :func:`compute_esd`, which raises or rescales.

    Parameters
    ----------
    stacks : sequence of torch.Tensor, each shape (rf, rows, cols), all the same shape, any float dtype
        The layers' slices (``LayerPlan.extract``).
    eig_scale, device, precision
        As :func:`compute_esd`.

    Returns
    -------
    list of ESD or None
        In the order of ``stacks``.

    Raises
    ------
    ValueError
        The stacks differ in shape, unknown precision, or CUDA requested but absent.
    """
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(precision)
    if dtype is None:
        raise ValueError(f"unknown precision {precision!r} (use 'float64' or 'float32')")
    stacks = [s.unsqueeze(0) if s.dim() == 2 else s for s in stacks]
    if not stacks:
        return []
    if any(s.shape != stacks[0].shape for s in stacks):
        raise ValueError("batched eigenvalues need layers of one shape")
    dev = resolve_device(device)
    B, (rf, rows, cols) = len(stacks), stacks[0].shape
    N, M = max(rows, cols), min(rows, cols)
    S = _stacked(stacks, dev, dtype).reshape(B * rf, rows, cols)
    G = _gram_into(S if rows >= cols else S.mT)
    del S
    top = torch.diagonal(G, dim1=-2, dim2=-1).reshape(B, -1).amax(dim=1).tolist()  # NaN when any is
    ok = [not _out_of_range(t, M, dtype) for t in top]
    out: list[ESD | None] = [None] * B
    if any(ok):
        keep = torch.tensor(ok, device=dev).repeat_interleave(rf)
        ev = _eigvalsh(G[keep] if not all(ok) else G).clamp_min_(0.0).reshape(-1, rf, M)
        del G
        eps = torch.finfo(dtype).eps
        for i, e in zip((i for i, good in enumerate(ok) if good), ev):
            out[i] = _pooled(e, (e > e[:, -1:] * (N * eps)).sum(dim=1), N, eig_scale, "gram", dev, precision, 0)
    return out


def top_eigenvalues(esd: ESD, k: int, N: int) -> ESD:
    """The ESD of a matrix known to have rank ≤ k: its k largest eigenvalues only.

    As WeightWatcher 0.7.7 for LoRA updates ΔW = B·A (``peft=True``: a truncated SVD with
    ``num_components`` = r, so ``num_evals`` = r and the rank and sv_min are those of the r values).

    Parameters
    ----------
    esd : ESD
        The full ESD (ascending eigenvalues).
    k : int
        Rank bound; ``k ≥ len(esd.evals)`` returns ``esd`` unchanged.
    N : int
        The larger dimension (for the numerical-rank tolerance λ > λ_max·N·eps).

    Returns
    -------
    ESD
    """
    if k <= 0 or k >= len(esd.evals):
        return esd
    evals = esd.evals[-k:]
    eps = float(np.finfo(np.float64 if esd.precision == "float64" else np.float32).eps)
    rank = int(np.count_nonzero(evals > evals[-1] * N * eps))
    return dataclasses.replace(esd, evals=evals, sv_min=float(np.sqrt(evals[0])), rank_loss=k - rank,
                               matrix_rank=rank)


def gram_eigvalsh_batched(mats, *, device: str | torch.device | None = "cpu", precision: str = "float64",
                          chunk: int = 8) -> list[np.ndarray]:
    """Eigenvalues of X = WᵀW for many same-shape matrices: :func:`compute_esds` on ``chunk`` of them at a
    time, each copied to the device by :func:`stage` (pinned host memory, a copy stream on CUDA).

    Parameters
    ----------
    mats : sequence of torch.Tensor, each shape (rows, cols), all the same shape, any float dtype
        Host (or device) tensors.
    device : str or torch.device or None
        As :func:`compute_esd`.
    precision : {"float64", "float32"}
        Arithmetic of the Gram product and eigvalsh.
    chunk : int
        Matrices per batched call (bounds device memory at chunk·M² elements plus the chunk's W).

    Returns
    -------
    list of ndarray of float64, each shape (M,)
        Ascending, clipped at 0, in the order of ``mats`` (no eig_scale, no rank bookkeeping); a matrix
        out of range is decomposed alone (:func:`compute_esd` rescales it).

    Raises
    ------
    ValueError
        Shapes differ, unknown precision, or CUDA requested but absent.
    NonFiniteError
        A matrix holds NaN or inf.
    """
    mats = list(mats)
    if any(m.dim() != 2 or m.shape != mats[0].shape for m in mats):
        raise ValueError("batched eigenvalues need 2-D matrices of one shape")
    dev = resolve_device(device)
    out: list[np.ndarray] = []
    for start in range(0, len(mats), chunk):
        group = [stage(m, dev) for m in mats[start:start + chunk]]
        for W, esd in zip(group, compute_esds(group, device=dev, precision=precision)):
            out.append((esd or compute_esd(W, device=dev, precision=precision)).evals)
    return out


class _Copies(threading.local):
    """This thread's CUDA copy stream per device (the prefetch thread's, in :func:`stage`)."""

    streams: dict


_copies = _Copies()


def stage(tensor: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """``tensor`` on ``device``, ready: on CUDA copied from pinned (page-locked) host memory on this thread's
    copy stream, which this thread then waits for — called in the prefetch thread
    (:func:`hubscan.analysis.analyze_entries`), the copy of the next layer overlaps the current one's
    decomposition on the compute stream. On CPU (or for a tensor already there) it is returned as is.

    Parameters
    ----------
    tensor : torch.Tensor
        Any shape and dtype, on the host (or already on ``device``).
    device : str or torch.device or None
        As :func:`compute_esd`.

    Returns
    -------
    torch.Tensor
        The same values, dtype and shape on ``device``. A CUDA result is allocated on the copy stream and
        recorded on the device's default stream (where hubscan computes), so the caching allocator does not
        hand its block to the next copy before the decomposition that reads it has run.

    Raises
    ------
    ValueError
        CUDA requested but absent.
    """
    dev = resolve_device(device)
    if dev.type != "cuda" or tensor.device == dev:
        return tensor
    streams = getattr(_copies, "streams", None)
    if streams is None:
        streams = _copies.streams = {}
    stream = streams.get(dev)
    if stream is None:
        stream = streams[dev] = torch.cuda.Stream(device=dev)
    src = tensor if tensor.is_pinned() else tensor.contiguous().pin_memory()
    with torch.cuda.stream(stream):
        out = src.to(dev, non_blocking=True)
    stream.synchronize()  # this (prefetch) thread waits; the compute stream never does
    out.record_stream(torch.cuda.default_stream(dev))  # its block is not reused while the compute stream reads it
    return out


#: The eigh backends :func:`choose_eigh_backend` times (``torch.backends.cuda.preferred_linalg_library``).
EIGH_BACKENDS = ("cusolver", "magma")


def fastest_backend(seconds: dict) -> str:
    """The backend with the smallest finite time in ``seconds`` ({name: seconds}); the first of
    :data:`EIGH_BACKENDS` present when none finished (a failed backend is timed as inf).

    Raises
    ------
    ValueError
        ``seconds`` is empty.
    """
    if not seconds:
        raise ValueError("no eigh backend was timed")
    finite = {k: v for k, v in seconds.items() if math.isfinite(v)}
    return min(finite, key=finite.get) if finite else next(iter(seconds))


def choose_eigh_backend(device: str | torch.device | None, *, size: int = 256, batch: int = 8,
                        reps: int = 3) -> dict:
    """Measure ``torch.linalg.eigvalsh`` under each CUDA linear-algebra backend on a small float64 batch and
    keep the faster (``torch.backends.cuda.preferred_linalg_library``): torch 2.11+ CUDA 13 builds have been
    reported 30–130× slower in eigh than older builds (pytorch issue 183806), so the choice is measured on
    the machine, at actor start, not assumed.

    Parameters
    ----------
    device : str or torch.device or None
        A CPU device chooses nothing (LAPACK).
    size, batch, reps : int
        The batch timed: ``batch`` symmetric ``size`` × ``size`` matrices, best of ``reps`` after a warm-up.

    Returns
    -------
    dict
        ``backend`` (kept: ``cusolver`` / ``magma``, or ``lapack`` on CPU) and ``seconds``
        ({backend: best seconds}, inf for a backend that failed).
    """
    import time

    dev = resolve_device(device)
    if dev.type != "cuda":
        return {"backend": "lapack", "seconds": {}}
    g = torch.Generator(device=dev).manual_seed(0)
    A = torch.randn(batch, size, size, generator=g, device=dev, dtype=torch.float64)
    A = A @ A.transpose(-1, -2)
    seconds = {}
    for name in EIGH_BACKENDS:
        try:
            torch.backends.cuda.preferred_linalg_library(name)
            torch.linalg.eigvalsh(A)
            torch.cuda.synchronize(dev)
            best = math.inf
            for _ in range(reps):
                t0 = time.perf_counter()
                torch.linalg.eigvalsh(A)
                torch.cuda.synchronize(dev)
                best = min(best, time.perf_counter() - t0)
            seconds[name] = best
        except RuntimeError:  # a build without MAGMA
            seconds[name] = math.inf
    backend = fastest_backend(seconds)
    torch.backends.cuda.preferred_linalg_library(backend)
    return {"backend": backend, "seconds": seconds}
