"""Families a user writes down (issue 14): densities, data models, charts, and the math namespaces.

Every expected value is derived here, by hand, and cited in the test:

* normal in (mu, sigma): g = diag(1/s^2, 2/s^2), a hyperbolic plane of R = -1, H = log(2 pi e s^2)/2;
* any one-parameter family: R = 0 (a curve has no intrinsic curvature);
* beta(a, b): an exponential family with t(x) = (log x, log(1 - x)), eta = (a - 1, b - 1) and
  psi = lgamma(a) + lgamma(b) - lgamma(a + b); g = [[psi1(a) - psi1(a+b), -psi1(a+b)], [., psi1(b) - psi1(a+b)]];
* von Mises(mu, kappa): an exponential family with t(x) = (cos x, sin x), eta = kappa (cos mu, sin mu)
  and psi(eta) = log(2 pi) + log I0(|eta|); in (mu, kappa) the metric is diag(kappa A, A') with
  A = I1/I0, A' = 1 - A/kappa - A^2, and for a metric diag(E(kappa), G(kappa)) the Gaussian curvature
  is K = -(1/(2 sqrt(EG))) d/dkappa (E' / sqrt(EG)), R = 2K;
* Weibull(k, lam): log X is Gumbel(min) with location log(lam) and scale 1/k.  A location-scale
  family has metric M / s^2 (M constant, from the standard density) in (m, s); completing the
  square, ds^2 = D (du^2 + ds^2) / s^2 with D = det M / M_mm, so R = 2K = -2 M_mm / det M.  For the
  standard Gumbel(min) density f(z) = exp(z - e^z): M_mm = E[(1 - e^z)^2] = 1 and det M = pi^2/6, hence
  R = -12/pi^2 at every (k, lam);
* a regression model linear in its parameters has a constant metric J^T S J: flat, R = 0;
* gamma in shape/scale is the gamma of natural coordinates eta = (k - 1, -1/theta): R is a scalar.

The default part reuses a few module-level families and always four points per batch (JIT compiles
dominate); the many-point oracle comparisons are ``@pytest.mark.slow``.
"""

import math

import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import geometry
from geometry._src.mathns import NAMES

INF = math.inf
EPS = np.finfo(np.float64).eps
#: working precision and tolerance of the oracle: verified to 1e-12, ample for comparisons at 1e-8
ORACLE = dict(dps=20, rtol=1e-12)


