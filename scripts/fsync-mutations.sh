#!/usr/bin/env bash
# Shows that the power-loss tests bite: for every line of the storage code that asks for an
# fsync (a file's `sync_data` or a directory's `sync_dir`), run the power-loss tests on the
# simulated disk with that one sync ignored (VELA_SIM_SKIP_SYNC=file:line) and expect them to
# fail. Prints one line per site and a summary; exits non-zero if any site survives.
#
#   scripts/fsync-mutations.sh            # every site, 300 seeds per sweep
#   SEEDS=2000 scripts/fsync-mutations.sh # longer sweeps
#
# No rebuild per site: the simulated disk reads the variable, and `#[track_caller]` on the sync
# calls tells it which line asked (ADR 0006).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
seeds="${SEEDS:-300}"
# The sweeps, and the replica tests that cut a node's power right after it set a damaged
# replica aside, finished or abandoned a copy, or deleted a replica it no longer holds.
filter='test(power_loss) | test(generations) | test(sim::) | test(index_db::)'
filter+=' | test(/replicated::members::(a_node_stopped_in_the_middle|a_placed_shard_moves)/)'
filter+=' | test(/replicated::damage::a_flipped_bit_that_opening_misses/)'

cargo nextest run -p vela-raft -p vela-store --no-run --locked >/dev/null 2>&1 || {
  echo "build failed" >&2
  exit 2
}

# Lines that call a sync, outside the seam's implementations, `#[track_caller]` wrappers (their
# callers are the sites) and the tests.
mapfile -t sites < <(
  grep -rnE '(\.sync_data\(\)|\.sync_dir\()' raft/src store/src controller/src \
    | grep -vE '^(raft/src/vfs/|.*/tests?\.rs:|.*power_loss\.rs:|raft/src/test_support\.rs:)' \
    | grep -vE '^raft/src/vfs\.rs:.*(self\.0\.|File::open)' \
    | grep -vE 'fn sync_(data|dir)|self\.handle\(\)\?\.sync_data\(\)|unwrap\(\)' \
    | cut -d: -f1,2
)

echo "baseline (no sync skipped)"
if ! VELA_SIM_SEEDS="$seeds" cargo nextest run -p vela-raft -p vela-store --locked -E "$filter" \
  >/tmp/fsync-mutation-baseline.log 2>&1; then
  echo "  the power-loss tests fail without any mutation: see /tmp/fsync-mutation-baseline.log" >&2
  exit 2
fi

survived=0
for site in "${sites[@]}"; do
  if VELA_SIM_SKIP_SYNC="$site" VELA_SIM_SEEDS="$seeds" \
    cargo nextest run -p vela-raft -p vela-store --locked -E "$filter" --no-fail-fast \
    >/tmp/fsync-mutation.log 2>&1; then
    echo "SURVIVED $site: the tests pass without this sync"
    survived=$((survived + 1))
  else
    failed=$(grep -oE 'FAIL \[[^]]*\] \([^)]*\) [^ ]+ [^ ]+' /tmp/fsync-mutation.log | awk '{print $NF}' | sort -u | paste -sd, -)
    echo "killed   $site by ${failed:-?}"
  fi
done
echo "${#sites[@]} sync sites, $survived survived"
[ "$survived" -eq 0 ]
