"""Eigenvalues: ``compute_esd`` (gram and svd) against ``numpy.linalg.svd`` in float64.

Measured on this suite's matrices (7 all-MiniLM-L6-v2 matrices, 6 Student-t matrices with tail index
1.2 and 2.5; λ = σ², reference numpy float64 SVD):

======================================  ===========  ==========
error                                   gram         svd
======================================  ===========  ==========
top-10 eigenvalues, max relative        1.4e-14      9.7e-15
10 smallest, max absolute / λmax        4.2e-15      3.6e-17
all eigenvalues, max absolute / λmax    8.3e-15      —
======================================  ===========  ==========

So the top of the spectrum (everything the power-law fit sees) is exact to ~10 ulps with either
method, while Gram eigenvalues carry an absolute error of order eps·λmax (bounded here by the
standard N·eps·λmax of forming WᵀW in float64): eigenvalues below ~1e-13·λmax are noise with
``gram`` (the near-singular MiniLM ``layer.5.attention.output.dense`` has λmin/λmax = 1.5e-10, so its
smallest eigenvalue is known to ~1e-5 relative from ``gram`` and to ~1e-7 from ``svd``).
``precision="float32"``: top-10 relative error ~1e-6; on MiniLM |Δalpha| vs float64 is at most
6e-5 (median 2e-6), on extreme Student-t 1.2 matrices up to ~2e-3 (xmin moves).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hubscan
from hubscan.esd import eigen
from hubscan.esd.eigen import NonFiniteError, compute_esd
from hubscan.esd.matrices import plan_matrices

EPS = np.finfo(np.float64).eps
EPS32 = float(np.finfo(np.float32).eps)

MINILM = (
    "embeddings.position_embeddings.weight",          # 512 × 384
    "encoder.layer.0.attention.self.query.weight",    # 384 × 384
    "encoder.layer.5.attention.output.dense.weight",  # 384 × 384, λmin/λmax = 1.5e-10
    "encoder.layer.2.intermediate.dense.weight",      # 1536 × 384
    "encoder.layer.2.output.dense.weight",            # 384 × 1536 (wide)
    "pooler.dense.weight",                            # 384 × 384
    "embeddings.word_embeddings.weight",              # 30522 × 384: the chunked Gram path (11.7M elements)
)


@pytest.fixture(params=eigen.CPU_LINALG)
def cpu_lib(request, monkeypatch):
    """Each CPU library :func:`hubscan.esd.eigen.cpu_linalg` may choose, in turn (fixed for the test)."""
    monkeypatch.setitem(eigen._cpu_choice, "setting", request.param)
    return request.param


def numpy_evals(W) -> np.ndarray:
    W = W.numpy() if isinstance(W, torch.Tensor) else W
    return np.sort(np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2)


@pytest.fixture(scope="module")
def matrices(minilm_dir):
    from safetensors import safe_open

    mats = {}
    with safe_open(str(minilm_dir / "model.safetensors"), framework="pt") as f:
        for k in MINILM:
            mats[k] = f.get_tensor(k)
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(1000, 300), (500, 500), (300, 1200)]):
        mats[f"student2.5_{i}"] = torch.from_numpy(rng.standard_t(2.5, size=shape))
        mats[f"student1.2_{i}"] = torch.from_numpy(rng.standard_t(1.2, size=shape))
    return {k: (W, numpy_evals(W)) for k, W in mats.items()}


def _errors(e, ref):
    lmax = ref[-1]
    return (np.max(np.abs(e[-10:] - ref[-10:]) / ref[-10:]),   # top-10 relative
            np.max(np.abs(e[:10] - ref[:10])) / lmax,          # 10 smallest, absolute / λmax
            np.max(np.abs(e - ref)) / lmax)                    # all, absolute / λmax


@pytest.mark.parametrize("method,lib", [("gram", "torch"), ("gram", "numpy"), ("svd", "torch")])
def test_against_numpy_svd(matrices, method, lib, monkeypatch):
    monkeypatch.setitem(eigen._cpu_choice, "setting", lib)  # (svd is torch's on every device)
    worst = np.zeros(3)
    for name, (W, ref) in matrices.items():
        if method == "svd" and name == "embeddings.word_embeddings.weight":
            continue  # 1.5 s of SVD; the Gram path is what runs on it by default
        esd = compute_esd(W, method=method)
        N, M = max(W.shape), min(W.shape)
        assert esd.evals.shape == (M,) and esd.evals.dtype == np.float64
        assert np.all(np.diff(esd.evals) >= 0) and esd.evals[0] >= 0
        top, low, full = _errors(esd.evals, ref)
        worst = np.maximum(worst, (top, low, full))
        assert top <= 1e-12, name
        assert full <= N * EPS, name  # |Δλ| ≤ N·eps·λmax
        if method == "svd":
            assert low <= 1e-15, name  # SVD resolves the bottom of the spectrum to ~eps·σmax²
        assert esd.sv_max == pytest.approx(np.sqrt(ref[-1]), rel=1e-13)
        assert esd.method == method and esd.precision == "float64" and esd.device == "cpu"
        assert esd.rank_loss == 0 and esd.matrix_rank == M  # all full rank
    print(f"\n[{method}] max rel error top-10 {worst[0]:.1e}; max abs error / λmax: smallest-10 "
          f"{worst[1]:.1e}, all {worst[2]:.1e}")


def test_gram_and_svd_agree_where_it_matters(matrices):
    """The power-law fit only sees the top of the spectrum: it is the same from either method."""
    from hubscan.esd.powerlaw import fit_powerlaw

    for name, (W, ref) in matrices.items():
        if name == "embeddings.word_embeddings.weight":
            continue
        g = fit_powerlaw(compute_esd(W, method="gram").evals)
        s = fit_powerlaw(compute_esd(W, method="svd").evals)
        r = fit_powerlaw(ref)
        assert g.xmin == pytest.approx(r.xmin, rel=1e-12) and s.xmin == pytest.approx(r.xmin, rel=1e-12)
        assert g.alpha == pytest.approx(r.alpha, rel=1e-10) and s.alpha == pytest.approx(r.alpha, rel=1e-10)
        assert g.num_pl_spikes == s.num_pl_spikes == r.num_pl_spikes


@pytest.mark.parametrize("name", ["encoder.layer.2.intermediate.dense.weight", "encoder.layer.2.output.dense.weight"])
def test_chunked_gram(matrices, name, monkeypatch, cpu_lib):
    """Gram accumulated over row (tall) or column (wide) chunks equals the one-shot product."""
    W, ref = matrices[name]
    whole = compute_esd(W).evals
    monkeypatch.setattr(eigen, "CHUNK_ELEMS", 384 * 100)  # 16 chunks of 100 rows / columns
    chunked = compute_esd(W).evals
    assert np.max(np.abs(chunked - whole)) <= max(W.shape) * EPS * whole[-1]
    assert _errors(chunked, ref)[0] <= 1e-12


def test_precision_float32(matrices):
    for name in ("encoder.layer.2.intermediate.dense.weight", "student2.5_1"):
        W, ref = matrices[name]
        esd = compute_esd(W, precision="float32")
        assert esd.precision == "float32" and esd.evals.dtype == np.float64
        N = max(W.shape)
        top, _, full = _errors(esd.evals, ref)
        assert top <= 1e-5  # measured ~1e-6
        assert full <= N * EPS32
        assert full > 1e3 * N * EPS  # really float32: far from float64 accuracy
    with pytest.raises(ValueError, match="precision"):
        compute_esd(torch.ones(4, 4), precision="float16")
    with pytest.raises(ValueError, match="method"):
        compute_esd(torch.ones(4, 4), method="eig")


def test_precision_float32_alpha(matrices):
    """How far the fit moves in float32. Measured: all 39 MiniLM layers through ``hubscan.analyze``,
    max |Δalpha| 6.2e-5 (median 2.1e-6); this suite's matrices ≤ 2e-5. Student-t 1.2 matrices (λmax/λ
    spans ~1e8 while a float32 Gram resolves only ~1e-5·λmax) can move more: one 300 × 1200 draw
    (default_rng(0), third t1.2 draw after three t2.5 ones) gave 2.2e-3, its xmin shifting by 5 eigenvalues."""
    from hubscan.esd.powerlaw import fit_powerlaw

    worst = {"moderate": 0.0, "extreme": 0.0}
    for name, (W, ref) in matrices.items():
        a = fit_powerlaw(compute_esd(W).evals)
        b = fit_powerlaw(compute_esd(W, precision="float32").evals)
        assert b.status == "success"
        key = "extreme" if name.startswith("student1.2") else "moderate"
        worst[key] = max(worst[key], abs(a.alpha - b.alpha))
    print(f"\n[float32] max |Δalpha| vs float64: {worst}")
    assert 0 < worst["moderate"] < 1e-4
    assert worst["extreme"] < 1e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
                                   torch.float8_e4m3fnuz, torch.float8_e5m2fnuz])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_low_precision_inputs_are_upcast(dtype, method):
    torch.manual_seed(0)
    W = torch.randn(300, 100).to(dtype)
    exact = W.to(torch.float64)
    esd = compute_esd(W, method=method)
    # the stored values, upcast exactly, then float64 arithmetic: identical to a float64 input
    np.testing.assert_array_equal(esd.evals, compute_esd(exact, method=method).evals)
    ref = numpy_evals(exact)
    assert _errors(esd.evals, ref)[2] <= 300 * EPS
    assert esd.precision == "float64"


def test_low_precision_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    W = torch.randn(200, 64)
    kinds = ("bfloat16", "float16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz")
    save_file({f"{t}.weight": W.to(getattr(torch, t)) for t in kinds}, str(tmp_path / "lp.safetensors"))
    rows = {r["name"]: r for r in hubscan.analyze(tmp_path / "lp.safetensors", mp_fit=False).rows}
    from hubscan.esd.powerlaw import fit_powerlaw

    for t in kinds:
        r = rows[f"{t}.weight"]
        assert r["status"] == "success" and r["dtype"] == t
        ref = numpy_evals(W.to(getattr(torch, t)).to(torch.float64))
        assert r["lambda_max"] == pytest.approx(ref[-1], rel=1e-13)
        assert r["alpha"] == pytest.approx(fit_powerlaw(ref).alpha, rel=1e-10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_non_finite_raises(bad, method, monkeypatch):
    W = torch.randn(64, 32)
    W[5, 7] = bad
    with pytest.raises(NonFiniteError):
        compute_esd(W, method=method)
    with pytest.raises(NonFiniteError):  # a conv stack (rf > 1)
        compute_esd(torch.stack([torch.randn(64, 32), W]), 0.5, method=method)
    with pytest.raises(NonFiniteError):
        compute_esd(W.to(torch.float16), method=method)
    if method == "gram":  # in a later chunk of the accumulated Gram matrix
        monkeypatch.setattr(eigen, "CHUNK_ELEMS", 32 * 4)
        with pytest.raises(NonFiniteError):
            compute_esd(W, method=method)
    assert issubclass(NonFiniteError, ValueError)


def test_non_finite_layer_fails_alone(tmp_path):
    from safetensors.torch import save_file

    good, bad = torch.randn(100, 40), torch.randn(100, 40)
    bad[3, 4] = float("nan")
    save_file({"good.weight": good, "bad.weight": bad}, str(tmp_path / "m.safetensors"))
    res = hubscan.analyze(tmp_path / "m.safetensors")
    rows = {r["name"]: r for r in res.rows}
    assert rows["bad.weight"]["status"] == "failed" and "non-finite" in rows["bad.weight"]["reason"]
    assert rows["good.weight"]["status"] == "success"
    assert res.summary["num_failed"] == 1 and res.summary["num_success"] == 1


def test_conv_slice_orientation():
    """Conv2d(64, 32, 2): weight (32, 64, 2, 2); each slice W[:, :, i, j] is 32 × 64, oriented N=64, M=32."""
    torch.manual_seed(0)
    W = torch.nn.Conv2d(64, 32, 2).weight.detach()
    assert tuple(W.shape) == (32, 64, 2, 2)
    (plan,) = plan_matrices("conv.weight", W.shape, "float32")
    assert (plan.layer_type, plan.N, plan.M, plan.rf, plan.eig_scale) == ("conv2d", 64, 32, 4, 0.5)
    slices = plan.extract(W)
    assert tuple(slices.shape) == (4, 32, 64)
    esd = compute_esd(slices, plan.eig_scale)
    per_slice = [np.linalg.svd(W[:, :, i, j].double().numpy(), compute_uv=False) for i in range(2) for j in range(2)]
    ref = np.sort(np.concatenate(per_slice) ** 2 * 0.5)
    assert len(esd.evals) == 4 * 32 == plan.num_evals
    assert _errors(esd.evals, ref)[2] <= 64 * EPS
    assert esd.sv_max == pytest.approx(np.sqrt(0.5) * max(s.max() for s in per_slice), rel=1e-13)
    assert esd.sv_min == pytest.approx(np.sqrt(0.5) * min(s.min() for s in per_slice), rel=1e-9)
    assert esd.rank_loss == 0 and esd.matrix_rank == 128
    # Keras layout (kh, kw, in, out) of the same kernel: same plan sizes, same eigenvalues
    K = W.permute(2, 3, 1, 0).contiguous()
    (kplan,) = plan_matrices("conv.kernel", K.shape, "float32")
    assert (kplan.N, kplan.M, kplan.rf) == (64, 32, 4)
    np.testing.assert_allclose(compute_esd(kplan.extract(K), kplan.eig_scale).evals, esd.evals,
                               rtol=0, atol=64 * EPS * esd.evals[-1])
    # svd method agrees
    assert _errors(compute_esd(slices, plan.eig_scale, method="svd").evals, ref)[2] <= 64 * EPS


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_rank_deficient(method, cpu_lib):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((400, 20)) @ rng.standard_normal((20, 150))
    esd = compute_esd(torch.from_numpy(W), method=method)
    assert esd.matrix_rank == np.linalg.matrix_rank(W) == 20
    assert esd.rank_loss == 130
    assert np.all(esd.evals[:130] <= 150 * EPS * esd.evals[-1])
    zero = compute_esd(torch.zeros(30, 10), method=method)
    assert np.all(zero.evals == 0) and zero.matrix_rank == 0 and zero.rank_loss == 10 and zero.sv_max == 0


# -- batches of same-shape layers -------------------------------------------------------------------

@pytest.mark.parametrize("shape,rf", [((96, 40), 1), ((40, 96), 1), ((24, 16), 9)])
def test_batched_equals_one_at_a_time(shape, rf, cpu_lib):
    """``compute_esds``: one batched Gram product and eigvalsh for many layers, each ESD equal to
    ``compute_esd``'s to 1e-12 (of λmax); a layer with NaN / inf or beyond float64 is left to the
    one-at-a-time path (None)."""
    from hubscan.esd.eigen import compute_esds

    g = torch.Generator().manual_seed(rf)
    stacks = [torch.randn(rf, *shape, generator=g, dtype=torch.float64) * (i + 1) for i in range(6)]
    stacks[1] = stacks[1].to(torch.bfloat16)  # dtypes may differ: the batch upcasts
    stacks[2] = torch.distributions.StudentT(2.5).sample((rf, *shape)).double()
    stacks[3][0, 0, 0] = float("nan")
    stacks[4] = stacks[4] * 1e160
    scale = 0.5 if rf > 1 else 1.0
    got = compute_esds(stacks, scale)
    assert got[3] is None and got[4] is None
    for i in (0, 1, 2, 5):
        one, many = compute_esd(stacks[i], scale), got[i]
        assert np.abs(many.evals - one.evals).max() <= 1e-12 * one.evals[-1]
        assert (many.matrix_rank, many.rank_loss, many.scale_exp) == (one.matrix_rank, one.rank_loss, 0)
        assert many.sv_max == pytest.approx(one.sv_max, rel=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        compute_esds([stacks[0], stacks[0][:, :-1]])


def test_analyze_batches_same_shape_layers(tmp_path, monkeypatch):
    """``analyze`` decomposes runs of consecutive small same-shape layers together: every row as one at a
    time to 1e-12, a NaN layer in a run failed alone."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    t = torch.distributions.StudentT(3.0)
    sd = {f"blocks.{i}.{p}.weight": t.sample((64, 64) if p != "up" else (128, 64)) for i in range(4)
          for p in ("q", "k", "v", "up")}
    sd["blocks.2.k.weight"][3, 3] = float("nan")
    sd["conv.weight"] = torch.randn(16, 8, 3, 3, generator=g)
    save_file(sd, str(tmp_path / "m.safetensors"))
    calls = []
    real = eigen.compute_esds
    monkeypatch.setattr(eigen, "compute_esds", lambda stacks, *a, **k: calls.append(len(stacks)) or real(stacks, *a, **k))
    batched = hubscan.analyze(tmp_path / "m.safetensors")
    # the file's order (safetensors sorts names): k q | up | v k q | up | v k q (NaN k: decomposed again
    # alone) | up | v k q | up | v — runs of 64×64 layers, broken by each 128×64 up; a run of one goes alone
    assert calls == [2, 3, 3, 3]
    monkeypatch.setattr(eigen, "BATCH_MAX_LAYERS", 1)
    alone = hubscan.analyze(tmp_path / "m.safetensors")
    assert [r.key for r in batched.rows] == [r.key for r in alone.rows]
    for a, b in zip(batched.rows, alone.rows):
        assert (a.status, a.reason) == (b.status, b.reason), a.key
        for col, v in b.metrics.items():
            w = a.metrics[col]
            if isinstance(v, float) and np.isfinite(v):
                assert w == pytest.approx(v, rel=1e-12, abs=1e-300), (a.key, col)
            else:
                assert w == v or (isinstance(v, float) and np.isnan(w)), (a.key, col)
    assert {r.name: r.status for r in batched.rows}["blocks.2.k.weight"] == "failed"
    assert batched.summary["alpha"] == pytest.approx(alone.summary["alpha"], rel=1e-12)


