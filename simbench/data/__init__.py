"""Data sets (torchvision and an embedded offline default) and seeded partitioners."""

from .datasets import DATASETS, Dataset, DatasetError, load_dataset, resolve_root
from . import partition

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset", "resolve_root", "partition"]