def rel(a, b):
    """Largest relative error; for (..., d, d) metrics norm-wise per point (max |error| / max |entry|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if b.ndim >= 2 and b.shape[-1] == b.shape[-2]:
        return np.max(np.max(np.abs(a - b), axis=(-1, -2)) / np.max(np.abs(b), axis=(-1, -2)))
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


def oracle(fam, point):
    return float(geometry.scalar_curvature_mp(fam, np.asarray(point, np.float64), **ORACLE))


# --------------------------------------------------------------------------- families (module level: compiled once)


def normal_log_density(th, x, xp):
    return -((x - th[0]) ** 2) / (2 * th[1] ** 2) - xp.log(th[1]) - xp.log(2 * xp.pi) / 2


NORMAL = geometry.density_family(normal_log_density, 2, (-INF, INF), name="normal by density")
NORMAL_POINTS = np.array([[0.0, 1.0], [1000.0, 1e-3], [-3.0, 1e4], [2.5, 0.3]])


def exponential_log_density(th, x, xp):
    return xp.log(th[0]) - th[0] * x


EXPONENTIAL = geometry.density_family(exponential_log_density, 1, (0.0, INF), name="exponential rate")


def beta_log_density(th, x, xp):
    a, b = th[0], th[1]
    return (a - 1) * xp.log(x) + (b - 1) * xp.log(1 - x) - (xp.lgamma(a) + xp.lgamma(b) - xp.lgamma(a + b))


def beta_log_partition(e, xp):  # eta = (a - 1, b - 1)
    return xp.lgamma(e[0] + 1) + xp.lgamma(e[1] + 1) - xp.lgamma(e[0] + e[1] + 2)


BETA_DENSITY = geometry.density_family(beta_log_density, 2, (0.0, 1.0), name="beta by density")
BETA_EXP = geometry.exponential_family(beta_log_partition, 2, name="beta by psi",
                                       natural=lambda t, xp: xp.vector([t[0] - 1, t[1] - 1]))
BETA_POINTS = np.array([[1.5, 1.5], [2.0, 5.0], [4.0, 2.5], [5.0, 3.25]])


def von_mises_log_density(th, x, xp):
    mu, kappa = th[0], th[1]
    return kappa * xp.cos(x - mu) - xp.log(2 * xp.pi) - xp.log_i0(kappa)


VON_MISES_DENSITY = geometry.density_family(von_mises_log_density, 2, (-math.pi, math.pi), name="von Mises by density")
VON_MISES_EXP = geometry.exponential_family(
    lambda e, xp: xp.log(2 * xp.pi) + xp.log_i0(xp.sqrt(e[0] ** 2 + e[1] ** 2)), 2, name="von Mises by psi",
    natural=lambda t, xp: xp.vector([t[1] * xp.cos(t[0]), t[1] * xp.sin(t[0])]))
VON_MISES_POINTS = np.array([[0.0, 0.5], [1.0, 2.0], [-2.5, 4.0], [3.0, 1.25]])


def weibull_log_density(th, x, xp):
    k, lam = th[0], th[1]
    return xp.log(k / lam) + (k - 1) * xp.log(x / lam) - (x / lam) ** k


WEIBULL = geometry.density_family(weibull_log_density, 2, (0.0, INF), name="weibull")
WEIBULL_POINTS = np.array([[1.2, 0.5], [2.0, 1.0], [4.0, 3.0], [3.0, 0.7]])
WEIBULL_R = -12 / math.pi**2


def two_exponential(th, t, xp):
    return xp.exp(-th[0] * t) + xp.exp(-th[1] * t)


DECAY_TIMES = np.linspace(0.25, 4.0, 8)
DECAY = geometry.regression_family(two_exponential, DECAY_TIMES, sigma=0.1, name="two-exp decay")
DECAY_POINTS = np.array([[0.5, 2.0], [0.3, 1.2], [0.8, 0.8], [0.9, 3.0]])  # index 2: a = b, not identifiable


def gamma_log_partition(e, xp):  # shape k = e0 + 1, rate -e1
    return xp.lgamma(e[0] + 1) - (e[0] + 1) * xp.log(-e[1])


GAMMA_NATURAL = geometry.exponential_family(gamma_log_partition, 2, name="gamma(eta)")
GAMMA_SHAPE_SCALE = geometry.exponential_family(gamma_log_partition, 2, name="gamma(k, theta)",
                                                natural=lambda t, xp: xp.vector([t[0] - 1, -1 / t[1]]))
GAMMA_POINTS = np.array([[0.6, 0.3], [1.0, 1.0], [2.5, 3.0], [4.0, 0.5]])


# --------------------------------------------------------------------------- 1. normal written by hand


@pytest.mark.slow  # 25-35 s under load: the default run stays under 10 minutes
def test_normal_density_is_the_hyperbolic_plane():
    s = NORMAL_POINTS[:, 1]
    mu = NORMAL_POINTS[:, 0]
    r, info = geometry.scalar_curvature(NORMAL, NORMAL_POINTS, return_info=True)
    # (1000, 1e-3): its float64 nodes are rounded by eps |mu| / sigma = 2e-10 of the width, which the estimate
    # counts (64 times, 1.4e-8 > rtol), so that point is recomputed in high precision; the others stay in float64
    assert info.status.tolist() == [0, 1, 0, 0], info.reasons
    np.testing.assert_allclose(r, -1.0, rtol=1e-10, atol=0)

    g = np.asarray(geometry.fisher_metric(NORMAL, NORMAL_POINTS))
    expected = np.zeros_like(g)
    expected[:, 0, 0], expected[:, 1, 1] = 1 / s**2, 2 / s**2
    # a float64 node x near mu = 1000 is known to ulp(1000) ~ 1e-13, i.e. to eps |mu| / s of the density's
    # scale: that conditioning (1e-10 relative at mu = 1000, s = 1e-3) bounds any quadrature in float64 x
    tol = 1e-13 + 0.5 * EPS * np.abs(mu) / s
    err = np.max(np.abs(g - expected), axis=(1, 2)) * s**2
    assert np.all(err <= tol), (err, tol)

    h = np.asarray(geometry.entropy(NORMAL, NORMAL_POINTS))
    h_exact = 0.5 * np.log(2 * np.pi * np.e * s**2)
    assert np.all(np.abs(h - h_exact) <= tol * np.maximum(1.0, np.abs(h_exact))), (h - h_exact, tol)

    r_gauss = geometry.scalar_curvature(geometry.gaussian(), NORMAL_POINTS)
    np.testing.assert_allclose(r, r_gauss, rtol=1e-10, atol=0)
    assert abs(oracle(NORMAL, NORMAL_POINTS[3]) + 1.0) < 1e-12


def test_normal_density_error_estimate_covers_the_error():
    rtol = 5e-12
    r, info = geometry.scalar_curvature(NORMAL, NORMAL_POINTS, return_info=True, rtol=rtol)
    err = np.abs(r + 1.0)
    assert np.all(err <= np.maximum(info.rel_error, 4 * EPS)), (err, info.rel_error)
    assert np.all(err <= rtol), (err, info.status)


def cauchy_log_density(th, x, xp):
    return -xp.log(xp.pi * th[1] * (1 + ((x - th[0]) / th[1]) ** 2))


CAUCHY = geometry.density_family(cauchy_log_density, 2, (-INF, INF), name="cauchy")


def cauchy_metric_exact(pts):
    """Cauchy(m, s) is location-scale with M = diag(1/2, 1/2): g = diag(1, 1) / (2 s^2), R = -2 M_mm / det M = -4."""
    g = np.zeros((len(pts), 2, 2))
    g[:, 0, 0] = g[:, 1, 1] = 1 / (2 * pts[:, 1] ** 2)
    return g


@pytest.mark.slow
def test_cauchy_heavy_tails():
    pts = np.array([[0.0, 1.0], [3.0, 0.1], [-3.0, 200.0], [1.5, 0.4]])
    assert rel(geometry.fisher_metric(CAUCHY, pts), cauchy_metric_exact(pts)) < 1e-11
    r, info = geometry.scalar_curvature(CAUCHY, pts, return_info=True)
    assert np.all(info.status <= 1), info.reasons
    assert rel(r, -4.0) < 1e-10


def test_cauchy_with_a_narrow_core_far_from_the_origin():
    pts = np.array([[50.0, 0.01], [5.0, 0.01], [0.0, 1.0], [1.5, 0.4]])
    assert rel(geometry.fisher_metric(CAUCHY, pts), cauchy_metric_exact(pts)) < 1e-11


# --------------------------------------------------------------------------- 2. one parameter


def test_one_parameter_density_is_flat():
    lam = np.array([[0.25], [1.0], [3.0], [40.0]])
    r, info = geometry.scalar_curvature(EXPONENTIAL, lam, return_info=True)
    assert info.status.tolist() == [0, 0, 0, 0], info.reasons
    assert np.all(r == 0.0)
    g = np.asarray(geometry.fisher_metric(EXPONENTIAL, lam))[:, 0, 0]
    assert rel(g, 1 / lam[:, 0] ** 2) < 1e-13  # E[(1/lam - x)^2] = Var(x) = 1/lam^2


# --------------------------------------------------------------------------- 3. beta: density = log-partition
#
# The curvature of a density family compiles the third derivative of the quadrature rule at two levels
# (about a minute a family on 2 loaded cores), so the default part checks the density families other than
# the normal through their metric (which fixes the geometry) and compares curvatures in the slow part.


def beta_metric_exact(pts):
    a, b = pts[:, 0], pts[:, 1]
    psi1 = np.vectorize(lambda v: float(mpmath.psi(1, v)))
    return np.stack([np.stack([psi1(a) - psi1(a + b), -psi1(a + b)], -1),
                     np.stack([-psi1(a + b), psi1(b) - psi1(a + b)], -1)], -2)


@pytest.mark.slow  # 25-35 s under load: the default run stays under 10 minutes
def test_beta_density_metric_equals_beta_log_partition():
    g_exact = beta_metric_exact(BETA_POINTS)
    assert rel(geometry.fisher_metric(BETA_DENSITY, BETA_POINTS), g_exact) < 1e-12
    assert rel(geometry.fisher_metric(BETA_EXP, BETA_POINTS), g_exact) < 1e-13


@pytest.mark.slow
def test_beta_density_curvature_equals_beta_log_partition():
    r_density, info = geometry.scalar_curvature(BETA_DENSITY, BETA_POINTS, return_info=True)
    assert info.status.tolist() == [0, 0, 0, 0], info.reasons
    r_exp, info_exp = geometry.scalar_curvature(BETA_EXP, BETA_POINTS, return_info=True)
    assert info_exp.status.tolist() == [0, 0, 0, 0], info_exp.reasons
    assert rel(r_density, r_exp) < 1e-10
    for i in (1, 3):
        ref = oracle(BETA_EXP, BETA_POINTS[i])
        assert abs(r_density[i] - ref) <= 1e-10 * abs(ref)
        assert abs(oracle(BETA_DENSITY, BETA_POINTS[i]) - ref) <= 1e-11 * abs(ref)


# --------------------------------------------------------------------------- 4. von Mises: density = exponential form


def von_mises_metric_exact(pts):
    kappa = pts[:, 1]
    i0, i1 = np.vectorize(lambda t: float(mpmath.besseli(0, t))), np.vectorize(lambda t: float(mpmath.besseli(1, t)))
    a = i1(kappa) / i0(kappa)
    g = np.zeros((len(kappa), 2, 2))
    g[:, 0, 0], g[:, 1, 1] = kappa * a, 1 - a / kappa - a**2
    return g


def von_mises_r_expected(kappa):
    """R = 2K of diag(E, G), E = kappa A, G = A' = 1 - A/kappa - A^2 (A = I1/I0), at 30 digits."""
    with mpmath.workdps(30):
        k = mpmath.mpf(kappa)
        a = lambda t: mpmath.besseli(1, t) / mpmath.besseli(0, t)  # noqa: E731
        e = lambda t: t * a(t)  # noqa: E731
        gg = lambda t: 1 - a(t) / t - a(t) ** 2  # noqa: E731
        root = lambda t: mpmath.sqrt(e(t) * gg(t))  # noqa: E731
        curv = -mpmath.diff(lambda t: mpmath.diff(e, t) / root(t), k) / (2 * root(k))
        return float(2 * curv)


