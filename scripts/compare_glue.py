"""Compare the glued values of two studies' executed notebooks.

    python scripts/compare_glue.py STUDY_A/notebooks STUDY_B/notebooks

Prints every glued value that differs (numbers within a relative 1e-9 count as equal),
marking wall-clock values (times, rates, speed ratios) TIMING, then a count; exits 1
when a value other than a wall-clock one differs. Used to show that a change of the code
leaves a study's results as they were: run the same preset before and after the change
into two folders (same machine, same thread count) and compare.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

# Glue keys of wall-clock values, which differ from run to run (studies made before
# such values were glued with slicelib.study.present.WALL_CLOCK_MARK, which marks them).
TIMING = ("seconds", "_ms", "ratio", "minutes", "samples_per_s", "s_per_epoch")
MARK = " # wall clock"


def glued(folder: Path) -> dict[str, str]:
    """``{notebook:key: text}`` of every value glued in the executed notebooks."""
    out = {}
    for path in sorted(folder.glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                meta = (output.get("metadata") or {}).get("scrapbook")
                if not meta:
                    continue
                data = output.get("data") or {}
                text = data.get(meta.get("mime_prefix", "") + "text/plain")
                text = data.get("text/plain", text) or "<" + ",".join(sorted(data)) + ">"
                out[f"{path.stem}:{meta['name']}"] = "".join(text)
    return out


def number(text: str | None) -> float | None:
    try:
        return float(str(text).removesuffix(MARK).strip("'\""))
    except ValueError:
        return None


def same(a: str | None, b: str | None) -> bool:
    x, y = number(a), number(b)
    if a == b:
        return True
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


def main(first: str, second: str) -> int:
    a, b = glued(Path(first)), glued(Path(second))
    differ = [key for key in sorted(set(a) | set(b)) if not same(a.get(key), b.get(key))]
    marked = {key for key in differ if MARK in (a.get(key) or "") + (b.get(key) or "")}
    results = [key for key in differ if key not in marked and not any(t in key for t in TIMING)]
    for key in differ:
        tag = "DIFF" if key in results else "TIMING"
        print(f"{tag} {key}: {a.get(key)!r:.80} -> {b.get(key)!r:.80}")
    print(
        f"{len(a)} values in the first, {len(b)} in the second; {len(results)} results and "
        f"{len(differ) - len(results)} wall-clock values differ"
    )
    return 1 if results else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
