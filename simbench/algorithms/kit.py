"""The building blocks algorithms share: gathering a round, draining what has arrived, step
clocks, averaging, training n steps, server roles, and one federated round with hooks.

An algorithm module holds only its own rules and imports what it shares from here. All of
it awaits only the :class:`~simbench.core.runtime.Runtime` interface, so it runs unchanged
in the simulator and on real sockets. Log names are the same in every algorithm that uses
a block: ``<kind>_timeouts`` and ``<kind>_stale`` from :func:`collect_round`,
``clients_heard`` (and ``waited_for_clients``, seconds without any client online) from
:class:`FederatedServer`.

The federated round follows the split of Flower's strategies (``configure_fit`` chooses the
clients, ``aggregate_fit`` combines their results; ``flwr/server/strategy/fedavg.py``):
:meth:`FederatedServer.choose` and :meth:`FederatedServer.aggregate` are the hooks, and a
variant such as FedAvgM or FedProx is a short subclass.
"""

from __future__ import annotations

from typing import Callable, Sequence

import networkx as nx
import torch

from ..core.message import Message
from ..core.node import Algorithm, Node, NodeContext
from ..core.runtime import Match, Runtime
from ..core.schema import ConfigError


NOBODY_ONLINE_WAIT = 1.0
"""Seconds a federated server waits before choosing again when no client is online."""


# -- messages ---------------------------------------------------------------------------------
async def wait_each(rt: Runtime, pending: set[int], timeout: float | None, match: Match,
                    take: Callable[[Message], None]) -> set[int]:
    """Hand every ``match`` message to ``take`` (which removes its sender from ``pending`` when
    it settles that peer) until no peer is pending or ``timeout`` seconds have passed; the
    peers still pending. What has arrived by the deadline is taken even at the deadline, as
    ``rt.recv(timeout=0)`` takes it: a timeout of 0 waits for nothing but takes what is queued."""
    deadline = None if timeout is None else rt.now() + timeout
    while pending:
        left = None if deadline is None else deadline - rt.now()
        if left is not None and left < 0:
            break
        msg = await rt.recv(timeout=left, match=match)
        if msg is None:
            break
        take(msg)
    return pending


async def collect_round(rt: Runtime, kind: str, rnd: int, expected: set[int], timeout: float | None,
                        stale: bool = False) -> dict[int, Message]:
    """Gather ``kind`` messages of round ``rnd`` from ``expected`` peers, waiting at most
    ``timeout`` seconds in all; older rounds' stragglers are discarded on the way.

    ``stale=True``: a peer whose round-``rnd`` message has not come by the deadline enters
    with the newest older-round message that arrived from it since the last call (logged as
    ``<kind>_stale``). Without it, a node that once timed out on a slower neighbour runs a
    round ahead for good and never hears from it again: every later round-r message from
    that neighbour arrives after the node has moved on.
    """
    got: dict[int, Message] = {}
    older: dict[int, Message] = {}
    pending = set(expected)

    def take(msg: Message) -> None:
        if msg["round"] == rnd and msg.src in pending:
            got[msg.src] = msg
            pending.discard(msg.src)
        elif stale and msg.src in pending:
            older[msg.src] = msg  # rounds arrive in order on a link: this is the newest so far

    await wait_each(rt, pending, timeout, lambda m: m.kind == kind and m.get("round", -1) <= rnd, take)
    if pending:
        rt.log(f"{kind}_timeouts", len(pending))
        late = [j for j in pending if j in older]
        if late:
            got.update((j, older[j]) for j in late)
            rt.log(f"{kind}_stale", len(late))
    return got


async def drain(rt: Runtime, match: Match) -> list[Message]:
    """Every queued message ``match`` accepts, oldest first; never waits."""
    out = []
    while (msg := await rt.recv(timeout=0, match=match)) is not None:
        out.append(msg)
    return out


async def drain_latest(rt: Runtime, match: Match) -> dict[int, Message]:
    """Every queued message ``match`` accepts, the latest per sender; never waits."""
    return {m.src: m for m in await drain(rt, match)}


