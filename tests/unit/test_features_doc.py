"""docs/features.md is generated from the code and must not go stale."""

from __future__ import annotations

from tests.helpers import REPO_ROOT, load_script


def test_features_doc_matches_the_code() -> None:
    module = load_script("gen_features_doc")
    committed = (REPO_ROOT / "docs" / "features.md").read_text(encoding="utf-8")
    assert committed == module.render(), "run: python scripts/gen_features_doc.py"
