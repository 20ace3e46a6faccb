"""benchmarks/fedavg_mcmahan_table.py: rounds to target per run from run directories, the
best rate per row as the paper reports it, and the ratio to the paper's number."""

import importlib.util
import json

import pandas as pd
import pytest

from simhelpers import REPO

spec = importlib.util.spec_from_file_location("fedavg_table", REPO / "benchmarks" / "fedavg_mcmahan_table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def fake_run(root, name, *, lr, seed, accs, status="finished", model="mlp", partition="iid"):
    """A run directory as a fedavg_mcmahan matrix writes it: manifest and the server's curve."""
    run = root / "runs" / "m" / name
    run.mkdir(parents=True)
    cfg = {"model": {"name": model, "options": {}}, "dataset": {"partition": partition},
           "algorithm": {"local_epochs": 1, "rounds": 50}, "train": {"batch_size": 10, "lr": lr}, "seed": seed}
    (run / "manifest.json").write_text(json.dumps({"status": status, "config": cfg}))
    rows = [{"node": "0", "epoch": e, "test_acc": a} for e, a in enumerate(accs, start=1)]
    rows += [{"node": "avg", "epoch": e, "test_acc": 1.0} for e in range(1, len(accs) + 1)]  # not the server
    pd.DataFrame(rows).to_csv(run / "epochs.csv", index=False)


def test_best_rate_is_the_fewest_mean_rounds_over_full_seed_sets(tmp_path):
    for seed in (0, 1, 2):  # lr 0.1: 3 and 4 rounds to 97%, seed 2 never
        fake_run(tmp_path, f"a{seed}", lr=0.1, seed=seed, accs=[0.9, 0.95, 0.971, 0.98][seed:] if seed < 2 else [0.9] * 4)
        fake_run(tmp_path, f"b{seed}", lr=0.2, seed=seed, accs=[0.9] * (4 + seed) + [0.97])  # 5, 6, 7 rounds
    fake_run(tmp_path, "c0", lr=0.5, seed=0, accs=[0.97])  # 1 round, but a single seed: listed, not picked
    fake_run(tmp_path, "d0", lr=0.05, seed=0, accs=[0.99], status="running")  # not finished: ignored
    runs = table.run_rows(tmp_path)
    assert len(runs) == 7
    assert sorted(runs[runs.lr == 0.1]["rounds"].fillna(-1).tolist()) == [-1, 2, 3]
    (row,) = table.table(runs).to_dict("records")
    assert row["mean rounds per lr"] == "0.1: 2/3 reached, 0.2: 6.0, 0.5: 1.0 (1 seed)"
    assert (row["best lr"], row["seeds"], row["rounds (mean)"], row["rounds (min-max)"]) == ("0.2", 3, "6.0", "5-7")
    assert row["paper"] == 92 and row["ours / paper"] == f"{6 / 92:.2f}"


def test_a_row_where_no_rate_reaches_the_target_says_so(tmp_path):
    for seed in (0, 1, 2):
        fake_run(tmp_path, f"a{seed}", lr=0.1, seed=seed, accs=[0.9, 0.985], model="cnn_fedavg", partition="shards")
    (row,) = table.table(table.run_rows(tmp_path)).to_dict("records")
    assert row["model"] == "cnn" and row["rounds (mean)"] == "not reached in 50"  # 99% for the CNN
    assert row["paper"] == 350 and row["ours / paper"] == f"> {50 / 350:.2f}"


def test_a_runs_csv_stands_in_for_its_matrix_directory_when_rates_are_added(tmp_path):
    first, later = tmp_path / "first", tmp_path / "later"
    for seed in (0, 1, 2):
        fake_run(first, f"a{seed}", lr=0.1, seed=seed, accs=[0.9] * (2 + seed) + [0.97])  # 3, 4, 5 rounds
        fake_run(later, f"b{seed}", lr=0.5, seed=seed, accs=[0.9, 0.97])                    # 2 rounds
    assert table.main([str(first), str(tmp_path / "t1.md")]) == 0
    assert table.main([str(tmp_path / "t1.runs.csv"), str(later), str(tmp_path / "t2.md")]) == 0
    runs = pd.read_csv(tmp_path / "t2.runs.csv")
    assert sorted(zip(runs["lr"], runs["rounds"])) == [(0.1, 3), (0.1, 4), (0.1, 5), (0.5, 2), (0.5, 2), (0.5, 2)]
    assert "| 0.1: 4.0, 0.5: 2.0 | 0.5 | 3 | 2.0 | 2-2 | 92 |" in (tmp_path / "t2.md").read_text()


def test_a_run_given_twice_or_a_foreign_file_is_refused(tmp_path):
    for seed in (0, 1, 2):
        fake_run(tmp_path / "m", f"a{seed}", lr=0.1, seed=seed, accs=[0.97])
    table.main([str(tmp_path / "m"), str(tmp_path / "t.md")])
    with pytest.raises(SystemExit, match="lr=0.1 seed=0 is given twice"):
        table.main([str(tmp_path / "t.runs.csv"), str(tmp_path / "m"), str(tmp_path / "u.md")])
    fake_run(tmp_path / "r", "a0", lr=0.1, seed=0, accs=[0.97], status="running")
    with pytest.raises(SystemExit, match="no finished runs found"):
        table.main([str(tmp_path / "r"), str(tmp_path / "u.md")])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="other.csv: not a runs file of this script"):
        table.main([str(tmp_path / "other.csv"), str(tmp_path / "u.md")])
