"""The power-law fitter against WeightWatcher 0.7.7's ``WWFit``, powerlaw 2.0 and plain-numpy brute force.

* Default fit: equal to ``WWFit(x[x > 1e-5])`` (WW's default estimator) on random spectra of 20 …
  20,000 eigenvalues — Pareto, lognormal, eigenvalues of Gaussian / Student-t matrices, data with ties.
* Fewer than 20 eigenvalues: WW switches to a small-sample estimator; hubscan keeps the standard
  Clauset–Shalizi–Newman (CSN) estimate, checked here against a brute-force CSN written in the test.
* ``xmin_peak``, ``clip_xmax``, ``tpl``: independent checks (brute force restricted to the peak window;
  planted "fingers"; powerlaw 2.0's ``Truncated_Power_Law`` maximum likelihood at the same xmin).
* Degenerate inputs fail with a reason and NaN alpha.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from hubscan.esd.powerlaw import EVALS_THRESH, SMALL_N, fit_powerlaw

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
WWFit = pytest.importorskip("weightwatcher.WW_powerlaw").WWFit
powerlaw = pytest.importorskip("powerlaw")

RTOL = 1e-9


def csn_brute(x: np.ndarray, lo: float = -np.inf, hi: float = np.inf):
    """The CSN estimate by brute force: every data point (but the largest) in [lo, hi] as xmin,
    alpha = 1 + n/Σ ln(x/xmin), D = KS distance, first minimum of D. Returns (xmin, alpha, D, n), n the
    size of the tail from the chosen candidate on."""
    x = np.sort(x[x > EVALS_THRESH])
    with np.errstate(divide="ignore", invalid="ignore"):  # a tail of equal values has alpha = inf
        return _csn_loop(x, lo, hi)


def _csn_loop(x, lo, hi):
    best = None
    for i in range(len(x) - 1):
        if not lo <= x[i] <= hi:
            continue
        t = x[i:]
        n = len(t)
        alpha = 1 + n / np.sum(np.log(t / x[i]))
        if not np.isfinite(alpha):  # a tail of one repeated value: no power law (powerlaw.Fit gives NaN)
            continue
        D = np.max(np.abs(1 - (t / x[i]) ** (1 - alpha) - np.arange(n) / n)) if alpha > 1 else 1.0
        if best is None or D < best[2]:
            best = (x[i], alpha, D, n)
    return best


# --------------------------------------------------------------------------------------------------
# random spectra
# --------------------------------------------------------------------------------------------------

KINDS = ("pareto", "lognormal", "gauss_evals", "student_evals", "ties_levels", "ties_rounded", "repeated")


def make_spectrum(kind: str, n: int, seed: int, scale: float) -> np.ndarray:
    """A positive spectrum of about n values (matrix kinds: at most 400 eigenvalues)."""
    rng = np.random.default_rng(seed)
    if kind == "pareto":
        x = rng.pareto(rng.uniform(0.5, 5.0), n) + 1
    elif kind == "lognormal":
        x = rng.lognormal(0.0, rng.uniform(0.3, 2.5), n)
    elif kind in ("gauss_evals", "student_evals"):
        m = min(n, 400)
        rows = int(m * rng.uniform(1.0, 4.0))
        W = rng.standard_normal((rows, m)) if kind == "gauss_evals" else rng.standard_t(rng.uniform(1.5, 6.0), (rows, m))
        x = np.linalg.eigvalsh(W.T @ W) / rows
        x = np.clip(x, 0, None)
    elif kind == "ties_levels":  # few distinct values, many ties
        x = rng.integers(1, int(rng.integers(3, 60)), n).astype(np.float64) ** rng.uniform(0.5, 3.0)
    elif kind == "ties_rounded":  # a heavy tail rounded to 2 significant digits
        y = rng.pareto(rng.uniform(1.0, 3.0), n) + 1
        mag = 10.0 ** np.floor(np.log10(y))
        x = np.round(y / mag, 1) * mag
    else:  # "repeated": every value of a heavy-tailed sample 1-4 times
        y = rng.pareto(rng.uniform(1.0, 4.0), max(2, n // 3)) + 1
        x = np.repeat(y, rng.integers(1, 5, len(y)))[:n]
    return x * scale


sizes = st.integers(0, 1000).map(lambda u: int(round(20 * 1000 ** (u / 1000))))  # log-uniform 20 … 20,000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(kind=st.sampled_from(KINDS), n=sizes, seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-4, 1e-2, 1.0, 1e3]))
def test_fit_equals_wwfit(kind, n, seed, scale):
    x = make_spectrum(kind, n, seed, scale)
    data = x[x > EVALS_THRESH]
    assume(len(data) >= SMALL_N and data.min() < data.max())
    ref = WWFit(data)
    fit = fit_powerlaw(x)
    assert fit.status == "success" and fit.reason == ""
    assert fit.num_fit_evals == len(data)
    assert fit.xmin == pytest.approx(ref.xmin, rel=RTOL)
    assert fit.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert fit.D == pytest.approx(ref.D, rel=RTOL, abs=1e-15)
    assert fit.sigma == pytest.approx(ref.sigma, rel=RTOL)
    assert fit.num_pl_spikes == len(ref.data)
    assert fit.xmax == data.max()


@pytest.mark.parametrize("kind", KINDS)
def test_fit_equals_wwfit_largest(kind):
    """The largest size of the property test, once per kind (hypothesis rarely draws it)."""
    x = make_spectrum(kind, 20000, 12345, 1.0)
    data = x[x > EVALS_THRESH]
    ref, fit = WWFit(data), fit_powerlaw(x)
    assert (fit.xmin, fit.num_pl_spikes) == (ref.xmin, len(ref.data))
    assert fit.alpha == pytest.approx(ref.alpha, rel=RTOL)
    assert fit.D == pytest.approx(ref.D, rel=RTOL)


def test_threshold_is_absolute():
    """WW's 1e-5 cut is absolute: scaling a spectrum across it changes which values are fitted."""
    x = make_spectrum("lognormal", 3000, 7, 1e-4)
    assert 0 < np.count_nonzero(x <= EVALS_THRESH) < len(x)
    fit = fit_powerlaw(x)
    assert fit.num_fit_evals == np.count_nonzero(x > EVALS_THRESH)
    scaled = fit_powerlaw(x * 1e4)  # nothing under the threshold any more
    assert scaled.num_fit_evals == len(x)
    # the same data without the threshold gives another fit
    assert fit_powerlaw(x, evals_thresh=0.0).num_fit_evals == len(x)


