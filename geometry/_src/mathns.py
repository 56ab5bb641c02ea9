"""Small math namespaces that let one family definition lower to JAX, sympy and mpmath.

A family's defining function is written once against a namespace ``xp``::

    def log_partition(eta, xp):
        return -xp.log(-eta[0])

and the toolkit calls it with ``xp = JAX`` (numeric, differentiable, float64),
``xp = SYMPY`` (exact, symbolic) or ``xp = MPMATH`` (arbitrary precision).
Every namespace offers the same names with the same meaning (:data:`NAMES`): the
elementary functions (``exp``, ``log``, ``log1p``, ``expm1``, ``sqrt``, ``power``,
``abs``, ``sin``, ``cos``, ``tan``, ``sinh``, ``cosh``, ``tanh``, ``arctan``), the
special functions common in densities (``lgamma``, ``digamma``, ``erf``, ``erfc``,
``log_i0`` = log of the modified Bessel function :math:`I_0`), the constant ``pi``
and the vector helpers below.  A name a namespace lacks raises an ``AttributeError``
that lists what it has.  A definition that needs something else can still be handed
in as a plain JAX function (numeric side only).

Vectors are ``jax.Array`` for JAX and Python lists for sympy / mpmath; index
them with ``v[i]`` and build them with ``xp.vector([...])``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import sympy

jax.config.update("jax_enable_x64", True)

__all__ = ["JAX", "SYMPY", "MPMATH", "stable_log_softmax"]


def stable_log_softmax(z):
    r"""``log softmax(z)`` accurate to relative precision in every entry (JAX).

    The usual ``z - logsumexp(z)`` rounds :math:`\log p_{\max} = -\log(1+s)` to
    exactly 0 once :math:`s = \sum_{j \ne \max} e^{z_j - z_{\max}} < 10^{-16}`,
    which loses the whole contribution of the dominant outcome to the entropy
    at low entropy.  We compute :math:`s` without the dominant term and use
    ``log1p``:  :math:`\log p_i = z_i - z_{\max} - \operatorname{log1p}(s)`.
    """
    z = jnp.asarray(z)
    i_max = jnp.argmax(z, axis=-1)
    z_max = jnp.take_along_axis(z, i_max[..., None], axis=-1)
    not_max = jnp.arange(z.shape[-1]) != i_max[..., None]
    # XLA may recompute ``z`` inside different fusions with different rounding, so
    # ``z[i_max] - z_max`` is not guaranteed to be 0: pin it.
    d = jnp.where(not_max, z - z_max, 0.0)
    s = jnp.sum(jnp.where(not_max, jnp.exp(d), 0.0), axis=-1, keepdims=True)
    return d - jnp.log1p(s)


class Namespace:
    """A math namespace: fixed attributes, and an ``AttributeError`` listing them for any other name."""

    def __init__(self, name: str, **functions):
        self.name = name
        self.__dict__.update(functions)

    def __getattr__(self, attr):  # only called for names that are not there
        if attr.startswith("__"):
            raise AttributeError(attr)
        have = ", ".join(sorted(k for k in self.__dict__ if k != "name"))
        raise AttributeError(
            f"the {self.name} math namespace has no {attr!r}; it has: {have}. Write the function with these "
            "(the same names exist in geometry.JAX, geometry.SYMPY and geometry.MPMATH), or pass a plain JAX function"
        )

    def __repr__(self):
        return f"<math namespace {self.name}>"


def _jax_log_i0(x):
    # i0e(x) = exp(-|x|) I0(x): log I0 without overflow for large |x|
    return jnp.log(jax.scipy.special.i0e(x)) + jnp.abs(x)


def _jax_logsumexp(z):
    z = jnp.asarray(z)
    z_max = jnp.max(z)
    return z_max + jnp.log(jnp.sum(jnp.exp(z - z_max)))


JAX = Namespace(
    "jax",
    exp=jnp.exp,
    log=jnp.log,
    log1p=jnp.log1p,
    expm1=jnp.expm1,
    sqrt=jnp.sqrt,
    power=jnp.power,
    abs=jnp.abs,
    sin=jnp.sin,
    cos=jnp.cos,
    tan=jnp.tan,
    sinh=jnp.sinh,
    cosh=jnp.cosh,
    tanh=jnp.tanh,
    arctan=jnp.arctan,
    lgamma=jax.scipy.special.gammaln,
    digamma=jax.scipy.special.digamma,
    erf=jax.scipy.special.erf,
    erfc=jax.scipy.special.erfc,
    log_i0=_jax_log_i0,
    pi=jnp.pi,
    sum=lambda v: jnp.sum(jnp.asarray(v)),
    vector=lambda items: jnp.stack([jnp.asarray(t) for t in items]),
    matvec=lambda a, x: jnp.asarray(a) @ jnp.asarray(x),
    logsumexp=_jax_logsumexp,
    log_softmax=stable_log_softmax,
)


def _seq_matvec(mul, add):
    def matvec(a, x):
        a = np.asarray(a)
        return [add([mul(a[i, j], x[j]) for j in range(a.shape[1])]) for i in range(a.shape[0])]

    return matvec


def _sympy_const(c):
    c = float(c)
    return sympy.Rational(c) if c != int(c) else sympy.Integer(int(c))


def _sympy_logsumexp(z):
    return sympy.log(sympy.Add(*[sympy.exp(t) for t in z]))


SYMPY = Namespace(
    "sympy",
    exp=sympy.exp,
    log=sympy.log,
    log1p=lambda t: sympy.log(1 + t),
    expm1=lambda t: sympy.exp(t) - 1,
    sqrt=sympy.sqrt,
    power=sympy.Pow,
    abs=sympy.Abs,
    sin=sympy.sin,
    cos=sympy.cos,
    tan=sympy.tan,
    sinh=sympy.sinh,
    cosh=sympy.cosh,
    tanh=sympy.tanh,
    arctan=sympy.atan,
    lgamma=sympy.loggamma,
    digamma=sympy.digamma,
    erf=sympy.erf,
    erfc=sympy.erfc,
    log_i0=lambda t: sympy.log(sympy.besseli(0, t)),
    pi=sympy.pi,
    sum=lambda v: sympy.Add(*list(v)),
    vector=list,
    matvec=_seq_matvec(lambda c, t: _sympy_const(c) * t, lambda terms: sympy.Add(*terms)),
    logsumexp=_sympy_logsumexp,
    log_softmax=lambda z: [t - _sympy_logsumexp(z) for t in z],
    diff=sympy.diff,
)


def _mp_logsumexp(z):
    z_max = max(z)
    return z_max + mpmath.log(mpmath.fsum(mpmath.exp(t - z_max) for t in z))


def _mp_log_softmax(z):
    # Same cancellation-free form as ``stable_log_softmax``.
    i_max = max(range(len(z)), key=lambda i: z[i])
    s = mpmath.fsum(mpmath.exp(z[j] - z[i_max]) for j in range(len(z)) if j != i_max)
    lse = mpmath.log1p(s)
    return [z[i] - z[i_max] - lse for i in range(len(z))]


MPMATH = Namespace(
    "mpmath",
    exp=mpmath.exp,
    log=mpmath.log,
    log1p=mpmath.log1p,
    expm1=mpmath.expm1,
    sqrt=mpmath.sqrt,
    power=mpmath.power,
    abs=abs,
    sin=mpmath.sin,
    cos=mpmath.cos,
    tan=mpmath.tan,
    sinh=mpmath.sinh,
    cosh=mpmath.cosh,
    tanh=mpmath.tanh,
    arctan=mpmath.atan,
    lgamma=mpmath.loggamma,
    digamma=mpmath.digamma,
    erf=mpmath.erf,
    erfc=mpmath.erfc,
    log_i0=lambda t: mpmath.log(mpmath.besseli(0, t)),
    pi=mpmath.pi,
    sum=lambda v: mpmath.fsum(v),
    vector=list,
    matvec=_seq_matvec(lambda c, t: mpmath.mpf(float(c)) * t, mpmath.fsum),
    logsumexp=_mp_logsumexp,
    log_softmax=_mp_log_softmax,
)

del math

#: The names every namespace offers (``diff`` is sympy's own, used by the symbolic lowering).
NAMES = frozenset(k for k in JAX.__dict__ if k != "name")
assert NAMES == frozenset(k for k in MPMATH.__dict__ if k != "name") == frozenset(k for k in SYMPY.__dict__ if k not in ("name", "diff"))
