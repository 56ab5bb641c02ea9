"""``python -m derivations --plugin FILE.py``: exact metric and curvature of the families a plugin registers.

The gamma family's curvature is checked against a closed form derived here, by hand, and against
the mpmath oracle.  Gamma(shape k, rate b) with eta = (k - 1, -b), psi = lgamma(k) - k log b: the
Fisher metric is the Hessian of psi, g = [[psi_1(k), 1/b], [1/b, k/b^2]] (psi_n the polygamma
functions), with third derivatives T_111 = psi_2(k), T_112 = 0, T_122 = 1/b^2, T_222 = 2k/b^3 (in eta).
For a 2-d Hessian metric R = (|T|^2_g - |tau|^2_g)/4 (Totaro 2004); with det g = (k psi_1 - 1)/b^2
this reduces to

    R(k) = (psi_1(k) + k psi_2(k)) / (2 (k psi_1(k) - 1)^2),

a function of the shape k alone (the rate b is a scale: b -> c b is an isometry).
"""

from __future__ import annotations

import contextlib
import io
import types

import mpmath
import numpy as np
import pytest
import sympy

import checks
import geometry
from derivations.__main__ import main
from derivations._src import plugins

PLUGIN = '''
import numpy as np
import jax.numpy as jnp
import jax.scipy.special as jss

import checks
import geometry
from toy_kind import tempered_simplex, toy_sampler


def gamma_entropy(e):  # JAX only (needs digamma): the exact derivation needs only the log-partition
    k, b = e[0] + 1, -e[1]
    return jss.gammaln(k) - jnp.log(b) - (k - 1) * jss.digamma(k) + k


gamma = geometry.exponential_family(lambda e, xp: xp.lgamma(e[0] + 1) - (e[0] + 1) * xp.log(-e[1]), dim=2,
                                    name="gamma", entropy=gamma_entropy)
checks.register_family("test-plugin gamma", gamma,
                       lambda rng, n: np.column_stack([rng.uniform(0.5, 3, n), -rng.uniform(0.5, 3, n)]))


def beta_entropy(t):
    a, b = t[0], t[1]
    return (jss.gammaln(a) + jss.gammaln(b) - jss.gammaln(a + b) - (a - 1) * jss.digamma(a)
            - (b - 1) * jss.digamma(b) + (a + b - 2) * jss.digamma(a + b))


# Beta(a, b) in the shifted natural coordinates (a, b) = eta + 1 > 0
beta = geometry.exponential_family(lambda e, xp: xp.lgamma(e[0]) + xp.lgamma(e[1]) - xp.lgamma(e[0] + e[1]), dim=2,
                                   name="beta", entropy=beta_entropy)
checks.register_family("test-plugin beta", beta, lambda rng, n: rng.uniform(0.5, 4, (n, 2)))

plain = geometry.exponential_family(lambda e: jnp.logaddexp(e[0], e[1]) + e[0] ** 2 / 2 + e[1] ** 2, dim=2,
                                    entropy=lambda e: jnp.sum(e ** 2), name="plain-jax")
checks.register_family("test-plugin plain", plain, lambda rng, n: rng.uniform(-1, 1, (n, 2)))

# a kind formulate() does not know: derived from family.lower_metric(coords, geometry.SYMPY)
checks.register_family("test-plugin toy", tempered_simplex(3, 0.5), toy_sampler(0.5, 2))
# an exponential family with a chart (eta(mu, sigma)): R = -1
checks.register_family("test-plugin gaussian", geometry.gaussian(),
                       lambda rng, n: np.column_stack([rng.normal(0, 1, n), rng.uniform(0.5, 2, n)]))
'''

NAMES = ["test-plugin gamma", "test-plugin beta", "test-plugin plain", "test-plugin toy", "test-plugin gaussian"]


