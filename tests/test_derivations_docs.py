"""Generated documents exist, balance their math delimiters and contain the computed results."""

import pytest
import sympy

import derivations
from derivations.__main__ import main
from derivations._src import theorems


def test_delimiter_checker_detects_unbalanced_math():
    assert derivations.math_delimiters_balanced("a $x$ b\n\n$$y$$\n")
    assert not derivations.math_delimiters_balanced("a $x b\n")
    assert not derivations.math_delimiters_balanced("$$y$\n")
    assert derivations.math_delimiters_balanced("code `$` is ignored $x$")


def test_cli_writes_documents(tmp_path, capsys):
    rc = main(["--out", str(tmp_path), "--only", "simplex-sphere"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "total: exact derivations" in out
    assert (tmp_path / "simplex-sphere.md").exists() and (tmp_path / "index.md").exists()


def test_documents_contain_the_computed_results(tmp_path):
    done = derivations.run_all(["conventions", "hessian-identity"], progress=None)
    derivations.write_documents(done, tmp_path)
    for slug in ("conventions", "hessian-identity", "index"):
        text = (tmp_path / f"{slug}.md").read_text()
        assert derivations.math_delimiters_balanced(text), slug
    conv = (tmp_path / "conventions.md").read_text()
    assert "Wall time" in conv and "| proven |" in conv and "FAILED" not in conv
    # rendered from the computed result, not a literal
    assert f"R = {sympy.latex(done['conventions'].results['sphere_R'])}" in conv
    hes = (tmp_path / "hessian-identity.md").read_text()
    assert sympy.latex(sympy.factor(done["hessian-identity"].results["R"])) in hes
    index = (tmp_path / "index.md").read_text()
    assert "[Hessian metrics" in index
    rows = [line for line in index.splitlines() if line.startswith("| [")]
    assert len(rows) == 2 and all(r.count("|") == 6 for r in rows)  # no stray | splitting the table


@pytest.mark.slow
def test_full_run_including_the_lemma_walkthrough(tmp_path):
    rc = main(["--out", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "where-the-lemma-fails.md").read_text()
    assert derivations.math_delimiters_balanced(text)
    assert "**False.**" in text and "FAILED" not in text
    index = (tmp_path / "index.md").read_text()
    for slug in list(theorems.DERIVATIONS) + ["where-the-lemma-fails"]:
        assert f"({slug}.md)" in index