# --------------------------------------------------------------------------------------------------
# small samples: CSN, not WW's small-N variant
# --------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(("pareto", "lognormal", "ties_levels")), n=st.integers(2, SMALL_N - 1),
       seed=st.integers(0, 2**32 - 1))
@example(kind="ties_levels", n=5, seed=479001601)  # [1, 8.13 ×4]: the tied tails (alpha = ∞) are no candidates
def test_small_sample_is_standard_csn(kind, n, seed):
    x = make_spectrum(kind, n, seed, 1.0)
    assume(len(np.unique(x)) >= 2)
    fit = fit_powerlaw(x)
    xmin, alpha, D, tail = csn_brute(x)
    assert fit.status == "success"
    assert fit.xmin == pytest.approx(xmin, rel=RTOL)
    assert fit.alpha == pytest.approx(alpha, rel=RTOL)
    assert fit.D == pytest.approx(D, rel=RTOL, abs=1e-15)
    # the tail the estimate used starts at the chosen candidate; num_pl_spikes counts every value ≥ xmin
    # (WW: len(fit.data)), which is more when xmin is a tied value and a later copy was chosen
    assert fit.num_pl_spikes == np.count_nonzero(x >= xmin) >= tail
    assert fit.sigma == pytest.approx((alpha - 1) / math.sqrt(tail), rel=RTOL)


@pytest.mark.parametrize("n", [8, 12, 19])
def test_small_sample_differs_from_ww(n, capsys):
    x = make_spectrum("pareto", n, 3, 1.0)
    ref = WWFit(x)  # prints "SMALL N PL FIT"
    assert "SMALL N PL FIT" in capsys.readouterr().out
    fit = fit_powerlaw(x)
    assert fit.alpha == pytest.approx(csn_brute(x)[1], rel=RTOL)
    assert abs(fit.alpha - ref.alpha) > 1e-3  # WW's bias-corrected (n−1)/n estimate and J objective


