r"""Exact (rational) formulations of a family's Fisher metric, built from its single definition.

Nothing here re-types a family's formula; it is read off the :class:`geometry.Family`:

Softmax-linear families (categorical, attention, multi-head)
    From each head's keys :math:`k_i` and scale :math:`s` (converted *exactly*:
    every float64 is a binary rational) the logits are lowered with
    ``geometry.SYMPY`` to :math:`z_i(x) = s\,k_i\cdot x`.  With
    :math:`u_i = e^{z_i}` we have :math:`\partial_a u_i = (\partial_a z_i)\,u_i`
    and :math:`p_i = u_i/\sum_l u_l`, so the score
    :math:`\partial_a \log p_i = \partial_a p_i / p_i` is a rational function of
    :math:`u`, homogeneous of degree 0, hence a rational function of
    :math:`p_1,\dots,p_{n-1}` (with :math:`p_n = 1 - \sum_{i<n} p_i`).  The
    derivations then work in :math:`\mathbb{Q}(p_1,\dots,p_{n-1})` with
    :math:`\partial_a p_i = p_i\,\partial_a\log p_i` and the Fisher metric
    :math:`g_{ab} = \sum_i p_i\,\partial_a\log p_i\,\partial_b\log p_i`
    (Amari & Nagaoka 2000, eq. 2.6).  No exponential is ever simplified.
Exponential families (Gaussian, user)
    :math:`\psi` lowered with ``geometry.SYMPY`` in natural coordinates,
    :math:`g_\theta = J^\top\,\nabla^2\psi(\eta(\theta))\,J` with
    :math:`J = \partial\eta/\partial\theta` from ``family.natural``; a rational
    metric goes into :math:`\mathbb{Q}(\theta)`, anything else stays a sympy
    expression normalised by ``cancel``.
Discrete families
    :math:`g_{ab} = \sum_x p\,\partial_a\log p\,\partial_b\log p` from the lowered
    ``log_probs`` (sympy expressions, ``simplify``; slow, for small examples).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import mpmath
import numpy as np
import sympy

import geometry

from .algebra import Algebra, ExprAlgebra, RationalAlgebra

__all__ = ["Formulation", "formulate", "exact_rational"]


def exact_rational(value) -> sympy.Rational:
    """The exact binary rational of a float64 (``0.1`` gives 3602879701896397/36028797018963968)."""
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"cannot convert non-finite value {value!r} to an exact rational")
    return sympy.Rational(v)


@dataclasses.dataclass
class Formulation:
    """A family's Fisher metric as exact algebra elements.

    ``coords``: sympy symbols of the coordinates (display and evaluation);
    ``alg``: the algebra; ``g``: metric ``g[a][b]``; ``probs``: per head the
    list of probabilities as algebra elements (softmax only); ``logits``: per
    head the sympy logits :math:`z_i(x)`; ``variables``: what the algebra's
    generators mean, as LaTeX lines for the documents.
    """

    family: object
    coords: tuple
    alg: Algebra
    g: list
    probs: list = dataclasses.field(default_factory=list)
    logits: list = dataclasses.field(default_factory=list)
    variables: list = dataclasses.field(default_factory=list)
    natural: object = None  # sympy eta(theta) for exponential families
    head_symbols: list = dataclasses.field(default_factory=list)  # softmax: [p_1..p_n] per head (p_n not a generator)
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ evaluation
    def generator_values(self, x, exact: bool = True):
        """Values of the algebra's generators at coordinates ``x`` (sympy numbers; exact if ``exact``).

        Softmax: :math:`p_i = e^{z_i(x)} / \\sum_l e^{z_l(x)}` per head; otherwise the coordinates.
        """
        x = [sympy.nsimplify(v, rational=True) if exact and isinstance(v, float) else sympy.sympify(v) for v in x]
        if len(x) != len(self.coords):
            raise ValueError(f"x must have {len(self.coords)} coordinates, got {len(x)}")
        if not self.probs:
            return dict(zip(self.alg.symbols, x)) if isinstance(self.alg, RationalAlgebra) else dict(zip(self.coords, x))
        sub = dict(zip(self.coords, x))
        vals = {}
        for head_syms, z in zip(self.head_symbols, self.logits):
            ez = [sympy.exp(zi.subs(sub)) for zi in z]
            tot = sympy.Add(*ez)
            for sym, e in zip(head_syms[:-1], ez):
                vals[sym] = e / tot
        return vals

    def generator_values_from_u(self, u_per_head):
        """Generators from (possibly rational) unnormalised weights :math:`u_i = e^{z_i}` per head."""
        vals = {}
        for head_syms, u in zip(self.head_symbols, u_per_head):
            u = [sympy.sympify(v) for v in u]
            tot = sympy.Add(*u)
            for sym, ui in zip(head_syms[:-1], u):
                vals[sym] = ui / tot
        return vals

    def evaluate(self, element, values, dps: int = 50):
        """An algebra element at generator ``values`` as an ``mpmath.mpf`` with ``dps`` working digits.

        The element is lambdified once (cached per element) in the generator
        symbols; the values (exact sympy numbers) are rounded to ``dps + 10`` digits.
        """
        expr = self.alg.to_expr(element)
        syms = tuple(sorted(expr.free_symbols, key=str))
        key = (id(element), syms)
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = (sympy.lambdify(syms, expr, modules="mpmath"), element)
        with mpmath.workdps(dps + 10):
            args = [mpmath.mpmathify(str(sympy.N(values[s], dps + 10))) for s in syms]
            out = fn[0](*args)
        with mpmath.workdps(dps):
            return +out

    def exact_value(self, element, values):
        r"""An algebra element at ``values`` (``{generator symbol: sympy number}``) as an exact sympy number.

        Rational values are substituted term by term in :math:`\mathbb{Q}` (fast, exact);
        anything else goes through ``sympy.cancel``.
        """
        if isinstance(self.alg, RationalAlgebra) and all(s in values for s in self.alg.symbols):
            vals = [values[s] for s in self.alg.symbols]
            if all(isinstance(v, (int, sympy.Rational)) for v in vals):
                return self.alg.substitute(element, vals)
        return sympy.cancel(self.alg.to_expr(element).subs(values))

    def metric_mp(self, x, dps: int = 50):
        """Fisher metric at coordinates ``x`` in ``dps``-digit arithmetic (``mpmath.matrix``) from the exact form."""
        vals = self.generator_values(x)
        d = len(self.g)
        with mpmath.workdps(dps):
            return mpmath.matrix([[self.evaluate(self.g[a][b], vals, dps) for b in range(d)] for a in range(d)])


def _softmax(family, scale=None, coord_names=None) -> Formulation:
    m = family.dim
    names = coord_names or [f"x_{a + 1}" for a in range(m)]
    coords = tuple(sympy.Symbol(nm, real=True) for nm in names)
    heads = family.heads
    multi = len(heads) > 1
    s_sym = scale if isinstance(scale, sympy.Symbol) else None

    # 1. logits from the definition, lowered with geometry.SYMPY (exact rationals)
    logits = []
    for h in heads:
        # s * (K x) rather than (s K) x: the float64 product s * K would round once
        s = s_sym if s_sym is not None else exact_rational(h.scale)
        z = [sympy.expand(s * zi) for zi in geometry.SYMPY.matvec(h.keys, list(coords))]
        if h.offset is not None:  # a logit offset moves p only: exact rationals, as the keys
            z = [zi + exact_rational(b) for zi, b in zip(z, np.asarray(h.offset))]
        logits.append(z)

    # 2. scores d_a log p_i in Q(u) (+ s), homogeneous of degree 0
    extra = [s_sym] if s_sym is not None else []
    head_u, head_p = [], []
    for hi, h in enumerate(heads):
        n = h.keys.shape[0]
        tag = f"{hi + 1}," if multi else ""
        head_u.append([sympy.Symbol(f"u_{{{tag}{i + 1}}}", positive=True) for i in range(n)])
        head_p.append([sympy.Symbol(f"p_{{{tag}{i + 1}}}", positive=True) for i in range(n)])
    u_syms = [u for us in head_u for u in us] + extra
    ualg = RationalAlgebra([str(u) for u in u_syms], m, symbols=u_syms)
    table = []
    for us, z in zip(head_u, logits):
        for u, zi in zip(us, z):
            table.append([sympy.diff(zi, c) * u for c in coords])
    table += [[0] * m for _ in extra]
    ualg.set_derivations(table)
    scores_u = []
    for us in head_u:
        U = [ualg.convert(u) for u in us]
        tot = sum(U[1:], U[0])
        p = [ui / tot for ui in U]
        scores_u.append([[ualg.d(pi, a) / pi for a in range(m)] for pi in p])

    # 3. move to Q(p_1..p_{n-1}) per head (+ s): degree-0 => substitute u_i -> p_i, u_n -> 1 - sum
    p_syms = [p for ps in head_p for p in ps[:-1]] + extra
    alg = RationalAlgebra([str(p) for p in p_syms], m, symbols=p_syms)
    sub = {}
    probs = []
    for us, ps in zip(head_u, head_p):
        last = 1 - sympy.Add(*ps[:-1])
        sub.update({u: p for u, p in zip(us[:-1], ps[:-1])})
        sub[us[-1]] = last
        probs.append([alg.convert(p) for p in ps[:-1]] + [alg.convert(last)])
    scores = [[[alg.convert(ualg.to_expr(sc).subs(sub)) for sc in row] for row in head] for head in scores_u]
    dtable = []
    for ph, sh in zip(probs, scores):
        for i in range(len(ph) - 1):
            dtable.append([ph[i] * sh[i][a] for a in range(m)])
    dtable += [[0] * m for _ in extra]
    alg.set_derivations(dtable)
    g = [[sum((ph[i] * sh[i][a] * sh[i][b] for ph, sh in zip(probs, scores) for i in range(len(ph))), alg.zero) for b in range(m)] for a in range(m)]

    variables = []
    for ps, z in zip(head_p, logits):
        n = len(ps)
        zl = ", ".join(sympy.latex(zi) for zi in z)
        variables.append(
            rf"p_i = e^{{z_i}} / \sum_{{l=1}}^{{{n}}} e^{{z_l}},\quad (z_1,\dots,z_{{{n}}}) = ({zl}),\quad "
            rf"{sympy.latex(ps[-1])} = 1 - " + " - ".join(sympy.latex(p) for p in ps[:-1])
        )
    return Formulation(family, coords, alg, g, probs=probs, logits=logits, variables=variables, head_symbols=head_p)


def _exponential(family, coord_names=None) -> Formulation:
    d = family.dim
    names = coord_names or [f"theta_{a + 1}" for a in range(d)]
    coords = tuple(sympy.Symbol(nm, real=True) for nm in names)
    eta_s = sympy.symbols(f"eta_1:{d + 1}", real=True)
    psi = family.log_partition(list(eta_s), geometry.SYMPY)
    hess = sympy.Matrix(d, d, lambda i, j: sympy.diff(psi, eta_s[i], eta_s[j]))
    if family.natural is None:
        eta = list(coords)
    else:
        eta = list(family.natural(list(coords), geometry.SYMPY))
    jac = sympy.Matrix(d, d, lambda i, j: sympy.diff(eta[i], coords[j]))
    g_expr = (jac.T * hess.subs(dict(zip(eta_s, eta))) * jac).applyfunc(sympy.cancel)
    try:
        alg = RationalAlgebra([str(c) for c in coords], d, symbols=coords)
        alg.set_derivations([[1 if i == a else 0 for a in range(d)] for i in range(d)])
        g = [[alg.convert(g_expr[i, j]) for j in range(d)] for i in range(d)]
    except Exception:  # not a rational function of the coordinates
        alg = ExprAlgebra(coords, sympy.cancel)
        g = [[g_expr[i, j] for j in range(d)] for i in range(d)]
    variables = [r"\psi(\eta) = " + sympy.latex(psi)]
    if family.natural is not None:
        variables.append(r"\eta(\theta) = " + sympy.latex(sympy.Matrix(eta).T))
    return Formulation(family, coords, alg, g, variables=variables, natural=eta)


def _discrete(family, coord_names=None) -> Formulation:
    d = family.dim
    names = coord_names or [f"theta_{a + 1}" for a in range(d)]
    coords = tuple(sympy.Symbol(nm, real=True) for nm in names)
    lp = family.log_probs(list(coords), geometry.SYMPY)
    g = [[sympy.simplify(sympy.Add(*[sympy.exp(l) * sympy.diff(l, coords[a]) * sympy.diff(l, coords[b]) for l in lp]))
          for b in range(d)] for a in range(d)]
    return Formulation(family, coords, ExprAlgebra(coords, sympy.simplify), g, variables=[r"\log p_\theta = " + sympy.latex(sympy.Matrix(lp).T)])


def formulate(family, scale=None, coord_names: Sequence[str] | None = None) -> Formulation:
    """The exact Fisher metric of ``family`` (a :class:`geometry.Family`) in the best algebra for its kind.

    ``scale``: for softmax families, a positive ``sympy.Symbol`` replacing every
    head's scale (to derive a statement for *all* temperatures at once); ``None``
    keeps the family's own (exact) scale.  ``coord_names``: display names.
    """
    if not isinstance(family, geometry.Family):
        raise TypeError(f"family must be a geometry.Family (e.g. geometry.categorical(3)), got {type(family).__name__}")
    if coord_names is not None and len(coord_names) != family.dim:
        raise ValueError(f"coord_names needs {family.dim} names for {family.name}, got {len(coord_names)}")
    if scale is not None and not (isinstance(scale, sympy.Symbol) and scale.is_positive):
        raise ValueError(f"scale must be None or a positive sympy Symbol (sympy.Symbol('s', positive=True)), got {scale!r}")
    if family.kind == "softmax-linear":
        return _softmax(family, scale, coord_names)
    plain_jax = NotImplementedError(
        f"{family.name} is defined by a plain JAX function; write it as f(theta, xp) so it can be lowered to sympy"
    )
    if family.kind == "exponential":
        # only log_partition and the chart enter the metric: a JAX-only entropy does not stop the derivation
        try:
            return _exponential(family, coord_names)
        except NotImplementedError:
            raise plain_jax from None
    if not family.lowerable:
        raise plain_jax
    return _discrete(family, coord_names)
