"""Hidden states of the JAX forward pass against transformers' BertModel (torch), to 1e-4.

Skipped unless torch and transformers are importable (the toolkit does not depend on them;
see checks/_src/real_model/compare_reference.py for the one-off comparison in a venv).
"""

import importlib.util

import pytest

from checks._src.real_model import loading

REFERENCE_ATOL = 1e-4

missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason=f"reference comparison needs {' and '.join(missing)} (not installed)"),
    pytest.mark.skipif(loading.missing_reason() is not None, reason=f"all-MiniLM-L6-v2 {loading.missing_reason()}"),
]


def test_hidden_states_match_transformers():
    from checks._src.real_model.compare_reference import max_differences

    res = max_differences()
    assert res["hidden_max_abs_diff"] <= REFERENCE_ATOL, res
    assert res["attention_max_abs_diff"] <= REFERENCE_ATOL, res
