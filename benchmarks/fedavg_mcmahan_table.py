"""Rounds to target accuracy of FedAvg on MNIST next to McMahan et al. 2017's Table 2.

Reads the run directories of a ``fedavg_mcmahan*`` matrix (``<results>/runs/*/*/``: each
run's ``manifest.json`` and ``epochs.csv``), takes per run the first round whose global
model (the server's rows) reaches the row's target (97% for the 2NN, 99% for the CNN, on
the test images the run evaluates), and per table row (model, split, E, B) picks the
learning rate with the fewest rounds averaged over seeds (a seed that never reaches the
target counts as not reached; a rate run with fewer seeds than the row's others is listed
with its seed count but not picked), as the paper reports the best rate of its grid. Writes a
Markdown table with the paper's numbers beside ours and the ratio of the two; runs started
from other initial weights than PyTorch's (``model.options.init``) get an ``init`` column.

    python benchmarks/fedavg_mcmahan_table.py results/fedavg_mcmahan_quick results/fedavg_mcmahan/table.md

Beside the table it writes ``<table>.runs.csv``, one line per run. Such a file can stand in
for the matrix directory it came from, so new rates can be added to a table whose runs are
no longer on disk (``--figure`` draws only the runs read from directories):

    python benchmarks/fedavg_mcmahan_table.py results/fedavg_mcmahan/table_shards_e1.runs.csv \
        results/fedavg_mcmahan_shards_e1 results/fedavg_mcmahan/table_shards_e1.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

PAPER = {
    # McMahan et al., AISTATS 2017, Table 2: communication rounds to 97% (2NN) / 99% (CNN) test
    # accuracy on MNIST, C = 0.1, 100 clients, best learning rate of the paper's grid.
    # (model, split, E, B): rounds
    ("2nn", "iid", 1, 10): 92, ("2nn", "shards", 1, 10): 831,
    ("2nn", "iid", 20, 10): 32, ("2nn", "shards", 20, 10): 738,
    ("cnn", "iid", 1, 10): 34, ("cnn", "shards", 1, 10): 350,
    ("cnn", "iid", 20, 10): 18, ("cnn", "shards", 20, 10): 173,
}
TARGET = {"2nn": 0.97, "cnn": 0.99}


def model_label(cfg: dict) -> str:
    return "cnn" if cfg["model"]["name"] == "cnn_fedavg" else "2nn"


def run_rows(results: Path) -> pd.DataFrame:
    """One row per finished run: its table row, lr, seed, rounds run and rounds to target."""
    out = []
    for man_path in sorted(results.glob("runs/*/*/manifest.json")):
        man = json.loads(man_path.read_text())
        if man.get("status") != "finished":
            continue
        cfg = man["config"]
        epochs = pd.read_csv(man_path.parent / "epochs.csv")
        server = epochs[epochs["node"].astype(str) == "0"].sort_values("epoch")
        model = model_label(cfg)
        target = TARGET[model]
        hit = server[server["test_acc"] >= target]
        algo = cfg["algorithm"]
        out.append({"model": model, "init": cfg["model"].get("options", {}).get("init", "torch"),
                    "split": cfg["dataset"]["partition"], "E": algo.get("local_epochs") or 1,
                    "B": cfg["train"]["batch_size"], "lr": cfg["train"]["lr"], "seed": cfg["seed"],
                    "rounds_run": int(server["epoch"].max()), "cap": algo.get("rounds"),
                    "rounds": int(hit["epoch"].iloc[0]) if len(hit) else math.nan,
                    "best_acc": float(server["test_acc"].max()),
                    "curve": server[["epoch", "test_acc"]].to_numpy()})
    return pd.DataFrame(out)


ROW_KEYS = ["model", "init", "split", "E", "B"]  # one row of the paper's table
RUN_COLUMNS = [*ROW_KEYS, "lr", "seed", "rounds_run", "cap", "rounds", "best_acc"]


def read_runs(source: Path) -> pd.DataFrame:
    """The runs of a matrix directory, or of a ``*.runs.csv`` this script wrote (no curves)."""
    if source.is_dir():
        return run_rows(source)
    if source.suffix != ".csv" or not source.is_file():
        raise SystemExit(f"{source}: not a matrix results directory or a .runs.csv file")
    runs = pd.read_csv(source)
    if "init" not in runs.columns:  # written before model.options.init existed: PyTorch's init
        runs.insert(1, "init", "torch")
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise SystemExit(f"{source}: not a runs file of this script (no column {', '.join(missing)})")
    return runs[RUN_COLUMNS].assign(curve=None)


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per table row: the best lr (fewest mean rounds over seeds, all seeds reaching the target)."""
    rows = []
    keys = ROW_KEYS if (runs["init"] != "torch").any() else [k for k in ROW_KEYS if k != "init"]
    for key, g in runs.groupby(keys):
        per_lr = g.groupby("lr").agg(seeds=("seed", "nunique"), reached=("rounds", "count"),
                                     mean=("rounds", "mean"), lo=("rounds", "min"), hi=("rounds", "max"),
                                     best_acc=("best_acc", "mean"), cap=("cap", "max")).reset_index()
        # a rate is a candidate when every seed reached the target and it ran as many seeds as
        # the row's best-covered rate (a rate cut short by fewer seeds is listed, not picked)
        most = per_lr["seeds"].max()
        full = per_lr[(per_lr["reached"] == per_lr["seeds"]) & (per_lr["seeds"] == most)]
        named = dict(zip(keys, key))
        paper = PAPER.get((named["model"], named["split"], named["E"], named["B"]))
        grid = ", ".join(f"{lr:g}: " + (f"{m:.1f}" if r == n else f"{r}/{n} reached")
                         + ("" if n == most else f" ({n} seed{'s' if n > 1 else ''})")
                         for lr, m, r, n in sorted(zip(per_lr["lr"], per_lr["mean"], per_lr["reached"], per_lr["seeds"])))
        if len(full):
            best = full.sort_values("mean").iloc[0]
            ratio = best["mean"] / paper if paper else math.nan
            rows.append({**dict(zip(keys, key)), "mean rounds per lr": grid, "best lr": f"{best['lr']:g}",
                         "seeds": int(best["seeds"]), "rounds (mean)": f"{best['mean']:.1f}",
                         "rounds (min-max)": f"{int(best['lo'])}-{int(best['hi'])}", "paper": paper,
                         "ours / paper": f"{ratio:.2f}"})
        else:
            best = per_lr.sort_values("best_acc").iloc[-1]
            rows.append({**dict(zip(keys, key)), "mean rounds per lr": grid, "best lr": f"{best['lr']:g}",
                         "seeds": int(best["seeds"]), "rounds (mean)": f"not reached in {int(best['cap'])}",
                         "rounds (min-max)": f"{int(best['reached'])}/{int(best['seeds'])} seeds reached; "
                                             f"best acc {best['best_acc']:.4f}",
                         "paper": paper, "ours / paper": f"> {best['cap'] / paper:.2f}" if paper else ""})
    return pd.DataFrame(rows)


