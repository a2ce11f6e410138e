#!/usr/bin/env bash
# The package-update check (issue 17) of IMAGES images (default 50) against
# a local Debian-format repository served over loopback: each image is a
# real Debian base (mmdebstrap) with the repository's packages installed by
# apt. Timed: `kiln plan` with no kept checks (every image checked, the
# indexes fetched once per plan), with kept checks (within probe_interval),
# and with probe_interval = 0 (the sources' Release files fetched, the kept
# results reused). Not a test: prints a table and writes
# bench/results-packages.md. As root on Debian 12.
#
#   bench/packages.sh [IMAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
images="${1:-50}"
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/packages-$images"
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
rm -rf "$work" && mkdir -p "$work/repo/pool/bookworm" "$work/factory/base"

deb() { # NAME VERSION
  local t="$work/tmp/$1"
  rm -rf "$t" && mkdir -p "$t/DEBIAN" "$t/usr/share/$1"
  echo "$2" > "$t/usr/share/$1/version"
  printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: kiln <kiln@example.invalid>\nDescription: bench\n' "$1" "$2" > "$t/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$t" "$work/repo/pool/bookworm/${1}_${2}_all.deb" >/dev/null
}
index() {
  local bin="$work/repo/dists/bookworm/main/binary-amd64"
  mkdir -p "$bin"
  (cd "$work/repo" && dpkg-scanpackages --multiversion pool/bookworm /dev/null 2>/dev/null) > "$bin/Packages"
  printf 'Suite: bookworm\nCodename: bookworm\nArchitectures: amd64 all\nComponents: main\nDate: %s\nSHA256:\n %s %s main/binary-amd64/Packages\n' \
    "$(date -uR)" "$(sha256sum < "$bin/Packages" | cut -d' ' -f1)" "$(stat -c %s "$bin/Packages")" > "$work/repo/dists/bookworm/Release"
}
for i in $(seq 1 20); do deb "kiln-bench-$i" 1.0; done
index
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work/repo" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
server=$!
trap 'kill $server' EXIT
sleep 1

mmdebstrap --quiet --variant=minbase bookworm "$work/factory/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nRUN echo "deb [trusted=yes] http://127.0.0.1:%s/ bookworm main" > /etc/apt/sources.list && apt-get update -q && apt-get install -y -q %s && rm -rf /var/lib/apt/lists/*\n' \
  "$port" "$(seq -f 'kiln-bench-%g' 1 20 | tr '\n' ' ')" > "$work/factory/base/Dockerfile"
{
  echo 'kiln = 1'
  echo '[image.base]'
  echo 'context = "base"'
  echo 'publish = ["store"]'
  for i in $(seq 1 "$images"); do
    mkdir -p "$work/factory/img$i"
    printf 'FROM base\nLABEL n=%s\n' "$i" > "$work/factory/img$i/Dockerfile"
    printf '[image.img%s]\ncontext = "img%s"\npublish = ["store"]\n' "$i" "$i"
  done
} > "$work/factory/kiln.toml"
"$kiln" --store "$work/store" bake -f "$work/factory" >/dev/null 2>&1

# the repository publishes newer versions of five packages
for i in $(seq 1 5); do deb "kiln-bench-$i" 1.1; done
index
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
rm -rf "$work/store/probes"
uncached=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
cached=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
sed -i '1a [factory]\nprobe_interval = "0"' "$work/factory/kiln.toml"
state=$(secs "$kiln" --store "$work/store" plan -f "$work/factory")
stale=$("$kiln" --store "$work/store" plan -f "$work/factory" | grep -c "5 package updates" || true)
{
  echo "# The package-update check ($(date -u +%F), $(nproc) cores)"
  echo
  echo "$((images + 1)) images (a Debian base with 20 packages from a local repository, and $images images on it); the repository then has updates of 5 packages, which the plan finds in $stale images."
  echo
  echo "| kiln plan | seconds |"
  echo "|---|---|"
  echo "| no kept checks (every image checked) | $uncached |"
  echo "| kept checks (within probe_interval) | $cached |"
  echo "| probe_interval = 0 (Release files fetched, kept results reused) | $state |"
} | tee bench/results-packages.md
