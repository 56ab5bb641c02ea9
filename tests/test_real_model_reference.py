"""The JAX forward passes against transformers' BertModel / MPNetModel (torch), to 1e-4.

The recomputation is skipped unless torch and transformers are importable (the toolkit does not
depend on them; see checks/_src/real_model/compare_reference.py for the one-off comparison in a
venv).  The recorded comparisons (reference_comparison*.json) are checked everywhere.
"""

import importlib.util
import json

import pytest

from checks._src.real_model import compare_reference, loading

REFERENCE_ATOL = compare_reference.REFERENCE_ATOL

missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
needs_torch = pytest.mark.skipif(bool(missing), reason=f"reference comparison needs {' and '.join(missing)} (not installed)")


def _needs(spec):
    reason = spec.missing_reason()
    return pytest.mark.skipif(reason is not None, reason=f"{spec.name} {reason}")


@pytest.mark.parametrize("spec", loading.MODELS, ids=lambda s: s.key)
def test_recorded_comparison_agrees(spec):
    res = json.loads(compare_reference.JSON_FILES[spec.key].read_text())
    assert res["model"] == spec.name and res["model_safetensors_sha256"] == spec.weights_sha256
    layers = spec.expected["num_hidden_layers"]
    assert len(res["hidden_max_abs_diff_by_layer"]) == layers + 1 and len(res["attention_max_abs_diff_by_layer"]) == layers
    assert res["hidden_max_abs_diff"] <= REFERENCE_ATOL and res["attention_max_abs_diff"] <= REFERENCE_ATOL
    assert max(res["tokens"]) > 92  # distances past MPNet's last bucket boundary (91) occur
    if spec.arch == "mpnet":
        assert res["relative_bucket_mismatches_within_600"] == 0


@needs_torch
@pytest.mark.parametrize("spec", [pytest.param(s, marks=_needs(s)) for s in loading.MODELS], ids=lambda s: s.key)
def test_hidden_states_and_attention_match_transformers(spec):
    res = compare_reference.max_differences(spec.key)
    assert res["hidden_max_abs_diff"] <= REFERENCE_ATOL, res
    assert res["attention_max_abs_diff"] <= REFERENCE_ATOL, res
    assert res.get("relative_bucket_mismatches_within_600", 0) == 0, res
