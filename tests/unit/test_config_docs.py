"""docs/configuration.md is generated from the settings object and must not go stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from financemath_mlops.config import ConfigError, Settings, env_name, load_settings
from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gen_config_docs.py"
PAGE = REPO_ROOT / "docs" / "configuration.md"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()
REPRODUCIBLE = [row for row in GENERATOR.MISTAKES if row.reproducible]


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return GENERATOR


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


def test_the_mistakes_table_lists_each_row_once(generator: ModuleType) -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert "## Mistakes we catch" in page
    mistakes = [row.mistake for row in generator.MISTAKES]
    assert len(mistakes) == len(set(mistakes)) >= 10
    assert len(REPRODUCIBLE) >= 10


@pytest.mark.parametrize("row", REPRODUCIBLE, ids=lambda row: row.mistake[:48])
def test_each_reproducible_mistake_shows_what_the_table_says(
    row: Any, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REPORTS_ROOT", raising=False)
    config = row.config
    if row.yaml is not None:
        (isolated_env / "c.yaml").write_text(row.yaml, encoding="utf-8")
        config = "c.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(config, row.overrides, row.flags)
    printed = f"error: {info.value}"  # what cli.run_main prints before exit 2
    assert row.exit_code == "2"
    position = 0
    for fragment in row.shows:
        found = printed.find(fragment, position)
        assert found >= 0, f"{row.mistake}: {fragment!r} not in order in:\n{printed}"
        position = found + len(fragment)
