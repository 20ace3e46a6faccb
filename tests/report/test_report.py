"""The matrix report: tables per configuration and per axis, figures next to report.md."""

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from simbench.cli import main
from simbench.experiment.executors import SerialExecutor
from simbench.experiment.matrix import parse_matrix, run_matrix
from simbench.report.report import load_results, write_report

BASE = {"nodes": 4, "dataset": {"name": "digits"}, "train": {"epochs": 4},
        "output": {"wall_clock": False, "plot": False, "progress": False}}
SPEC = {
    "name": "rep", "base": BASE, "target_accuracy": 0.7,
    "axes": {"algorithm": ["dsgd", "fedavg"], "topology.kind": ["ring", "star"],
             "scenario": {"none": {}, "crash": {"crashes": [{"node": 1, "at": 1.5}]}}, "seed": [0, 1]},
    "exclude": [{"algorithm": "fedavg", "topology.kind": "ring"}],
    "report": {"heatmap": {"rows": "topology.kind", "cols": "scenario", "where": {"algorithm": "dsgd"}}},
}
FIGURES = ("acc_vs_time.png", "acc_vs_bytes.png", "time_to_target.png", "heatmap.png")


def runner(cfg, run_dir, progress=False):
    """A run whose accuracy grows with the epoch, slower for fedavg; ring/seed-1 fedavg never exists."""
    if cfg.algorithm == "fedavg" and cfg.seed == 1 and cfg.scenario.crashes:
        raise RuntimeError("simulated bug")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rate = (0.9 if cfg.algorithm == "dsgd" else 0.3) * (1 + 0.1 * cfg.seed)
    epochs = pd.DataFrame([{"node": "avg", "epoch": e, "time_s": 1.0 * e, "test_acc": 1 - math.exp(-rate * e)}
                           for e in range(1, 5)])
    rows = [(1.0 * e, 0, str(n), "bytes_sent", 1e6 * e) for e in range(1, 5) for n in range(4)]
    rows += [(c.at, 0, str(c.node), "crash", 1.0) for c in cfg.scenario.crashes]
    rows += [(4.0, 0, str(n), "bytes_sent_total", 4e6) for n in range(4)]
    events = pd.DataFrame(rows, columns=["time_s", "wall_s", "node", "metric", "value"])
    return SimpleNamespace(status="finished", sim_time=4.0, wall_time=0.01, events=events, epochs=epochs)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    res = run_matrix(parse_matrix(SPEC), out, executor=SerialExecutor(), runner=runner, progress=False)
    assert res.failed == 1
    return res.root


def test_report_md_has_tables_and_figures(results):
    path = write_report(results)
    text = path.read_text()
    assert path == results / "report.md"
    assert text.startswith("# Benchmark matrix `rep`")
    assert "12 of 12 cells recorded (11 finished, 1 failed)" in text
    assert "## Results per configuration (mean ± std over the seeds that finished)" in text
    for axis in ("### algorithm", "### topology.kind", "### scenario"):
        assert axis in text
    assert "### seed" not in text  # seeds are averaged, never an axis of the summary
    # dsgd/ring/none: accuracy after 4 epochs 1 - exp(-0.9*4) and 1 - exp(-0.99*4), mean ± std
    a, b = 1 - math.exp(-3.6), 1 - math.exp(-3.96)
    assert f"| dsgd | ring | none | 2 | finished 2 | {(a + b) / 2:.3f} ± {abs(a - b) / 2:.3f} |" in text
    assert "| fedavg | star | crash | 2 | finished 1, failed 1 |" in text
    assert "RuntimeError: simulated bug" in text  # the failed cell's error line
    for fig in FIGURES:
        assert f"]({fig})" in text
        assert (results / fig).stat().st_size > 10_000