@pytest.mark.slow  # 19 s of compiles; the beta comparison covers the same route in the default run
def test_von_mises_density_metric_equals_exponential_form():
    g_exact = von_mises_metric_exact(VON_MISES_POINTS)
    assert rel(geometry.fisher_metric(VON_MISES_DENSITY, VON_MISES_POINTS), g_exact) < 1e-12
    assert rel(geometry.fisher_metric(VON_MISES_EXP, VON_MISES_POINTS), g_exact) < 1e-13


@pytest.mark.slow
def test_von_mises_density_curvature_equals_exponential_form():
    expected = np.array([von_mises_r_expected(k) for k in VON_MISES_POINTS[:, 1]])
    r_density, info = geometry.scalar_curvature(VON_MISES_DENSITY, VON_MISES_POINTS, return_info=True)
    assert info.status.tolist() == [0, 0, 0, 0], info.reasons
    r_exp, info_exp = geometry.scalar_curvature(VON_MISES_EXP, VON_MISES_POINTS, return_info=True)
    assert info_exp.status.tolist() == [0, 0, 0, 0], info_exp.reasons
    assert rel(r_exp, expected) < 1e-10
    assert rel(r_density, r_exp) < 1e-10
    assert rel(r_density, expected) < 1e-10


# --------------------------------------------------------------------------- 5. Weibull: a location-scale family


