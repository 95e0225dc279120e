"""The docs' plots come from the commands that write their tables (issue 32, part 5).

docs/monitoring.md's drift-over-time picture is drawn by `monitoring history --plot` from the
committed, generated example index; docs/performance.md's latency and throughput pictures by
`benchmarks/serving.py` (`--replot` redraws them from a results file, measuring nothing). Each
test runs the real command in process and checks it wrote a PNG a reader can open.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from financemath_mlops.cli import run_main
from financemath_mlops.monitoring import history
from financemath_mlops.monitoring.__main__ import main as monitoring_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / history.EXAMPLE_INDEX
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, read by matplotlib (fails on a torn or non-PNG file)."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]


def test_the_committed_example_history_is_what_its_generator_writes(tmp_path: Path):
    regenerated = history.write_example_history(tmp_path / "index.jsonl")
    assert EXAMPLE.read_text() == regenerated.read_text(), (
        f"{EXAMPLE.relative_to(ROOT)} is stale: python -m financemath_mlops.monitoring.history "
        f"{EXAMPLE.relative_to(ROOT)}"
    )
    kinds = {json.loads(line)["kind"] for line in EXAMPLE.read_text().splitlines()}
    assert kinds == {"drift", "performance", "retrain-request"}


def test_history_plot_draws_drift_over_time_from_the_committed_example(tmp_path, capsys):
    png = tmp_path / "drift.png"
    argv = ["history", "--index", str(EXAMPLE), "--limit", "500", "--plot", str(png)]
    assert monitoring_main(argv) == 0
    out = capsys.readouterr().out
    assert "retrain-request" in out and f"wrote {png}" in out  # the table and the picture
    width, height = png_size(png)
    assert width > 400 and height > 300


def test_history_refuses_a_missing_index_naming_the_real_ones(tmp_path, capsys):
    argv = ["history", "--index", str(tmp_path / "nope.jsonl"), "--plot", str(tmp_path / "x.png")]
    assert run_main(monitoring_main, argv) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and str(history.EXAMPLE_INDEX) in err
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def serving_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_serving", ROOT / "benchmarks" / "serving.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_serving_benchmark_replots_its_committed_results(serving_benchmark, tmp_path, capsys):
    results = ROOT / "benchmarks" / "results" / "serving.json"
    assert serving_benchmark.main(["--replot", str(results), "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "p99.9 ms" in out and "req/s" in out  # the table printed by the same call
    for name in serving_benchmark.PLOT_NAMES:
        width, height = png_size(tmp_path / name)
        assert width > 600 and height > 300


def test_serving_benchmark_replot_refuses_a_file_that_is_not_its_results(
    serving_benchmark, tmp_path, capsys
):
    wrong = tmp_path / "other.json"
    wrong.write_text('{"rows": 3}')
    assert serving_benchmark.main(["--replot", str(wrong), "--plots", str(tmp_path)]) == 2
    assert "not a results file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))
