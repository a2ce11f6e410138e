#!/usr/bin/env bash
# kiln's main job on the bundled example: build the busybox base FROM
# scratch, check and build the application image on it, and run it.
# Run as root on Debian 12 (kiln builds without a daemon, in namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /bin/busybox ]; then
  apt-get update && apt-get install -y busybox-static
fi
cargo build --release -q -p kiln-cli
kiln=target/release/kiln

# the base's root filesystem: busybox and its applets, users and a /tmp
rootfs=examples/busybox/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"

"$kiln" build -t kiln-example/busybox:latest examples/busybox
"$kiln" dockerfile check examples/app
"$kiln" build -t kiln-example/app:latest examples/app
"$kiln" run kiln-example/app:latest
