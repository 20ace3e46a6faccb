"""The explicit registry of algorithms: name -> Algorithm class."""

from __future__ import annotations

from ..core.node import Algorithm
from .dsgd import DSGD
from .fedavg import FedAvg
from .ps import PSSync

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (DSGD, FedAvg, PSSync)}

__all__ = ["ALGORITHMS", "Algorithm"]