# -- the CPU library: torch's or numpy's linear algebra --------------------------------------------------

def test_cpu_libraries_give_the_same_spectrum(matrices):
    """torch's and numpy's Gram product + eigvalsh agree to rounding on every matrix of the suite (both are
    checked against float64 SVD above); numpy's batch is its one-at-a-time path bit for bit."""
    worst = 0.0
    for name, (W, ref) in matrices.items():
        esds = {}
        for lib in eigen.CPU_LINALG:
            eigen._cpu_choice["setting"] = lib
            try:
                esds[lib] = compute_esd(W)
            finally:
                eigen._cpu_choice.clear()
        a, b = esds["torch"].evals, esds["numpy"].evals
        worst = max(worst, np.abs(a - b).max() / a[-1])
        assert np.abs(a - b).max() <= max(W.shape) * EPS * a[-1], name
        assert esds["torch"].matrix_rank == esds["numpy"].matrix_rank, name
    print(f"\nmax |λ_torch − λ_numpy| / λmax: {worst:.1e}")


def test_numpy_batch_is_bitwise_one_at_a_time(monkeypatch):
    monkeypatch.setitem(eigen._cpu_choice, "setting", "numpy")
    g = torch.Generator().manual_seed(3)
    stacks = [torch.randn(2, 48, 200, generator=g) * (i + 1) for i in range(4)]
    for one, many in zip([compute_esd(s) for s in stacks], eigen.compute_esds(stacks)):
        assert np.array_equal(one.evals, many.evals)