def test_twenty_is_wws_standard_path(capsys):
    x = make_spectrum("pareto", SMALL_N, 3, 1.0)
    ref = WWFit(x)
    assert "SMALL N" not in capsys.readouterr().out
    assert fit_powerlaw(x).alpha == pytest.approx(ref.alpha, rel=RTOL)


# --------------------------------------------------------------------------------------------------
# xmin_peak
# --------------------------------------------------------------------------------------------------


def _peak(x):
    """Left edge of the most populated of 100 log10-spaced bins of the fitted eigenvalues (WW's rule)."""
    counts, edges = np.histogram(np.log10(x[x > EVALS_THRESH]), bins=100)
    return 10 ** edges[np.argmax(counts)]


def _mp_plus_tail(seed=0):
    """An MP bulk (Gaussian 1000 × 400) and a power-law tail above it: the unrestricted KS fit
    picks an xmin far from the ESD peak."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((1000, 400))
    bulk = np.linalg.eigvalsh(W.T @ W) / 1000
    tail = 3.0 * (rng.pareto(1.5, 60) + 1)
    return np.concatenate([bulk, tail])


def test_xmin_peak():
    restricted = 0
    for seed in range(4):
        x = _mp_plus_tail(seed)
        p = _peak(x)
        free = fit_powerlaw(x)
        fit = fit_powerlaw(x, fix_fingers="xmin_peak")
        assert fit.status == "success" and fit.fix_fingers == "xmin_peak"
        assert 0.95 * p <= fit.xmin <= 1.5 * p
        xmin, alpha, D, n = csn_brute(x, 0.95 * p, 1.5 * p)  # the KS minimum over the window
        assert fit.xmin == pytest.approx(xmin, rel=RTOL)
        assert fit.alpha == pytest.approx(alpha, rel=RTOL)
        assert fit.D == pytest.approx(D, rel=RTOL)
        assert fit.num_pl_spikes == np.count_nonzero(x >= xmin)
        if 0.95 * p <= free.xmin <= 1.5 * p:  # the global minimum lies in the window: same fit
            assert (fit.xmin, fit.alpha, fit.D) == (free.xmin, free.alpha, free.D)
        else:
            assert fit.D > free.D
            restricted += 1
    assert restricted >= 2  # the restriction matters on these spectra


def test_xmin_peak_on_minilm(minilm_dir):
    """Real ESDs: the window holds the chosen xmin for every MiniLM layer."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir / "model.safetensors"), framework="pt") as f:
        names = [k for k in f.keys() if k.endswith("self.value.weight") or k.endswith("intermediate.dense.weight")]
        mats = [f.get_tensor(k).double().numpy() for k in names]
    assert len(mats) == 12
    for W in mats:
        lam = np.linalg.eigvalsh(W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T)
        p = _peak(lam)
        fit = fit_powerlaw(lam, fix_fingers="xmin_peak")
        assert 0.95 * p <= fit.xmin <= 1.5 * p


# --------------------------------------------------------------------------------------------------
# clip_xmax
# --------------------------------------------------------------------------------------------------


def _clip_brute(x, max_fingers=10, thresh=1.0):
    """hubscan's documented clip_xmax rule, from brute-force CSN fits."""
    x = np.sort(x[x > EVALS_THRESH])
    first = csn_brute(x)[1]
    for k in range(1, max_fingers):
        if len(x) - k < 3:
            break
        a = csn_brute(x[:-k])[1]
        if a + thresh < first:
            return a, k, first
        if a <= 2.0:
            break
    return first, 0, first


@pytest.fixture(scope="module")
def mp_bulk():
    W = np.random.default_rng(0).standard_normal((1000, 500))
    return np.linalg.eigvalsh(W.T @ W / 1000)


