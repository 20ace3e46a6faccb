"""pytest-benchmark suite: kernel throughput, one simulated DSGD run, a 64-node all-to-all exchange,
a sharded parameter server's traffic (64 workers, 8 shards), and the wire encoding of a 4.8 MB
model (encode; decode copying out of bytes as the socket transport does; decode viewing the
encoder's buffer copy-on-write as the simulator does).

Run by hand: ``pytest benchmarks/ --benchmark-only`` (not part of the default test run).
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_throughput import build  # noqa: E402

from simbench.core.message import Message, decode  # noqa: E402
from simbench.experiment.config import parse_config  # noqa: E402
from simbench.experiment.run import run_experiment  # noqa: E402


def test_kernel_gossip_1000_nodes(benchmark):
    def go():
        world = build(1000, 20)
        world.run()
        return world.kernel.events_processed
    events = benchmark.pedantic(go, rounds=3, iterations=1)
    benchmark.extra_info["events"] = events
    benchmark.extra_info["events_per_s"] = events / benchmark.stats.stats.mean


def test_quickstart_dsgd_run(benchmark, tmp_path):
    cfg = parse_config({"nodes": 8, "train": {"epochs": 2, "batch_size": 16},
                        "output": {"plot": False, "progress": False}})
    benchmark.pedantic(lambda: run_experiment(cfg, tmp_path, progress=False), rounds=2, iterations=1)


def test_network_alltoall_64_nodes(benchmark):
    from network_alltoall import build as build_alltoall

    def go():
        world = build_alltoall(64, 2)
        world.run()
        return sum(world.network.msgs_sent)
    msgs = benchmark.pedantic(go, rounds=2, iterations=1)
    benchmark.extra_info["messages"] = msgs


def test_network_ps_64_workers_8_shards(benchmark):
    from network_ps import build as build_ps

    def go():
        world = build_ps(64, 8, 5)
        world.run()
        return sum(world.network.msgs_sent)
    msgs = benchmark.pedantic(go, rounds=2, iterations=1)
    benchmark.extra_info["messages"] = msgs


MODEL = torch.randn(1_200_000)  # seed 002's CNN: 1.2 M float32 parameters


def test_message_encode_5mb(benchmark):
    benchmark(lambda: Message("params", {"round": 1}, {"x": MODEL}).encode(0))


@pytest.mark.parametrize("how", ["bytes", "owner"])
def test_message_decode_5mb(benchmark, how):
    msg = Message("params", {"round": 1}, {"x": MODEL})
    wire = msg.encode(0)
    if how == "bytes":
        wire = bytes(wire)
        got = benchmark(lambda: decode(wire))
    else:
        got = benchmark(lambda: decode(wire, owner=msg.buffer))
    assert torch.equal(got.tensors["x"], MODEL)
