"""benchmarks/make_traces.py: the committed example traces are what it writes, they read as
populations, and the FedScale download keeps only files with the pinned sha256."""

import hashlib
import importlib.util
import io

import numpy as np

from simbench.core.population import read_availability, read_devices
from simhelpers import REPO

spec = importlib.util.spec_from_file_location("make_traces", REPO / "benchmarks" / "make_traces.py")
make_traces = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_traces)


def test_the_committed_traces_are_what_the_script_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(make_traces, "OUT", tmp_path / "topologies" / "traces")
    monkeypatch.setattr(make_traces, "ROOT", tmp_path)
    assert make_traces.main([]) == 0
    for name in ("devices_mobile.csv", "availability_churn.csv"):
        assert (tmp_path / "topologies" / "traces" / name).read_bytes() == (REPO / "topologies" / "traces" / name).read_bytes()


def test_the_example_traces_match_their_description():
    devices = read_devices("x", REPO / "topologies" / "traces" / "devices_mobile.csv", "auto")
    kbps = np.array([d.uplink * 8 / 1000 for d in devices.values()])
    assert len(devices) == 1000 and 5000 < np.median(kbps) < 7500 and 0.2 < (kbps < 3000).mean() < 0.32
    flops = np.array([d.flops_per_s for d in devices.values()])
    assert 3e9 < np.exp(np.log(flops).mean()) < 5.5e9 and flops.max() / flops.min() < 200 / 15 * 1.01
    sessions = read_availability("x", REPO / "topologies" / "traces" / "availability_churn.csv", "auto", None)
    online = sum(e - s for v in sessions.values() for s, e in v.spans) / (3600.0 * len(sessions))
    assert len(sessions) == 1000 and 0.6 < online < 0.73  # 240 s on, 120 s off


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_fetching_fedscale_keeps_only_files_with_the_pinned_digest(tmp_path, monkeypatch, capsys):
    good = {name: f"{name} bytes".encode() for name in make_traces.FEDSCALE_FILES}
    monkeypatch.setattr(make_traces, "FEDSCALE_FILES", {n: hashlib.sha256(b).hexdigest() for n, b in good.items()})
    monkeypatch.setattr(make_traces.urllib.request, "urlopen", lambda url, timeout: _Response(good[url.rsplit("/", 1)[1]]))
    assert make_traces.fetch_fedscale(tmp_path / "ok") == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == sorted(good)
    assert "format: fedscale" in capsys.readouterr().out

    monkeypatch.setattr(make_traces.urllib.request, "urlopen", lambda url, timeout: _Response(b"something else"))
    assert make_traces.fetch_fedscale(tmp_path / "bad") == 1
    assert list((tmp_path / "bad").iterdir()) == []
    assert "differs from the pinned" in capsys.readouterr().err
