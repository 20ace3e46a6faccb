"""The recorder streams rows to ``events.csv`` in batches: by row count or by wall time."""

import time

import pandas as pd

from simbench.metrics.recorder import Recorder


def _rows(path):
    return len(pd.read_csv(path / "events.csv"))


def test_rows_wait_for_a_full_batch_when_no_time_has_passed(tmp_path):
    rec = Recorder("r", wall_clock=False, flush_rows=3, flush_secs=3600)
    rec.stream_to(tmp_path)
    rec.event(0.0, 1, "a", 1.0)
    rec.event(1.0, 1, "a", 2.0)
    assert _rows(tmp_path) == 0
    rec.event(2.0, 1, "a", 3.0)
    assert _rows(tmp_path) == 3


def test_a_slow_run_writes_its_rows_every_flush_secs_so_it_can_be_watched(tmp_path):
    rec = Recorder("r", wall_clock=False, flush_rows=20_000, flush_secs=0.05)
    rec.stream_to(tmp_path)
    rec.event(0.0, 1, "test_acc", 0.5, epoch=1)
    assert _rows(tmp_path) == 0
    time.sleep(0.1)
    rec.event(1.0, 1, "test_acc", 0.6, epoch=2)
    assert _rows(tmp_path) == 2
    assert list(pd.read_csv(tmp_path / "epochs.csv")["test_acc"]) == [0.5, 0.6]
    rec.event(2.0, 1, "test_acc", 0.7, epoch=3)          # the next batch is due 0.05 s later
    assert _rows(tmp_path) == 2


def test_when_batches_are_written_does_not_change_the_files(tmp_path):
    def record(rec):
        for i in range(50):
            rec.event(float(i), i % 3, "loss", 1.0 / (i + 1), epoch=i // 3)
            if i % 7 == 0:
                time.sleep(0.002)
        return rec

    streamed, whole = tmp_path / "streamed", tmp_path / "whole"
    rec = Recorder("r", wall_clock=False, flush_rows=4, flush_secs=0.001)
    rec.stream_to(streamed)
    record(rec).write(streamed)
    record(Recorder("r", wall_clock=False)).write(whole)
    for name in ("events.csv", "epochs.csv"):
        assert (streamed / name).read_bytes() == (whole / name).read_bytes()
