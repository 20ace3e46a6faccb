"""The explicit registry of algorithms: name -> Algorithm class."""

from __future__ import annotations

from ..core.node import Algorithm
from .admm import ADMM, PDMM, AdmmISVR, PdmmISVR
from .ako import Ako
from .cadmm import CADMM
from .degan import Degan
from .dsgd import DSGD
from .fedavg import FedAvg
from .gossip import Gossip
from .ps import PSSync
from .fegan import FeGan
from .flgan import FLGan
from .gan_single import GanSingle
from .lipizzaner import Lipizzaner
from .mdgan import MDGan
from .ps_async import PSAsync

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DSGD, FedAvg, PSSync, Gossip, ADMM, PDMM, AdmmISVR,
                                                                     PdmmISVR, CADMM, PSAsync, Ako)}
ALGORITHMS.update({cls.name: cls for cls in (GanSingle, FLGan, FeGan, MDGan)})  # GANs (issue 7)
ALGORITHMS.update({cls.name: cls for cls in (Degan, Lipizzaner)})

__all__ = ["ALGORITHMS", "Algorithm"]
