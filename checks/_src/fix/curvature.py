r"""Fisher scalar curvature of each attention head's query family, traceable (the penalty arm and the probes).

For head ``a`` of layer ``l`` at the QUERY position of a sequence the query space is
``R^{d_h}`` and the family is

.. math:: p(x) = \mathrm{softmax}(s\,K x),\qquad s = \frac{1}{\sqrt{d_h}\,\tau},

with the sequence's keys ``K`` (``(L, d_h)``): exactly the softmax of the forward
pass (:func:`.model.attention_probs`), evaluated at the head's query ``x = q``.  Its
scalar curvature ``R`` (sign: the round sphere is positive; the simplex on ``n``
outcomes has ``(n-1)(n-2)/4``) comes from the public traceable route
``geometry.scalar_curvature(geometry.attention(K, s), q, method="cumulant")``:
raw float64, pure JAX, differentiable in ``K`` and ``q`` and so in the model's
parameters (``tests/test_fix.py`` checks the value against the eager, precision-controlled
call and the gradient against finite differences).  The family needs ``L - 1 >= d_h`` keys of full centred
rank; the model is sized so that ``d_h <= train_length - 1``
(:class:`.experiment.ExperimentConfig` checks it), and a point whose metric is
numerically singular (:data:`MIN_CONDITIONING`) comes back NaN and is left out of the
means (and counted: ``frac_finite`` in every summary).

Where precision is lost: ``R = (|T|^2 - |tau|^2) / 4`` is a difference of two terms
that grow like ``1 / p_min``, and its error grows with the condition number of the
metric.  The experiment measures what is left: a few points per arm are recomputed by
the precision-controlled ``geometry.scalar_curvature`` (``experiment.audit_curvature``;
the raw route agreed to ~1e-12 relative at the trained heads in the default run).

Sign convention of the penalty arm (fixed before the runs): the post's "cusps" are
positive curvature, so the arm penalises :math:`R_+ = \max(R, 0)`
(:func:`positive_part_mean`) with a weight ``lambda >= 0``.  A penalty on ``R`` itself
would reward negative ``R`` without bound (``R`` is unbounded below near a singular
metric), so the loss would have no minimum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import geometry


def head_curvature(keys, query, scale):
    """``R`` of ``geometry.attention(keys, scale)`` at ``query`` (float64, traceable); ``keys`` ``(n, m)``."""
    fam = geometry.attention(jnp.asarray(keys, jnp.float64), jnp.asarray(scale, jnp.float64))
    return geometry.scalar_curvature(fam, jnp.asarray(query, jnp.float64), method="cumulant")


#: A head whose Fisher metric has conditioning (:func:`metric_conditioning`) at or below this is treated as
#: singular (NaN, left out): there the raw float64 route has lost every digit of R (its error grows like the
#: condition number), whatever finite number it returns.
MIN_CONDITIONING = 1e-10


def metric_conditioning(keys, query, scale):
    r"""``min_i d_i / max_i g_ii`` of the Fisher metric ``g = geometry.fisher_metric(attention(keys, scale), query)``,
    ``d_i`` the pivots of its :math:`LDL^\top` factorisation.

    Every pivot (a Schur complement) lies in :math:`[\lambda_{\min}, g_{ii}]`, and their product is
    :math:`\det g`, so the ratio is within a factor ``m`` of :math:`\lambda_{\min}/\lambda_{\max}` from below
    and vanishes exactly when ``g`` is singular.  Unrolled in ``m`` (elementwise work, no LAPACK call per point:
    this runs at every training query of the penalty arm); NaN for a singular ``g``.
    """
    fam = geometry.attention(jnp.asarray(keys, jnp.float64), jnp.asarray(scale, jnp.float64))
    g = geometry.fisher_metric(fam, jnp.asarray(query, jnp.float64))
    m = g.shape[-1]
    a = [[g[..., i, j] for j in range(m)] for i in range(m)]
    pivots = []
    for c in range(m):
        pivots.append(a[c][c])
        for i in range(c + 1, m):
            f = a[i][c] / a[c][c]
            for j in range(c + 1, m):
                a[i][j] = a[i][j] - f * a[c][j]
    return jnp.min(jnp.stack(pivots, -1), -1) / jnp.max(jnp.diagonal(g, axis1=-2, axis2=-1), -1)


def query_curvatures(q, k, temperature=1.0):
    """``R[l, b, a]`` for every layer, sequence and head from ``aux["q"]`` ``(nl, B, H, d_h)`` and
    ``aux["k"]`` ``(nl, B, H, L, d_h)`` of :func:`.model.forward` (float64; NaN where the metric is singular,
    i.e. R is not finite or the metric's eigenvalue ratio is at most :data:`MIN_CONDITIONING`).

    Differentiable with finite derivatives everywhere: the points whose value is not finite
    are recomputed at a well-conditioned stand-in family (the double-``where`` trick: the
    derivative of a ``where`` is finite only if *both* branches are), and come back NaN.
    """
    scale = 1.0 / (math.sqrt(q.shape[-1]) * jnp.asarray(temperature, jnp.float64))
    flat_q = q.reshape(-1, q.shape[-1])
    flat_k = k.reshape(-1, *k.shape[-2:])
    curv = jax.vmap(head_curvature, in_axes=(0, 0, None))
    ok = jax.lax.stop_gradient(jnp.isfinite(curv(flat_k, flat_q, scale))
                               & (jax.vmap(metric_conditioning, in_axes=(0, 0, None))(flat_k, flat_q, scale) > MIN_CONDITIONING))
    n, m = flat_k.shape[-2:]
    stand_in = jnp.eye(n, m, dtype=flat_k.dtype)  # keys e_1..e_m and n - m zero keys: centred rank m
    r = curv(jnp.where(ok[:, None, None], flat_k, stand_in), jnp.where(ok[:, None], flat_q, 0.0), scale)
    return jnp.where(ok, r, jnp.nan).reshape(q.shape[:-1])


def positive_part_mean(r):
    r"""``(mean R_+, n_finite)`` with :math:`R_+ = \max(R, 0)` over the finite entries of ``r``: the penalty of
    the curvature arm (non-finite entries, see :func:`query_curvatures`, contribute neither value nor gradient)."""
    ok = jnp.isfinite(r)
    n = jnp.sum(ok)
    return jnp.sum(jax.nn.relu(jnp.where(ok, r, 0.0))) / jnp.maximum(n, 1), n
