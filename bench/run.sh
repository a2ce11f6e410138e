#!/usr/bin/env bash
# kiln's benchmark suite (not part of the test suite): installs the peers
# from Debian packages, builds kiln in release mode, and runs bench/bench.py,
# which measures kiln, buildah (chroot isolation, its own storage root) and
# BuildKit (the Docker engine's builder) on the same workloads, interleaved,
# and kiln's VM image path against a Packer-style loop (boot, install over
# SSH, power off, convert), and writes the table to bench/results.md.
#
#   bench/run.sh [REPETITIONS] [bench.py options]    (default 3; as root on Debian 12)
#
# Work files live in $KILN_BENCH_DIR (default /var/tmp/kiln-bench, ~6 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"
shift || true

need=()
for p in buildah:buildah docker.io:dockerd mmdebstrap:mmdebstrap docker-registry:docker-registry \
  python3:python3 curl:curl time:/usr/bin/time apt-cacher-ng:/usr/sbin/apt-cacher-ng \
  qemu-user-static:qemu-aarch64-static binfmt-support:update-binfmts openssh-client:ssh; do
  command -v "${p#*:}" >/dev/null || need+=("${p%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && apt-get install -y "${need[@]}"
fi
# the VM workload: QEMU's system emulator, OVMF, mtools, … (idempotent)
scripts/vm-packages
# the arm64 workload runs under QEMU user emulation
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
cargo build --release -q -p kiln-cli
cargo build --release -q -p kiln-oci --example floor
exec python3 bench/bench.py --reps "$reps" "$@"
