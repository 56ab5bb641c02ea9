"""The symbolic tensors reproduce geometry's sign and index conventions on spaces of known curvature."""

import sympy

import derivations
from derivations import ExprAlgebra, RationalAlgebra


def _rational(names, metric_fn):
    syms = [sympy.Symbol(n, real=True) for n in names]
    d = len(syms)
    alg = RationalAlgebra(names, d, symbols=syms).set_derivations([[int(i == a) for a in range(d)] for i in range(d)])
    return alg, metric_fn(*alg.gens)


def test_round_two_sphere_has_R_equal_two_over_r_squared():
    r = sympy.Symbol("r", positive=True)
    th, ph = sympy.symbols("theta phi", real=True)
    alg = ExprAlgebra((th, ph), sympy.cancel)
    c = derivations.curvature(alg, [[r**2, 0], [0, r**2 * sympy.sin(th) ** 2]])
    assert sympy.simplify(c.R - 2 / r**2) == 0
    # Gamma^theta_{phi phi} = -sin cos, Gamma^phi_{theta phi} = cot (Carroll eq. 3.31 analogue)
    assert sympy.simplify(c.gamma[0][1][1] + sympy.sin(th) * sympy.cos(th)) == 0
    assert sympy.simplify(c.gamma[1][0][1] - sympy.cos(th) / sympy.sin(th)) == 0


def test_poincare_half_plane_has_R_equal_minus_two():
    alg, g = _rational(["x", "y"], lambda x, y: [[1 / y**2, 0], [0, 1 / y**2]])
    assert derivations.curvature(alg, g).R + 2 == 0


def test_stereographic_three_sphere_has_R_equal_six_over_r_squared():
    names = ["y1", "y2", "y3", "r"]
    syms = [sympy.Symbol(n, real=True) for n in names]
    alg = RationalAlgebra(names, 3, symbols=syms).set_derivations([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    y1, y2, y3, r = alg.gens
    conf = 4 * r**4 / (r**2 + y1**2 + y2**2 + y3**2) ** 2
    g = [[conf if i == j else alg.zero for j in range(3)] for i in range(3)]
    assert derivations.curvature(alg, g).R - 6 / r**2 == 0


def test_riemann_antisymmetry_and_ricci_contraction_on_the_sphere():
    alg, g = _rational(["u", "v"], lambda u, v: [[4 / (1 + u**2 + v**2) ** 2, 0], [0, 4 / (1 + u**2 + v**2) ** 2]])
    c = derivations.curvature(alg, g)
    riem = derivations.riemann(alg, c.gamma)
    for r in range(2):
        for s in range(2):
            for m in range(2):
                for n in range(2):
                    assert riem[r][s][m][n] + riem[r][s][n][m] == 0
    for s in range(2):
        for n in range(2):
            assert sum((riem[r][s][r][n] for r in range(2)), alg.zero) - c.ricci[s][n] == 0
    assert c.R - 2 == 0  # unit sphere
    # sectional curvature sign: R_{1212} = g_{1a} R^a_{212} > 0 on the sphere
    r1212 = g[0][0] * riem[0][1][0][1]
    assert r1212.numer.LC > 0 and r1212.denom.LC > 0


def test_singular_metric_is_reported():
    alg, g = _rational(["x", "y"], lambda x, y: [[x, x], [x, x]])
    try:
        derivations.inverse(alg, g)
    except ZeroDivisionError as exc:
        assert "singular" in str(exc)
    else:
        raise AssertionError("a singular metric must raise")
