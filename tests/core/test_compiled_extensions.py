"""Every compiled fast path in pyproject.toml's ext-modules is built where a C compiler is.

They are ``optional`` only so that an install without a compiler still works (the Python paths give
the same results, slower); on a machine with one, a missing or stale build would silently measure
and test the Python path instead.
"""

from __future__ import annotations

import importlib
import shutil
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSIONS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["ext-modules"]


@pytest.mark.parametrize("ext", EXTENSIONS, ids=[e["name"] for e in EXTENSIONS])
def test_the_extension_is_built_and_not_older_than_its_source(ext):
    if shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        pytest.skip("no C compiler on this machine")
    try:
        module = importlib.import_module(ext["name"])
    except ImportError as exc:
        pytest.fail(f"{ext['sources'][0]} was not built (pip install -e . builds it): {exc}")
    built = Path(module.__file__).stat().st_mtime
    for source in ext["sources"]:
        assert (ROOT / source).stat().st_mtime <= built, f"{source} changed since it was built: pip install -e . again"


def test_every_extension_is_listed():
    """A C file in the tree that pyproject.toml does not build would never run."""
    listed = {s for e in EXTENSIONS for s in e["sources"]}
    found = {str(p.relative_to(ROOT)) for top in ("agent", "collector", "jobs", "logflume", "sinks", "hicc")
             for p in (ROOT / top).rglob("*.c")}
    assert found == listed