def gamma_R(k):
    """The closed form of the module docstring, in mpmath."""
    p1, p2 = mpmath.polygamma(1, k), mpmath.polygamma(2, k)
    return (p1 + k * p2) / (2 * (k * p1 - 1) ** 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    path = tmp / "my_families.py"
    path.write_text(PLUGIN)
    out = tmp / "out"
    captured = []
    real = plugins.run_plugins

    def recording(families, progress=print):
        res = real(families, progress)
        captured.extend(res)
        return res

    mp = pytest.MonkeyPatch()
    mp.setattr(plugins, "run_plugins", recording)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = main(["--plugin", str(path), "--out", str(out)])
    finally:
        mp.undo()
        for name in NAMES:
            checks.unregister_family(name)
    return types.SimpleNamespace(rc=rc, out=out, stdout=buf.getvalue(), results={r.name: r for r in captured}, path=path)


def test_documents_index_and_exit_code(run):
    assert run.rc == 0, run.stdout
    assert set(run.results) == set(NAMES)
    for name in ("gamma", "beta", "toy", "gaussian"):
        doc = run.out / "plugins" / f"test-plugin-{name}.md"
        assert doc.exists(), name
        text = doc.read_text()
        assert "## Scalar curvature" in text and "## Metric" in text and "## Christoffel symbols" in text
        assert "NUMERIC_RTOL" in text and "| yes |" in text
    index = (run.out / "plugins" / "index.md").read_text()
    assert "(test-plugin-gamma.md)" in index and "(test-plugin-beta.md)" in index
    assert not (run.out / "index.md").exists()  # --plugin alone leaves the shipped documents alone


def test_timing_lines_printed(run):
    for name in ("gamma", "beta", "toy", "gaussian"):
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith(f"plugin test-plugin {name} "))
        assert " exact " in line and " s " in line and "NUMERIC_RTOL 1e-12) ok" in line
        assert run.results[f"test-plugin {name}"].derivation.seconds < 30  # seconds, not minutes
    assert "total: exact derivations" in run.stdout


def test_plain_jax_family_is_listed_with_its_reason(run):
    r = run.results["test-plugin plain"]
    assert r.derivation is None and not r.error and "plain JAX function" in r.reason
    index = (run.out / "plugins" / "index.md").read_text()
    row = next(ln for ln in index.splitlines() if "`test-plugin plain`" in ln)
    assert "plain JAX function" in row and "not derived" in row
    assert not (run.out / "plugins" / "test-plugin-plain.md").exists()


def test_gamma_curvature_equals_the_closed_form(run):
    d = run.results["test-plugin gamma"].derivation
    t1, t2 = d.results["coords"]
    assert d.results["depends_on"] == [t1]  # a function of the shape only
    k = sympy.Symbol("k", positive=True)
    ref = (sympy.polygamma(1, k) + k * sympy.polygamma(2, k)) / (2 * (k * sympy.polygamma(1, k) - 1) ** 2)
    assert sympy.cancel(d.results["R"] - ref.subs(k, t1 + 1)) == 0
    assert d.numeric[0]["ok"] and d.numeric[0]["points"] >= 20 and d.numeric[0]["threshold"] == 1e-12
    # the closed form against the mpmath oracle (a lowerable copy of the family: no JAX-only entropy)
    fam = geometry.exponential_family(lambda e, xp: xp.lgamma(e[0] + 1) - (e[0] + 1) * xp.log(-e[1]), dim=2)
    for x in ([0.7, -1.3], [2.5, -0.6], [1.25, -2.75]):
        oracle = geometry.scalar_curvature_mp(fam, np.array(x), dps=40)
        with mpmath.workdps(40):
            assert abs(gamma_R(mpmath.mpf(x[0]) + 1) - oracle) <= mpmath.mpf(10) ** -30 * abs(oracle)


