"""Small builders for simulator stories: a world from a graph and a dict of node objects.

``make_world(graph, nodes, latency=0.005, bandwidth=10e6, step_time=0.1, ...)`` builds a
:class:`SimWorld` with test defaults: no latency and unlimited bandwidth unless given, the
default compute model unless a ComputeSpec field is given, an empty Scenario, node
profiles drawn by ``node_profiles``, a recorder without wall-clock readings, seed 0.

``error(fn, *args, exc=ValueError, **kwargs)`` is the one-line message a call raises, for
tests that check error texts word for word; ``run_cli(*args)`` runs ``simbench ARGS`` in this
process and returns what a subprocess would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import subprocess
import traceback
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from simbench.core.message import Message
from simbench.core.scenario import ComputeSpec, Dist, NetworkSpec, Scenario, node_profiles
from simbench.metrics.recorder import Recorder
from simbench.sim.world import SimWorld

REPO = Path(__file__).resolve().parents[1]
"""The repository's root (examples/, topologies/, benchmarks/)."""
MNIST_ROOT = Path(os.environ.get("SIMBENCH_DATA") or REPO.parent / "shared" / "data")
"""Where tests that need the real MNIST archives look for them: ``$SIMBENCH_DATA``, else a
``shared/data`` folder beside the checkout (the CI machine's layout); they skip when absent."""

_NET_FIELDS = {f.name for f in dataclasses.fields(NetworkSpec)}
_COMPUTE_FIELDS = {f.name for f in dataclasses.fields(ComputeSpec)}


def net(latency: float | Dist = 0.0, bandwidth: float = math.inf, **kw) -> NetworkSpec:
    """A NetworkSpec; ``latency`` may be seconds or a Dist; up/downlinks default to ``bandwidth``."""
    lat = latency if isinstance(latency, Dist) else Dist("constant", value=latency)
    return NetworkSpec(latency=lat, bandwidth=bandwidth,
                       uplink=kw.pop("uplink", bandwidth), downlink=kw.pop("downlink", bandwidth), **kw)


def error(fn, *args, exc=ValueError, **kwargs) -> str:
    """The message ``fn(*args, **kwargs)`` raises (and that it raises exactly ``exc`` or a subclass)."""
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    return str(info.value)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``simbench ARGS`` run in this process (``simbench.cli.main``), returned as a subprocess's
    result: exit code, stdout, stderr. An exception escaping ``main`` is exit code 1 with its
    traceback on stderr, as Python prints one. It saves a Python start and torch's import
    (about 3 s) per call; stories that need a real process (signals, torch's thread count,
    modules imported from the working directory) start one."""
    from simbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's own exits (--version, a bad flag)
                code = 0 if stop.code is None else stop.code
                if not isinstance(code, int):  # SystemExit("message"): Python prints it, exit 1
                    print(code, file=err)
                    code = 1
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["simbench", *args], code, out.getvalue(), err.getvalue())


def make_world(graph: nx.Graph, nodes: dict, *, network: NetworkSpec | None = None,
               compute: ComputeSpec | None = None, scenario: Scenario | None = None, seed: int = 0,
               roles: dict | None = None, profiles: list | None = None, batched: bool = False,
               **overrides) -> SimWorld:
    """A SimWorld for a test; ``overrides`` are NetworkSpec or ComputeSpec fields; ``profiles``
    (default: drawn from ``scenario``) set each node's speed, straggling and rest by hand."""
    net_kw = {k: overrides.pop(k) for k in list(overrides) if k in _NET_FIELDS}
    compute_kw = {k: overrides.pop(k) for k in list(overrides) if k in _COMPUTE_FIELDS}
    if overrides:
        raise TypeError(f"make_world: unknown overrides {sorted(overrides)}")
    if network is not None and net_kw or compute is not None and compute_kw:
        raise TypeError("make_world: pass a spec or its fields, not both")
    scenario = scenario or Scenario()
    n = graph.number_of_nodes()
    return SimWorld(graph, nodes, roles=roles or {}, network=network or net(**net_kw),
                    compute=compute or ComputeSpec(**compute_kw), scenario=scenario,
                    profiles=profiles or node_profiles(scenario, n, np.random.default_rng(seed)),
                    recorder=Recorder("test", wall_clock=False), seed=seed,
                    **({"batched": True} if batched else {}))  # else SimWorld's own default


def events(world: SimWorld, metric: str) -> list[tuple[float, object, float]]:
    """``(time_s, node, value)`` of every recorded event named ``metric``."""
    return [(t, node, value) for t, _wall, node, m, value in world.recorder.events if m == metric]


class Idle:
    async def run(self, rt):
        return None