# -- seed 003's edge swaps -------------------------------------------------------------------
def swap_slots(node: int, neighbours: Sequence[int], n: int, period: int) -> dict[int, int]:
    """The step of each round of ``period`` steps at which ``node`` starts a swap with each
    neighbour: neighbours taken from the nearest below (cyclically, ``(node - j) mod n``), the
    k-th at ``(node + k * max(1, period // deg)) mod period``. On a ring this is seed 003's
    hand-written schedule (``conf/node_list.n8.ring.round8.json`` of nttcslab/ecl-isvr: node i
    swaps with i-1 at step i and with i+1 at step i+4 of 8): the nodes' swaps are spread over
    the round instead of all falling on one step."""
    order = sorted(neighbours, key=lambda j: (node - j) % max(n, 1))
    gap = max(1, period // max(1, len(order)))
    return {j: (node + k * gap) % period for k, j in enumerate(order)}


class EdgeSwaps:
    """Seed 003's edge exchange: each edge end keeps a send and a receive buffer; every step the
    node computes with the last state it *received* on each edge and refreshes what it would
    send, but an edge swaps only once per round of ``period`` steps, at its slot
    (:func:`swap_slots`). A swap is a request (this node's send buffer) answered at once by the
    peer's server task with its own current send buffer, so both ends receive; each end starts
    one swap per round, so an edge carries 2 x 2 messages per round and a node sends
    2 deg messages per round.

    Reference: nttcslab/ecl-isvr ``edgecons/contract.py`` (``Contract.swap_params`` swaps the edges
    whose ``is_swap_cnt(round_cnt)``; ``round_update`` wraps ``round_cnt`` at ``round`` and, unless
    ``--async_step``, waits at the wrap for the other nodes' round), ``edgecons/mnw/edge.py``
    (``Edge.swap_params`` sends ``snd`` and receives ``rcv``; ``swap_receive_params`` is the
    server side) and ``edgecons/gateway.py`` (the server thread answering swaps at any time);
    the same files under ``connection/`` in etri-clara/etrl-P2PLearning.

    The reference drops an edge for good when a swap times out; here a swap that gets no
    answer within ``timeout`` leaves the receive buffer as it was (``<kind>_timeouts``) and
    the edge is tried again at its next slot. The reference's round barrier spans every host
    over its control channel; simbench has links only along the topology, so the barrier
    (:meth:`barrier`) waits for the neighbours, up to ``timeout``. Nodes of one run may take
    different numbers of steps (unequal shards); a node that is done says so to its neighbours
    (:meth:`finish`, simbench's addition), which then stop waiting for its answers and rounds.
    """

    def __init__(self, kind: str, node: int, neighbours: Sequence[int], n: int, period: int,
                 snd: dict[int, torch.Tensor], rcv: dict[int, torch.Tensor], on_receive=None) -> None:
        self.kind, self.period = kind, period
        self.slots = swap_slots(node, neighbours, n, period)
        self.snd, self.rcv = snd, rcv
        self.on_receive = on_receive
        """``f(j, tensor)`` storing what ``j`` sent (default: ``rcv[j] = tensor``)."""
        self.count = 0
        """Steps of the current round done (the reference's ``round_cnt``)."""
        self.rounds = 0
        self.gone: set[int] = set()
        """Neighbours that said they finished: no more swaps or rounds with them."""

    def _is(self, *kinds: str):
        names = {f"{self.kind}_{k}" for k in kinds}
        return lambda m: m.kind in names

    def _gone(self, msg: Message) -> bool:
        """Note a neighbour's goodbye (True), or tell that ``msg`` is something else."""
        if msg.kind != f"{self.kind}_done":
            return False
        self.gone.add(msg.src)
        return True

    async def finish(self, rt: Runtime, timeout: float | None) -> None:
        """Tell the neighbours this end is done (nodes of one run may take different numbers
        of steps): a neighbour still running then stops waiting for its answers and rounds.
        Then keep answering swaps (the server task runs on) until every neighbour is done too,
        waiting at most ``timeout``: every request gets its answer, in either runtime alike."""
        for j in self.slots:
            await rt.send(j, Message(f"{self.kind}_done"))
        waiting = set(self.slots) - self.gone

        def take(msg: Message) -> None:
            self._gone(msg)
            waiting.discard(msg.src)

        await wait_each(rt, waiting, timeout, self._is("done"), take)
        # A neighbour's last requests came before its goodbye, but one may have woken the server
        # task without it having run yet (it came in the same instant, or the same read of a
        # socket, as the goodbye): yield once so it is answered before the caller stops the server.
        await rt.sleep(0)

    def _store(self, j: int, x: torch.Tensor) -> None:
        if self.on_receive is None:
            self.rcv[j] = x
        else:
            self.on_receive(j, x)

    async def serve(self, rt: Runtime) -> None:
        """The server side: answer every swap request with this end's send buffer (spawned)."""
        req = f"{self.kind}_swap"
        while True:
            msg = await rt.recv(match=req)
            if msg.src in self.snd:
                with torch.no_grad():
                    self._store(msg.src, msg.tensors["x"])
                await rt.send(msg.src, Message(f"{self.kind}_reply", {}, {"x": self.snd[msg.src]}))

    async def step(self, rt: Runtime, timeout: float | None, barrier: bool) -> None:
        """After a step: swap the edges whose slot this is, advance the round counter and, at a
        round's end with ``barrier``, wait for the neighbours' round."""
        while (msg := await rt.recv(timeout=0, match=self._is("done"))) is not None:
            self._gone(msg)
        # A finished neighbour still gets its swaps (what a node sends does not depend on
        # timing, so the simulator and real runs send the same bytes); it is not waited for.
        due = [j for j, s in self.slots.items() if s == self.count]
        for j in due:
            await rt.send(j, Message(f"{self.kind}_swap", {}, {"x": self.snd[j]}))
        pending = set(due) - self.gone

        def take(msg: Message) -> None:
            if not self._gone(msg):
                with torch.no_grad():
                    self._store(msg.src, msg.tensors["x"])  # a late answer to an earlier swap is news too
            pending.discard(msg.src)

        await wait_each(rt, pending, timeout, self._is("reply", "done"), take)
        if pending:
            rt.log(f"{self.kind}_timeouts", len(pending))
        self.count += 1
        if self.count >= self.period:
            self.count = 0
            self.rounds += 1
            if barrier:
                await self.barrier(rt, timeout)

    async def barrier(self, rt: Runtime, timeout: float | None) -> None:
        """Seed 003's round step: tell the neighbours this round is done and wait for theirs."""
        r = self.rounds
        for j in self.slots:
            await rt.send(j, Message(f"{self.kind}_round", {"round": r}))
        pending = set(self.slots) - self.gone

        def take(msg: Message) -> None:
            if self._gone(msg) or msg["round"] == r:
                pending.discard(msg.src)

        accept = lambda m: (m.kind == f"{self.kind}_round" and m.get("round", -1) <= r) \
            or m.kind == f"{self.kind}_done"  # noqa: E731
        await wait_each(rt, pending, timeout, accept, take)
        if pending:
            rt.log(f"{self.kind}_round_timeouts", len(pending))


# -- local work --------------------------------------------------------------------------------


class StepClock:
    """Counts a node's local steps and calls its ``end_epoch`` at each epoch boundary."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.steps = 0

    @property
    def total(self) -> int:
        return self.node.ctx.epochs * self.node.learner.steps_per_epoch

    @property
    def left(self) -> int:
        return self.total - self.steps

    def start(self, rt: Runtime) -> None:
        if self.steps == 0:
            self.node.end_epoch(rt, 0)

    def advance(self, rt: Runtime, steps: int) -> None:
        spe = self.node.learner.steps_per_epoch
        before = self.steps // spe
        self.steps += steps
        for epoch in range(before + 1, self.steps // spe + 1):
            self.node.end_epoch(rt, epoch)


def check_local_work(params) -> None:
    """ConfigError unless at most one of ``local_steps`` and ``local_epochs`` is set."""
    if getattr(params, "local_steps", None) is not None and getattr(params, "local_epochs", None) is not None:
        raise ConfigError(f"algorithm.local_epochs: set local_epochs (E, passes over the shard) or local_steps "
                          f"(minibatch steps), not both; got local_steps {params.local_steps} and local_epochs "
                          f"{params.local_epochs}")


def local_work(params, steps_per_epoch: int, default: int | None = None) -> int:
    """Minibatch steps per round: ``local_steps``, else ``local_epochs`` passes over a shard of
    ``steps_per_epoch`` steps (E n_k / B, McMahan et al.'s u), else ``default`` (None: one pass)."""
    if params.local_steps is not None:
        return int(params.local_steps)
    if params.local_epochs is not None:
        return int(params.local_epochs) * max(1, int(steps_per_epoch))
    return max(1, int(steps_per_epoch)) if default is None else int(default)


# -- averaging ---------------------------------------------------------------------------------
def average(vectors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_k w_k v_k / sum_k w_k`` of flat vectors (uniform when ``weights`` is None), a new
    tensor; vectors of weight 0 are skipped."""
    if not vectors:
        raise ValueError("nothing to average")
    weights = [1.0] * len(vectors) if weights is None else list(weights)
    total = float(sum(weights))
    if not total > 0:
        raise ValueError(f"weights must have a positive sum, got {total}")
    out = torch.zeros_like(vectors[0])
    for v, w in zip(vectors, weights):
        if w:
            out.add_(v, alpha=float(w) / total)
    return out


# -- roles -------------------------------------------------------------------------------------
def server_roles(graph: nx.Graph, algorithm: str) -> dict[int, str]:
    """One server linked to every other node: the node with role ``server`` or the hub.

    Raises ConfigError naming ``topology`` when no node is adjacent to all others.
    """
    declared = [i for i, r in graph.nodes(data="role") if r == "server"]
    n = graph.number_of_nodes()
    server = declared[0] if declared else max(graph.nodes, key=lambda i: (graph.degree(i), -i))
    if graph.degree(server) != n - 1:
        raise ConfigError(
            f"topology: {algorithm} needs a server linked to every other node (e.g. topology: {{kind: star}}); "
            f"node {server} reaches only {graph.degree(server)} of {n - 1}"
        )
    return {i: ("server" if i == server else "worker") for i in graph.nodes}


def require_hubs(graph: nx.Graph, algorithm: str, servers, hint: str) -> None:
    """ConfigError naming ``topology`` unless every node in ``servers`` is linked to all others."""
    n = graph.number_of_nodes()
    for s in servers:
        if graph.degree(s) != n - 1:
            raise ConfigError(f"topology: {algorithm} needs server node {s} linked to every other node ({hint}); "
                              f"it reaches {graph.degree(s)} of {n - 1}")


def fed_roles(graph: nx.Graph, algorithm: str, num_servers: int = 1) -> dict[int, str]:
    """Nodes 0..num_servers-1 are servers, each linked to every other node; the rest are clients
    (role ``worker``)."""
    n = graph.number_of_nodes()
    if num_servers >= n:
        raise ConfigError(f"algorithm.num_servers: {num_servers} servers leave no device among {n} nodes")
    hint = "topology: {kind: star}" if num_servers == 1 else f"topology: {{kind: star, hubs: {num_servers}}}"
    require_hubs(graph, algorithm, range(num_servers), hint)
    return {i: ("server" if i < num_servers else "worker") for i in graph.nodes}


def holders(ctx: NodeContext, role: str = "worker") -> list[int]:
    """Ids of the nodes with ``role``, sorted."""
    return sorted(i for i, r in ctx.roles.items() if r == role)


class ServerAlgorithm(Algorithm):
    """An algorithm with a central server: it holds a model and its rows are the global model's."""

    model_holders: tuple[str, ...] = ("worker", "server")

    @classmethod
    def model_roles(cls):
        return cls.model_holders

    @classmethod
    def reporting_roles(cls):
        return ("server",)


# -- the federated round -----------------------------------------------------------------------
class FederatedServer(Node):
    """A server that trains in rounds: each round it :meth:`choose` s clients, sends them the
    global model (``global``), gathers their ``update`` messages of that round (within the
    parameters' ``timeout``; all of them when null) and sets the global model to
    :meth:`aggregate` of the updates that came, sorted by sender (so the sum's order does not
    depend on arrival order, which differs between runtimes). It logs ``clients_heard``.
    A client that goes offline during the round (``population.availability``) sends nothing:
    its update is lost and the round ends at the timeout.

    Subclasses write ``run``: how many rounds, when to evaluate, what to do between rounds.
    """

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.round = 0
        self.clients = holders(ctx)

    # -- hooks ----------------------------------------------------------------------------
    def group_size(self) -> int:
        """Clients per round (default: all)."""
        return len(self.clients)

    def choose(self, rt: Runtime, m: int) -> list[int]:
        """``m`` distinct clients, uniformly at random with the node's stream, sorted: among the
        clients online now (``rt.online``; the config's ``population.selection: online``, as
        FedScale's ``clientManager.select_participants`` samples only ``getFeasibleClients``), or
        among all of them (``any``). All the online ones when fewer than ``m`` are online."""
        pool = self.clients if self.ctx.selection == "any" else rt.online(self.clients)
        m = min(m, len(pool))
        if m == 0:
            return []
        return sorted(int(c) for c in rt.rng.choice(pool, size=m, replace=False))

    def aggregate(self, updates: list[Message]) -> torch.Tensor:
        """The new global model from this round's updates (default: weighted by ``n``, the
        clients' sample counts, as FedAvg)."""
        return average([u.tensors["x"] for u in updates], [u["n"] for u in updates])

    def absorb(self, updates: list[Message]) -> None:
        """Called after aggregation with the same updates (e.g. to average reported losses)."""

    # -- the round -------------------------------------------------------------------------
    async def train_round(self, rt: Runtime) -> list[Message]:
        """One round: choose, send, gather, aggregate. Returns the updates used."""
        r = self.round
        chosen = self.choose(rt, self.group_size())
        waited = 0.0
        while not chosen:  # no client is online: look again a little later
            await rt.sleep(NOBODY_ONLINE_WAIT)
            waited += NOBODY_ONLINE_WAIT
            chosen = self.choose(rt, self.group_size())
        if waited:
            rt.log("waited_for_clients", waited)
        msg = Message("global", {"round": r}, {"x": self.learner.get_flat()})
        for c in chosen:
            await rt.send(c, msg)
        got = await collect_round(rt, "update", r, set(chosen), self.params.timeout)
        updates = [got[s] for s in sorted(got)]
        if updates:
            self.learner.set_flat(self.aggregate(updates))
            self.absorb(updates)
        rt.log("clients_heard", len(updates))
        self.round += 1
        return updates

    async def stop(self, rt: Runtime, others: Sequence[int] = ()) -> None:
        """Tell every client (and ``others``) that training is over."""
        for node in [*self.clients, *others]:
            await rt.send(node, Message("stop"))


class FederatedClient(Node):
    """A client of :class:`FederatedServer`: on each ``global`` model it trains
    :meth:`local_steps` steps from it and answers with its model and :meth:`update_meta`;
    ``stop`` ends it."""

    def local_steps(self) -> int:
        """Training steps per round (default: one pass over the shard)."""
        return self.learner.steps_per_epoch

    stateless = True
    """The client sets the global model before each round and keeps nothing of its own
    between rounds, so its learner may free its parameters while it waits (``idle``).
    A subclass that keeps its model from round to round sets this False."""

    def local_train(self, steps: int) -> None:
        """The round's local work from the global model just loaded (default: ``steps`` plain
        training steps). Runs inside ``rt.compute``: it is charged ``steps`` steps of compute."""
        self.learner.train_steps(steps)

    def update_meta(self) -> dict:
        """The header of the update: its round is added; by default the sample count ``n``."""
        return {"n": self.learner.num_samples}

    async def start(self, rt: Runtime) -> None:
        """Before the first round (e.g. tell the servers something once)."""

    async def run(self, rt: Runtime) -> None:
        learner = self.learner
        await self.start(rt)
        steps = self.local_steps()
        while True:
            msg = await rt.recv(match=("global", "stop"))
            if msg.kind == "stop":
                return
            learner.set_flat(msg.tensors["x"])
            # the learner's own method when the work is the default one: the simulator may run
            # the steps of every client due at this instant as one batched call (sim/batch.py)
            work = learner.train_steps if type(self).local_train is FederatedClient.local_train else self.local_train
            await rt.compute(work, steps, cost=self.step_cost(steps))
            meta = {"round": msg["round"], **self.update_meta()}
            # not bound to a name: a sent message (its tensors and wire bytes) must not live on
            # in this frame until the next round (a thousand idle clients would hold one each)
            await rt.send(msg.src, Message("update", meta, {"x": learner.get_flat()}))
            if self.stateless:
                learner.idle()
