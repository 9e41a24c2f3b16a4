#!/usr/bin/env bash
# Builds the `quiver` image FROM scratch out of a `quiver` binary built on this host,
# for Docker engines that cannot pull base images.
#
#   docker/build-images.sh             dist build (cargo build --profile dist), dynamic glibc
#   docker/build-images.sh --debug     the debug build the tests use (target/debug/quiver)
#   docker/build-images.sh --static    a static-pie binary (+crt-static), nothing else in the image
#   docker/build-images.sh --binary P  any quiver binary
#
# A dynamic binary is copied in with its loader (read with readelf) and exactly the
# shared libraries `ldd` lists (glibc, libgcc_s, ...). The image runs as user 65532,
# not root, and is checked by running `/quiver --version` in it. Tags: quiver:<version>
# and quiver:latest. Prints its size.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode=dist binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) mode=debug ;;
    --dist|--release) mode=dist ;;
    --static) mode=static ;;
    --binary) binary="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [ -z "$binary" ]; then
  case "$mode" in
    debug) binary="$target_dir/debug/quiver"; [ -x "$binary" ] || cargo build --workspace --locked --bin quiver ;;
    dist) binary="$target_dir/dist/quiver"; cargo build --profile dist --locked --bin quiver ;;
    static)
      RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile dist --locked --target x86_64-unknown-linux-gnu --bin quiver
      binary="$target_dir/x86_64-unknown-linux-gnu/dist/quiver" ;;
  esac
fi
[ -x "$binary" ] || { echo "no quiver binary at $binary" >&2; exit 1; }

context="$target_dir/images"
rm -rf "$context"
mkdir -p "$context/rootfs/tmp" "$context/rootfs/etc/ssl/certs" "$context/rootfs/etc/quiver" "$context/rootfs/var/lib/quiver"
chmod 1777 "$context/rootfs/tmp"   # DataFusion spills here
chmod 1777 "$context/rootfs/var/lib/quiver"   # server.data_dir: metadata store, accelerated copies
# Symbols and debug info stay on the host; the image gets the code only.
strip --strip-all -o "$context/rootfs/quiver" "$binary"
# A dynamic binary needs its loader and shared libraries, at the paths it names. The
# loader comes from the binary's own program header (readelf, from binutils like
# strip above); the libraries from ldd, parsed with sed (no awk dialect involved).
interp="$(readelf -l "$binary" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \([^]]*\)].*/\1/p')"
if [ -n "$interp" ]; then
  cp -L --parents "$interp" "$context/rootfs/"
  for lib in $(ldd "$binary" | sed -n 's/.*=> \(\/[^ ]*\) (0x.*/\1/p'); do
    cp -L --parents "$lib" "$context/rootfs/"
  done
fi
# Roots for TLS to sources and object stores (rustls reads the system bundle).
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"

# One image for every role (the worker by default; `serve ...` for the coordinator).
# Its health check asks both roles' ports, so it fits either.
cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
USER 65532:65532
ENV QUIVER_LOG=info
ENV QUIVER_DATA_DIR=/var/lib/quiver
EXPOSE 50051 50061 9090 5432
HEALTHCHECK --interval=5s --timeout=4s --start-period=2s --retries=3 CMD ["/quiver", "health"]
ENTRYPOINT ["/quiver"]
CMD ["worker", "--listen", "0.0.0.0:50061"]
DOCKERFILE
previous="$(docker image inspect --format '{{.Id}}' "quiver:latest" 2>/dev/null || true)"
docker build -q -f "$context/Dockerfile" -t "quiver:$version" -t "quiver:latest" \
  --label "org.opencontainers.image.version=$version" "$context" >/dev/null
# The image must start here, as it will on any host: the binary runs in it.
if ! started="$(docker run --rm "quiver:$version" --version 2>&1)" \
    || [ "${started#quiver }" = "$started" ]; then
  echo "quiver:$version does not start: $started" >&2
  echo "(loader: ${interp:-none}; libraries: $(find "$context/rootfs" -name '*.so*' | sed "s|$context/rootfs||" | tr '\n' ' '))" >&2
  exit 1
fi
# The image it replaces, now untagged, would only fill the disk (kept if a container uses it).
current="$(docker image inspect --format '{{.Id}}' "quiver:latest")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then docker rmi "$previous" >/dev/null 2>&1 || true; fi
bytes="$(docker image inspect --format '{{.Size}}' "quiver:$version")"
echo "quiver:$version $((bytes / 1000000)) MB, starts: $started"