@contextlib.contextmanager
def one_torch_thread():
    """A simulated reference run on one torch thread: on a busy 2-core box two threads spin (6x slower)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_config_world(cfg) -> tuple[dict, Recorder]:
    """Build a parsed config's nodes and run them in a SimWorld; ``(nodes, recorder)``."""
    from simbench.experiment.build import build_nodes

    recorder = Recorder(cfg.name)
    built = build_nodes(cfg)
    world = SimWorld(built.graph, built.nodes, roles=built.roles, network=cfg.network, compute=cfg.compute,
                     scenario=cfg.scenario, profiles=built.profiles, recorder=recorder, seed=built.streams.world)
    world.run()
    return built.nodes, recorder


def lockstep_average(learners: list, steps: int):
    """The synchronous reference: every learner's gradient at the same parameters, averaged,
    one optimizer step on ``learners[0]``; returns the final flat parameters."""
    return lockstep(learners, steps, "mean")


def lockstep_sum(learners: list, steps: int):
    """As :func:`lockstep_average` with the gradients summed (TF.AKO's and DEGAN's rule)."""
    return lockstep(learners, steps, "sum")


def lockstep(learners: list, steps: int, reduce: str):
    import torch

    x = learners[0].get_flat()
    for _ in range(steps):
        grads = []
        for lr in learners:
            lr.set_flat(x)
            lr.compute_grad()
            grads.append(lr.get_grad_flat())
        learners[0].set_flat(x)
        stacked = torch.stack(grads)
        learners[0].set_grad_flat(stacked.sum(dim=0) if reduce == "sum" else stacked.mean(dim=0))
        learners[0].apply_update()
        x = learners[0].get_flat()
    return x


# -- stand-ins for a learner and a worker -------------------------------------------------------
class QuadLearner:
    """f(x) = 1/2 |x - c|^2 with exact (noise=0) or noisy gradients, plain SGD steps."""

    def __init__(self, c: torch.Tensor, x0: torch.Tensor, lr: float, spe: int = 10, noise: float = 0.0, seed: int = 0):
        self.c, self.flat, self._lr, self.spe, self.noise = c, x0.clone(), lr, spe, noise
        self.grad = torch.zeros_like(x0)
        self.gen = torch.Generator().manual_seed(seed)
        self.num_params = x0.numel()
        self.steps_done = 0

    steps_per_epoch = property(lambda self: self.spe)
    lr = property(lambda self: self._lr)

    def flops_per_step(self) -> float:
        return 1e6

    def flat_params(self):
        return self.flat

    def get_flat(self):
        return self.flat.clone()

    def set_flat(self, v):
        self.flat.copy_(v)

    def compute_grad(self) -> float:
        self.grad = self.flat - self.c
        if self.noise:
            self.grad = self.grad + self.noise * torch.randn(self.flat.shape, generator=self.gen)
        self.steps_done += 1
        return float(0.5 * (self.flat - self.c).pow(2).sum())

    def get_grad_flat(self):
        return self.grad.clone()

    def set_grad_flat(self, g):
        self.grad = g.clone()

    def apply_update(self) -> None:
        self.flat.sub_(self.grad, alpha=self._lr)

    def train_step(self) -> float:
        loss = self.compute_grad()
        self.apply_update()
        return loss


class Scripted:
    """A worker that pulls, then pushes the sparse gradients of ``script`` at the given
    simulated times, each tagged with the version of the latest model it was sent."""

    def __init__(self, server: int, script: list) -> None:
        self.server, self.script = server, script

    async def run(self, rt):
        await rt.send(self.server, Message("pull"))
        version = int((await rt.recv(match="params"))["version"])
        for at, idx, val in self.script:
            await rt.sleep(at - rt.now())
            payload = {"idx": torch.tensor(idx, dtype=torch.int32), "val": torch.tensor(val)}
            await rt.send(self.server, Message("grad", {"version": version, "n": 1}, payload))
            version = int((await rt.recv(match="params"))["version"])
        await rt.send(self.server, Message("done"))
        await rt.recv(match="stop")


# -- deliberately broken algorithms (the contract check must catch them) -----------------------
def _global_random_dsgd():
    from simbench.algorithms.dsgd import DSGD, DSGDNode

    class Node(DSGDNode):
        async def local_step(self, rt):
            import random
            loss = await super().local_step(rt)
            self.learner.flat_params().mul_(1.0 + 1e-3 * random.random())  # not from rt.rng: irreproducible
            return loss

    class GlobalRandom(DSGD):
        name = "global_random_dsgd"

        @classmethod
        def make_node(cls, ctx):
            return Node(ctx)
    return GlobalRandom


GlobalRandomDSGD = _global_random_dsgd()
