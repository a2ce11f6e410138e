#!/usr/bin/env bash
# kiln's main job on the bundled example: bake the factory in
# examples/factory — a Debian base bootstrapped with mmdebstrap, a tools image
# on it and three applications on that, each for linux/amd64 and linux/arm64,
# a C program cross-compiled for both, and a server OS image (kernel, systemd,
# SSH) baked into a bootable VM disk that is boot-tested in QEMU — test every
# image and publish it to a local docker-registry, then show that a second
# bake has nothing to do.
# Run as root on Debian 12 (kiln builds without a daemon, in namespaces;
# arm64 steps run under QEMU user emulation through binfmt_misc).
#
# The factory is copied to $KILN_DEMO_DIR (default: a new temporary
# directory) so its kiln.lock does not land in your checkout; set
# KILN_EXAMPLE_REGISTRY=HOST:PORT to publish to a registry of your own.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update && apt-get install -y "${need[@]}"
fi
# the VM image: QEMU's system emulator, OVMF, mtools, … (idempotent)
scripts/vm-packages
# QEMU's binfmt_misc handlers run arm64 programs on this machine
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
echo "== building kiln (cargo build --release; about 2 minutes on 2 cores the first time)"
cargo build --release -p kiln-cli
kiln="$PWD/target/release/kiln"

work="${KILN_DEMO_DIR:-$(mktemp -d)}"
mkdir -p "$work"
cp -r examples/factory/. "$work/"

if [ -z "${KILN_EXAMPLE_REGISTRY:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry-data
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
  registry_pid=$!
  trap 'kill $registry_pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
  done
  export KILN_EXAMPLE_REGISTRY="127.0.0.1:$port"
fi

echo "== kiln plan: what is stale and why"
"$kiln" plan -f "$work"
echo "== kiln bake: build, test, publish to $KILN_EXAMPLE_REGISTRY"
"$kiln" bake -f "$work"
echo "== kiln.lock pins every image:"
grep -E '^\[(image|vm)\.[a-z-]+\]$|^(version|digest) =' "$work/kiln.lock"
echo "== a second bake has nothing to do"
"$kiln" bake -f "$work"
echo "== run the hello application, on this machine and on arm64 (emulated)"
"$kiln" run hello:latest
"$kiln" run --platform linux/arm64 hello:latest
echo "== the cross-compiled C program, arm64 image"
"$kiln" run --platform linux/arm64 hello-c:latest
echo "== boot the VM image node-vm: headless until systemd reports multi-user,"
echo "   with its data disk (kept in the store across versions) mounted"
"$kiln" vm boot node-vm --check
echo "   (\`kiln vm boot node-vm\` gives you its serial console; Ctrl-A X quits)"
