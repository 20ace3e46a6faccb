"""The explicit registry of algorithms: name -> Algorithm class."""

from __future__ import annotations

from ..core.node import Algorithm
from .admm import ADMM, PDMM, AdmmISVR, PdmmISVR
from .cadmm import CADMM
from .dsgd import DSGD
from .fedavg import FedAvg
from .gossip import Gossip
from .ps import PSSync

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DSGD, FedAvg, PSSync, Gossip, ADMM, PDMM, AdmmISVR,
                                                                     PdmmISVR, CADMM)}

__all__ = ["ALGORITHMS", "Algorithm"]
