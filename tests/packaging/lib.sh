# Shared by tests/packaging/*.sh (sourced, not run): skip-or-fail policy, apt installs, and a
# dockerd that this script starts itself and stops by its pid.
#
# Policy: a missing tool FAILS the check under CI (CI=true); elsewhere the check is skipped with
# one line, and only when apt-get is not there to install the tool.

# need_pkg PACKAGE COMMAND...: make sure each COMMAND exists, installing PACKAGE with apt-get if
# not. Returns 1 (after one line on stderr) when it cannot; the caller decides skip or fail.
need_pkg() {
  local pkg=$1 cmd missing=0
  shift
  for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || missing=1; done
  [ "$missing" = 0 ] && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null ||
      { echo "packaging: apt-get install $pkg failed" >&2; return 1; }
    for cmd in "$@"; do
      command -v "$cmd" >/dev/null 2>&1 || { echo "packaging: $pkg installed but $cmd is missing" >&2; return 1; }
    done
    return 0
  fi
  echo "packaging: $* not found and apt-get (as root) is not available to install $pkg" >&2
  return 1
}

# skip_or_fail MESSAGE: exit 1 under CI, else print one SKIP line and exit 0.
skip_or_fail() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: $1 (CI=true: a missing tool is a failure)" >&2
    exit 1
  fi
  echo "SKIP: $1"
  exit 0
}

# start_dockerd WORKDIR: use a daemon that already answers, else start dockerd (overlay2) in the
# background with its own pidfile and log under WORKDIR. Sets DOCKERD_PID when we started it.
DOCKERD_PID=
start_dockerd() {
  local dir=$1
  if docker info >/dev/null 2>&1; then
    echo "==> using the docker daemon that is already running"
    return 0
  fi
  echo "==> starting dockerd (overlay2; log $dir/dockerd.log)"
  dockerd --storage-driver overlay2 --pidfile "$dir/dockerd.pid" >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 300); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "dockerd did not come up; its log:" >&2
  tail -n 30 "$dir/dockerd.log" >&2
  return 1
}

# stop_dockerd: SIGTERM to the dockerd we started (by pid), then wait for it (SIGKILL after 30 s).
stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=
}

# debian_mirror: the Debian mirror apt is configured with (deb822 or one-line sources), or
# $DEBIAN_MIRROR.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    sed -n -e 's/^URIs: *\([^ ]*\).*/\1/p' -e 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' |
    { grep -E '/debian/?$' || true; } | sed -n 1p
}
