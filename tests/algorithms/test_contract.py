"""Every registered algorithm meets the contract of :func:`simbench.testing.check_algorithm`:
it finishes, two runs are byte-identical, it survives a crashed peer, and the simulator and
the real runtime agree on its tiny example config."""

import pytest

from simbench.algorithms import ALGORITHMS
from simbench.testing import CHECKS, ContractError, check_algorithm


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_meets_the_contract(name, tmp_path):
    report = check_algorithm(name, out=tmp_path)
    skipped = {"crash"} if isinstance(report.details.get("crash"), str) else set()
    assert report.passed == [c for c in CHECKS if c not in skipped]


def test_a_broken_algorithm_fails_the_check_that_catches_it(tmp_path):
    """An algorithm that draws from the global random state is not reproducible: the
    deterministic check names it."""
    with pytest.raises(ContractError, match="^deterministic: two runs of one config wrote different"):
        check_algorithm("simhelpers:GlobalRandomDSGD", out=tmp_path)


def test_an_algorithm_that_hangs_on_a_crash_fails_the_crash_check(tmp_path):
    with pytest.raises(ContractError, match=r"^crash: with node 3 crashed at .* the run ended 'deadlock'"):
        check_algorithm("fedavg", {"nodes": 4, "algorithm": {"timeout": None}}, out=tmp_path)
