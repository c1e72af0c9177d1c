#!/usr/bin/env bash
# Runs pytest over the tests that PYTEST_ARGS select in SHARDS processes at once (default 8), each stopped
# after TEST_S seconds (default 240; SIGINT, so pytest still prints what it ran). Writes OUT/NAME.ids (the
# tests, from OUT/NAME.collect), OUT/NAME.<shard>.log (each process) and OUT/NAME.log (the failures and
# each shard's summary; the collection's last lines when it found no test).
# bench/gpu.sh runs tests/test_cuda.py so: a cold run of it is mostly Triton compiling each test's kernels
# (about a second each on one core), which the shards do side by side.
#
#   bash bench/pytest_shards.sh OUT NAME PYTEST_ARGS...
set -uo pipefail
out="$1" name="$2"
shift 2
shards="${SHARDS:-8}"
mkdir -p "$out"
rm -f "$out/$name".*
python3 -m pytest -q --collect-only "$@" >"$out/$name.collect" 2>&1
grep '::' "$out/$name.collect" >"$out/$name.ids"
for ((shard = 0; shard < shards; shard++)); do
    mapfile -t ids < <(awk -v n="$shards" -v i="$shard" 'NR % n == i' "$out/$name.ids")
    ((${#ids[@]})) || continue
    {
        timeout -s INT "${TEST_S:-240}" python3 -m pytest -q -rfE --durations=3 "${ids[@]}"
        status=$?
        if ((status == 124)); then
            echo "shard $shard stopped at ${TEST_S:-240} s"
        else
            echo "shard $shard exit status $status"
        fi
    } >"$out/$name.$shard.log" 2>&1 &
done
wait
shopt -s nullglob
logs=("$out/$name".*.log)
{
    echo "$name: $(wc -l <"$out/$name.ids") tests in $shards shards"
    ((${#logs[@]})) || tail -5 "$out/$name.collect"
    grep -h -E '^(FAILED|ERROR) ' "${logs[@]}" /dev/null
    for log in "${logs[@]}"; do
        echo "$(basename "$log"): $(grep -E '(passed|failed|error|no tests ran)' "$log" | tail -1)"
        tail -1 "$log"
    done
} >"$out/$name.log"
