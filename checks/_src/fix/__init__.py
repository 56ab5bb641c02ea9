"""Issues 5 and 17: the post's temperature-schedule "fix", put to a powered training experiment.

Modules: :mod:`.schedule` (the formula), :mod:`.task` (noisy-mark retrieval; OOD = longer sequences with a
repeated distractor; the Bayes-optimal reference), :mod:`.model` (one-layer pre-norm transformer, pure JAX),
:mod:`.curvature` (the traceable Fisher scalar curvature of each head's query family: the penalty arm and the
probes), :mod:`.batched` (many runs as one vmapped, compiled program), :mod:`.train` (the one-run loop: SGD
equivalence runs and the speed reference), :mod:`.plan` (the analysis plan: effect, interval, decision rule,
power targets and seed planning), :mod:`.experiment` (selection, power plan, main runs, measurements),
:mod:`.verdicts` (the registered checks ``fix-is-loss-scaling``, ``fix-keeps-entropy-up``,
``fix-improves-ood``, ``fix-improves-calibration``).  Command line: ``python -m checks._src.fix --full``.
"""
