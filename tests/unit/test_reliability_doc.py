"""docs/reliability.md: rendered from the fault matrix's JSON, and every alert's runbook link lands.

The matrix itself runs in `make test-faults` (minutes); these checks are the fast part: the doc
generator says what the run said (a failed row shows failed), and an alert rule's runbook_url
`docs/reliability.md#<id>` names a row the committed doc holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, load_script

DOC = REPO_ROOT / "docs" / "reliability.md"
RULE_FILES = (
    REPO_ROOT / "monitoring" / "prometheus" / "alerts.yml",
    REPO_ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml",
)
ROW = {
    "where": "training",
    "fault": "S3 refuses | connections",
    "sees": "exit 1: `error: ...`",
    "kept": "the old @challenger",
    "recover": "rerun",
    "bound": "seconds",
    "retry": "PUT: idempotent",
    "runbook": "curl <address>/health; `curl <address>/ready`",
}


def matrix(tmp_path: Path) -> Path:
    rows = [
        {**ROW, "id": "s3-refuses", "group": "store", "outcome": "passed", "seconds": 42.34,
         "test": "tests/faults/test_store_faults.py::test_a", "message": "",
         "durations": {"setup": 30.0, "call": 12.3, "teardown": 0.04}},
        {**ROW, "id": "features-enospc", "group": "disk", "outcome": "failed", "seconds": 3.0,
         "test": "tests/faults/test_disk_faults.py::test_b", "message": "E  assert 1 == 2"},
    ]  # fmt: skip
    path = tmp_path / "matrix.json"
    data = {"generated": "2026-12-07T14:00:00Z", "host": {"cpus": 2, "python": "3.11.7"},
            "strict": True, "session_seconds": 200.0, "counts": {"failed": 1, "passed": 1},
            "rows": rows, "head_starts": {"fault_stack": 24.6}}  # fmt: skip
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_doc_shows_each_row_with_its_anchor_fields_and_this_runs_outcome(
    tmp_path: Path,
) -> None:
    gen = load_script("gen_reliability_doc")
    out = tmp_path / "reliability.md"
    assert gen.main([str(matrix(tmp_path)), "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert gen.anchors(text) == {"s3-refuses", "features-enospc"}
    assert "| [s3-refuses](#s3-refuses) |" in text
    assert "S3 refuses \\| connections" in text  # a pipe in a field does not break the table
    assert "passed, 42.3 s (of which 30 s waiting for its set-up)" in text
    assert "began in the background" in text and "`fault_stack` 25 s" in text
    # <address> outside code would be taken for an HTML tag and vanish; inside code it stays
    assert "curl &lt;address&gt;/health; `curl <address>/ready`" in text
    assert "**failed**, 3.0 s: E assert 1 == 2" in text  # a failed row says so, with why
    # Groups in the matrix's order: store rows before disk rows.
    assert text.index('<a id="s3-refuses">') < text.index('<a id="features-enospc">')
    for label in ("What you see", "What is kept", "How to recover", "Time bound", "Retries"):
        assert f"| {label} |" in text


def test_check_names_the_rows_a_stale_doc_lacks(tmp_path: Path) -> None:
    gen = load_script("gen_reliability_doc")
    out = tmp_path / "reliability.md"
    out.write_text('<a id="s3-refuses"></a>\n', encoding="utf-8")
    assert gen.main([str(matrix(tmp_path)), "--output", str(out), "--check"]) == 1


def test_no_matrix_json_is_one_error_line_saying_what_to_run(tmp_path: Path) -> None:
    gen = load_script("gen_reliability_doc")
    with pytest.raises(SystemExit, match="run `make test-faults` first"):
        gen.main([str(tmp_path / "missing.json")])


def _runbook_anchors() -> list[tuple[str, str]]:
    found = []
    for path in RULE_FILES:
        for url in re.findall(r"runbook_url:\s*\"?([^\"\s]+)", path.read_text(encoding="utf-8")):
            if "reliability.md#" in url:
                found.append((path.name, url.split("#", 1)[1]))
    return found


def test_every_alert_runbook_link_names_a_row_of_the_committed_doc() -> None:
    if not DOC.is_file():
        pytest.fail("docs/reliability.md is missing: `make test-faults`, then the generator")
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', DOC.read_text(encoding="utf-8")))
    links = _runbook_anchors()
    assert all(yaml.safe_load(p.read_text(encoding="utf-8")) for p in RULE_FILES)
    missing = sorted({(f, a) for f, a in links if a not in anchors})
    assert not missing, f"alert runbook links to rows docs/reliability.md lacks: {missing}"
