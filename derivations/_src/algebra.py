r"""The exact arithmetic the derivations run in: a field of functions with coordinate derivations.

Every geometric quantity is built from a metric by field operations
(``+ - * /``) and the coordinate derivatives :math:`\partial_a`.  An
:class:`Algebra` bundles the two, so :mod:`derivations._src.tensors` is written
once and runs on

* :class:`RationalAlgebra`: the rational function field :math:`\mathbb{Q}(y_1,\dots,y_N)`
  (``sympy.polys.fields``).  Elements are kept as reduced fractions of sparse
  polynomials, so *every* intermediate is canonical: an identity holds iff the
  difference is the zero element.  The coordinate derivatives are derivations of
  the field given by their values on the generators,
  :math:`\partial_a f = \sum_i \frac{\partial f}{\partial y_i}\,\partial_a y_i`
  (chain rule).  The generators need not *be* the coordinates: for softmax
  families they are the probabilities :math:`p_i` and
  :math:`\partial_a p_i = p_i\,\partial_a\log p_i` (see :mod:`.formulate`), so
  exponentials never appear and no ``simplify`` is needed.
* :class:`ExprAlgebra`: plain sympy expressions with ``sympy.diff`` and a
  caller-chosen normaliser (e.g. ``trigsimp`` for the round sphere in angles).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import sympy
from sympy.polys.fields import field as _field

__all__ = ["Algebra", "RationalAlgebra", "ExprAlgebra"]


class Algebra:
    """Interface: ``zero``, ``one``, ``const(c)``, ``d(f, a)``, ``norm(f)``, ``is_zero(f)``, ``to_expr(f)``."""

    dim: int

    def d(self, f, a: int):  # pragma: no cover - interface
        raise NotImplementedError

    def norm(self, f):
        return f

    def is_zero(self, f) -> bool:
        return self.norm(f) == 0

    def to_expr(self, f) -> sympy.Expr:
        return f


class RationalAlgebra(Algebra):
    r""":math:`\mathbb{Q}(y)` with derivations :math:`\partial_a y_i` = ``table[i][a]`` (field elements).

    ``names``: generator names (sympy symbol names); ``dim``: number of
    coordinates; ``table`` is filled by :meth:`set_derivations` once the
    generators exist (the derivative values are themselves field elements).
    """

    def __init__(self, names: Sequence[str], dim: int, symbols: Sequence[sympy.Symbol] | None = None):
        if not names:
            raise ValueError("RationalAlgebra needs at least one generator name")
        self.symbols = tuple(symbols) if symbols is not None else tuple(sympy.Symbol(n, real=True) for n in names)
        self.field, *gens = _field(self.symbols, sympy.QQ)
        self.gens = tuple(gens)
        self.dim = int(dim)
        self.table = None
        self.zero, self.one = self.field(0), self.field(1)

    def set_derivations(self, table):
        """``table[i][a]`` = :math:`\\partial_a y_i` for every generator ``i`` and coordinate ``a``."""
        if len(table) != len(self.gens) or any(len(row) != self.dim for row in table):
            raise ValueError(
                f"derivation table must have shape ({len(self.gens)} generators, {self.dim} coordinates), "
                f"got {len(table)} rows of lengths {[len(r) for r in table]}"
            )
        self.table = [[self.convert(v) for v in row] for row in table]
        return self

    def convert(self, value):
        """A field element from a number, sympy expression in the generators, or field element."""
        if isinstance(value, type(self.zero)) and value.field == self.field:
            return value
        if isinstance(value, sympy.Basic):
            return self.field.from_expr(value)
        return self.field(sympy.Rational(value) if isinstance(value, float) else value)

    def const(self, c):
        return self.convert(c)

    def d(self, f, a):
        if self.table is None:
            raise RuntimeError("RationalAlgebra.d called before set_derivations(table)")
        out = self.zero
        for i, y in enumerate(self.gens):
            dy = self.table[i][a]
            if dy != 0:
                dfi = f.diff(y)
                if dfi != 0:
                    out += dfi * dy
        return out

    def is_zero(self, f) -> bool:
        return f == 0  # reduced fractions: canonical

    def to_expr(self, f) -> sympy.Expr:
        return f.as_expr() if hasattr(f, "as_expr") else sympy.sympify(f)

    def substitute(self, f, values):
        """``f`` with generator ``i`` replaced by ``values[i]``, evaluated term by term (no ``cancel``).

        ``values``: sequence of sympy rationals (the result is a sympy Rational) or of
        elements of another rational function field (the result lives there).
        """
        f = self.convert(f)
        if len(values) != len(self.gens):
            raise ValueError(f"substitute needs {len(self.gens)} values (one per generator), got {len(values)}")
        rational = all(isinstance(v, (int, sympy.Rational)) for v in values)
        vals = [sympy.QQ.from_sympy(sympy.Rational(v)) for v in values] if rational else list(values)

        def poly(p):
            total = 0
            for monom, coeff in p.terms():
                term = coeff
                for v, e in zip(vals, monom):
                    if e:
                        term = term * v**e
                total = total + term
            return total

        num, den = poly(f.numer), poly(f.denom)
        if rational:
            if den == 0:
                raise ZeroDivisionError("denominator vanishes at the substituted point")
            return sympy.QQ.to_sympy(num / den)
        return num / den


@dataclasses.dataclass
class ExprAlgebra(Algebra):
    """sympy expressions in ``coords`` with ``sympy.diff``; ``normalise`` decides zero-ness."""

    coords: tuple
    normalise: Callable = sympy.cancel

    def __post_init__(self):
        self.coords = tuple(self.coords)
        self.dim = len(self.coords)
        self.zero, self.one = sympy.Integer(0), sympy.Integer(1)

    def const(self, c):
        return sympy.sympify(c)

    def convert(self, value):
        return sympy.sympify(value)

    def d(self, f, a):
        return sympy.diff(f, self.coords[a])

    def norm(self, f):
        return self.normalise(f)
