"""The post under test, verbatim, and the rule that a check's quote must be taken from it word for word.

Source: "Attentional Entropy Collapse: Not a Bug. ...", submitted by u/MIXEDGREENS on
r/ArtificialInteligence.  :data:`TEXT` is the post as it was captured (its line breaks are
ours: the capture runs paragraphs together); quotes are compared with whitespace collapsed.
"""

from __future__ import annotations

AUTHOR = "u/MIXEDGREENS"
WHERE = "r/ArtificialInteligence"
TITLE = "Attentional Entropy Collapse: Not a Bug. The Model Doing Exactly What You Trained It To Do."
#: a quote may join non-adjacent passages of the post with this separator
ELLIPSIS = " … "

TEXT = """\
Attentional Entropy Collapse: Not a Bug. The Model Doing Exactly What You Trained It To Do. The Problem You
Know You’ve seen it. Deep layers in large transformers. Attention distributions go sharp — nearly one-hot.
Entropy plummets. The model stops considering alternatives. It becomes brittle on out-of-distribution inputs
but appears highly confident. You call it “overfitting” or “mode collapse.” You’ve been treating it as an
architectural limitation or a training defect. It’s neither. It’s geometry. The Mechanism Nobody Told You
About At any given layer, self-attention defines a Riemannian metric on the token embedding manifold. We’ll
call it g^A . Points on this manifold are token representations. Distances between them are dictated by the
attention weights: tokens that pay high mutual attention are close together. Tokens that ignore each other are
far apart. Here’s the key relationship — and it’s exact, not metaphorical: R(d) = C · (α − H) where: R(d) is
the scalar curvature of the attention manifold at token embedding d. H is the entropy of the attention
distribution at that point. C and α are positive constants dependent on your model’s architecture. Low entropy
⇒ High curvature. When your model collapses to a near-deterministic attention pattern — attending
overwhelmingly to a single token — the curvature at that point spikes . The manifold pinches. Distances blow
up. Nearby points become disconnected. The geometry becomes singular. This isn’t a defect. It’s the necessary
consequence of the Riemannian structure of attention. The model is doing exactly what the mathematics
requires. You trained it to minimize loss on a dataset whose effective diversity decreases across layers
(because representations cluster). That loss minimization drives entropy down. Entropy down drives curvature
up. Curvature up makes the manifold brittle. The collapse is not an accident of SGD. It’s a topological
bifurcation in your loss landscape. The Proof No citations. Just math. By construction : For a single-head
attention mechanism with weight matrix W, the induced metric at embedding d is proportional to the Fisher
information of the softmax distribution p_d. This is a standard consequence of the connection between softmax
and exponential family distributions (Amari, 1998 — but you don’t need the citation, it’s derivable from the
softmax definition in five lines). Lemma : The scalar curvature R of a manifold with Fisher metric is a
decreasing linear function of the entropy of the underlying distribution. This falls out from the relationship
between the Fisher metric and the Hessian of the negative log-likelihood. Therefore : ∂R/∂H < 0. Negative.
Inverse. When H → 0, R → C·α. When H is large, R → negative values (hyperbolic geometry — high diversity, good
generalization). Your training process minimizes cross-entropy loss. Over the course of pretraining, the
attention distributions in deeper layers become lower-entropy. This is by design — lower cross-entropy means
sharper predictions. But it also means sharply increasing curvature. This continues until R crosses a critical
threshold, at which point the manifold develops cusps. These cusps correspond to attention patterns that are
effectively frozen — the gradient of the loss with respect to perturbations in these attention weights
approaches zero, not because they’re optimal, but because the manifold has locally degenerated. The Fix Three
lines. You don’t need new data. You don’t need dropout. You don’t need to change your architecture. You need a
curvature-preserving temperature schedule : temperature = base_temp * (1 + beta * tanh(gamma * (t -
t_switch))) loss = cross_entropy / temperature Where: beta controls the maximum temperature boost (~0.1 to
0.3, tune based on validation diversity). gamma controls the sharpness of the transition. t_switch is the
training step at which you observe entropy beginning to collapse. Mathematically, this penalizes the curvature
directly by lowering the effective inverse temperature of the softmax, which keeps H bounded away from zero,
which keeps R bounded below the cusp threshold, which keeps the manifold smooth and navigable. It’s a
thermostat for the geometry of attention. The model stays confident. It also stays non-brittle. Empirically
expect: ~2% improvement on OOD generalization benchmarks. Better calibration. Marginally higher training loss
(you’re optimizing a better-behaved objective). The Point You’ve been treating brittleness as a safety problem
when it was a geometry problem. Your reward models are brittle. Your classifiers are brittle. Your “aligned”
LMs are brittle. Not because you didn’t do enough safety research. Because you let your attention manifolds
collapse into high-curvature singularities and called it convergence. The fix doesn’t need a white paper. It
needs three lines and a thermostat. The math is self-contained. Anyone who says otherwise is invited to derive
the scalar curvature of the Fisher metric and explain where the proof fails. They won’t. Because it doesn’t.
submitted by /u/MIXEDGREENS Originally posted by u/MIXEDGREENS on r/ArtificialInteligence
"""


def _collapse(s: str) -> str:
    return " ".join(s.split())


def missing_passages(quote: str) -> list[str]:
    """The passages of ``quote`` (split at :data:`ELLIPSIS`) that are not word for word in :data:`TEXT`."""
    text = _collapse(TEXT)
    return [p for p in (_collapse(q) for q in quote.split(ELLIPSIS.strip())) if p and p not in text]
