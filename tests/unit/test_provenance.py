"""provenance.installed_packages: what every training run records as its environment."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from financemath_mlops import provenance


def _by_importlib(search_path: list[str]) -> tuple[str, ...]:
    """The slow reference: every METADATA file parsed by importlib.metadata (what it replaced).
    Once any library has imported the importlib_metadata backport, its finder yields every
    distribution a second time (same name and version) and raises on a folder without one."""
    found = {}
    for dist in metadata.distributions(path=search_path):
        try:
            name = dist.metadata["Name"]
        except OSError:  # no metadata file: the importlib_metadata backport's finder raises
            continue
        if name:
            norm = provenance._normal(name)
            found[norm] = f"{norm}=={dist.version}"
    return tuple(sorted(found.values()))


def test_installed_packages_match_importlib_metadata_for_this_venv():
    """Every distribution of the running venv, with the version importlib.metadata parses from its
    METADATA: a name or version read wrong from a folder name fails here."""
    recorded = provenance.installed_packages()
    assert recorded == _by_importlib(sys.path)
    versions = dict(line.split("==", 1) for line in recorded)
    assert versions["lightgbm"] == metadata.version("lightgbm")
    assert versions["numpy"] == metadata.version("numpy")


def _dist_info(site: Path, folder: str, name: str, version: str) -> None:
    (site / folder).mkdir(parents=True)
    text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nlong description\n"
    (site / folder / "METADATA").write_text(text, encoding="utf-8")


def test_installed_packages_read_local_versions_egg_info_and_skip_empty_folders(tmp_path: Path):
    """A local version (`+cpu`), a post release, a name with dots and capitals, an egg-info
    folder without a version in its name (read from PKG-INFO), a suffix in capitals, a name
    found on two path entries (the later wins, as importlib.metadata.distributions() yields
    them) and a dist-info folder without METADATA (no distribution) come out as
    importlib.metadata says."""
    first, second = tmp_path / "first", tmp_path / "second"
    _dist_info(first, "torch-2.13.0+cpu.dist-info", "torch", "2.13.0+cpu")
    _dist_info(first, "Zope.Interface-7.0.post1.dist-info", "Zope.Interface", "7.0.post1")
    _dist_info(first, "twice-1.0.dist-info", "twice", "1.0")
    _dist_info(first, "Shouty-4.1.DIST-INFO", "Shouty", "4.1")
    _dist_info(second, "twice-2.0.dist-info", "twice", "2.0")
    (first / "empty-9.9.dist-info").mkdir()
    (second / "legacy_pkg.egg-info").mkdir()
    (second / "legacy_pkg.egg-info" / "PKG-INFO").write_text(
        "Metadata-Version: 1.0\nName: legacy_pkg\nVersion: 3.2\n", encoding="utf-8"
    )
    search = [str(first), str(tmp_path / "missing"), str(second)]
    recorded = provenance.installed_packages(search)
    assert recorded == (
        "legacy-pkg==3.2",
        "shouty==4.1",
        "torch==2.13.0+cpu",
        "twice==2.0",
        "zope-interface==7.0.post1",
    )
    assert recorded == _by_importlib(search)


def test_cpu_names_the_model_and_the_widest_kernels_proc_cpuinfo_offers():
    """The card and the benchmarks say which CPU their figures hold for (ONNX Runtime's kernels
    differ by instruction set: issue 32 found the card moving between an Intel and an AMD)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo on this platform")
    text = info.read_text()
    flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    expected = next(
        (name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
                                 ("avx2", "AVX2")) if flag in flags),
        "no AVX2",
    )  # fmt: skip
    here = provenance.cpu()
    assert here["kernels"] == expected
    model_lines = [line for line in text.splitlines() if line.startswith("model name")]
    if model_lines:
        assert here["model"] == model_lines[0].split(":", 1)[1].strip()