@pytest.mark.parametrize("fingers", [1, 2, 3])
def test_clip_xmax_recovers_clean_alpha(mp_bulk, fingers):
    """Eigenvalues planted just past the MP edge (1.2 λmax) inflate alpha; clipping them recovers the
    clean spectrum's fit exactly."""
    clean = fit_powerlaw(mp_bulk)
    x = np.concatenate([mp_bulk, mp_bulk[-1] * 1.2 * (1 + 0.01 * np.arange(fingers))])
    raw = fit_powerlaw(x)
    assert raw.alpha > clean.alpha + 1.0  # the fingers distort the fit
    fit = fit_powerlaw(x, fix_fingers="clip_xmax")
    assert fit.fix_fingers == "clip_xmax" and fit.status == "success"
    assert fit.num_fingers == fingers
    assert fit.alpha == clean.alpha and fit.xmin == clean.xmin and fit.D == clean.D
    assert fit.raw_alpha == raw.alpha
    a, k, first = _clip_brute(x)
    assert (k, fit.alpha, fit.raw_alpha) == (fingers, pytest.approx(a, rel=RTOL), pytest.approx(first, rel=RTOL))


@pytest.mark.parametrize("kind,seed", [("pareto", 1), ("lognormal", 2), ("gauss_evals", 3), ("pareto", 4)])
def test_clip_xmax_rule(kind, seed):
    """Spectra without fingers: the rule (checked by brute force) keeps or clips as documented."""
    x = make_spectrum(kind, 300, seed, 1.0)
    fit = fit_powerlaw(x, fix_fingers="clip_xmax")
    a, k, first = _clip_brute(x)
    assert fit.num_fingers == k
    assert fit.alpha == pytest.approx(a, rel=RTOL)
    assert fit.raw_alpha == pytest.approx(first, rel=RTOL)


# --------------------------------------------------------------------------------------------------
# truncated power law
# --------------------------------------------------------------------------------------------------


def _tpl_sample(rng, n, alpha, lam, xmin=1.0):
    """Exact draws from p(x) ∝ x^−alpha e^−lam·x, x ≥ xmin: Pareto proposals accepted w.p. e^−lam(x−xmin)."""
    out, have = [], 0
    while have < n:
        x = xmin * (1 - rng.random(4 * n)) ** (-1 / (alpha - 1))
        keep = x[rng.random(4 * n) < np.exp(-lam * (x - xmin))]
        out.append(keep)
        have += len(keep)
    return np.concatenate(out)[:n]


@pytest.mark.parametrize("alpha,lam", [(1.5, 0.05), (2.5, 0.2), (2.0, 0.01)])
def test_tpl_matches_powerlaw_mle(alpha, lam):
    """hubscan's TPL MLE at the power law's xmin vs powerlaw 2.0's ``Truncated_Power_Law`` fitted
    (maximum likelihood, its own mpmath normalisation) to the same data at the same xmin.

    powerlaw 2.0's class works this way: ``Truncated_Power_Law(data=x, xmin=...)`` trims to x ≥ xmin
    and fits on construction; its default alpha range is [0, 3], widened here. Its Nelder–Mead stops at
    tol 1e-4, so parameters agree to ~1e-4 and hubscan's log-likelihood (under powerlaw's pdf) must be
    at least as high."""
    rng = np.random.default_rng(int(alpha * 100 + lam * 1000))
    x = _tpl_sample(rng, 3000, alpha, lam)
    fit = fit_powerlaw(x, tpl=True)
    assert fit.status == "success" and math.isfinite(fit.Lambda)
    ref = powerlaw.Truncated_Power_Law(data=x, xmin=fit.xmin, verbose=0,
                                       parameter_ranges={"alpha": [0, 10], "Lambda": [0, None]})
    tail = x[x >= fit.xmin]

    def loglik(a, L):
        d = powerlaw.Truncated_Power_Law(xmin=fit.xmin, parameters=[a, L], verbose=0)
        return float(np.sum(np.log(d.pdf(tail))))

    assert loglik(fit.alpha, fit.Lambda) >= loglik(ref.alpha, ref.Lambda) - 1e-6
    assert fit.alpha == pytest.approx(ref.alpha, abs=2e-3)
    assert fit.Lambda == pytest.approx(ref.Lambda, rel=2e-3)
    # and the estimate is near the truth (3000 draws)
    assert fit.alpha == pytest.approx(alpha, abs=0.25)
    assert fit.Lambda == pytest.approx(lam, rel=0.35)
    # xmin and the tail are the power law's; Lambda > 0 lowers the exponent below the PL's
    plain = fit_powerlaw(x)
    assert (fit.xmin, fit.num_pl_spikes, fit.D) == (plain.xmin, plain.num_pl_spikes, plain.D)
    assert fit.alpha < plain.alpha


