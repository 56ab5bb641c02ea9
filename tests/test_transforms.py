"""JAX transformations of the public functions agree with the eager calls, for every kind of family.

Over the registry ``conftest.FAMILIES`` (every built-in kind plus the test-only kind of
``tests/toy_kind.py``) and every route a family supports:

* ``jax.jit`` of the batched call and ``jax.vmap`` of the per-point call equal the eager
  (numpy) result to 1e-12 relative, or to twice the route's own float64 error estimate where
  that is larger (two float64 programs that each err by at most ``est`` differ by ``<= 2 est``;
  ``est`` is ``info.rel_error`` of the eager call, the documented error model);
* ``jax.grad`` (vmapped over points) and ``jax.jacfwd`` agree with each other and with central
  differences of the eager call, with respect to the point and to the family's array leaves;
* the same jit/vmap agreement for ``fisher_metric``, ``entropy``, ``christoffel``, ``riemann``,
  ``ricci``;
* the cumulant gradient of attention with respect to the query and to the keys agrees with
  central differences of the mpmath oracle;
* ``jax.vmap`` over a stack of attention families equals a loop of eager calls;
* the precision-controlled default refuses traced input with a ``TypeError`` naming ``method=``.

Compilation dominates the cost (nested autodiff of the metric for ``levi-civita`` and the
tensors).  The default run (``-m 'not slow'``) covers every family and every route at least
once; the rest of the matrix is marked ``slow`` (``pytest -m slow tests/test_transforms.py``).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import jax
import jax.numpy as jnp

import geometry
from conftest import ATTENTION_KEYS_8x2, FAMILIES

ROUTES = ("cumulant", "hessian", "levi-civita")
FAMILY = {fid: (fam, sampler) for fid, fam, sampler in FAMILIES}
NPOINTS = 3  # not a power of two: the eager mapper pads its chunk, the traced call does not

#: (family, route) pairs run by default; every family and every route appears at least once.
FAST_CURVATURE = {
    ("categorical3", "cumulant"), ("categorical4_T0.5", "cumulant"), ("attention8x2", "cumulant"),
    ("attention6x3", "cumulant"), ("multihead2x4x2", "cumulant"),
    ("gaussian", "hessian"), ("gamma", "hessian"), ("toy_tempered_simplex3", "hessian"),
    ("affine_softmax3", "levi-civita"),  # toy levi-civita: tests/test_toy_kind.py
}
FAST_TENSORS = {"attention8x2", "toy_tempered_simplex3"}

#: value tolerance: relative, floored by the route's own error estimate (module docstring)
VALUE_RTOL = 1e-12
#: step (a power of two) of the fourth-order central differences of the eager (float64) calls.
#: The quotient (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h errs by h^4 |R^(5)| / 30 ~ 3e-14 |R^(5)|
#: (truncation) plus about 1.5 est |R| / h ~ 1.5e-13 / 1e-3 ~ 2e-10 (rounding of the eager values,
#: est <~ 1e-13 at these moderate points).  R and its derivatives are O(1) here, so 1e-7
#: relative to max(1, |grad|) leaves a wide margin and still catches any wrong derivative
#: (a missing term or a wrong custom_jvp is an O(1) error).
FD_STEP = 2.0**-10
FD_TOL = 1e-7
#: gradient vs Richardson-extrapolated oracle differences (test docstring)
GRAD_ORACLE_RTOL = 1e-11
#: grad (reverse) and jacfwd (forward) of one float64 program differ only by rounding.
AD_TOL = 1e-11


def _points(fid, count=NPOINTS, seed=0):
    fam, sampler = FAMILY[fid]
    return fam, np.asarray(sampler(np.random.default_rng(seed), count), np.float64)


def _params(fast, routes=ROUTES):
    out = []
    for fid, _, _ in FAMILIES:
        for m in routes:
            marks = () if (fid, m) in fast else (pytest.mark.slow,)
            out.append(pytest.param(fid, m, marks=marks, id=f"{fid}-{m}"))
    return out


def _assert_values(actual, eager, est, what):
    actual, eager = np.asarray(actual), np.asarray(eager)
    assert actual.shape == eager.shape, (what, actual.shape, eager.shape)
    assert actual.dtype == np.float64, (what, actual.dtype)
    tol = np.maximum(VALUE_RTOL, 2 * np.asarray(est)) * np.abs(eager)
    err = np.abs(actual - eager)
    assert np.all(err <= tol), f"{what}: max |traced - eager| = {err.max():.3e}, tolerance {tol.min():.3e}\n{actual}\n{eager}"


def _assert_tensor(actual, eager, what, rtol=VALUE_RTOL):
    """Per point, max-norm relative to the largest entry (tensors have exact zeros)."""
    actual, eager = np.asarray(actual), np.asarray(eager)
    assert actual.shape == eager.shape, (what, actual.shape, eager.shape)
    k = eager.shape[0]
    err = np.abs(actual - eager).reshape(k, -1).max(axis=1)
    scale = np.abs(eager).reshape(k, -1).max(axis=1)
    assert np.all(err <= rtol * np.maximum(scale, 1e-300)), f"{what}: per-point max error {err} vs scale {scale}"


def _fd4(values, h):
    """Fourth-order central difference from ``[f(+h), f(-h), f(+2h), f(-2h)]``."""
    fp, fm, f2p, f2m = values
    return (8 * (fp - fm) - (f2p - f2m)) / (12 * h)


def _leaf_direction_fd(fam, x, method, leaves, treedef, direction):
    """Directional derivative of the eager curvature at ``x`` along ``direction`` in leaf space."""
    vals = []
    for t in (1, -1, 2, -2):
        moved = [np.asarray(l, np.float64) + t * FD_STEP * d for l, d in zip(leaves, direction)]
        vals.append(float(geometry.scalar_curvature(jax.tree_util.tree_unflatten(treedef, moved), x, method=method)))
    return _fd4(vals, FD_STEP)


# --------------------------------------------------------------------------- scalar curvature, every route


@pytest.mark.parametrize("fid, method", _params(FAST_CURVATURE))
def test_curvature_transforms_match_eager(fid, method):
    fam, X = _points(fid)
    dim = fam.dim
    x0 = X[0]
    # one eager call: the points and the finite-difference stencil around x0 (one compilation)
    stencil = np.concatenate([x0 + t * FD_STEP * np.eye(dim) for t in (1, -1, 2, -2)])
    try:
        r_all, info = geometry.scalar_curvature(fam, np.concatenate([X, stencil]), method=method, return_info=True)
    except ValueError as exc:
        assert "needs" in str(exc) and method in str(exc), exc
        pytest.skip(f"{fid} does not support {method}: {exc}")
    assert isinstance(r_all, np.ndarray)
    eager, est = r_all[:NPOINTS], info.rel_error[:NPOINTS]
    fd = _fd4(r_all[NPOINTS:].reshape(4, dim), FD_STEP)

    leaves, treedef = jax.tree_util.tree_flatten(fam)

    def f(F, x):
        return geometry.scalar_curvature(F, x, method=method)

    def transformed(F, X):
        out = {
            "jit": f(F, X),  # batched call, traced inside jit
            "vmap": jax.vmap(lambda x: f(F, x))(X),  # per-point call, vmapped
            "grad": jax.vmap(jax.grad(lambda x: f(F, x)))(X),
            "jacfwd": jax.jacfwd(lambda x: f(F, x))(X[0]),
        }
        if leaves:
            out["leaf_grad"] = jax.grad(lambda G: f(G, X[0]))(F)
        return out

    out = jax.jit(transformed)(fam, X)
    _assert_values(out["jit"], eager, est, f"jit {fid} {method}")
    _assert_values(out["vmap"], eager, est, f"vmap {fid} {method}")

    grad, jac = np.asarray(out["grad"]), np.asarray(out["jacfwd"])
    assert grad.shape == (NPOINTS, dim) and jac.shape == (dim,)
    scale = max(1.0, float(np.max(np.abs(jac))))
    assert np.max(np.abs(grad[0] - jac)) <= AD_TOL * scale, (grad[0], jac)
    assert np.max(np.abs(jac - fd)) <= FD_TOL * scale, f"jacfwd {jac} vs central differences of eager {fd}"

    if leaves:
        # a random direction in leaf space: any wrong entry of the gradient shows up (with probability 1)
        g_leaves = [np.asarray(g) for g in jax.tree_util.tree_leaves(out["leaf_grad"])]
        assert [g.shape for g in g_leaves] == [np.shape(l) for l in leaves]
        rng = np.random.default_rng(1)
        direction = [rng.normal(size=np.shape(l)) for l in leaves]
        along = sum(float(np.sum(g * d)) for g, d in zip(g_leaves, direction))
        fd_along = _leaf_direction_fd(fam, x0, method, leaves, treedef, direction)
        s = max(1.0, sum(float(np.sum(np.abs(g * d))) for g, d in zip(g_leaves, direction)))
        assert abs(along - fd_along) <= FD_TOL * s, f"leaf gradient along a random direction {along} vs eager differences {fd_along}"


@pytest.mark.parametrize("method", ["cumulant", "hessian"])
def test_single_point_jit_and_grad_return_scalars(method):
    fam, X = _points("attention8x2")
    eager = geometry.scalar_curvature(fam, X[0], method=method)
    assert isinstance(eager, np.ndarray) and eager.shape == ()
    r = jax.jit(lambda x: geometry.scalar_curvature(fam, x, method=method))(X[0])
    assert r.shape == () and r.dtype == jnp.float64
    assert abs(float(r) - float(eager)) <= 1e-12 * abs(float(eager))


# --------------------------------------------------------------------------- metric, entropy, tensors


def _tensor_calls(F, X):
    out = {
        "fisher_metric": geometry.fisher_metric(F, X),
        "christoffel": geometry.christoffel(F, X),
        "riemann": geometry.riemann(F, X),
        "ricci": geometry.ricci(F, X),
    }
    if F.has_entropy:
        out["entropy"] = geometry.entropy(F, X)
    return out


@pytest.mark.parametrize(
    "fid", [pytest.param(fid, marks=() if fid in FAST_TENSORS else (pytest.mark.slow,), id=fid) for fid, _, _ in FAMILIES]
)
def test_metric_entropy_tensors_under_jit_and_vmap(fid):
    fam, X = _points(fid)
    eager = _tensor_calls(fam, X)
    for name, v in eager.items():
        assert isinstance(v, np.ndarray), name
    if not fam.has_entropy:
        with pytest.raises(ValueError, match="entropy"):
            geometry.entropy(fam, X)
    dim = fam.dim
    assert eager["fisher_metric"].shape == (NPOINTS, dim, dim)
    assert eager["christoffel"].shape == (NPOINTS, dim, dim, dim)
    assert eager["riemann"].shape == (NPOINTS, dim, dim, dim, dim)
    assert eager["ricci"].shape == (NPOINTS, dim, dim)

    out = jax.jit(lambda F, X: (_tensor_calls(F, X), jax.vmap(lambda x: _tensor_calls(F, x))(X)))(fam, X)
    for label, res in zip(("jit", "vmap"), out):
        assert set(res) == set(eager)
        for name in eager:
            if name == "entropy":
                _assert_values(res[name], eager[name], 0.0, f"{label} entropy {fid}")
            else:
                _assert_tensor(res[name], eager[name], f"{label} {name} {fid}")
    # the tensors are consistent with each other: R = g^{sn} Ric_{sn} is the route's curvature
    r = np.einsum("ksn,ksn->k", np.linalg.inv(eager["fisher_metric"]), eager["ricci"])
    ref = geometry.scalar_curvature(fam, X)
    np.testing.assert_allclose(r, ref, rtol=1e-9)


# --------------------------------------------------------------------------- gradients against the mpmath oracle


def _oracle_fd(point_fn, x_or_k, h):
    """Central differences of the mpmath oracle; ``point_fn(array) -> mpf``; returns mpf array."""
    arr = np.asarray(x_or_k, np.float64)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        plus, minus = arr.copy(), arr.copy()
        plus[idx] += h
        minus[idx] -= h
        with mpmath.workdps(50):
            out[idx] = (point_fn(plus) - point_fn(minus)) / (2 * mpmath.mpf(h))
    return out


def test_cumulant_gradient_matches_mpmath_oracle_differences():
    """``jax.grad`` of the cumulant curvature w.r.t. the query and the keys vs the oracle.

    Reference.  The oracle is exact to ``rtol = 1e-25``; ``x +- h`` with ``h = 2**-20`` is exact
    in binary, so it sees exactly those points.  The central quotient
    ``D(h) = (R(x+h e_i) - R(x-h e_i)) / 2h`` errs by ``h^2 R''' / 6 + O(h^4)`` (about
    1.5e-13 |R'''|; measured 2.5e-13 here, 1e-12 of the gradient norm, as large as the float64
    gradient's own error, so ``D(h)`` alone would only support a ~1e-9 tolerance) plus
    ``1e-25 |R| / h ~ 1e-19``.  Richardson extrapolation ``(4 D(h) - D(2h)) / 3`` cancels the
    ``h^2`` term, leaving ``O(h^4 R^(5)) ~ 1e-25``; ``|D(2h) - D(h)| / 3`` estimates the ``h^2``
    term and is asserted small (the step is in the asymptotic regime).

    Tolerance.  What remains is the float64 gradient's rounding: the value's error model
    ``64 eps * cancellation * kappa`` is ~1e-14 relative at this moderate point and autodiff of
    the same formula amplifies rounding alike; GRAD_ORACLE_RTOL = 1e-11 of the gradient norm
    allows a factor ~100-1000 above that, and is 1e5 tighter than the ~1e-6 that a plain
    float64 finite difference could check.
    """
    K = ATTENTION_KEYS_8x2
    x = np.array([0.4, -0.7])
    h = 2.0**-20

    def rx(xx):
        return geometry.scalar_curvature_mp(geometry.attention(K), xx, dps=50, rtol=1e-25)

    def rk(kk):
        return geometry.scalar_curvature_mp(geometry.attention(kk), x, dps=50, rtol=1e-25)

    for t in (h, -h, 2 * h, -2 * h):
        assert np.array_equal((x + t) - x, np.full(2, t))  # the stencil points are exact
    # jitted (op-by-op autodiff costs seconds of dispatch); the stack test runs an un-jitted vmap
    gx = np.asarray(jax.jit(jax.grad(lambda q: geometry.scalar_curvature(geometry.attention(K), q, method="cumulant")))(x))
    gk = np.asarray(jax.jit(jax.grad(lambda k: geometry.scalar_curvature(geometry.attention(k), x, method="cumulant")))(jnp.asarray(K)))
    assert gk.shape == K.shape

    for name, g, fn, arg in (("query", gx, rx, x), ("keys", gk, rk, K)):
        if name == "keys":
            # all 16 key entries would cost 64 oracle calls; two random directions in key space
            # check the whole gradient (a wrong entry shows up with probability 1).  Entries in
            # {-1, 0, 1} keep K +- h d and K +- 2h d exact in binary (asserted below).
            dirs = np.random.default_rng(3).integers(-1, 2, size=(2,) + K.shape).astype(np.float64)
            for d in dirs:
                for t in (h, -h, 2 * h, -2 * h):
                    assert np.array_equal((K + t * d) - K, t * d)
            g = np.array([np.sum(gk * d) for d in dirs])
            fn = lambda t, fn=fn, dirs=dirs: fn(K + t[0] * dirs[0] + t[1] * dirs[1])  # noqa: E731
            arg = np.zeros(2)
        d1 = _oracle_fd(fn, arg, h)
        d2 = _oracle_fd(fn, arg, 2 * h)
        with mpmath.workdps(50):
            trunc = max(abs(a - b) for a, b in zip(d1.flat, d2.flat)) / 3  # ~ |D(h) - R'|
            rich = [(4 * a - b) / 3 for a, b in zip(d1.flat, d2.flat)]  # Richardson: O(h^4)
        ref = np.array([float(v) for v in rich]).reshape(arg.shape)
        norm = float(np.max(np.abs(ref)))
        assert norm > 1e-3, f"{name}: gradient too small for a relative comparison"
        assert float(trunc) < 1e-9 * norm, f"{name}: finite-difference truncation {float(trunc):.2e} is not small"
        tol = GRAD_ORACLE_RTOL * norm
        err = float(np.max(np.abs(g - ref)))
        assert err <= tol, f"{name}: |grad - oracle FD| = {err:.3e} > {tol:.3e}\n{g}\n{ref}"


# --------------------------------------------------------------------------- stacks of families


def test_vmap_over_a_stack_of_attention_families_equals_a_loop():
    rng = np.random.default_rng(7)
    Ks = rng.normal(size=(4, 8, 2))
    x = np.array([0.3, -0.5])
    X = rng.normal(size=(4, 2))
    loop = np.array([float(geometry.scalar_curvature(geometry.attention(k, scale=0.5), x, method="cumulant")) for k in Ks])
    loop_x = np.array([float(geometry.scalar_curvature(geometry.attention(k, scale=0.5), xi, method="cumulant")) for k, xi in zip(Ks, X)])

    def r(K, q):
        return geometry.scalar_curvature(geometry.attention(K, scale=0.5), q, method="cumulant")

    # one compiled program: stack of families at one point, families and points together, a stack
    # built outside the transformation, and per-family gradients
    fams = jax.vmap(lambda K: geometry.attention(K, scale=0.5))(Ks)

    @jax.jit
    def run(Ks, X, fams):
        return (
            jax.vmap(lambda K: r(K, x))(Ks),
            jax.vmap(r)(Ks, X),
            jax.vmap(lambda F: geometry.scalar_curvature(F, x, method="cumulant"))(fams),
            jax.vmap(jax.grad(lambda K: r(K, x)))(Ks),
        )

    stacked, both, prebuilt, gs = run(Ks, X, fams)
    np.testing.assert_allclose(np.asarray(stacked), loop, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(both), loop_x, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(prebuilt), loop, rtol=1e-12)
    # without jit too (op by op), the plain stack
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda K: r(K, x))(Ks)), loop, rtol=1e-12)
    # gradients of a stack: row i is the gradient of family i alone
    g1 = jax.jit(jax.grad(lambda K: r(K, x)))
    for i in range(4):
        np.testing.assert_allclose(np.asarray(gs[i]), np.asarray(g1(jnp.asarray(Ks[i]))), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- the default refuses traced input


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
def test_default_method_under_transformation_raises_type_error(transform):
    fam, X = _points("attention8x2")
    f = lambda x: geometry.scalar_curvature(fam, x)  # noqa: E731
    call = {"jit": lambda: jax.jit(f)(X[0]), "vmap": lambda: jax.vmap(f)(X), "grad": lambda: jax.grad(f)(X[0])}[transform]
    with pytest.raises(TypeError, match="method="):
        call()


def test_default_method_with_traced_family_raises_type_error():
    x = np.array([0.3, -0.5])
    with pytest.raises(TypeError, match="method="):
        jax.jit(lambda K: geometry.scalar_curvature(geometry.attention(K), x))(jnp.asarray(ATTENTION_KEYS_8x2))