def weibull_metric_exact(pts):
    """In (m, s) = (log lam, 1/k) the metric is [[1, 1 - gamma], [1 - gamma, pi^2/6 + (1 - gamma)^2]] / s^2
    (module docstring); pulled back through dm = dlam / lam, ds = -dk / k^2."""
    k, lam = pts[:, 0], pts[:, 1]
    c = 1 - np.euler_gamma
    g = np.empty((len(k), 2, 2))
    g[:, 0, 0] = (np.pi**2 / 6 + c**2) / k**2
    g[:, 0, 1] = g[:, 1, 0] = -c / lam
    g[:, 1, 1] = k**2 / lam**2
    return g


def test_weibull_metric_is_the_gumbel_location_scale_metric():
    assert rel(geometry.fisher_metric(WEIBULL, WEIBULL_POINTS), weibull_metric_exact(WEIBULL_POINTS)) < 1e-12


@pytest.mark.slow
def test_weibull_curvature_is_constant():
    r, info = geometry.scalar_curvature(WEIBULL, WEIBULL_POINTS, return_info=True)
    assert info.status.tolist() == [0, 0, 0, 0], info.reasons
    assert np.ptp(r) <= 1e-10 * abs(WEIBULL_R)
    assert rel(r, WEIBULL_R) < 1e-10
    for i in (1, 2, 3):
        assert abs(oracle(WEIBULL, WEIBULL_POINTS[i]) - WEIBULL_R) <= 1e-11 * abs(WEIBULL_R)


