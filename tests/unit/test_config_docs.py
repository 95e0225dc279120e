"""docs/configuration.md is generated from the settings object and must not go stale."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
import yaml

from financemath_mlops.config import Settings, env_name
from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gen_config_docs.py"
PAGE = REPO_ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaf_keys(generator: ModuleType) -> list[str]:
    return [
        f"{dotted}.{name}"
        for dotted, _, leaves in generator.sections(Settings)
        for name, _ in leaves
    ]


def test_committed_configuration_page_equals_the_generated_one(generator: ModuleType) -> None:
    assert PAGE.is_file(), "docs/configuration.md is missing: run scripts/gen_config_docs.py"
    assert PAGE.read_text(encoding="utf-8") == generator.render(), (
        "docs/configuration.md is stale: run `.venv/bin/python scripts/gen_config_docs.py` "
        "and commit the result"
    )


def test_every_setting_is_documented_with_its_env_variable(generator: ModuleType) -> None:
    page = PAGE.read_text(encoding="utf-8")
    keys = leaf_keys(generator)
    assert len(keys) > 40  # every section, not just the top level
    for key in keys:
        assert f"| `{key}` |" in page
        assert f"`{env_name(key)}`" in page


def test_every_key_of_the_shipped_yaml_is_a_documented_setting(generator: ModuleType) -> None:
    documented = set(leaf_keys(generator))

    def walk(node: dict, prefix: str) -> list[str]:
        keys = []
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and dotted not in documented:
                keys += walk(value, dotted)
            else:
                keys.append(dotted)
        return keys

    shipped = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert set(walk(shipped, "")) <= documented


def test_check_mode_flags_a_stale_page(generator: ModuleType, tmp_path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert generator.main(["--output", str(stale)]) == 0
    assert generator.main(["--check", "--output", str(stale)]) == 0
