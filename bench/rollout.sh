#!/usr/bin/env bash
# kiln rollout (issue 19): the time from `kiln rollout` to traffic on green
# — with the docker driver (green started from the pinned digest, pulled
# from a local docker-registry, its health check passed, HAProxy switched)
# over REPETITIONS rollouts of a busybox httpd service, and with the qemu
# driver (a Debian VM image with a data disk, booted with KVM when it
# works) over up to 3 rollouts each with the data disk moved (and the pause
# in writes this causes) and copied. Not a test: it prints a table and
# writes bench/results-rollout.md. Run as root on Debian 12 with a Docker
# engine running (scripts/test starts one) and haproxy, docker-registry,
# busybox-static, mmdebstrap, qemu-system-x86 and ovmf installed
# (scripts/packages).
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
  for p in "$store"/services/*/haproxy.pid "$store"/services/*/vm-*/qemu.pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
  done
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
stats() { # median (min–max) of the arguments
  printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { printf "%s s (%s–%s)", a[int((NR + 1) / 2)], a[1], a[NR] }'
}
docker_line=$(stats "${times[@]}")

# the qemu driver: a Debian VM image serving busybox httpd, its data disk
# moved or copied
vm_rootfs=/var/tmp/kiln-test-fixtures/vm-rootfs.tar # the tests' fixture
if [ ! -f "$vm_rootfs" ]; then
  vm_rootfs="$work/vm-rootfs.tar"
  mmdebstrap --variant=minbase --include=linux-image-cloud-amd64,systemd-sysv,udev \
    --quiet bookworm "$vm_rootfs"
fi
vreps=$((reps < 3 ? reps : 3))
qemu_line() { # DATA: rollouts with data = DATA; "TIME | PAUSE |"
  local data=$1 vf="$work/vm-$1" vfront
  vfront="127.0.0.1:$(free_port)"
  mkdir -p "$vf/node/www"
  ln -f "$vm_rootfs" "$vf/node/rootfs.tar" 2>/dev/null || cp "$vm_rootfs" "$vf/node/rootfs.tar"
  cp /bin/busybox "$vf/node/busybox"
  printf '[Unit]\nRequiresMountsFor=/srv/data\n[Service]\nExecStart=/usr/local/bin/busybox httpd -f -p 8080 -h /srv/www\n[Install]\nWantedBy=multi-user.target\n' \
    > "$vf/node/web.service"
  printf '%s\n' 'FROM scratch' 'ADD rootfs.tar /' 'COPY busybox /usr/local/bin/busybox' \
    'COPY www/ /srv/www/' 'COPY web.service /etc/systemd/system/web.service' \
    'RUN mkdir -p /etc/systemd/system/multi-user.target.wants && ln -s /etc/systemd/system/web.service /etc/systemd/system/multi-user.target.wants/web.service' \
    > "$vf/node/Dockerfile"
  cat > "$vf/kiln.toml" <<TOML
kiln = 1
[image.node-os]
context = "node"
publish = ["store"]
[vm.node]
image = "node-os"
publish = ["store"]
data_disks = [{ label = "data", size = "64M", mount = "/srv/data" }]
[service.bench-$data]
vm = "node"
port = 8080
data = "$data"
health = { http = "/version", timeout = "5m" }
front = { listen = "$vfront" }
soak = "0"
TOML
  local t=() p=() out
  for i in $(seq 0 "$vreps"); do
    echo "v$i" > "$vf/node/www/version"
    "$kiln" --store "$store" bake -f "$vf" >/dev/null 2>&1
    out=$("$kiln" --store "$store" rollout "bench-$data" -f "$vf" 2>&1)
    [ "$(curl -fs "http://$vfront/version")" = "v$i" ] || { echo "v$i is not served: $out" >&2; exit 1; }
    [ "$i" -gt 0 ] || continue
    t+=("$(sed -n 's/.*traffic on it \([0-9.]*\) s after the start.*/\1/p' <<<"$out")")
    p+=("$(sed -n 's/.*writes paused \([0-9.]*\) s.*/\1/p' <<<"$out")")
  done
  if [ -n "${p[0]}" ]; then
    echo "$(stats "${t[@]}") | $(stats "${p[@]}") |"
  else
    echo "$(stats "${t[@]}") | none (blue serves until green is in) |"
  fi
}
move_line=$(qemu_line move)
copy_line=$(qemu_line copy)
accel=$([ -w /dev/kvm ] && echo "KVM" || echo "TCG")
{
  echo "# kiln rollout ($(date -u +%F), $(nproc) cores)"
  echo
  echo "| driver | kiln rollout → traffic on green, median (min–max) | pause in writes |"
  echo "|---|---|---|"
  echo "| docker (busybox httpd, pulled from a local registry), $reps rollouts | $docker_line | none (shared volume) |"
  echo "| qemu, data disk moved (Debian VM, $accel), $vreps rollouts | $move_line"
  echo "| qemu, data disk copied (Debian VM, $accel), $vreps rollouts | $copy_line"
} | tee bench/results-rollout.md
