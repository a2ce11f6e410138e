#!/usr/bin/env bash
# kiln rollout (issue 19): the time from `kiln rollout` to traffic on green
# with the docker driver — green started from the pinned digest (pulled
# from a local docker-registry), its health check passed, HAProxy switched
# — over REPETITIONS rollouts of a busybox httpd service. The qemu driver
# is not built yet. Not a test: it prints a table and writes
# bench/results-rollout.md. Run as root on Debian 12 with a Docker engine
# running (scripts/test starts one) and haproxy, docker-registry,
# busybox-static installed (scripts/packages).
#
#   bench/rollout.sh [REPETITIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-5}"
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/rollout"
rm -rf "$work" && mkdir -p "$work/factory/busybox/rootfs/bin" "$work/factory/web"
store="$work/store"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
reg="127.0.0.1:$(free_port)"
front="127.0.0.1:$(free_port)"
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$work/registry" "$reg" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
regpid=$!
cleanup() {
  kill "$regpid" 2>/dev/null || true
  docker rm -f kiln-bench-web-1 kiln-bench-web-2 >/dev/null 2>&1 || true
  [ -f "$store/services/bench-web/haproxy.pid" ] && kill "$(cat "$store/services/bench-web/haproxy.pid")" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

f="$work/factory"
cp /bin/busybox "$f/busybox/rootfs/bin/busybox"
for a in sh httpd cat mkdir; do ln -s busybox "$f/busybox/rootfs/bin/$a"; done
printf 'FROM scratch\nCOPY rootfs/ /\n' > "$f/busybox/Dockerfile"
printf 'FROM base\nCOPY version /srv/version\nCMD ["/bin/sh", "-c", "exec httpd -f -p $PORT -h /srv"]\n' > "$f/web/Dockerfile"
cat > "$f/kiln.toml" <<TOML
kiln = 1
[factory]
registry = "$reg/bench"
[image.base]
context = "busybox"
[image.web]
context = "web"
[service.bench-web]
image = "web"
port = 8080
network = "host"
health = { http = "/version" }
front = { listen = "$front" }
soak = "0"
TOML

times=()
for i in $(seq 0 "$reps"); do
  echo "v$i" > "$f/web/version"
  "$kiln" --store "$store" bake -f "$f" >/dev/null 2>&1
  out=$("$kiln" --store "$store" rollout bench-web -f "$f" 2>/dev/null)
  t=$(sed -n 's/.*traffic on it \([0-9.]*\) s after the start.*/\1/p' <<<"$out")
  [ "$i" -gt 0 ] && times+=("$t") # the first has no blue to replace
  [ "$(curl -fs "http://$front/version")" = "v$i" ] || { echo "v$i is not served" >&2; exit 1; }
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
min=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
{
  echo "# kiln rollout ($(date -u +%F), $(nproc) cores)"
  echo
  echo "| driver | kiln rollout → traffic on green, median of $reps (min–max) |"
  echo "|---|---|"
  echo "| docker (busybox httpd, pulled from a local registry) | ${median} s (${min}–${max}) |"
  echo "| qemu | not built yet |"
} | tee bench/results-rollout.md
