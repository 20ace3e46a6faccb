"""The explicit registry of algorithms: name -> Algorithm class."""

from __future__ import annotations

from ..core.node import Algorithm
from .admm import ADMM, PDMM, AdmmISVR, PdmmISVR
from .cadmm import CADMM
from .dsgd import DSGD
from .fedavg import FedAvg
from .fegan import FeGan
from .flgan import FLGan
from .gan_single import GanSingle
from .gossip import Gossip
from .mdgan import MDGan
from .ps import PSSync

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DSGD, FedAvg, PSSync, Gossip, ADMM, PDMM, AdmmISVR,
                                                                     PdmmISVR, CADMM)}
ALGORITHMS.update({cls.name: cls for cls in (GanSingle, FLGan, FeGan, MDGan)})  # GANs (issue 7)

__all__ = ["ALGORITHMS", "Algorithm"]
