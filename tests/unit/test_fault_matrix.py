"""The fault matrix's table (tests/faults/matrix.py) and the plugin that links tests to its rows.

The rows themselves run in `make test-faults` (minutes); these are the fast checks: every row of
the table has exactly one test naming it, and a marker naming no row, two tests on one row or a
row without a test stops collection with a message naming it.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest

from tests.faults import conftest as plugin
from tests.faults.matrix import BY_ID, ROWS
from tests.helpers import REPO_ROOT

FAULTS = REPO_ROOT / "tests" / "faults"


def marker_ids() -> Counter[str]:
    """How many tests in tests/faults/test_*.py name each id with @pytest.mark.fault_row(...)."""
    named: Counter[str] = Counter()
    for path in sorted(FAULTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for mark in node.decorator_list:
                    if isinstance(mark, ast.Call) and ast.unparse(mark.func).endswith("fault_row"):
                        assert not mark.keywords and len(mark.args) == 1, (path.name, node.name)
                        named[ast.literal_eval(mark.args[0])] += 1
    return named


def test_every_row_has_one_test_and_every_test_names_a_row() -> None:
    plugin.check_table()  # nine non-empty strings a row, ids lowercase-with-dashes and unique
    named = marker_ids()
    assert len(ROWS) == len(BY_ID) == 23
    assert set(named) == set(BY_ID), (
        sorted(set(BY_ID) - set(named)),
        sorted(set(named) - set(BY_ID)),
    )
    assert all(count == 1 for count in named.values()), named


def mark(*args: object, **kwargs: object) -> pytest.Mark:
    return pytest.mark.fault_row(*args, **kwargs).mark


def test_a_marker_naming_no_row_stops_collection_naming_the_test_and_the_id() -> None:
    test = "tests/faults/test_store_faults.py::test_a"
    with pytest.raises(
        pytest.UsageError, match=r"test_a: .*no row 's3-on-fire' in tests/faults/matrix\.py"
    ):
        plugin.row_of(test, mark("s3-on-fire"), {})
    with pytest.raises(pytest.UsageError, match=r"test_a: .*takes the row's id only"):
        plugin.row_of(test, mark(id="s3-refuses", where="training"), {})
    seen: dict[str, str] = {}
    assert plugin.row_of(test, mark("s3-refuses"), seen) is BY_ID["s3-refuses"]
    with pytest.raises(
        pytest.UsageError, match=r"test_b: .*'s3-refuses' is also the row of .*test_a"
    ):
        plugin.row_of("tests/faults/test_store_faults.py::test_b", mark("s3-refuses"), seen)


def test_a_row_without_a_test_is_named_when_the_whole_matrix_was_collected() -> None:
    seen = {row.id: f"tests/faults/test_x.py::test_{n}" for n, row in enumerate(ROWS)}
    assert plugin.rows_without_a_test(seen) == []
    del seen["s3-slow"]
    assert plugin.rows_without_a_test(seen) == ["s3-slow"]
    items = [SimpleNamespace(fspath=path) for path in FAULTS.glob("test_*.py")]
    whole = SimpleNamespace(args=["tests/faults"])
    assert plugin._whole_matrix_collected(whole, items)
    one_test = SimpleNamespace(args=["tests/faults", "tests/faults/test_disk_faults.py::test_a"])
    assert not plugin._whole_matrix_collected(one_test, items)
    assert not plugin._whole_matrix_collected(whole, items[1:])  # a module left out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"id": "S3 Refuses"}, "not lowercase-with-dashes"),
        ({"sees": "  "}, r"empty \['sees'\]"),
        ({"bound": 30}, r"not a string \['bound'\]"),
    ],
)
def test_a_wrong_row_in_the_table_stops_collection_naming_it(change: dict, says: str) -> None:
    with pytest.raises(pytest.UsageError, match=says):
        plugin.check_table((*ROWS, replace(ROWS[0], **change)))
    with pytest.raises(pytest.UsageError, match=f"row '{ROWS[0].id}': two rows have this id"):
        plugin.check_table((*ROWS, ROWS[0]))
