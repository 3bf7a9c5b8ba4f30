#!/usr/bin/env bash
# Debian package check (run by .ci/run): build the .deb with cargo-deb, install it with dpkg -i,
# verify the systemd unit, run the installed binary, make sure the placeholder config is refused
# with a message naming it and that the service was neither enabled nor started, then purge the
# package and require that nothing of it is left (binary, unit, config, state, user, group).
#
# Installs cargo-deb (cargo install --locked) and systemd (for systemd-analyze) when missing.
# Refuses to touch a machine where an `authbridge` package is already installed. Exits non-zero
# on any failure; under CI=true a missing tool is a failure, elsewhere it may skip with one line.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
started=$SECONDS

[ "$(id -u)" = 0 ] || skip_or_fail "deb check needs root (dpkg -i)"
need_pkg dpkg dpkg dpkg-deb || skip_or_fail "dpkg is not installed"
need_pkg systemd systemd-analyze || skip_or_fail "systemd-analyze is not installed"
need_pkg adduser adduser || skip_or_fail "adduser is not installed"
if ! cargo deb --version >/dev/null 2>&1; then
  t0=$SECONDS
  echo "==> cargo install --locked cargo-deb"
  cargo install --quiet --locked cargo-deb || skip_or_fail "cargo-deb could not be installed"
  echo "==> cargo-deb installed in $((SECONDS - t0)) s"
fi
if dpkg-query -W -f '${Status}' authbridge 2>/dev/null | grep -q installed; then
  echo "FAIL: an authbridge package is already installed here; this check would replace it" >&2
  exit 1
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
purged=0
cleanup() {
  local rc=$?
  trap - EXIT
  [ "$purged" = 1 ] || dpkg --purge authbridge >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

t0=$SECONDS
echo "==> cargo deb"
deb=$(cargo deb --locked -p authbridge 2>"${TMPDIR:-/tmp}/cargo-deb.$$.log" | tail -n 1) ||
  { cat "${TMPDIR:-/tmp}/cargo-deb.$$.log" >&2; fail "cargo deb failed"; }
rm -f "${TMPDIR:-/tmp}/cargo-deb.$$.log"
[ -f "$deb" ] || fail "cargo deb did not print the package path (got '$deb')"
echo "==> built $deb in $((SECONDS - t0)) s"

# The package's metadata and contents, before installing.
dpkg-deb --field "$deb" Package Depends
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}' >"${TMPDIR:-/tmp}/deb-contents.$$"
for want in ./usr/bin/authbridge ./etc/authbridge/authbridge.yaml ./lib/systemd/system/authbridge.service \
            ./usr/share/doc/authbridge/examples/authbridge.example.yaml ./usr/share/doc/authbridge/README.md; do
  grep -q " $want\$" "${TMPDIR:-/tmp}/deb-contents.$$" || fail "$want is not in the package"
done
grep -q '^-rw-r----- .* ./etc/authbridge/authbridge.yaml$' "${TMPDIR:-/tmp}/deb-contents.$$" ||
  fail "the config is not mode 0640 in the package"
rm -f "${TMPDIR:-/tmp}/deb-contents.$$"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/authbridge/authbridge.yaml ||
  fail "/etc/authbridge/authbridge.yaml is not a conffile"

echo "==> dpkg -i"
dpkg -i "$deb" >/dev/null
[ -x /usr/bin/authbridge ] || fail "/usr/bin/authbridge is not installed"
/usr/bin/authbridge --version
version=$(dpkg-query -W -f '${Version}' authbridge)
/usr/bin/authbridge --version | grep -q " ${version%-*}$" || fail "--version does not say ${version%-*}"
getent passwd authbridge >/dev/null || fail "postinst did not create the authbridge user"
getent group authbridge >/dev/null || fail "postinst did not create the authbridge group"
[ "$(getent passwd authbridge | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the authbridge user has a login shell"
[ "$(stat -c '%U:%G %a' /etc/authbridge/authbridge.yaml)" = "root:authbridge 640" ] ||
  fail "/etc/authbridge/authbridge.yaml is $(stat -c '%U:%G %a' /etc/authbridge/authbridge.yaml), expected root:authbridge 640"
[ "$(stat -c '%U:%G %a' /var/lib/authbridge)" = "authbridge:authbridge 700" ] ||
  fail "/var/lib/authbridge is $(stat -c '%U:%G %a' /var/lib/authbridge), expected authbridge:authbridge 700"
[ ! -e /etc/systemd/system/multi-user.target.wants/authbridge.service ] ||
  fail "the package enabled the service although its config holds placeholders"

echo "==> systemd-analyze verify"
unit=/lib/systemd/system/authbridge.service
# Messages about other units (the host's own) are not ours; any line naming our unit fails.
verify_out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit" 2>&1) || true
if echo "$verify_out" | grep -q 'authbridge'; then
  echo "$verify_out" >&2
  fail "systemd-analyze verify complains about $unit"
fi
systemd-analyze verify "$unit" >/dev/null 2>&1 ||
  { echo "$verify_out" >&2; fail "systemd-analyze verify $unit exited non-zero"; }
for want in 'Type=notify' 'WatchdogSec=' 'ExecReload=/bin/kill -HUP $MAINPID' 'StateDirectory=authbridge' \
            'ProtectSystem=strict' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=$' 'User=authbridge' \
            'ExecStart=/usr/bin/authbridge run --config /etc/authbridge/authbridge.yaml'; do
  grep -q "^$want" "$unit" || fail "$unit has no '$want'"
done

echo "==> authbridge check on the packaged config (placeholders: must be refused)"
set +e
check_out=$(setpriv --reuid=authbridge --regid=authbridge --init-groups \
  /usr/bin/authbridge check --config /etc/authbridge/authbridge.yaml 2>&1)
check_rc=$?
set -e
echo "$check_out" | sed 's/^/    /'
# Exit 2: a config error (docs/cli.md), not a runtime failure.
[ "$check_rc" = 2 ] || fail "check exited $check_rc on the placeholder config, expected 2 (config error)"
echo "$check_out" | grep -qi 'placeholder' || fail "check's message does not say which value is a placeholder"
echo "==> check refused the placeholders (exit $check_rc)"

echo "==> dpkg --purge"
# Leave state behind as a real service would, so the purge has something to remove.
setpriv --reuid=authbridge --regid=authbridge --init-groups sh -c 'echo x >/var/lib/authbridge/master.key'
dpkg --purge authbridge >/dev/null
purged=1
for path in /usr/bin/authbridge "$unit" /etc/authbridge /var/lib/authbridge /usr/share/doc/authbridge; do
  [ ! -e "$path" ] || fail "$path is left after dpkg --purge"
done
! getent passwd authbridge >/dev/null || fail "the authbridge user is left after dpkg --purge"
! getent group authbridge >/dev/null || fail "the authbridge group is left after dpkg --purge"
! dpkg-query -W authbridge >/dev/null 2>&1 || fail "dpkg still knows the package after --purge"

if [ -n "${LINTIAN:-}" ]; then
  need_pkg lintian lintian && lintian --no-tag-display-limit "$deb" || true
fi
echo "PASS: Debian package check in $((SECONDS - started)) s"