def test_time_to_target_counts_seeds_that_never_got_there(results):
    wide = load_results(results)["wide"]
    fed = wide[(wide["algorithm"] == "fedavg") & (wide["scenario"] == "none")].sort_values("seed")
    # fedavg seed 0: 1 - exp(-0.3 e) >= 0.7 first at e = 5 > 4 epochs: never; seed 1 at e = 4 (0.733)
    assert math.isnan(fed["time_to_target_s"].iloc[0]) and fed["time_to_target_s"].iloc[1] == 4.0
    assert "4.00 (1/2)" in write_report(results).read_text()


def test_faults_reach_the_curves_table(results):
    faults = load_results(results)["faults"]
    assert set(faults["kind"]) == {"crash"} and set(faults["scenario"]) == {"crash"}
    assert (faults["time_s"] == 1.5).all()


def test_html_report_and_cli(results, capsys):
    assert main(["report", str(results), "--format", "html"]) == 0
    text = (results / "report.html").read_text()
    assert text.startswith("<!doctype html>") and '<img src="heatmap.png"' in text and "<table" in text
    assert "wrote" in capsys.readouterr().out


def test_report_of_a_directory_without_a_matrix_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no matrix.json; run `simbench matrix FILE` first" in err and err.count("\n") == 1


def test_many_series_get_one_colour_per_algorithm_and_one_line_style_per_topology():
    from simbench.report.figures import series_styles
    names = [f"{a} / {t}" for a in ("dsgd", "gossip", "admm", "pdmm") for t in ("ring", "torus", "star")]
    colors, dashes = series_styles(names)
    assert len({(colors[n], dashes[n]) for n in names}) == len(names)  # no two lines look alike
    assert colors["dsgd / ring"] == colors["dsgd / star"] and dashes["dsgd / ring"] == dashes["admm / ring"]
    few_colors, few_dashes = series_styles(names[:5])  # dsgd x 3 topologies, gossip x 2
    assert len(set(few_colors.values())) == 2 and len(set(few_dashes.values())) == 3
    assert few_colors["dsgd / ring"] == colors["dsgd / ring"]  # an algorithm keeps its colour in every figure


def gan_runner(cfg, run_dir, progress=False):
    """A GAN-shaped run: FID of the global generator falls per epoch, no accuracy at all."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = 1800.0 if cfg.algorithm == "flgan" else 1200.0
    epochs = pd.DataFrame([{"node": "avg", "epoch": e, "time_s": 2.0 * e, "test_acc": math.nan,
                            "fid": start / (1 + e) + 10 * cfg.seed} for e in range(0, 4)])
    events = pd.DataFrame([(6.0, 0, "0", "bytes_sent_total", 3e6)], columns=["time_s", "wall_s", "node", "metric", "value"])
    return SimpleNamespace(status="finished", sim_time=6.0, wall_time=0.01, events=events, epochs=epochs)


def test_gan_matrix_is_reported_by_fid(tmp_path):
    """A GAN matrix logs FID and no accuracy: the report tabulates and plots FID, has no
    accuracy target, and leaves benchmarks/gan_summary.py's fid_vs_*.png alone."""
    spec = {"name": "g", "base": {**BASE, "nodes": 5, "topology": {"kind": "star"}, "model": {"name": "lsgan"}},
            "axes": {"algorithm": [{"name": "flgan"}, {"name": "mdgan"}], "seed": [0, 1]}}
    res = run_matrix(parse_matrix(spec), tmp_path, executor=SerialExecutor(), runner=gan_runner, progress=False)
    (res.root / "fid_vs_time.png").write_bytes(b"gan_summary's figure")
    text = write_report(res.root).read_text()
    assert "final FID | best FID" in text and "final test accuracy" not in text and "Target accuracy" not in text
    # flgan: final FID 1800 / 4 + 10 * seed over seeds 0 and 1 -> 455 ± 5; best = final (it only falls)
    assert "| 455 ± 5 | 455 ± 5 |" in text
    assert "## FID vs simulated time" in text and "time_to_target.png" not in text
    for fig in ("report_fid_vs_time.png", "report_fid_vs_bytes.png"):
        assert f"]({fig})" in text and (res.root / fig).stat().st_size > 10_000
    assert (res.root / "fid_vs_time.png").read_bytes() == b"gan_summary's figure"