def test_other_families(run):
    beta = run.results["test-plugin beta"].derivation
    a, b = beta.results["coords"]
    assert set(beta.results["depends_on"]) == {a, b} and beta.numeric[0]["ok"]
    assert run.results["test-plugin gaussian"].derivation.results["R"] == -1
    toy = run.results["test-plugin toy"].derivation
    assert toy.results["R"] == sympy.Rational(1, 2) and toy.results["reduced"] and toy.proven


def test_density_kind_is_listed_not_derived():
    stand_in = types.SimpleNamespace(kind="density", name="weibull", dim=2)
    r = plugins.derive_family("weibull", stand_in, lambda rng, n: rng.uniform(1, 2, (n, 2)))
    assert r.derivation is None and r.reason == plugins.DENSITY_REASON and r.ok


@pytest.mark.skipif(not hasattr(geometry, "regression_family"), reason="geometry.regression_family not available")
def test_regression_and_density_kinds():
    line = geometry.regression_family(lambda th, x, xp: th[0] + th[1] * x, inputs=np.linspace(0, 1, 5), name="line")
    r = plugins.derive_family("line", line, lambda rng, n: rng.normal(size=(n, 2)))
    assert r.derivation.results["R"] == 0 and r.derivation.numeric[0]["ok"]  # linear in theta: flat
    decay = geometry.regression_family(lambda th, t, xp: xp.exp(-th[0] * t) + xp.exp(-th[1] * t),
                                       inputs=np.array([1.0, 2.0, 3.0]), name="decay")
    r = plugins.derive_family("decay", decay, lambda rng, n: np.column_stack([rng.uniform(0.3, 0.8, n), rng.uniform(1.5, 3, n)]))
    d = r.derivation
    assert d.results["reduced"] and d.proven and d.numeric[0]["ok"] and d.seconds < 30
    if hasattr(geometry, "density_family"):
        wb = geometry.density_family(
            lambda th, x, xp: xp.log(th[0] / th[1]) + (th[0] - 1) * xp.log(x / th[1]) - (x / th[1]) ** th[0],
            dim=2, support=(0, np.inf), name="weibull")
        r = plugins.derive_family("weibull", wb, lambda rng, n: rng.uniform(1, 3, (n, 2)))
        assert r.derivation is None and r.reason == plugins.DENSITY_REASON


def test_exact_exponentials_do_not_overflow():
    """exp(0.1 t), exp(0.3 t): one generator each (cancel would write them as powers of exp(t / 2**55))."""
    t1, t2 = sympy.symbols("theta_1 theta_2", real=True)
    g = [[sympy.exp(-0.1 * t1) + sympy.exp(-0.3 * t1), 0], [0, sympy.exp(2.0 * t2) + sympy.exp(t2)]]
    aa = plugins.atom_algebra((t1, t2), g)
    assert len(aa.atoms) == 3  # exp(-0.1 t1), exp(-0.3 t1), exp(t2) (exp(2 t2) = a^2)
    u = next(s for s, e in aa.atoms.items() if e == sympy.exp(t2))
    assert aa.alg.to_expr(aa.g[1][1]) == u**2 + u


def test_numeric_mismatch_gives_nonzero_exit_and_only_adds_shipped(tmp_path, monkeypatch, capsys):
    path = tmp_path / "toy_plugin.py"
    path.write_text("import checks\nfrom toy_kind import tempered_simplex, toy_sampler\n"
                    "checks.register_family('test-plugin strict', tempered_simplex(3, 0.5), toy_sampler(0.5, 2))\n")
    monkeypatch.setattr(plugins, "NUMERIC_RTOL", 1e-300)  # any float64 rounding now exceeds the threshold
    try:
        rc = main(["--plugin", str(path), "--out", str(tmp_path / "out"), "--only", "conventions"])
    finally:
        checks.unregister_family("test-plugin strict")
    out = capsys.readouterr().out
    assert rc == 1 and "EXCEEDED" in out
    index = (tmp_path / "out" / "index.md").read_text()
    assert "(conventions.md)" in index and "User families" in index and "(plugins/test-plugin-strict.md)" in index