# --------------------------------------------------------------------------- 6. regression models


def test_linear_model_is_flat():
    quadratic = geometry.regression_family(lambda th, x, xp: th[0] + th[1] * x + th[2] * x**2, np.linspace(-1, 2, 6),
                                           sigma=0.5, name="quadratic")
    assert quadratic.dim == 3
    pts = np.random.default_rng(0).normal(size=(4, 3)) * 3
    r, info = geometry.scalar_curvature(quadratic, pts, return_info=True)
    # R = 0 has no relative error bound in float64, so the default may confirm it in high precision (status 1)
    assert np.all(info.status <= 1), info.reasons
    assert np.all(np.abs(r) < 1e-12), r


def test_two_exponential_decay_against_oracle_and_unidentifiable_point():
    r, info = geometry.scalar_curvature(DECAY, DECAY_POINTS, return_info=True)
    assert info.status.tolist() == [0, 0, 2, 0], info.reasons
    assert np.isnan(r[2])
    assert "identifiable" in info.reasons[2]
    assert np.all(np.isfinite(r[[0, 1, 3]]))
    for i in (0, 3):
        ref = oracle(DECAY, DECAY_POINTS[i])
        assert abs(r[i] - ref) <= 1e-10 * abs(ref), (i, r[i], ref)


def test_regression_metric_by_hand_with_per_point_sigma():
    x = np.linspace(0.0, 3.0, 4)
    sigma = np.array([0.1, 0.2, 0.5, 1.0])
    fam = geometry.regression_family(lambda th, t, xp: th[0] * xp.exp(-th[1] * t), x, sigma=sigma, name="decay")
    pts = np.array([[1.0, 0.5], [2.0, 1.5], [-0.5, 0.2], [3.0, 2.0]])
    g = np.asarray(geometry.fisher_metric(fam, pts))
    for p, gp in zip(pts, g):
        jac = np.column_stack([np.exp(-p[1] * x), -p[0] * x * np.exp(-p[1] * x)])  # df/dA, df/dk
        assert rel(gp, jac.T @ np.diag(sigma**-2) @ jac) < 1e-14
    r = geometry.scalar_curvature(fam, pts)
    assert np.all(np.isfinite(r))


