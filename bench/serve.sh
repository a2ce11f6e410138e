#!/usr/bin/env bash
# kiln serve (issue 18), three numbers: the idle memory (RSS) of a service
# watching a factory of 50 images; the wall time of one poll round of a
# factory whose 100 images stand on 100 registry bases (a local
# docker-registry; looked up 8 at a time); and the time from a schedule
# tick to the start of its bake. Not a test: it prints a table and writes
# bench/results-serve.md. Run as root on Debian 12 (docker-registry,
# busybox-static, curl installed: scripts/packages).
#
#   bench/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/serve"
rm -rf "$work" && mkdir -p "$work"
store="$work/store"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

reg="127.0.0.1:$(free_port)"
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

# a busybox image, pushed as 100 registry bases
mkdir -p "$work/busybox/rootfs/bin" "$work/busybox/rootfs/tmp"
cp /bin/busybox "$work/busybox/rootfs/bin/busybox"
ln -s busybox "$work/busybox/rootfs/bin/sh"
printf 'FROM scratch\nCOPY rootfs/ /\n' > "$work/busybox/Dockerfile"
"$kiln" --store "$store" build -t bench-busybox:1 "$work/busybox" >/dev/null 2>&1
targets=()
for i in $(seq -w 1 100); do targets+=("$reg/base$i:latest"); done
"$kiln" --store "$store" push bench-busybox:1 "${targets[@]}" >/dev/null 2>&1

# factory images: N images, image i FROM a base of its own (bases) or all
# FROM one factory image (chain)
factory() { # DIR COUNT bases|chain [SCHEDULE]
  local dir=$1 n=$2 kind=$3 schedule=${4:-}
  mkdir -p "$dir"
  printf 'kiln = 1\n[factory]\nregistry = "%s/%s"\n' "$reg" "$(basename "$dir")" > "$dir/kiln.toml"
  if [ "$kind" = chain ]; then
    mkdir -p "$dir/root" && cp -r "$work/busybox/." "$dir/root/"
    printf '[image.root]\ncontext = "root"\n' >> "$dir/kiln.toml"
  fi
  for i in $(seq -w 1 "$n"); do
    mkdir -p "$dir/img$i"
    echo "$i" > "$dir/img$i/note"
    if [ "$kind" = chain ]; then from=root; else from="$reg/base$i:latest"; fi
    printf 'FROM %s\nCOPY note /note\n' "$from" > "$dir/img$i/Dockerfile"
    printf '[image.img%s]\ncontext = "img%s"\n' "$i" "$i" >> "$dir/kiln.toml"
    if [ -n "$schedule" ]; then printf 'schedule = "%s"\n' "$schedule" >> "$dir/kiln.toml"; fi
  done
}
serve() { # LOG PORT DIR [FLAGS]
  local log=$1 port=$2 dir=$3; shift 3
  "$kiln" --store "$store" serve -f "$dir" --listen "127.0.0.1:$port" "$@" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$log" &
  pids+=($!)
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
  echo "kiln serve did not get ready; see $log" >&2; exit 1
}
bake() { # DIR
  "$kiln" --store "$store" bake -f "$1" >"$work/bake.log" 2>&1 || { tail -20 "$work/bake.log" >&2; exit 1; }
}
stop_serve() { pkill -TERM -f "kiln --store $store serve" || true; sleep 1; }

echo "baking a factory of 50 images and one of 100 on registry bases" >&2
factory "$work/fifty" 49 chain
factory "$work/hundred" 100 bases
bake "$work/fifty"
bake "$work/hundred"

# 1. idle memory, watching 50 images
port=$(free_port)
serve "$work/fifty.log" "$port" "$work/fifty" --poll 5
sleep 12 # two polls
pid=$(pgrep -f "kiln --store $store serve -f $work/fifty" | head -1)
rss=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$pid/status")
stop_serve

# 2. one poll round over 100 registry bases (the service's own clock)
port=$(free_port)
serve "$work/hundred.log" "$port" "$work/hundred" --poll 2
sleep 7
poll=$(curl -fs "http://127.0.0.1:$port/api/factories" | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)[0]["plan_seconds"])')
stale=$(curl -fs "http://127.0.0.1:$port/api/factories" | python3 -c 'import json,sys; print(sum(i["stale"] for i in json.load(sys.stdin)[0]["images"]))')
stop_serve

# 3. a schedule tick to the start of its bake
factory "$work/tick" 1 chain "* * * * *"
bake "$work/tick"
port=$(free_port)
serve "$work/tick.log" "$port" "$work/tick" --poll 3600
for _ in $(seq 90); do grep -q 'baking, attempt' "$work/tick.log" && break; sleep 1; done
started=$(grep -m1 'baking, attempt' "$work/tick.log" | cut -d' ' -f1)
tick=$(python3 -c "import math; print(math.floor($started / 60) * 60)")
latency=$(echo "$started - $tick" | bc)
stop_serve

{
  echo "# kiln serve ($(date -u +%F), $(nproc) cores)"
  echo
  echo "| what | measured | aim |"
  echo "|---|---|---|"
  echo "| idle RSS watching 50 images (peak) | ${rss} MiB (${hwm} MiB) | under 40 MiB |"
  echo "| one poll round, 100 registry bases ($stale stale) | ${poll} s | under 2 s |"
  echo "| schedule tick → bake start | $(printf '%.3f' "$latency") s | under 1 s |"
} | tee bench/results-serve.md
