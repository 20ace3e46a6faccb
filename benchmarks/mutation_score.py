"""Per-package mutation scores from mutmut's results in ``.mutation/<group>/mutants/``.

Run by ``benchmarks/mutation.sh`` after mutmut; alone: ``python benchmarks/mutation_score.py
[group ...]``. Score = killed / (total - equivalent), where killed counts mutants a test
failed on or timed out on, and total counts every mutant, those no selected test runs
included. Equivalent mutants (changes that cannot alter behaviour) are listed in
``benchmarks/mutation_equivalent.txt``, one per line: the mutant's name, then the reason.
``--survivors`` lists the mutants left alive, for ``mutmut show NAME`` in the group's folder;
``--names`` prints only their names (what ``benchmarks/mutation.sh --survivors`` tests again).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("sim", "core", "algorithms", "learn", "data", "transport")
KILLED = {1, 3, 24, -24, 152, 255, 36, 37}   # a test failed, pytest errored, timed out, type check
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalents(path: Path = ROOT / "benchmarks" / "mutation_equivalent.txt") -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def package_of(meta: Path, mutants: Path) -> str:
    rel = meta.relative_to(mutants).with_suffix("")  # simbench/sim/kernel.py
    parts = rel.parts
    return str(rel.with_suffix("")) if parts[1] == "real" else "/".join(parts[:2])


def results(groups) -> dict[str, dict[str, int | None]]:
    """{package: {mutant name: exit code (None: not tested yet)}} over ``groups``."""
    out: dict[str, dict] = defaultdict(dict)
    for group in groups:
        mutants = ROOT / ".mutation" / group / "mutants"
        for meta in sorted(mutants.rglob("*.py.meta")):
            data = json.loads(meta.read_text())
            for name, code in data.get("exit_code_by_key", {}).items():
                out[package_of(meta, mutants)][name] = code
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", default=list(GROUPS))
    ap.add_argument("--survivors", action="store_true", help="list the surviving and untested mutants")
    ap.add_argument("--names", action="store_true", help="print only the names of the survivors (and of mutants no test ran), one a line")
    args = ap.parse_args(argv)
    eq = equivalents()
    res = results(args.groups)
    if args.names:
        for codes in res.values():
            for n, c in sorted(codes.items()):
                if (c in SURVIVED or c in NO_TESTS) and n not in eq:
                    print(n)
        return 0
    if not res:
        print("no mutmut results yet: run benchmarks/mutation.sh")
        return 1
    print(f"{'package':28} {'total':>6} {'equiv':>6} {'killed':>7} {'survived':>9} {'no tests':>9} {'untested':>9} {'score':>7}")
    tot = defaultdict(int)
    for pkg in sorted(res):
        codes = res[pkg]
        row = {"total": len(codes), "equiv": sum(1 for n in codes if n in eq),
               "killed": sum(1 for n, c in codes.items() if c in KILLED and n not in eq),
               "survived": sum(1 for n, c in codes.items() if c in SURVIVED and n not in eq),
               "no tests": sum(1 for n, c in codes.items() if c in NO_TESTS and n not in eq),
               "untested": sum(1 for n, c in codes.items() if c is None and n not in eq)}
        for k, v in row.items():
            tot[k] += v
        print(_line(pkg, row))
        if args.survivors:
            for n, c in sorted(codes.items()):
                if n not in eq and (c in SURVIVED or c in NO_TESTS):
                    print(f"    {'survived' if c in SURVIVED else 'no tests'}  {n}")
    print(_line("all", tot))
    return 0


def _line(name: str, row) -> str:
    tested = row["total"] - row["equiv"] - row["untested"]
    score = f"{100 * row['killed'] / tested:6.1f}%" if tested else "     -"
    return (f"{name:28} {row['total']:6d} {row['equiv']:6d} {row['killed']:7d} {row['survived']:9d} "
            f"{row['no tests']:9d} {row['untested']:9d} {score:>7}")


if __name__ == "__main__":
    raise SystemExit(main())
