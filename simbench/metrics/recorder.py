"""The recorder: every metric and fault of a run as long-format rows, and per-epoch rows.

``events`` rows are ``(time_s, wall_s, node, metric, value)``; the run id is added when
the table is written. With :meth:`Recorder.stream_to` the rows go to ``events.csv`` as
they come, in batches: every ``flush_rows`` rows, and with the first row recorded
``flush_secs`` of wall time after the last batch (``epochs.csv`` is rewritten with each
batch). A run that fails or is killed keeps what it recorded up to its last batch, a long
run can be watched as it goes (``tail -f events.csv``, or ``epochs.csv``), and a full or
read-only disk stops a run early instead of losing it at the end. When a batch is written
never changes what is written. ``wall_s`` is the only wall-clock reading in a run (seconds since
the recorder started) and is left at 0.0 with ``wall_clock=False`` so that two runs of
one config give byte-identical files. Rows logged with an ``epoch`` also fill the
per-epoch table (one row per node and epoch, one column per metric), whose columns start
with seed 003's ``epoch, train_loss, val_loss, test_loss, train_acc, val_acc, test_acc``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.files import write_atomic

EVENT_COLUMNS = ["run_id", "time_s", "wall_s", "node", "metric", "value"]
EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"]


class Recorder:
    """Collects events in memory; tables are built once at the end of a run."""

    def __init__(self, run_id: str, *, wall_clock: bool = True, flush_rows: int = 20_000,
                 flush_secs: float = 30.0) -> None:
        self.run_id = run_id
        self.wall_clock = wall_clock
        self._t0 = time.perf_counter()
        self.events: list[tuple[float, float, Any, str, float]] = []
        self.epochs: dict[tuple[Any, int], dict[str, float]] = {}
        self.flush_rows = flush_rows
        self.flush_secs = flush_secs
        self._flush_due = math.inf
        self._sink: Path | None = None
        self._written = 0
        self._next_flush = math.inf
        self.trackers: list = []
        """Live sinks of every row (TensorBoard, MLflow: :mod:`simbench.metrics.trackers`)."""

    def wall(self) -> float:
        return round(time.perf_counter() - self._t0, 6) if self.wall_clock else 0.0

    def event(self, time_s: float, node: Any, metric: str, value: float, epoch: int | None = None) -> None:
        self.events.append((time_s, self.wall(), node, metric, float(value)))
        if self.trackers:
            for tracker in self.trackers:
                tracker.log(time_s, node, metric, float(value))
        if epoch is not None:
            row = self.epochs.setdefault((node, int(epoch)), {"time_s": time_s})
            row[metric] = float(value)
            row["time_s"] = max(row["time_s"], time_s)
        if len(self.events) >= self._next_flush or time.monotonic() >= self._flush_due:
            self.flush()

    def close(self) -> None:
        """Close the trackers (their files are complete afterwards)."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

    # -- streaming ------------------------------------------------------------------
    def stream_to(self, out_dir: Path) -> None:
        """Write ``events.csv`` in ``out_dir`` from now on as rows come (see the module docstring)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._sink = out_dir
        (out_dir / "events.csv").write_text(",".join(EVENT_COLUMNS) + "\n")
        self._written = 0
        self.flush()

    def flush(self) -> None:
        """Append the rows recorded since the last flush to ``events.csv``, rewrite ``epochs.csv``."""
        if self._sink is None:
            return
        rows = self.events[self._written:]
        if rows:
            with open(self._sink / "events.csv", "a", newline="") as f:
                f.write(_csv_rows(self.run_id, rows))
                f.flush()
                os.fsync(f.fileno())
            self._written = len(self.events)
            write_atomic(self._sink / "epochs.csv", lambda tmp: self.epochs_frame().to_csv(tmp, index=False,
                                                                                             float_format="%.6g"))
        self._next_flush = len(self.events) + self.flush_rows
        self._flush_due = time.monotonic() + self.flush_secs

    # -- tables ---------------------------------------------------------------------
    def events_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.events, columns=EVENT_COLUMNS[1:])
        df.insert(0, "run_id", self.run_id)
        df["node"] = df["node"].astype(str)
        return df

    def epochs_frame(self) -> pd.DataFrame:
        rows = [{"node": str(node), "epoch": epoch, **vals} for (node, epoch), vals in self.epochs.items()]
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=["run_id", "node", "time_s", *EPOCH_COLUMNS])
        extra = [c for c in df.columns if c not in ("node", "time_s", *EPOCH_COLUMNS)]
        for col in EPOCH_COLUMNS:
            if col not in df.columns:
                df[col] = float("nan")
        df = df[["node", "time_s", *EPOCH_COLUMNS, *sorted(extra)]]
        df.insert(0, "run_id", self.run_id)
        # nodes in numeric order, the average model ("avg") last
        key = df["node"].map(lambda s: (1, 0) if not s.lstrip("-").isdigit() else (0, int(s)))
        return df.assign(_k=key).sort_values(["_k", "epoch"], kind="stable").drop(columns="_k").reset_index(drop=True)

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``events.csv`` and ``epochs.csv`` (atomically: temp file, then rename; when
        streaming to ``out_dir``, the rows not yet written are appended)."""
        out_dir = Path(out_dir)
        if self._sink is not None and self._sink.resolve() == out_dir.resolve():
            self.flush()
            write_atomic(out_dir / "epochs.csv", lambda tmp: self.epochs_frame().to_csv(tmp, index=False,
                                                                                          float_format="%.6g"))
            return out_dir / "events.csv", out_dir / "epochs.csv"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in (("events.csv", self.events_frame()), ("epochs.csv", self.epochs_frame())):
            write_atomic(out_dir / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False, float_format="%.6g"))
        return out_dir / "events.csv", out_dir / "epochs.csv"


def _fmt(value: float) -> str:
    """A float as pandas' ``to_csv(float_format="%.6g")`` writes it (NaN: empty)."""
    return "" if value != value else "%.6g" % value


def _csv_rows(run_id: str, rows: list) -> str:
    """Event rows as the CSV text ``events_frame().to_csv`` would give them (no header)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for t, wall, node, metric, value in rows:
        writer.writerow((run_id, _fmt(float(t)), _fmt(float(wall)), str(node), metric, _fmt(value)))
    return buf.getvalue()