@pytest.mark.parametrize("seed", [5, 6, 7, 8, 9])
def test_tpl_on_pure_power_law(seed):
    """TPL nests the power law (Lambda = 0): its maximum likelihood is never below the PL's, and on
    untruncated Pareto data the likelihood-ratio statistic 2·ΔLL stays below χ²₁'s 1 % quantile (6.63)."""
    rng = np.random.default_rng(seed)
    x = rng.pareto(1.5, 4000) + 1  # alpha = 2.5, no truncation
    fit = fit_powerlaw(x, tpl=True)
    plain = fit_powerlaw(x)
    tail = x[x >= plain.xmin]
    ll_tpl = np.sum(np.log(powerlaw.Truncated_Power_Law(xmin=plain.xmin, parameters=[fit.alpha, fit.Lambda],
                                                        verbose=0).pdf(tail)))
    ll_pl = np.sum(np.log(powerlaw.Power_Law(xmin=plain.xmin, parameters=[plain.alpha], verbose=0).pdf(tail)))
    assert -1e-6 <= 2 * (ll_tpl - ll_pl) < 6.63
    assert fit.Lambda >= 0 and fit.alpha == pytest.approx(plain.alpha, abs=0.1)


# --------------------------------------------------------------------------------------------------
# degenerate inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("evals,why", [
    (np.zeros(50), "rank collapse: 0 nonzero eigenvalues"),
    (np.array([0.0] * 49 + [3.0]), "rank collapse: 1 nonzero eigenvalue (above 1e-05)"),
    (np.full(50, 2.5), "all nonzero eigenvalues are equal"),
    (np.array([1e-7] * 30 + [4.0, 4.0]), "all nonzero eigenvalues are equal"),  # two above the threshold
    (np.full(50, 3e-6), "all eigenvalues below the threshold 1e-05 (lambda_max = 3e-06)"),
    (2.0 + np.linspace(0, 1e-6, 64), "all nonzero eigenvalues equal to within 5.0e-07"),
    (np.array([]), "rank collapse: 0 nonzero eigenvalues"),
])
@pytest.mark.parametrize("fix_fingers", ["", "xmin_peak", "clip_xmax"])
def test_degenerate_inputs_fail(evals, why, fix_fingers):
    fit = fit_powerlaw(evals, fix_fingers=fix_fingers, tpl=True)
    assert fit.status == "failed" and fit.degenerate
    assert why in fit.reason
    assert math.isnan(fit.alpha) and math.isnan(fit.xmin) and math.isnan(fit.D)
    assert fit.num_pl_spikes == 0


def degenerate_spectrum(kind: str, n: int, seed: int, spread: float) -> np.ndarray:
    """A spectrum at or near a degenerate one: ``spread`` sets how far from exactly degenerate."""
    import torch

    rng = np.random.default_rng(seed)
    if kind == "orthogonal":  # float64 eigenvalues of √2·Q stored in float32 / bfloat16 / float16 (RWKV init)
        m = max(8, min(n, 96))
        Q = np.linalg.qr(rng.standard_normal((int(m * rng.uniform(1, 3)), m)))[0] * math.sqrt(2)
        dt = (torch.float32, torch.bfloat16, torch.float16)[seed % 3]
        W = torch.from_numpy(Q).to(dt).double()
        return torch.linalg.eigvalsh(W.T @ W).numpy()
    if kind == "constant":  # c·I, plus zeros
        return np.concatenate([np.full(n, spread * 10), np.zeros(seed % 5)])
    if kind == "two_valued":
        k = int(rng.integers(1, n + 1))
        return np.concatenate([np.full(n + 1 - k, 1.0), np.full(k, 1.0 + spread)])
    if kind == "near_equal":  # within a relative spread (log-uniform 1e-16 … 1e-1)
        return 3.0 * (1 + spread * rng.random(n))
    if kind == "tied_tail":  # a bulk and a tail of one repeated value
        return np.concatenate([rng.uniform(1, 2, n), np.full(int(rng.integers(1, 6)), 2 + 100 * spread)])
    # "rank_deficient": a few nonzero eigenvalues among zeros and sub-threshold noise
    return np.concatenate([np.zeros(n), rng.uniform(0, 1e-5, n), rng.uniform(1, 1 + spread, seed % 4)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(("orthogonal", "constant", "two_valued", "near_equal", "tied_tail", "rank_deficient")),
       n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1),
       spread=st.integers(-160, -10).map(lambda e: 10.0 ** (e / 10)),
       fix_fingers=st.sampled_from(["", "xmin_peak", "clip_xmax"]))
