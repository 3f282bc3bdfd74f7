"""Run every benchmark module (or those named) and print their figures."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    # options after the names go to the one benchmark named: ``gpu --device cpu``
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    argv, options = argv[:first_option], argv[first_option:]
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in argv]
    if options and len(wanted) != 1:
        print("benchmarks: options need exactly one benchmark name before them")
        return 2
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"benchmarks: unknown benchmark(s) {', '.join(unknown)} (have {', '.join(names)})")
        return 2
    for name in wanted or names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(options) if options else module.main()
        print(f"== {name} done in {time.perf_counter() - start:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
