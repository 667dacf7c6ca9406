"""`make bench`: every benchmark in one run, each printing its figures and ratios."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    for module in sorted(m.name for m in pkgutil.iter_modules([str(here)])):
        if module.startswith("bench_"):
            print(f"\n=== {module} ===", flush=True)
            importlib.import_module(f"tests.benchmarks.{module}").main()


main()
