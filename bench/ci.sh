#!/usr/bin/env bash
# The factory on GitHub Actions (issue 21), measured locally: the bundled
# example's generated workflow is run job by job as GitHub would run it —
# each job in its own clone, empty store and home, independent jobs at
# once, only a local registry and the lock fragments between them (the
# harness is crates/kiln-cli/tests/common/actions.rs) — first cold, then
# forced with nothing changed and the registry cache `[factory] cache`
# filled by the first run. For each job it reports the seconds of its kiln
# steps (installing kiln is not counted: the harness's install step is
# `true`), the bytes it downloaded from registries (what `kiln bake`
# reports), and in the cached run how many steps it built. Not a test: it
# writes bench/results-ci.md. Run as root, with what examples/demo.sh and
# scripts/packages install.
#
#   bench/ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/ci"
rm -rf "$work" && mkdir -p "$work"
table="$work/table.md"
started=$(date +%s)
KILN_BENCH_CI_DIR="$work" KILN_BENCH_CI_OUT="$table" \
  cargo test --release -q --features system-tests -p kiln-cli --test ci \
  -- --ignored --exact bench_the_example_job_graph --nocapture
accel=$([ -c /dev/kvm ] && echo "KVM when /dev/kvm answers kiln's probe (it has it here)" || echo "software emulation (TCG): this machine has no /dev/kvm")
{
  echo "# kiln on GitHub Actions, run locally: the bundled example's job graph"
  echo
  echo "\`bench/ci.sh\` on $(date -u +%F), $(nproc) cores; VM boots under ${accel}."
  echo "Whole run: $(( $(date +%s) - started )) s. Each job had its own empty store; \"kiln s\" is the"
  echo "time of its kiln commands, \"bytes downloaded\" what its \`kiln bake\` read from registries."
  echo "The cached run is \`workflow_dispatch\` with \`force\`: every image job runs, with the"
  echo "registry cache the cold run wrote."
  echo
  cat "$table"
} > bench/results-ci.md
cat bench/results-ci.md
