"""Load a script of ``bench/`` as a module (they are scripts, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[3] / "bench"


def load_bench(script: str) -> ModuleType:
    """Import ``bench/<script>.py`` as ``bench_<script>``; the ``sys.path`` entries it adds
    while loading (the suite adds bench/ and the repo) are taken back."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{script}", BENCH / f"{script}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
