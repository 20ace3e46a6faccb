"""Fixtures every test shares: one torch thread, quiet run output, a config writer.

Stories that build simulator worlds by hand import their builders from ``simhelpers``
(``tests/`` is on the path, see pyproject's ``[tool.pytest.ini_options]``).
"""

from __future__ import annotations

import pytest
import torch
import yaml


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread for the whole session: results do not depend on the core count, and
    parallel pytest workers on a 2-core machine do not spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QUIET = {"wall_clock": False, "plot": False, "progress": False}
"""``output:`` of configs whose runs must be byte-reproducible and fast."""


@pytest.fixture
def write_config(tmp_path):
    """``write_config(mapping_or_text, name="cfg.yaml")`` -> the path of a YAML file in tmp_path."""
    def write(data, name: str = "cfg.yaml"):
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path
    return write