def test_cpu_linalg_setting(monkeypatch):
    """``HUBSCAN_CPU_LINALG`` fixes the library (no measurement); ``auto`` / unset measures once a process;
    anything else is refused in one line naming the variable."""
    monkeypatch.setattr(eigen, "_cpu_choice", {})
    monkeypatch.setattr(eigen, "choose_cpu_linalg", lambda **k: {"library": "numpy", "seconds": {}})
    for value, want in (("torch", "torch"), (" NumPy ", "numpy"), ("auto", "auto"), ("", "auto")):
        monkeypatch.setenv(eigen.CPU_LINALG_ENV, value)
        assert eigen.cpu_linalg_setting() == want
    monkeypatch.setenv(eigen.CPU_LINALG_ENV, "torch")
    assert eigen.cpu_linalg() == "torch"
    monkeypatch.setenv(eigen.CPU_LINALG_ENV, "numpy")
    assert eigen.cpu_linalg() == "torch"  # read once a process
    eigen._cpu_choice.clear()
    monkeypatch.delenv(eigen.CPU_LINALG_ENV)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert eigen.cpu_linalg() == "numpy"  # measured (the stub above; on one thread: the next test)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv(eigen.CPU_LINALG_ENV, "mkl")
    with pytest.raises(ValueError, match=r"^HUBSCAN_CPU_LINALG='mkl': use torch, numpy or auto$"):
        eigen.cpu_linalg_setting()


