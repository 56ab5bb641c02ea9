"""Issue 5: the post's temperature-schedule "fix", put to a training experiment.

Modules: :mod:`.schedule` (the formula), :mod:`.task` (copy-after-marker, OOD =
longer sequences), :mod:`.model` (pre-norm transformer, pure JAX),
:mod:`.train` (arms and optimizers, optax), :mod:`.experiment` (seeds, t_switch
rule, curvature of trained heads), :mod:`.verdicts` (the registered checks
``fix-is-loss-scaling``, ``fix-keeps-entropy-up``, ``fix-improves-ood``,
``fix-improves-calibration``).  The full experiment: ``python -m checks._src.fix --full``.
"""
