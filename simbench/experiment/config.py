"""The experiment config: YAML -> frozen dataclasses, validated with one-line errors.

A config names the nodes and topology, the algorithm and its knobs, the data split, the
model and training, the network and compute models and the fault scenario::

    name: quickstart
    seed: 0
    nodes: 8
    topology: {kind: ring}            # or {file: topologies/ring8.yaml}
    algorithm: dsgd                   # or {name: dsgd, weight: 1.0, swap_timeout: 1s}
    dataset: {name: digits, partition: iid}
    model: {name: mlp}
    train: {epochs: 10, batch_size: 16, lr: 0.05}
    network: {latency: 5ms, bandwidth: 100Mbit/s}
    compute: {device: laptop-cpu}
    scenario: {stragglers: {fraction: 0.25, slowdown: 3}}
    population: {availability: {trace: topologies/traces/availability.csv}}

Every error is a :class:`~simbench.core.schema.ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import registry
from ..core.population import PopulationSpec, check_spec
from ..core.scenario import ComputeSpec, NetworkSpec, Scenario, check_nodes
from ..core.schema import ConfigError, above, at_least, from_dict, path_component, to_dict, within
from ..core.units import parse_duration
from ..core.yamlio import load_yaml_file, parse_override

PARTITIONS = ("iid", "shards", "k_classes", "dirichlet", "file_order", "fegan", "parity", "flwr")


@dataclass(frozen=True)
class DatasetSpec:
    name: str = field(default="digits", metadata={"check": (lambda n: bool(registry.dataset(n)), "")})
    """Dataset: ``digits`` is embedded (offline); mnist, fashion_mnist, cifar10 load through
    torchvision; an installed entry point or an import path ``pkg.module:loader`` names your own."""
    root: Optional[str] = None
    """Data root; default: $SIMBENCH_DATA, else ~/.cache/simbench/data."""
    download: bool = True
    """Let torchvision download when the files are missing (needs network)."""
    partition: str = field(default="iid", metadata={"choices": PARTITIONS})
    """How training data is split over the nodes that hold data: iid; shards (McMahan et al.
    2017: sorted by label, shards_per_client shards dealt at random); k_classes (classes_per_node
    classes drawn at random per node, NIID-Bench); dirichlet (Hsu et al. 2019, alpha); file_order
    (seed 002: the file order cut into shard_size files); fegan (FeGAN's skewed, overlapping
    sampling); parity (seed 000's DEGAN: nodes 0 and 2 every even digit, the others every odd
    one); flwr (a Flower Datasets partitioner, dataset.flwr). Sources in simbench.data.partition."""
    shards_per_client: int = field(default=2, metadata={"check": at_least(1)})
    """Shards per node (partition: shards; McMahan et al.: 2 of 300 MNIST images)."""
    alpha: float = field(default=0.5, metadata={"check": above(0)})
    """Dirichlet concentration (partition: dirichlet); small = more skewed."""
    dirichlet: str = field(default="hsu", metadata={"choices": ("hsu", "per_class")})
    """partition: dirichlet: hsu (equal node sizes, class mix ~ Dir(alpha p), Hsu et al. 2019) or
    per_class (each class split over nodes ~ Dir(alpha), Yurochkin et al. 2019; sizes vary)."""
    classes_per_node: int = field(default=2, metadata={"check": at_least(1)})
    """Classes on each node (partition: k_classes)."""
    shard_size: int = field(default=50, metadata={"check": at_least(1)})
    """Samples per file (partition: file_order, seed 002's layout)."""
    flwr: dict = field(default_factory=dict)
    """partition: flwr: the Flower Datasets partitioner and its arguments, e.g. {name:
    DirichletPartitioner, alpha: 0.3} (simbench sets num_partitions, partition_by and seed;
    needs pip install 'simbench[flwr]')."""
    max_per_class: Optional[int] = field(default=None, metadata={"check": at_least(1)})
    """Cap of samples per class on each node (FeGAN's magic_num; partition fegan: its magic_num, default 5000)."""
    val_fraction: float = field(default=0.0, metadata={"check": (lambda x: 0 <= x < 1, "must be in [0, 1)")})
    """Validation split carved from each node's shard (0: every sample trains, as the papers)."""
    normalize: str = field(default="standard", metadata={"choices": ("standard", "unit", "none")})
    """Pixel scaling of the built-in image sets: standard (minus the training mean, over the std),
    unit (in [0, 1], as McMahan et al. feed MNIST), none (raw values: 0..255, digits 0..16)."""
    max_train: Optional[int] = field(default=None, metadata={"check": at_least(1)})
    """Use a subset of the training set (fast runs)."""
    max_test: Optional[int] = field(default=None, metadata={"check": at_least(1)})
    """Use a subset of the test set."""


@dataclass(frozen=True)
class ModelSpec:
    name: str = field(default="mlp", metadata={"check": (lambda n: bool(registry.model(n)), "")})
    """Architecture: logistic, mlp, cnn (seed 002's Keras MNIST CNN), cnn_fedavg (McMahan et al.'s
    MNIST CNN), resnet_gn (seed 003); lsgan,
    dcgan for GAN algorithms; an installed entry point or an import path ``pkg.module:factory``."""
    options: dict = field(default_factory=dict)
    """Keyword arguments of the architecture (e.g. hidden: [128], drop_rate: 0.1)."""


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = field(default=5, metadata={"check": within(1, 10**6)})
    """Epochs of local data per training node."""
    batch_size: int = field(default=32, metadata={"check": within(1, 2**20)})
    """Samples per minibatch (a batch larger than a node's shard takes the whole shard)."""
    optimizer: str = field(default="sgd", metadata={"choices": ("sgd", "adam")})
    """Every node's local optimizer."""
    lr: float = field(default=0.05, metadata={"check": above(0)})
    """Learning rate of the local optimizer."""
    momentum: float = field(default=0.0, metadata={"check": within(0, 1, open_hi=True)})
    """SGD momentum (0: plain SGD)."""
    dampening: float = field(default=0.0, metadata={"check": within(0, 1)})
    """SGD dampening of the momentum."""
    nesterov: bool = False
    """Nesterov momentum (needs momentum > 0 and dampening 0)."""
    weight_decay: float = field(default=0.0, metadata={"check": at_least(0)})
    """The optimizer's weight decay."""
    l2_lambda: float = field(default=0.0, metadata={"check": at_least(0)})
    """Seed 003's L2 term added to the loss."""
    scheduler: str = field(default="none", metadata={"choices": ("none", "StepLR")})
    """Learning-rate schedule (StepLR: times gamma every step_size optimizer steps)."""
    step_size: int = field(default=5, metadata={"check": at_least(1)})
    """StepLR: optimizer steps between two decays."""
    gamma: float = field(default=0.9, metadata={"check": above(0)})
    """StepLR: the factor of each decay."""
    same_init: bool = True
    """All nodes start from the same initial model (seed 003's model_init_seed)."""
    eval_samples: int = field(default=2000, metadata={"check": at_least(1)})
    """Samples of the train shard and the test set used for each evaluation (the first ones;
    MNIST's test set has 10000: set 10000 to evaluate on all of it)."""

    def __post_init__(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError(f"train.nesterov: needs momentum > 0 and dampening 0, got momentum {self.momentum} "
                              f"and dampening {self.dampening}")


@dataclass(frozen=True)
class OutputSpec:
    dir: str = "results"
    """Runs go to <dir>/<name>/<run_id>/."""
    wall_clock: bool = True
    """Record wall_s; false makes events.csv byte-identical across runs."""
    plot: bool = True
    """Draw the run's figure."""
    progress: bool = True
    """Show a progress bar."""
    trackers: tuple[str, ...] = field(default=(), metadata={"check": (
        lambda names: all(n in ("tensorboard", "mlflow") for n in names), "is not allowed; allowed: tensorboard, mlflow")})
    """Experiment trackers that receive every row live: tensorboard (event files in the run
    directory), mlflow (a run in output.mlflow_uri); simulated milliseconds are the step."""
    mlflow_uri: Optional[str] = None
    """MLflow tracking URI; default: the mlruns folder beside the results."""


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = field(default="run", metadata={"check": (path_component, "must be one directory name: no '/', "
                                                                          "'\\', '.' or '..'")})
    """The run's name: its results go to <output.dir>/<name>/."""
    seed: int = field(default=0, metadata={"check": within(0, 2**32, open_hi=True)})
    """The root seed every random stream is drawn from."""
    nodes: int = field(default=8, metadata={"check": within(1, 10**6)})
    """Number of nodes (a topology file sets its own)."""
    topology: dict = field(default_factory=lambda: {"kind": "ring"})
    algorithm: str = "dsgd"
    """A built-in algorithm, an installed entry point, or an import path ``pkg.module:Class``."""
    algorithm_params: Any = field(default=None, metadata={"internal": True})
    """The algorithm's parameter dataclass, built from the ``algorithm`` mapping."""
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    network: NetworkSpec = NetworkSpec()
    compute: ComputeSpec = ComputeSpec()
    scenario: Scenario = Scenario()
    population: Optional[PopulationSpec] = None
    """Per-node compute speed, bandwidth and availability from traces, distributions or a
    profile (see :mod:`simbench.core.population`); null: every node as the config says."""
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda")})
    """Torch device of the training."""
    execution: str = field(default="batched", metadata={"choices": ("batched", "sequential")})
    """batched: in the simulator, the training steps of nodes due at the same simulated instant
    run as one vectorized call where the model allows (same simulated times, bytes and events;
    numbers equal up to float rounding); sequential: each step when its node asks."""
    time_limit: Optional[float] = field(default=None, metadata={"parse": parse_duration, "check": above(0)})
    """Stop the run at this simulated time (null: when the algorithm finishes)."""
    output: OutputSpec = OutputSpec()

    def algorithm_class(self):
        """The Algorithm class ``algorithm`` names (see :mod:`simbench.registry`)."""
        return registry.algorithm(self.algorithm)

    def workload_class(self):
        """The :class:`~simbench.workloads.Workload` class of the algorithm."""
        from ..workloads import workload_class
        return workload_class(self.algorithm_class())

    def to_dict(self) -> dict:
        d = to_dict(self)
        d["algorithm"] = {"name": self.algorithm, **to_dict(self.algorithm_params)}
        d.pop("algorithm_params")
        if self.population is None:
            d.pop("population")  # a run without one keeps the run id it always had
        return d

    def run_id(self) -> str:
        """Deterministic id: the same resolved config always gets the same id (the output
        settings, the execution path and where the data set is read from are not part of it)."""
        d = self.to_dict()
        d.pop("output")
        d.pop("execution")  # how the simulator computes, not what it computes
        d["dataset"].update(root=None, download=True)  # where the data lives is not part of the experiment
        digest = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]
        kind = self.topology.get("kind") or Path(str(self.topology.get("file", "file"))).stem
        return f"{registry.label(self.algorithm)}-{registry.label(str(kind))}{self.nodes}-s{self.seed}-{digest}"


def parse_config(data: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a parsed YAML mapping into an :class:`ExperimentConfig`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    data = dict(data)
    algo = data.pop("algorithm", "dsgd")
    if isinstance(algo, Mapping):
        algo = dict(algo)
        name = algo.pop("name", None)
        if name is None:
            raise ConfigError("algorithm.name: required field is missing; allowed: "
                              + ", ".join(registry.builtin_names("algorithms")) + ", or an import path")
    elif isinstance(algo, str):
        name, algo = algo, {}
    else:
        raise ConfigError(f"algorithm: expected a name or a mapping like {{name: dsgd, weight: 1.0}}, got {algo!r}")
    params = from_dict(registry.algorithm(name).Params, algo, "algorithm")
    if "algorithm_params" in data:
        raise ConfigError("algorithm_params: unknown field in config; put algorithm knobs under algorithm: {name: ..., ...}")
    topo = data.get("topology", {"kind": "ring"})
    if isinstance(topo, str):
        data["topology"] = {"kind": topo}
    elif not isinstance(topo, Mapping):
        raise ConfigError(f"topology: expected a mapping like {{kind: ring}} or {{file: PATH}}, got {topo!r}")
    cfg = from_dict(ExperimentConfig, {**data, "algorithm": name}, "")
    cfg = dataclasses.replace(cfg, algorithm_params=params)
    check_nodes(cfg.scenario, cfg.nodes)
    if cfg.population is not None:
        check_spec(cfg.population)
    return cfg


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Apply one ``a.b.c=value`` override to a nested dict (creating levels)."""
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if k == "algorithm" and isinstance(nxt, str):
            nxt = cur[k] = {"name": nxt}
        if not isinstance(nxt, dict):
            nxt = cur[k] = {}
        cur = nxt
    cur[keys[-1]] = value


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key.path=value`` overrides (YAML values), validate."""
    path = Path(path)
    data = load_yaml_file(path, "config")
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must hold a mapping at the top level")
    for item in overrides:
        set_path(data, *parse_override(item))
    return parse_config(data)