def test_measured_numpy_holds_on_one_torch_thread_only(monkeypatch, caplog):
    """``auto``: torch's linear algebra while torch runs several threads (its OpenMP pool and OpenBLAS's
    contend: CPU_LINALG_THREADS), nothing measured then; on one thread the measured choice (measured once),
    and torch's again when the count rises. A library fixed by HUBSCAN_CPU_LINALG is used whatever the count
    (numpy with several threads warned once). Each decision logged once; provenance gets the last library."""
    measured = []
    monkeypatch.setattr(eigen, "_cpu_choice", {})
    monkeypatch.setattr(eigen, "choose_cpu_linalg",
                        lambda **k: measured.append(1) or {"library": "numpy", "seconds": {"torch": 2e-3, "numpy": 1e-3}})
    monkeypatch.delenv(eigen.CPU_LINALG_ENV, raising=False)
    threads = torch.get_num_threads()
    try:
        assert eigen.cpu_linalg_chosen() is None
        with caplog.at_level("INFO", logger="hubscan.esd.eigen"):
            for n, want, times in ((2, "torch", 0), (1, "numpy", 1), (2, "torch", 1), (1, "numpy", 1)):
                torch.set_num_threads(n)
                assert eigen.cpu_linalg() == want and eigen.cpu_linalg_chosen() == want, n
                assert len(measured) == times, n
        assert [r.getMessage() for r in caplog.records] == [
            "CPU linear algebra: torch (2 threads; numpy's is measured and used on one thread only)",
            "CPU linear algebra: numpy (one thread; one-thread CPU time of a float64 1024×256 Gram product and "
            "eigvalsh: torch 2.00 ms, numpy 1.00 ms)"]
        caplog.clear()
        eigen._cpu_choice.clear()
        monkeypatch.setenv(eigen.CPU_LINALG_ENV, "numpy")
        torch.set_num_threads(2)
        with caplog.at_level("INFO", logger="hubscan.esd.eigen"):
            for _ in range(2):
                assert eigen.cpu_linalg() == "numpy"
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
            "WARNING", "CPU linear algebra: numpy (HUBSCAN_CPU_LINALG) with 2 torch threads: torch's and OpenBLAS's "
            "thread pools contend and slow each other (set OMP_NUM_THREADS=1, or unset HUBSCAN_CPU_LINALG)")]
    finally:
        torch.set_num_threads(threads)


