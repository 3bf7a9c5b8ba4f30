#!/usr/bin/env bash
# Build the two local base images the Dockerfile needs when public registries are unreachable,
# once per machine (an image that already exists is kept):
#   $RUNTIME_BASE  Debian bookworm minbase (debootstrap from the configured mirror) ≈ bookworm-slim
#   $BUILDER_BASE  that plus gcc/libc6-dev (ring's C parts, the linker) and this machine's
#                  stable Rust toolchain copied from ~/.rustup (Debian's rustc is too old for
#                  edition 2024 and static.rust-lang.org is not reachable here); its name carries
#                  the rustc version, so a toolchain update builds a new one.
# Usage: tests/packaging/bases.sh   (prints RUNTIME_BASE=… and BUILDER_BASE=… at the end)
# Needs root, debootstrap and a running docker daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh

toolchain=${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot)}
rust_version=$("$toolchain/bin/rustc" --version | awk '{print $2}')
RUNTIME_BASE=${RUNTIME_BASE:-authbridge-local/bookworm-minbase:1}
BUILDER_BASE=${BUILDER_BASE:-authbridge-local/bookworm-rust:$rust_version}
mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "bases: no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2; exit 1; }

work=$(mktemp -d /var/tmp/authbridge-bases.XXXXXX)
# debootstrap mounts /proc (and maybe /sys) inside the root it builds: unmount whatever is left
# under $work before removing it, and never cross into another file system.
cleanup() {
  local m
  for m in $(awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# bootstrap DIR: a bookworm minbase root in DIR.
bootstrap() {
  local dir=$1
  echo "==> debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$dir" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; return 1; }
  # What a container image does not need: apt lists and caches, docs.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
}

env_path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if docker image inspect "$RUNTIME_BASE" >/dev/null 2>&1; then
  echo "==> $RUNTIME_BASE exists (cached)"
else
  bootstrap "$work/runtime"
  tar -C "$work/runtime" --one-file-system -c . | docker import --change "ENV $env_path" --change 'CMD ["/bin/bash"]' - "$RUNTIME_BASE" >/dev/null
  rm -rf --one-file-system "$work/runtime"
  echo "==> built $RUNTIME_BASE"
fi

if docker image inspect "$BUILDER_BASE" >/dev/null 2>&1; then
  echo "==> $BUILDER_BASE exists (cached)"
else
  # The runtime base plus a C toolchain from the same mirror (apt inside the build, host network),
  # plus the Rust toolchain: cheaper than a second debootstrap.
  echo "==> $BUILDER_BASE: $RUNTIME_BASE + gcc, libc6-dev + Rust $rust_version from $toolchain"
  mkdir -p "$work/builder/rust"
  # Only the toolchain itself (bin, lib, libexec): no docs, no rustup. Hard links when possible.
  for part in bin lib libexec; do
    [ -d "$toolchain/$part" ] || continue
    cp -al "$toolchain/$part" "$work/builder/rust/" 2>/dev/null || cp -a "$toolchain/$part" "$work/builder/rust/"
  done
  cat >"$work/builder/Dockerfile" <<DOCKERFILE
FROM $RUNTIME_BASE
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc libc6-dev ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/*
COPY rust/ /usr/local/rust/
ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
RUN cargo --version && cc --version | head -n 1
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build --quiet --network host -t "$BUILDER_BASE" "$work/builder" >/dev/null
  rm -rf --one-file-system "$work/builder"
  echo "==> built $BUILDER_BASE"
fi
echo "RUNTIME_BASE=$RUNTIME_BASE"
echo "BUILDER_BASE=$BUILDER_BASE"
