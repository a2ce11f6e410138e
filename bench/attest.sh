#!/usr/bin/env bash
# What trust costs a bake (issue 20): the bundled example factory baked
# cold twice, each in a fresh store and to a local registry, once as it is
# and once with `[factory] sign` (an SBOM per platform image and for the
# VM disk, provenance, signatures). From the signed bake's log it sums
# the time of the attest steps (SBOMs read from the images' dpkg
# databases, statements signed, attachments stored) and of copying the
# attachments to the registry, and reports them as a share of that bake.
# The two whole bakes are shown too, but they differ by more than that
# share from run to run (apt and mmdebstrap download from Debian's
# archive). Not a test: it prints a table and writes
# bench/results-attest.md. Run as root, with what examples/demo.sh installs.
#
#   bench/attest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kiln-cli
kiln="$PWD/target/release/kiln"
work="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/attest"
rm -rf "$work" && mkdir -p "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$work/registry-data" "$port" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

for mode in plain signed; do
  mkdir -p "$work/$mode"
  cp -r examples/factory/. "$work/$mode/"
  if [ "$mode" = signed ]; then
    "$kiln" key generate -o "$work/$mode/kiln" >/dev/null
    sed -i 's/^\[factory\]$/[factory]\nsign = { key = "kiln.key" }/' "$work/$mode/kiln.toml"
  fi
  echo "== baking the example ($mode)" >&2
  start=$(date +%s.%N)
  KILN_EXAMPLE_REGISTRY="127.0.0.1:$port/$mode" "$kiln" --store "$work/$mode-store" \
    bake -f "$work/$mode" >"$work/$mode.out" 2>"$work/$mode.log"
  end=$(date +%s.%N)
  eval "${mode}_secs=$(printf '%.1f' "$(echo "$end - $start" | bc)")"
done
sum() { grep -o "$1 in [0-9.]*s" "$work/signed.log" | grep -o '[0-9.]*s$' | tr -d s | paste -sd+ | bc; }
attest=$(printf '%.2f' "$(sum 'attachment manifests)')")
copy=$(printf '%.2f' "$(sum 'copied the signatures and attestations to [^ ]*')")
images=$(grep -c 'attachment manifests)' "$work/signed.log")
share=$(printf '%.1f' "$(echo "scale=3; 100 * ($attest + $copy) / $signed_secs" | bc)")
{
  echo "# What signing adds to a bake ($(date -u +%F), $(nproc) cores)"
  echo
  echo "The bundled example factory ($images images and VM disks signed), baked cold"
  echo "in a fresh store to a local registry."
  echo
  echo "| what | seconds |"
  echo "|---|---|"
  echo "| bake, unsigned | $plain_secs |"
  echo "| bake, signed | $signed_secs |"
  echo "| attest steps of the signed bake, summed (SBOMs, provenance, signatures, in the store) | $attest |"
  echo "| copying the attachments to the registry, summed | $copy |"
  echo
  echo "Signing, SBOMs and provenance: **$share %** of the signed bake (aim: under 5 %)."
  echo "The steps are summed over images, some of which run at the same time, so"
  echo "this is an upper bound on what they add to the bake's wall time."
} | tee bench/results-attest.md
