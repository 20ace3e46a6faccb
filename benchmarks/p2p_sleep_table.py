"""Per-node rests of seed 003's ``--sleep_factor`` in the ``p2p_sleep`` matrix.

For every cell of ``benchmarks/matrices/p2p_sleep.yaml`` and every node: its rests
(``sleep_proc`` events, one per epoch; the last epoch's is never slept, the node has
finished), their total and range, when the node finished and its final test accuracy.
Writes ``sleep.md`` next to the matrix tables.

Usage (after ``simbench matrix benchmarks/matrices/p2p_sleep.yaml --out results/p2p``)::

    python benchmarks/p2p_sleep_table.py results/p2p/p2p_sleep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def per_node(root: Path) -> pd.DataFrame:
    rows = []
    for cell in sorted((root / "runs").glob("*/*/cell.json")):
        labels = json.loads(cell.read_text())["labels"]
        ev = pd.read_csv(cell.parent / "events.csv", dtype={"node": str})
        ep = pd.read_csv(cell.parent / "epochs.csv", dtype={"node": str})
        ep = ep[ep["node"] != "avg"]
        for node, g in ep.groupby("node"):
            last = g.loc[g["epoch"].idxmax()]
            rests = ev[(ev["node"] == node) & (ev["metric"] == "sleep_proc")]["value"]
            rows.append({"algorithm": labels["algorithm"], "sleep_factor": float(labels["scenario.sleep_factor"]),
                         "node": int(node), "rests": len(rests), "rest_total_s": float(rests.sum()),
                         "rest_min_s": float(rests.min()) if len(rests) else 0.0,
                         "rest_max_s": float(rests.max()) if len(rests) else 0.0,
                         "finished_s": float(last["time_s"]), "test_acc": float(last["test_acc"])})
    if not rows:
        raise SystemExit(f"no finished cells under {root / 'runs'}")
    return pd.DataFrame(rows).sort_values(["algorithm", "sleep_factor", "node"])


def markdown(df: pd.DataFrame) -> str:
    lines = ["| algorithm | f | node | rests | rest total (s) | rest min–max (s) | finished (s) | test acc |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['algorithm']} | {r['sleep_factor']:g} | {r['node']} | {r['rests']} | "
                     f"{r['rest_total_s']:.2f} | {r['rest_min_s']:.2f}–{r['rest_max_s']:.2f} | "
                     f"{r['finished_s']:.2f} | {r['test_acc']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="the p2p_sleep matrix directory")
    args = ap.parse_args()
    df = per_node(args.results)
    (args.results / "sleep.md").write_text(markdown(df))
    print(markdown(df))


if __name__ == "__main__":
    main()