def test_regression_with_vector_inputs():
    xs = np.column_stack([np.linspace(-1, 1, 5), np.linspace(0.5, 2.0, 5)])
    fam = geometry.regression_family(lambda th, x, xp: th[0] * x[0] + xp.sin(th[1] * x[1]), xs, sigma=0.3)
    assert fam.dim == 2
    pts = np.array([[1.0, 0.5], [2.0, 1.5], [-0.5, 0.2], [3.0, 2.0]])
    g = np.asarray(geometry.fisher_metric(fam, pts))
    for p, gp in zip(pts, g):
        jac = np.column_stack([xs[:, 0], xs[:, 1] * np.cos(p[1] * xs[:, 1])])
        assert rel(gp, jac.T @ jac / 0.3**2) < 1e-14
    # a model in (a, b) with b entering only through sin(b x1): R = 0 for this (flat, product) metric
    r, info = geometry.scalar_curvature(fam, pts, return_info=True)
    assert np.all(info.status <= 1), info.reasons
    assert np.all(np.abs(r) < 1e-12), r


# --------------------------------------------------------------------------- 7. charts of exponential families


@pytest.mark.slow  # 25-35 s under load: the default run stays under 10 minutes
def test_gamma_shape_scale_chart_equals_natural_coordinates():
    eta = np.column_stack([GAMMA_POINTS[:, 0] - 1, -1 / GAMMA_POINTS[:, 1]])
    r_chart = geometry.scalar_curvature(GAMMA_SHAPE_SCALE, GAMMA_POINTS)
    r_natural = geometry.scalar_curvature(GAMMA_NATURAL, eta)
    assert rel(r_chart, r_natural) < 1e-12
    # the metric transforms as a tensor: J^T g(eta) J with J = diag(1, 1/theta^2)
    g_chart = np.asarray(geometry.fisher_metric(GAMMA_SHAPE_SCALE, GAMMA_POINTS))
    g_nat = np.asarray(geometry.fisher_metric(GAMMA_NATURAL, eta))
    jac = np.zeros((4, 2, 2))
    jac[:, 0, 0], jac[:, 1, 1] = 1.0, 1 / GAMMA_POINTS[:, 1] ** 2
    assert rel(g_chart, np.einsum("nai,nab,nbj->nij", jac, g_nat, jac)) < 1e-13


def test_chart_with_singular_jacobian_is_refused():
    fam = geometry.exponential_family(gamma_log_partition, 2, name="gamma, cubic chart",
                                      natural=lambda t, xp: xp.vector([t[0] ** 3 + 0.5, -t[1]]))
    assert np.isfinite(geometry.scalar_curvature(fam, [0.5, 1.0]))
    with pytest.raises(ValueError, match="singular Jacobian"):
        geometry.scalar_curvature(fam, [0.0, 1.0])
    with pytest.raises(ValueError, match="singular Jacobian"):
        geometry.fisher_metric(fam, [0.0, 1.0])


# --------------------------------------------------------------------------- 8. math namespaces


def test_namespaces_have_the_same_names():
    for ns in (geometry.JAX, geometry.SYMPY, geometry.MPMATH):
        have = {k for k in ns.__dict__ if k not in ("name", "diff")}
        assert have == set(NAMES), (ns, set(NAMES) ^ have)
    required = {"cos", "sin", "tan", "tanh", "cosh", "sinh", "arctan", "expm1", "log1p", "power", "lgamma", "digamma",
                "erf", "erfc", "log_i0", "exp", "log", "sqrt", "pi"}
    assert required <= NAMES
    for ns in (geometry.JAX, geometry.SYMPY, geometry.MPMATH):
        with pytest.raises(AttributeError, match=r"has no 'besselk'.*it has: .*lgamma.*log_i0"):
            ns.besselk


