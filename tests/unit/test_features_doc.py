"""docs/features.md is generated from the code and must not go stale."""

from __future__ import annotations

import importlib.util

from tests.helpers import REPO_ROOT


def test_features_doc_matches_the_code() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_features_doc", REPO_ROOT / "scripts" / "gen_features_doc.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO_ROOT / "docs" / "features.md").read_text(encoding="utf-8")
    assert committed == module.render(), "run: python scripts/gen_features_doc.py"
