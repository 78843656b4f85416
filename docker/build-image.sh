#!/usr/bin/env bash
# Builds the flink-rs runtime image FROM scratch around a flink-rs binary: nothing is pulled
# from a registry. The image holds the binary (debug info stripped), the shared libraries it
# links (glibc, libm, libgcc_s, the dynamic loader, copied from this machine), a non-root
# user (uid 9999, as Flink's images use a `flink` user) and writable /tmp and /data.
#
# The operator's binary (flink-rs-operator) goes in too when it sits next to BINARY: one image
# serves the jobmanager, the taskmanagers and the Kubernetes operator.
#
# Usage: docker/build-image.sh [BINARY] [TAG]
#   BINARY defaults to target/release/flink-rs (built, with the operator, if missing)
#   TAG    defaults to flink-rs:latest
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/release/flink-rs}"
tag="${2:-flink-rs:latest}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release -p flink-rs -p flink-rs-operator)
fi
operator="$(dirname "$bin")/flink-rs-operator"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/data" "$ctx/rootfs/etc"
strip --strip-debug -o "$ctx/rootfs/usr/local/bin/flink-rs" "$bin" 2>/dev/null || cp "$bin" "$ctx/rootfs/usr/local/bin/flink-rs"
if [ -x "$operator" ]; then
  strip --strip-debug -o "$ctx/rootfs/usr/local/bin/flink-rs-operator" "$operator" 2>/dev/null \
    || cp "$operator" "$ctx/rootfs/usr/local/bin/flink-rs-operator"
fi
# The libraries the binary links, at the paths the loader looks for them.
for lib in $( (ldd "$bin"; [ -x "$operator" ] && ldd "$operator") | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | sort -u); do
  [ -f "$lib" ] || continue
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
# Name resolution for compose service names goes through the embedded DNS via glibc's
# files/dns modules.
for lib in /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libresolv.so.2; do
  if [ -f "$lib" ]; then mkdir -p "$ctx/rootfs$(dirname "$lib")"; cp -L "$lib" "$ctx/rootfs$lib"; fi
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nflink:x:9999:9999:flink:/data:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nflink:x:9999:\n' > "$ctx/rootfs/etc/group"
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
# The image's default configuration ($FLINK_CONF_DIR/config.yaml): Prometheus on 9249, and
# every port on all interfaces (a container is reached through its network; the binary alone
# binds loopback).
# /etc/flink-rs/tls: where compose's `tls` service writes the cluster's certificates (a
# named volume takes this directory's owner, the image's user).
mkdir -p "$ctx/rootfs/etc/flink-rs/tls"
cat > "$ctx/rootfs/etc/flink-rs/config.yaml" <<'CONF'
# Read when no --config is given (FLINK_CONF_DIR).
metrics.reporter.prom.port: 9249
jobmanager.bind-host: 0.0.0.0
rest.bind-address: 0.0.0.0
taskmanager.bind-host: 0.0.0.0
CONF
cp "$root/docker/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