def test_degenerate_spectra_never_raise(kind, n, seed, spread, fix_fingers):
    """Issue 17: near-degenerate spectra (15 of 200 orthogonal 128×64 float32 matrices) made the fit raise
    "attempt to get argmin of an empty sequence". It returns a fit or a failure with its reason; a fit
    of 20 or more eigenvalues is still WWFit's."""
    x = degenerate_spectrum(kind, n, seed, spread)
    fit = fit_powerlaw(x, fix_fingers=fix_fingers)
    if fit.status == "failed":
        assert fit.reason and math.isnan(fit.alpha) and fit.num_pl_spikes == 0
        return
    assert fit.status == "success" and fit.alpha > 1 and fit.xmin in x and not fit.degenerate
    data = np.sort(x[x > EVALS_THRESH])
    assert data[-1] > data[0] * 1.001  # spectra within 1e-3 are degenerate
    if not fix_fingers:  # the CSN estimate (WWFit's from 20 eigenvalues on, but for tails of one tied value)
        xmin, alpha, _, _ = csn_brute(x)
        assert fit.xmin == xmin and fit.alpha == pytest.approx(alpha, rel=1e-7)


def test_unknown_fix_fingers():
    with pytest.raises(ValueError, match="fix_fingers"):
        fit_powerlaw(np.arange(1.0, 40.0), fix_fingers="xmax")


def test_compiled_search_is_the_numpy_search():
    """The compiled xmin search (bounds computed in the loop up to 512 eigenvalues, by numpy above) picks the
    numpy search's candidate — the same xmin index and alpha bit for bit — on 404 spectra × 3 candidate ranges
    (full; [3, n/2), as xmin_peak restricts it; the last 3 points), heavy- and light-tailed, tied and
    constant ones included; D equal to its last bits (C library pow vs numpy's)."""
    from hubscan.esd import powerlaw as P

    rng = np.random.default_rng(0)
    specs = []
    for k in range(400):
        n = int(rng.choice([20, 50, 64, 100, 128, 200, 384, 513, 768, 1000, 3000]))
        if k % 4 == 0 and n <= 384:  # ESDs of Student-t matrices (an MP bulk and a tail)
            W = rng.standard_t(rng.uniform(1.5, 8), size=(int(n * rng.uniform(1, 4)), n))
            ev = np.linalg.svd(W, compute_uv=False) ** 2
        else:  # heavy- to light-tailed samples: squared Student-t draws
            ev = rng.standard_t(rng.uniform(1.5, 8), size=n) ** 2
        ev = np.sort(ev)
        specs.append(ev[ev > EVALS_THRESH])
    specs += [np.ones(50), np.r_[np.ones(30), np.arange(1, 30.0)], np.r_[np.ones(600), np.arange(1, 30.0)],
              np.ones(700)]
    worst, nones = 0.0, 0
    for x in specs:
        for lo, hi in ((0, None), (3, len(x) // 2), (len(x) - 3, None)):
            ref, got = P._fit_sorted_numpy(x, lo, hi), P._fit_sorted(x, lo, hi)
            if ref is None:
                nones += 1
                assert got is None
                continue
            assert got[:2] == ref[:2], (len(x), lo, hi)
            worst = max(worst, abs(got[2] - ref[2]) / ref[2])
    assert nones == 6 and worst <= 1e-13, (nones, worst)  # the two constant spectra: no candidate in any range
