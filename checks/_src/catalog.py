"""Every module that registers checks; importing this module fills the registry.

Add one line per module.  An import error here is a bug and must be loud.
"""

from . import metric  # noqa: F401,E402  metric-is-fisher, temperature-invariance
from . import law  # noqa: F401,E402  linear-law, decreasing-in-entropy, high-entropy-negative, lemma-any-fisher-metric
from . import limits  # noqa: F401,E402  low-entropy-limit, distances-blow-up
from .real_model import checks as _real_model  # noqa: F401,E402  real-model-depth-entropy, real-model-linear-law, real-model-sign
from . import precision_map  # noqa: F401,E402  precision-map
from .fix import verdicts as _fix  # noqa: F401,E402  fix-is-loss-scaling, fix-keeps-entropy-up, fix-improves-ood, fix-improves-calibration
