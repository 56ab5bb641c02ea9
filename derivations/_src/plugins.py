r"""Exact derivations of user families (``python -m derivations --plugin FILE.py``).

``FILE.py`` is the plugin file of ``python -m checks --plugin``: it registers families
with :func:`checks.register_family`.  For every family it registers we derive, with
sympy, the exact Fisher metric :math:`g`, the Christoffel symbols and the scalar
curvature :math:`R`, and compare :math:`R` (evaluated at ``EVAL_DPS`` digits) with
float64 :func:`geometry.scalar_curvature` at ``NUMERIC_POINTS`` points drawn with the
registered sampler (seeded), against ``NUMERIC_RTOL``.

How the exact metric is obtained, by kind:

* softmax-linear and exponential families (``log_partition`` and the optional
  ``natural`` chart; only these need to lower: a JAX-only *entropy* does not stop the
  derivation): :func:`derivations.formulate`;
* any other kind whose ``family.lower_metric(coords, geometry.SYMPY)`` works (discrete
  families -- ``formulate``'s ``simplify``-based discrete path ran for more than 10
  minutes on a 3-outcome affine softmax, this one takes 0.3 s --, the regression kind):
  the lowered metric, with every float64 replaced by its exact
  binary rational and every non-rational sub-expression (``exp(...)``, ``polygamma``,
  ``sqrt``, ...) made a generator of a rational function field
  :math:`\mathbb{Q}(\theta, a_1, \dots, a_k)` whose derivations are read off
  ``sympy.diff`` (:func:`atom_algebra`).  No ``simplify`` and no ``cancel`` on
  transcendental expressions: ``cancel`` writes ``exp(0.1 x)`` and ``exp(0.3 x)`` as
  powers of ``exp(x / 2**55)`` and overflows.  Reduced fractions in many generators are
  slow (float64 data gives one generator per data point), so beyond
  ``MAX_REDUCED_ATOMS`` non-constant generators, or past ``REDUCE_BUDGET_S``, the tensors
  are computed as exact but unreduced sympy expressions (the document says so).
* densities (a metric that is an integral over :math:`x`) and plain-JAX families
  are not derived; they are listed with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import signal
import threading
import time
import zlib

import mpmath
import numpy as np
import sympy

import geometry

from . import tensors
from .algebra import ExprAlgebra, RationalAlgebra
from .formulate import exact_rational, formulate
from .theorems import EVAL_DPS, NUMERIC_POINTS, NUMERIC_RTOL, SEED, Derivation, christoffel_lines

__all__ = ["PluginResult", "atom_algebra", "derive_family", "run_plugins", "slugify", "DENSITY_REASON"]

DENSITY_REASON = "its Fisher metric is an integral over x with no closed form in sympy; computed by quadrature"
#: formulate() knows these kinds; any other goes through ``family.lower_metric(coords, SYMPY)``
FORMULATE_KINDS = ("softmax-linear", "exponential")
#: LaTeX longer than this is not printed (the size is reported instead)
MAX_TEX = 20000
#: Christoffel symbols are listed when their LaTeX is at most this long
MAX_CHRISTOFFEL_TEX = 8000
#: a lowered metric is reduced in Q(theta, a) (canonical R) when it has at most this many non-constant
#: generators a_i and the reduction ends within REDUCE_BUDGET_S; otherwise R is exact but unreduced.
#: (Measured: 2 generators with integer data, 4 s; 3 generators from float64 data, > 100 s.)
MAX_REDUCED_ATOMS = 3
REDUCE_BUDGET_S = 20.0


def slugify(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "family"


@dataclasses.dataclass
class PluginResult:
    """One registered family: its derivation, or the reason it has none (``error``: the derivation itself failed)."""

    name: str
    slug: str
    kind: str
    derivation: Derivation | None = None
    reason: str | None = None
    error: bool = False

    @property
    def ok(self) -> bool:
        if self.error:
            return False
        return self.derivation is None or all(r["ok"] for r in self.derivation.numeric)


# ----------------------------------------------------------------------------- exact algebra of lowered metrics


def _rationalise(expr):
    """Every float in ``expr`` replaced by its exact binary rational (``exact_rational``)."""
    expr = sympy.sympify(expr)
    floats = expr.atoms(sympy.Float)
    return expr.xreplace({f: exact_rational(f) for f in floats}) if floats else expr


#: exponentials exp(sum_j c_j theta_j + c_0) with rational c_j are written as products of integer powers
#: of u_j = exp(b_j theta_j), b_j the rational gcd of the c_j met in the metric, when |c_j / b_j| <= MAX_EXP_MULTIPLE
#: (so exp(2 x) = exp(x)^2 is built in, also for c = 1/0.3 in binary); otherwise (float64 data: 0.1, 0.3, 0.7
#: have gcd 2^-55) each exponential stays an atom of its own.
MAX_EXP_MULTIPLE = 64


def _linear(arg, coords):
    """``(c_0, [c_1..c_d])`` if ``arg`` is affine in ``coords`` with rational coefficients, else ``None``."""
    try:
        poly = sympy.Poly(arg, *coords)
    except sympy.PolynomialError:
        return None
    if poly.total_degree() > 1 or not all(c.is_Rational for c in poly.coeffs()):
        return None
    return poly.coeff_monomial(1), [poly.coeff_monomial(c) for c in coords]


class _Splitter:
    """Rewrites expressions in the coordinates and atom generators; new atoms are queued for their derivatives."""

    def __init__(self, coords, exprs):
        self.coords = tuple(coords)
        self.atoms: dict = {}  # expression -> (symbol, level)
        self.queue: list = []
        coeffs = [set() for _ in self.coords]
        for e in exprs:
            for ex in e.atoms(sympy.exp):
                lin = _linear(ex.args[0], self.coords)
                if lin is not None:
                    for j, c in enumerate(lin[1]):
                        if c != 0:
                            coeffs[j].add(sympy.Rational(c))
        self.base = []
        for cs in coeffs:
            if not cs:
                self.base.append(None)
                continue
            den = functools.reduce(sympy.ilcm, (c.q for c in cs), 1)
            b = sympy.Rational(functools.reduce(sympy.igcd, (abs(int(c * den)) for c in cs)), den)
            self.base.append(b if max(abs(c / b) for c in cs) <= MAX_EXP_MULTIPLE else None)
        self.u = [None] * len(self.coords)

    def atom(self, expr, level):
        if expr not in self.atoms:
            self.atoms[expr] = (sympy.Symbol(f"a_{{{len(self.atoms) + 1}}}", real=True), level)
            self.queue.append(expr)
        return self.atoms[expr][0]

    def _exp(self, expr, level):
        lin = _linear(expr.args[0], self.coords)
        if lin is None:
            return None
        c0, cs = lin
        out = self.atom(sympy.exp(c0), level) if c0 != 0 else sympy.Integer(1)
        for j, c in enumerate(cs):
            if c == 0:
                continue
            b = self.base[j]
            if b is None or (c / b).q != 1:
                return None
            if self.u[j] is None:
                self.u[j] = self.atom(sympy.exp(b * self.coords[j]), 0)
            out = out * self.u[j] ** int(c / b)
        return out

    def __call__(self, expr, level):
        if expr.is_Symbol or expr.is_Rational:
            return expr
        if expr.is_Add or expr.is_Mul:
            return expr.func(*[self(a, level) for a in expr.args])
        if expr.is_Pow and expr.exp.is_Integer:
            return self(expr.base, level) ** expr.exp
        if isinstance(expr, sympy.exp):
            canon = self._exp(expr, level)
            if canon is not None:
                return canon
        return self.atom(expr, level)


@dataclasses.dataclass
class AtomAlgebra:
    """A lowered metric in :math:`\\mathbb{Q}(\\theta, a)`: ``alg``, ``g`` (field elements), ``atoms`` (symbol -> expression)."""

    alg: RationalAlgebra
    g: list
    atoms: dict
    sentinel: sympy.Symbol

    def to_coords(self, expr):
        """An expression in the generators with the atoms written out (sympy auto-evaluation only)."""
        return expr.xreplace(self.atoms)


def atom_algebra(coords, g_exprs, depth: int = 2) -> AtomAlgebra:
    r"""The metric ``g_exprs`` (sympy, in ``coords``) as elements of a rational function field.

    Generators: the coordinates and each maximal non-rational sub-expression ("atom",
    e.g. ``exp(-theta_1/10)``, ``polygamma(1, theta_1)``) after splitting exponentials of
    sums (``exp(a + b) = exp(a) exp(b)``).  ``d_c atom = sympy.diff(atom, c)`` is written
    in the generators again, which may add atoms one level deeper; atoms of level
    ``depth`` (2: the curvature needs two derivatives of ``g``) are never differentiated
    by the curvature, and their derivatives are set to a sentinel generator whose
    absence from the result is checked.  Relations between atoms
    (``exp(2x) = exp(x)^2``) are not used, so a zero may stay unrecognised; every
    element is still exactly the quantity it represents.
    """
    coords = tuple(coords)
    d = len(coords)
    pre = lambda e: sympy.expand(_rationalise(e), deep=True, mul=False, multinomial=False, power_exp=True,  # noqa: E731
                                 power_base=False, log=False, basic=False)
    g_pre = [[pre(x) for x in row] for row in g_exprs]
    split = _Splitter(coords, [x for row in g_pre for x in row])
    g_split = [[split(x, 0) for x in row] for row in g_pre]
    atoms, queue = split.atoms, split.queue
    derivs = {}
    sentinel = sympy.Symbol("a_{over}", real=True)
    while queue:
        atom = queue.pop(0)
        sym, lvl = atoms[atom]
        row = []
        for c in coords:
            dv = sympy.diff(atom, c)
            if dv == 0:
                row.append(sympy.Integer(0))
            elif lvl >= depth:
                row.append(sentinel)
            else:
                row.append(split(pre(dv), lvl + 1))
        derivs[sym] = row
    extra = sorted({s for row in g_split for x in row for s in x.free_symbols} - set(coords) - {s for s, _ in atoms.values()}, key=str)
    gens = list(coords) + [s for s, _ in atoms.values()] + extra + [sentinel]
    alg = RationalAlgebra([str(s) for s in gens], d, symbols=gens)
    table = [[1 if i == a else 0 for a in range(d)] for i in range(d)]
    table += [derivs[s] for s, _ in atoms.values()]
    table += [[0] * d for _ in extra] + [[0] * d]
    alg.set_derivations(table)
    g = [[alg.convert(x) for x in row] for row in g_split]
    return AtomAlgebra(alg, g, {s: e for e, (s, _) in atoms.items()}, sentinel)


# ----------------------------------------------------------------------------- derivation of one family


def _tex_or_size(expr, what):
    t = sympy.latex(expr)
    if len(t) <= MAX_TEX:
        return f"$${what} = {t}$$"
    return f"${what}$ has {sympy.count_ops(expr)} operations ({len(t)} characters of LaTeX): too long to print."


def _dag_size(expr) -> int:
    """Number of distinct sub-expressions (a shared sub-tree counts once; printing would expand it)."""
    seen, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if e not in seen:
            seen.add(e)
            stack.extend(e.args)
    return len(seen)


def _factor(expr):
    try:
        return sympy.factor(expr) if sympy.count_ops(expr) < 4000 else expr
    except Exception:  # noqa: BLE001 (factor is cosmetic)
        return expr


def _numeric_row(exact_fn, family, points, label):
    """Exact R (``EVAL_DPS`` digits) vs float64 ``geometry.scalar_curvature`` at ``points``."""
    pts = np.asarray(points, np.float64)
    numeric = np.asarray(geometry.scalar_curvature(family, pts), np.float64)
    rel = []
    for x, r_num in zip(pts, numeric):
        exact = exact_fn(x)
        rel.append(abs(float(exact) - r_num) / max(abs(float(exact)), 1e-300) if exact != 0 else abs(r_num))
    worst = float(np.max(rel)) if rel else float("nan")
    ok = bool(np.isfinite(worst) and worst <= NUMERIC_RTOL)
    return {"family": label, "points": len(pts), "max_rel_diff": worst, "threshold": NUMERIC_RTOL, "ok": ok}


def _formulated(family, coord_names):
    """(coords, alg, curvature, definition lines, value(element, x)) from ``formulate``."""
    form = formulate(family, coord_names=coord_names)
    c = tensors.curvature(form.alg, form.g)

    def value(element, x):
        return form.evaluate(element, form.generator_values([exact_rational(v) for v in x]), EVAL_DPS)

    # softmax: the generators are probabilities, defined in the document; otherwise the coordinates
    return form.coords, form.alg, c, list(form.variables), value


def _evaluator(alg, coords, atoms):
    """``value(element, x)``: an element (in coordinates and atom generators) at float64 ``x``, ``EVAL_DPS`` digits."""
    cache = {}

    def value(element, x):
        key = id(element)
        if key not in cache:
            expr = alg.to_expr(element)
            gens = sorted((s for s in expr.free_symbols if s in atoms), key=str)
            fa = [sympy.lambdify(coords, atoms[s], modules="mpmath") for s in gens]
            cache[key] = (sympy.lambdify(list(coords) + gens, expr, modules="mpmath", cse=True), fa, element)
        f, fa, _ = cache[key]
        with mpmath.workdps(EVAL_DPS + 10):
            xs = [mpmath.mpf(float(v)) for v in x]  # a float64 is an exact binary rational
            out = f(*xs, *[fn(*xs) for fn in fa])
        with mpmath.workdps(EVAL_DPS):
            return +out

    return value


class _OverBudget(Exception):
    pass


def _within(seconds, fn):
    """``fn()``, interrupted with :class:`_OverBudget` after ``seconds`` (SIGALRM; only in the main thread and
    when no other SIGALRM handler is installed, otherwise without a budget)."""
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None))
    if not usable:
        return fn()

    def handler(signum, frame):
        raise _OverBudget

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _lowered(family, coord_names):
    """The lowered metric: reduced in Q(theta, a) when that fits the budget, else exact but unreduced expressions."""
    names = coord_names or [f"theta_{a + 1}" for a in range(family.dim)]
    coords = tuple(sympy.Symbol(n, real=True) for n in names)
    g_exprs = family.lower_metric(list(coords), geometry.SYMPY)
    if any(isinstance(x, sympy.Basic) and x.has(sympy.Integral) for row in g_exprs for x in row):
        raise NotImplementedError(DENSITY_REASON)
    aa = atom_algebra(coords, g_exprs)
    varying = [s for s in aa.atoms if any(v != 0 for v in aa.alg.table[aa.alg.symbols.index(s)])]
    note = None
    if len(varying) <= MAX_REDUCED_ATOMS:
        try:
            c = _within(REDUCE_BUDGET_S, lambda: tensors.curvature(aa.alg, aa.g))
            lines = []
            if aa.atoms:
                lines.append(r"\text{generators: }" + r",\ ".join(f"{sympy.latex(s)} = {sympy.latex(e)}" for s, e in aa.atoms.items()))
            return coords, aa.alg, c, lines, aa.to_coords, aa, None
        except _OverBudget:
            note = (f"the reduction in $\\mathbb{{Q}}(\\theta, a)$ with {len(varying)} non-constant generators exceeded "
                    f"{REDUCE_BUDGET_S:g} s")
    else:
        note = f"{len(varying)} non-constant generators $a_i$ (more than {MAX_REDUCED_ATOMS}: reduced fractions would take minutes)"
    # exact, unreduced: plain sympy expressions (floats as exact rationals), no normalisation at all
    alg = ExprAlgebra(coords, lambda e: e)
    g = [[_rationalise(x) for x in row] for row in g_exprs]
    c = tensors.curvature(alg, g)
    return coords, alg, c, [], (lambda e: e), None, note


def derive_family(name: str, family, sampler, coord_names=None) -> PluginResult:
    """Exact metric, Christoffel symbols and R of one registered family, or the reason there are none."""
    slug = slugify(name)
    kind = getattr(family, "kind", type(family).__name__)
    res = PluginResult(name, slug, kind)
    if kind == "density":
        res.reason = DENSITY_REASON
        return res
    t0 = time.perf_counter()
    D = Derivation(f"plugins/{slug}", f"User family `{name}`: exact metric and curvature")
    aa, note = None, None
    try:
        if kind in FORMULATE_KINDS:
            coords, alg, c, lines, value = _formulated(family, coord_names)
            to_coords = lambda e: e  # noqa: E731
            how = "`derivations.formulate` (the kind's own exact formulation)"
        else:
            coords, alg, c, lines, to_coords, aa, note = _lowered(family, coord_names)
            value = _evaluator(alg, coords, aa.atoms if aa is not None else {})
            how = "`family.lower_metric(coords, geometry.SYMPY)`, every float as its exact binary rational"
            if aa is not None:
                how += (", each non-rational sub-expression a generator $a_i$ of $\\mathbb{Q}(\\theta, a)$ "
                        "(derivatives from `sympy.diff`; every element a reduced fraction)")
            else:
                how += (f"; **not reduced**: {note}, so $g$, $\\Gamma$ and $R$ are exact but unsimplified sympy "
                        "expressions (evaluated exactly below)")
    except NotImplementedError as exc:
        res.reason = str(exc) or f"{name} does not lower to sympy"
        return res
    except ZeroDivisionError as exc:
        res.reason = f"the exact metric is singular ({exc}): the parameters are not identifiable, curvature undefined"
        return res
    except (TypeError, ValueError, AttributeError) as exc:  # a user function that does not lower: listed with the reason
        res.reason = f"cannot be lowered to sympy ({type(exc).__name__}: {exc})"
        return res
    except Exception as exc:  # noqa: BLE001
        res.reason, res.error = f"derivation failed ({type(exc).__name__}: {exc})", True
        return res
    d = len(coords)
    reduced = aa is not None or kind in FORMULATE_KINDS
    R_gen = alg.to_expr(c.R)
    if aa is not None:
        D.check("R involves no generator beyond the derivative depth (sentinel absent)", aa.sentinel not in R_gen.free_symbols)
    R_disp = _factor(R_gen) if reduced else R_gen
    R = to_coords(R_disp)
    D.check("metric symmetric: g_ab - g_ba = 0",
            all(alg.is_zero(alg.norm(c.g[a][b] - c.g[b][a])) for a in range(d) for b in range(d)) if reduced
            else all(sympy.sympify(c.g[a][b] - c.g[b][a]).is_zero is not False for a in range(d) for b in range(d)))
    D.results.update(R=R, R_generators=R_gen, coords=coords, kind=kind, reduced=reduced)
    body = [
        f"Registered as `{name}`; kind `{kind}`; `{family.name}`, dimension {d}.",
        "",
        "Coordinates: " + ", ".join(f"${sympy.latex(s)}$" for s in coords) + f".  Exact metric from {how}.",
        "",
    ]
    for ln in lines:
        body += [f"$${ln}$$", ""]
    D.add("Family and coordinates", "\n".join(body).strip())
    g_mat = sympy.Matrix([[(_factor if reduced else (lambda e: e))(alg.to_expr(x)) for x in row] for row in c.g])
    D.add("Metric", _tex_or_size(g_mat, "g"))
    if reduced:
        chr_t, cnt = christoffel_lines(alg, c.gamma, coords)
        if len(chr_t) <= MAX_CHRISTOFFEL_TEX:
            D.add("Christoffel symbols", "Non-zero $\\Gamma^k_{ij}$ with $i \\le j$:\n\n" + chr_t)
        else:
            D.add("Christoffel symbols", f"{cnt} non-zero symbols with $i \\le j$ (too long to list).")
    else:
        D.add("Christoffel symbols", "Not listed (unreduced expressions).")
    free = sympy.sympify(R).free_symbols
    depends = sorted((s for s in free if s in coords), key=str)
    if not free:
        dep = "$R$ is constant."
    elif free <= set(coords):
        dep = "$R$ depends on the coordinates " + ", ".join(f"${sympy.latex(s)}$" for s in depends) + (" only." if len(depends) < d else ".")
    else:
        dep = "$R$ is written in the generators defined above."
    if reduced or _dag_size(R_disp) <= 400:
        D.add("Scalar curvature", _tex_or_size(R_disp, "R") + "\n\n" + dep)
    else:
        D.add("Scalar curvature", f"$R$ is an unreduced expression of {_dag_size(R_disp)} distinct sub-expressions: not printed.")
    D.results["depends_on"] = depends
    D.finish(t0)
    # numeric comparison at sampled points (seeded per family name)
    t1 = time.perf_counter()
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    try:
        pts = np.asarray(sampler(rng, NUMERIC_POINTS), np.float64).reshape(NUMERIC_POINTS, d)
        row = _numeric_row(lambda x: value(c.R, x), family, pts, family.name)
    except Exception as exc:  # noqa: BLE001
        pts = None
        row = {"family": family.name, "points": NUMERIC_POINTS, "max_rel_diff": float("nan"), "threshold": NUMERIC_RTOL,
               "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    D.numeric.append(row)
    D.numeric_seconds = time.perf_counter() - t1
    D.results["points"] = pts
    table = ["| family | points | max relative difference | threshold `NUMERIC_RTOL` | within |", "|---|---|---|---|---|",
             f"| `{row['family']}` | {row['points']} | {row['max_rel_diff']:.2e} | {row['threshold']:.0e} | {'yes' if row['ok'] else 'NO'} |"]
    errnote = f"\n\nComparison failed: `{row['error']}`." if "error" in row else ""
    D.add(
        "Symbolic vs numeric (`geometry.scalar_curvature`)",
        "\n".join(table) + f"\n\n{NUMERIC_POINTS} points from the registered sampler, `numpy.random.default_rng([{SEED}, "
        f"crc32(name)])`; exact $R$ evaluated at {EVAL_DPS} digits." + errnote,
    )
    short = sympy.latex(R_disp)
    if reduced:
        head = f"$R = {short}$" if len(short) <= 600 else "closed-form $R$ in the document"
    else:
        head = "exact but unreduced $R$ (too many generators to reduce)"
    D.conclusion = head + (
        f"; max rel. diff to `geometry.scalar_curvature` {row['max_rel_diff']:.1e} (`NUMERIC_RTOL` {NUMERIC_RTOL:.0e})")
    res.derivation = D
    return res


# ----------------------------------------------------------------------------- the plugin files


def load_plugin_families(specs) -> dict:
    """Import each plugin (``checks --plugin`` rules); returns the families they registered ``{name: UserFamily}``."""
    import checks
    from checks._src.cli import _load_plugin

    before = {k: id(v) for k, v in checks.user_families().items()}
    for spec in specs:
        _load_plugin(spec)
    return {k: v for k, v in checks.user_families().items() if before.get(k) != id(v)}


def run_plugins(families: dict, progress=print) -> list:
    """Derive every family in ``families`` (``{name: UserFamily}``); one :class:`PluginResult` each."""
    out = []
    for name, uf in families.items():
        r = derive_family(name, uf.family, uf.sampler)
        out.append(r)
        if progress:
            if r.derivation is not None:
                d = r.derivation
                row = d.numeric[0]
                progress(f"plugin {name:<22} exact {d.seconds:6.2f} s   numeric {d.numeric_seconds:6.2f} s   "
                         f"max rel diff {row['max_rel_diff']:.2e} (NUMERIC_RTOL {row['threshold']:.0e}) {'ok' if row['ok'] else 'EXCEEDED'}")
            else:
                progress(f"plugin {name:<22} {'FAILED' if r.error else 'not derived'}: {r.reason}")
    return out
