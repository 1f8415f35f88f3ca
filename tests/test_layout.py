"""No folder or module under tests/ can shadow an installed module: pytest runs in importlib mode,
tests/ is never on sys.path, and test helpers are imported as ``tests.…``. (``tests/kernels``
once shadowed the PyPI package ``kernels`` that transformers imports: 22 failures on a fresh
machine.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _under_tests(origin: str | None) -> bool:
    return origin is not None and Path(origin).resolve().is_relative_to(TESTS)


def test_no_test_folder_is_on_sys_path() -> None:
    on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(TESTS)]
    assert on_path == []


def test_no_name_under_tests_resolves_into_tests_as_a_top_level_module() -> None:
    names = sorted({p.stem for p in TESTS.iterdir()
                    if (p.is_dir() and not p.name.startswith((".", "__"))) or p.suffix == ".py"}
                   - {"__init__", "conftest"})
    assert "fakeserver" in names and "kernel_tests" in names  # the listing sees the helpers
    shadowing = [n for n in names if _under_tests(getattr(importlib.util.find_spec(n), "origin", None))]
    assert shadowing == []


def test_the_kernels_package_is_not_a_test_folder() -> None:
    spec = importlib.util.find_spec("kernels")
    assert spec is None or not _under_tests(spec.origin)
    assert not (TESTS / "kernels").exists()
