"""The Learner: model + optimizer + shard; the only place with torch training loops."""

from .learner import Learner, OptimConfig, make_optimizer

__all__ = ["Learner", "OptimConfig", "make_optimizer"]
