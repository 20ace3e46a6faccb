#!/usr/bin/env bash
# Mutation testing of simbench's core with mutmut (pip install -e '.[mutation]').
#
#   benchmarks/mutation.sh                  every group: sim core algorithms learn data transport
#   benchmarks/mutation.sh sim core         only these groups
#   MUTATION_JOBS=2 benchmarks/mutation.sh  mutants tested in parallel (default 1)
#   benchmarks/mutation.sh --survivors sim  test only the group's surviving mutants again
#                                           (after adding tests that should kill them; maps
#                                           every test to the functions it runs again first)
#   benchmarks/mutation.sh --only 'simbench.algorithms.ako.*' algorithms
#                                           only the mutants whose names match (repeatable;
#                                           mutmut retests every match, killed ones too)
#
# Each group mutates its own package(s) and runs, per mutant, only the tests of its test
# selection that execute the mutated function (mutmut's stats pass maps tests to functions).
# Groups work in .mutation/<group>/ (not tracked): mutmut keeps every mutant's result there,
# so a rerun tests only the mutants of functions that changed (and mutants never tested).
# At the end the per-package scores, equivalent mutants excluded (benchmarks/mutation_equivalent.txt),
# are printed by benchmarks/mutation_score.py. Not part of the default test run: it takes long.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
JOBS=${MUTATION_JOBS:-1}
ALL=(sim core algorithms learn data transport)
RETEST=0
ONLY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --survivors) RETEST=1; shift ;;
    --only) [ $# -ge 2 ] || { echo "--only needs a mutant name pattern, e.g. 'simbench.algorithms.ako.*'" >&2; exit 2; }
            ONLY+=("$2"); shift 2 ;;
    *) break ;;
  esac
done
GROUPS_TO_RUN=("$@")
[ ${#GROUPS_TO_RUN[@]} -eq 0 ] && GROUPS_TO_RUN=("${ALL[@]}")

# group -> the packages it mutates | the tests it may run per mutant (TOML list items, pytest
# arguments). Slow end-to-end tests are left out: every mutant of a function runs every
# selected test that executes it, so one 10 s test costs 10 s per surviving mutant.
spec() {
  case "$1" in
    sim)        echo '"simbench/sim/*"|"tests/sim", "tests/core/test_runtime_conformance.py", "-k", "not test_batched_and_sequential_runs_agree"' ;;
    core)       echo '"simbench/core/*"|"tests/core", "tests/sim", "tests/experiment/test_config.py", "tests/algorithms/test_rules_algorithms.py", "-k", "not test_batched_and_sequential_runs_agree and not test_round_trip_property"' ;;
    algorithms) echo '"simbench/algorithms/*"|"tests/algorithms", "-m", "not slow"' ;;
    learn)      echo '"simbench/learn/*"|"tests/learn", "tests/algorithms/test_rules_algorithms.py"' ;;
    data)       echo '"simbench/data/*"|"tests/data", "tests/algorithms/test_rules_algorithms.py"' ;;
    transport)  echo '"simbench/real/transport.py"|"tests/real/test_transport.py", "tests/core/test_runtime_conformance.py"' ;;
    *) echo "unknown group $1; allowed: ${ALL[*]}" >&2; exit 2 ;;
  esac
}

for group in "${GROUPS_TO_RUN[@]}"; do
  spec "$group" >/dev/null || exit 2  # an unknown group: one line naming the allowed ones
done
for group in "${GROUPS_TO_RUN[@]}"; do
  IFS='|' read -r packages tests <<<"$(spec "$group")"
  work="$ROOT/.mutation/$group"
  mkdir -p "$work"
  for p in simbench tests examples topologies benchmarks docs README.md; do
    ln -sfn "$ROOT/$p" "$work/$p"
  done
  {
    cat "$ROOT/pyproject.toml"
    echo
    echo "[tool.mutmut]"
    echo 'source_paths = ["simbench"]'
    echo "only_mutate = [$packages]"
    echo 'also_copy = ["examples", "topologies", "benchmarks", "docs", "README.md"]'
    echo 'pytest_add_cli_args = ["-p", "no:cacheprovider", "--timeout=300"]'
    echo "pytest_add_cli_args_test_selection = [$tests]"
    echo 'process_isolation = "forkserver"'  # torch is not fork-safe once threads started
    echo 'use_setproctitle = false'
  } >"$work/pyproject.toml"
  names=("${ONLY[@]}")
  if [ $RETEST = 1 ]; then
    mapfile -t names < <("$PY" "$ROOT/benchmarks/mutation_score.py" --names "$group")
    [ ${#names[@]} -eq 0 ] && { echo "no survivors in $group"; continue; }
    # mutmut maps tests to the functions they run once, and later only maps tests with new
    # names: a test whose body changed keeps its old map. Map every test again (one run of
    # the group's selection) so the tests just written are run against the survivors.
    rm -f "$work/mutants/mutmut-stats.json"
    echo "== $group: testing ${#names[@]} survivors again"
  else
    echo "== $group: mutating $packages; tests: $tests"
  fi
  # the mutated copy must be the only simbench on the path: no PYTHONPATH to the checkout
  (cd "$work" && env -u PYTHONPATH nice -n 19 "$PY" -m mutmut run --max-children "$JOBS" "${names[@]}") \
    || echo "mutmut exited $? for $group"
done
"$PY" "$ROOT/benchmarks/mutation_score.py" "${GROUPS_TO_RUN[@]}"
