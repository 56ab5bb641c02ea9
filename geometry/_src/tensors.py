r"""Connection and curvature tensors by automatic differentiation of the metric (layer 5).

Conventions (stated once, used everywhere in the package)
---------------------------------------------------------
* ``g[i, j] = g_{ij}``; derivative indices last: ``dg[i, j, k] = \partial_k g_{ij}``.
* ``christoffel[k, i, j] = \Gamma^k_{ij} = \tfrac12 g^{kl}(\partial_i g_{jl} + \partial_j g_{il} - \partial_l g_{ij})``.
* ``riemann[r, s, m, n] = R^\rho{}_{\sigma\mu\nu}
  = \partial_\mu\Gamma^\rho_{\nu\sigma} - \partial_\nu\Gamma^\rho_{\mu\sigma}
  + \Gamma^\rho_{\mu\lambda}\Gamma^\lambda_{\nu\sigma} - \Gamma^\rho_{\nu\lambda}\Gamma^\lambda_{\mu\sigma}``.
* ``ricci[s, n] = R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}``; scalar ``R = g^{\sigma\nu}R_{\sigma\nu}``.
* With these, the round sphere of radius ``r`` in dimension ``d`` has ``R = d(d-1)/r^2 > 0``
  (Carroll, *Spacetime and Geometry*, eqs. 3.67, 3.91).

Every function here is a pure JAX function of ``(family, theta)`` for one point:
it works under ``jit``, ``vmap``, ``grad`` and ``jacfwd`` with respect to the point
and to the family's array leaves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import fisher
from .families import Family
from .linalg import cholesky_inverse


def christoffel_from_jets(g, dg):
    """``Gamma[k, i, j]`` from ``g`` and ``dg[i, j, l] = d_l g_ij`` (``g`` solved by Cholesky: NaN if not definite)."""
    first = 0.5 * (jnp.einsum("jli->lij", dg) + jnp.einsum("ilj->lij", dg) - dg.transpose(2, 0, 1))
    linv = cholesky_inverse(g)
    return (linv.T @ (linv @ first.reshape(g.shape[0], -1))).reshape(first.shape)


def christoffel(family: Family, theta):
    r""":math:`\Gamma^k_{ij}` as ``gamma[k, i, j]`` (Levi-Civita connection of the Fisher metric)."""
    gf = lambda t: fisher.metric(family, t)  # noqa: E731
    return christoffel_from_jets(gf(theta), jax.jacfwd(gf)(theta))


def riemann_terms(family: Family, theta):
    """The four terms of ``riemann`` (kept apart: the Levi-Civita route sums their magnitudes)."""
    gam = christoffel(family, theta)
    dgam = jax.jacfwd(lambda t: christoffel(family, t))(theta)  # dgam[r, n, s, m] = d_m Gamma^r_ns
    a = jnp.einsum("rnsm->rsmn", dgam)  # d_mu Gamma^rho_{nu sigma}
    b = jnp.einsum("rmsn->rsmn", dgam)  # d_nu Gamma^rho_{mu sigma}
    c = jnp.einsum("rml,lns->rsmn", gam, gam)
    d = jnp.einsum("rnl,lms->rsmn", gam, gam)
    return a, b, c, d


def riemann(family: Family, theta):
    r""":math:`R^\rho{}_{\sigma\mu\nu}` as ``riemann[rho, sigma, mu, nu]`` (conventions in the module doc)."""
    a, b, c, d = riemann_terms(family, theta)
    return a - b + c - d


def ricci(family: Family, theta):
    r""":math:`R_{\sigma\nu} = R^\rho{}_{\sigma\rho\nu}` as ``ricci[sigma, nu]``."""
    return jnp.einsum("rsrn->sn", riemann(family, theta))