def test_choose_cpu_linalg_rule():
    """Both libraries timed (finite, positive CPU seconds); numpy only when its time is within ``margin`` of
    torch's."""
    threads = torch.get_num_threads()
    got = eigen.choose_cpu_linalg(rows=256, size=64, reps=2)
    assert torch.get_num_threads() == threads  # timed on one thread, the process's count restored
    sec = got["seconds"]
    assert set(sec) == {"torch", "numpy"} and all(0 < v < 1 for v in sec.values())
    assert got["library"] == ("numpy" if sec["numpy"] <= 0.9 * sec["torch"] else "torch")
    assert eigen.choose_cpu_linalg(rows=256, size=64, reps=1, margin=0.0)["library"] == "torch"
    assert eigen.choose_cpu_linalg(rows=256, size=64, reps=1, margin=float("inf"))["library"] == "numpy"


def test_set_cpu_threads_limits_both_libraries():
    """A survey actor's thread count reaches torch's pool and the BLAS numpy loaded (a fresh process)."""
    import subprocess
    import sys

    code = ("import threadpoolctl, torch\nfrom hubscan.esd.eigen import set_cpu_threads\nset_cpu_threads(1)\n"
            "blas = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
            "print(torch.get_num_threads(), blas)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    threads, blas = out.stdout.split(maxsplit=1)
    assert threads == "1" and blas.strip() != "[]" and set(eval(blas)) == {1}


def test_cli_refuses_a_bad_cpu_linalg(monkeypatch, capsys, tmp_path):
    from hubscan import cli

    monkeypatch.setenv("HUBSCAN_CPU_LINALG", "mkl")
    with pytest.raises(SystemExit) as exc:
        cli.main(["analyze", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "HUBSCAN_CPU_LINALG='mkl': use torch, numpy or auto" in err and len(err.splitlines()) == 1