@pytest.mark.parametrize("fn, args", [
    ("exp", (0.5, 50.0)), ("log", (0.5, 50.0)), ("log1p", (1e-10, 3.0)), ("expm1", (1e-10, 3.0)), ("sqrt", (0.5, 50.0)),
    ("sin", (0.5, 50.0)), ("cos", (0.5, 50.0)), ("tan", (0.5, 1.5)), ("sinh", (0.5, 5.0)), ("cosh", (0.5, 5.0)),
    ("tanh", (0.5, 5.0)), ("arctan", (0.5, 50.0)), ("lgamma", (0.5, 50.0)), ("digamma", (0.5, 50.0)),
    ("erf", (0.5, 2.0)), ("erfc", (0.5, 5.0)), ("log_i0", (0.5, 50.0)), ("abs", (-0.5, 50.0)),
])
def test_jax_and_mpmath_agree(fn, args):
    for v in args:
        got = float(getattr(geometry.JAX, fn)(jnp.float64(v)))
        with mpmath.workdps(30):
            ref = float(getattr(geometry.MPMATH, fn)(mpmath.mpf(v)))
        assert abs(got - ref) <= 4e-15 * abs(ref), (fn, v, got, ref)
    assert float(geometry.JAX.power(jnp.float64(2.5), 1.5)) == pytest.approx(float(geometry.MPMATH.power(2.5, 1.5)), rel=1e-15)
    assert float(geometry.JAX.pi) == float(geometry.MPMATH.pi)


# --------------------------------------------------------------------------- 9. bad input


def test_bad_support():
    with pytest.raises(ValueError, match=r"support=\(lo, hi\) needs lo < hi"):
        geometry.density_family(normal_log_density, 2, (1.0, 1.0))
    with pytest.raises(ValueError, match=r"support=\(lo, hi\) needs lo < hi"):
        geometry.density_family(normal_log_density, 2, (INF, -INF))
    with pytest.raises(TypeError, match="support must be a pair"):
        geometry.density_family(normal_log_density, 2, (0.0, 1.0, 2.0))
    with pytest.raises(TypeError, match="support must be a pair"):
        geometry.density_family(normal_log_density, 2, 1.0)


def test_unnormalised_density_is_refused():
    fam = geometry.density_family(lambda th, x, xp: -((x - th[0]) ** 2) / (2 * th[1] ** 2) - xp.log(th[1]), 2,
                                  (-INF, INF), name="normal, no 1/sqrt(2 pi)")
    with pytest.raises(ValueError, match=r"log_density of .* is not normalised.*normalisation error 1\.5"):
        geometry.scalar_curvature(fam, NORMAL_POINTS[:1])
    with pytest.raises(ValueError, match=r"log_density .* is not normalised"):
        geometry.fisher_metric(fam, NORMAL_POINTS[:1])


@pytest.mark.parametrize("log_density", [
    lambda th, x, xp: xp.log(th[0]) - th[0] * x + 0 * xp.log(x - 0.5),  # log(x - 1/2): NaN on (0, 1/2)
    lambda th, x, xp: xp.log(th[0]) - th[0] * x + xp.exp(500 * (x - 20)),  # +inf (overflow) beyond x ~ 21.4
], ids=["nan", "+inf"])
def test_log_density_nan_or_inf_inside_support_is_refused(log_density):
    fam = geometry.density_family(log_density, 1, (0.0, INF), name="exponential, broken")
    with pytest.raises(ValueError, match="log_density returns NaN"):
        geometry.scalar_curvature(fam, [1.0])
    with pytest.raises(ValueError, match="log_density returns NaN"):
        geometry.fisher_metric(fam, [1.0])


def test_log_density_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="log_density of .* must return a scalar"):
        geometry.density_family(lambda th, x, xp: xp.vector([th[0] * x, th[1] * x]), 2, (0.0, 1.0))