def figure(runs: pd.DataFrame, best: pd.DataFrame, path: Path) -> None:
    """Test accuracy per round of every seed at each row's best lr, the target dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, row in enumerate(best.to_dict("records")):
        key = (runs["model"] == row["model"]) & (runs["split"] == row["split"]) & (runs["E"] == row["E"]) & \
              (runs["lr"] == float(row["best lr"])) & (runs["init"] == row.get("init", "torch"))
        init = f" init={row['init']}" if "init" in row else ""
        for j, curve in enumerate(c for c in runs[key]["curve"] if c is not None):
            ax.plot(curve[:, 0], curve[:, 1], color=f"C{i}", lw=0.9,
                    label=f"{row['model']}{init} {row['split']} E={row['E']} lr={row['best lr']}" if j == 0 else None)
    for target in sorted(set(TARGET[m] for m in best["model"])):
        ax.axhline(target, color="0.4", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0.85, 1.0)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (10,000 images)")
    ax.legend(fontsize=7, frameon=False)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def markdown(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="matrix results directories (with runs/) or *.runs.csv files")
    ap.add_argument("out", help="the Markdown table to write")
    ap.add_argument("--figure", default=None, help="also draw the accuracy curves of each row's best lr (PNG)")
    args = ap.parse_args(argv)
    runs = pd.concat([read_runs(Path(r)) for r in args.results], ignore_index=True)
    if runs.empty:
        raise SystemExit("no finished runs found")
    repeated = runs[runs.duplicated([*ROW_KEYS, "lr", "seed"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        raise SystemExit(f"the run {first['model']} {first['split']} E={first['E']} lr={first['lr']:g} "
                         f"seed={first['seed']} is given twice; pass each run once")
    runs.drop(columns="curve").astype({"rounds": "Int64"}).sort_values(["model", "split", "E", "lr", "seed"]).to_csv(
        Path(args.out).with_suffix(".runs.csv"), index=False)
    best = table(runs)
    if args.figure:
        figure(runs, best, Path(args.figure))
    text = markdown(best)
    Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
