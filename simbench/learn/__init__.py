"""The Learner: model + optimizer + shard; the only place with torch training loops.

:mod:`.protocol` declares what algorithms may ask of any learner (:class:`LearnerProtocol`).
"""

from .learner import Learner, OptimConfig, make_optimizer
from .protocol import ClassifierLearnerProtocol, GanLearnerProtocol, LearnerProtocol

__all__ = ["ClassifierLearnerProtocol", "GanLearnerProtocol", "Learner", "LearnerProtocol", "OptimConfig",
           "make_optimizer"]