def test_log_density_with_numpy_is_refused():
    with pytest.raises(TypeError, match="xp"):
        geometry.density_family(lambda th, x, xp: np.log(th[0]) - th[0] * x, 1, (0.0, INF))


def test_bad_regression_input():
    line = lambda th, x, xp: th[0] + th[1] * x  # noqa: E731
    x = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="model .* must return a scalar or a 1-d vector"):
        geometry.regression_family(lambda th, x, xp: xp.vector([xp.vector([th[0], th[1]]), xp.vector([th[1], x])]), x)
    with pytest.raises(ValueError, match="inputs must have shape"):
        geometry.regression_family(line, np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(5,\)"):
        geometry.regression_family(line, x, sigma=np.ones(4))
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(5,\)"):
        geometry.regression_family(line, x, sigma=np.ones((5, 1)))
    for bad in (0.0, -1.0, np.array([1.0, 1.0, 0.0, 1.0, 1.0]), np.nan):
        with pytest.raises(ValueError, match="sigma must be finite and > 0"):
            geometry.regression_family(line, x, sigma=bad)
    with pytest.raises(ValueError, match="sigma must be"):
        geometry.regression_family(line, x, sigma=True)
    with pytest.raises(TypeError, match="pass dim="):
        geometry.regression_family(lambda th, x: jnp.exp(-th[0] * x), x)
    jax_only = geometry.regression_family(lambda th, x: jnp.exp(-th[0] * x), x, dim=1)
    assert jax_only.dim == 1
    with pytest.raises(TypeError, match="xp"):
        geometry.regression_family(lambda th, x, xp: np.exp(-th[0] * x), x, dim=1)


# --------------------------------------------------------------------------- slow: many points against the oracle


def _points(rng, n, lo, hi):
    return np.column_stack([rng.uniform(lo[0], hi[0], n), rng.uniform(lo[1], hi[1], n)])


SLOW_CASES = [
    ("normal", NORMAL, lambda rng: np.column_stack([rng.normal(0, 5, 20), np.exp(rng.uniform(-3, 3, 20))])),
    ("weibull", WEIBULL, lambda rng: _points(rng, 20, (1.1, 0.3), (6.0, 5.0))),
    ("beta", BETA_DENSITY, lambda rng: _points(rng, 20, (1.5, 1.5), (5.0, 5.0))),
    ("two-exp", DECAY, lambda rng: _points(rng, 20, (0.2, 1.2), (0.9, 3.0))),
]


@pytest.mark.slow
@pytest.mark.parametrize("label, fam, sampler", SLOW_CASES, ids=[c[0] for c in SLOW_CASES])
def test_many_points_against_oracle(label, fam, sampler):
    pts = sampler(np.random.default_rng(14))
    r, info = geometry.scalar_curvature(fam, pts, return_info=True)
    assert np.all(info.status <= 1), info.reasons
    ref = np.array([oracle(fam, p) for p in pts])
    err = np.abs(r - ref) / np.abs(ref)
    assert err.max() < 1e-8, (label, err.max(), pts[np.argmax(err)])
    if label == "weibull":
        assert np.max(np.abs(ref - WEIBULL_R)) < 1e-11
    if label == "normal":
        assert np.max(np.abs(ref + 1)) < 1e-11


@pytest.mark.slow
def test_beta_and_von_mises_at_more_points():
    rng = np.random.default_rng(4)
    beta_pts = _points(rng, 20, (1.5, 1.5), (5.0, 5.0))
    assert rel(geometry.scalar_curvature(BETA_DENSITY, beta_pts), geometry.scalar_curvature(BETA_EXP, beta_pts)) < 1e-10
    vm_pts = _points(rng, 20, (-3.0, 0.2), (3.0, 8.0))
    r = geometry.scalar_curvature(VON_MISES_DENSITY, vm_pts)
    assert rel(r, geometry.scalar_curvature(VON_MISES_EXP, vm_pts)) < 1e-10
    assert rel(r, [von_mises_r_expected(k) for k in vm_pts[:, 1]]) < 1e-10
