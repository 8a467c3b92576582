#!/bin/bash
# Tests the container image's contents without a container engine: builds
# the runtime stage's file tree in a folder from the host's files, then runs
# the relay from it as the image's user in new mount, PID and network
# namespaces (loopback only). Needs root for unshare and chroot.
#
#   docker/test-rootfs.sh [TLSRELAY_BINARY]     (default: build/tlsrelay)
#
# It checks that:
#   1. every shared library of the binary comes from a package that the
#      runtime stage installs, or that those packages pull in, or that
#      Debian 12 marks "required" (present in debian:12-slim);
#   2. the binary starts from the tree with only those libraries, as the
#      non-root user, with the image's configuration file;
#   3. `tlsrelay healthcheck` (the HEALTHCHECK command) passes while the
#      relay runs and fails after it stopped;
#   4. a message submitted with /usr/sbin/sendmail is queued on the volume;
#   5. SIGTERM stops the relay with status 0 within the drain bound, and the
#      message stays queued for the next start;
#   6. the log is on standard error and standard output stays empty.
# What it cannot test: the Dockerfile's own steps (apt-get in the image,
# COPY, VOLUME, HEALTHCHECK timing), which need a container engine.
set -euo pipefail

repository=$(cd "$(dirname "$0")/.." && pwd)
binary=$(realpath "${1:-$repository/build/tlsrelay}")
dockerfile="$repository/docker/Dockerfile"
image_uid=10025

if [[ $(id -u) -ne 0 ]]; then
    echo "test-rootfs: needs root (unshare and chroot)" >&2
    exit 2
fi
if [[ ! -x $binary ]]; then
    echo "test-rootfs: $binary is not an executable; build tlsrelay first" >&2
    exit 2
fi

work=$(mktemp -d /tmp/tlsrelay-rootfs-XXXXXX)
relay_pid=""
cleanup() {
    if [[ -n $relay_pid ]] && kill -0 "$relay_pid" 2>/dev/null; then
        kill -KILL "$relay_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# --- 1. the runtime package list covers every library ----------------------
runtime_packages=$(sed -n '/^FROM debian:12-slim/,$p' "$dockerfile" |
    sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' |
    grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|rf|y)$' || true)
if [[ -z $runtime_packages ]]; then
    fail "no package list found in the runtime stage of $dockerfile"
fi
available=$( (apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
                  --no-replaces --no-enhances $runtime_packages 2>/dev/null | grep -E '^[a-z0-9]' || true
              dpkg-query -W -f '${Package} ${Priority}\n' | awk '$2 == "required" { print $1 }') |
            sed 's/:.*//' | sort -u)
libraries=$(ldd "$binary" | awk '/=>/ { print $3 } /ld-linux/ && !/=>/ { print $1 }')
for library in $libraries; do
    package=$(dpkg -S "$(realpath "$library")" 2>/dev/null | head -1 | cut -d: -f1 ||
              dpkg -S "$library" 2>/dev/null | head -1 | cut -d: -f1 || true)
    if [[ -z $package ]]; then
        fail "$library belongs to no installed package"
    elif grep -qx "$package" <<<"$available"; then
        pass "$library from $package is in the runtime stage"
    else
        fail "$library comes from $package, which the runtime stage does not install"
    fi
done

# --- the file tree of the runtime stage -------------------------------------
root="$work/root"
mkdir -p "$root"/{etc/tlsrelay,usr/local/bin,usr/sbin,var/spool/tlsrelay,tmp,dev,proc}
cp "$binary" "$root/usr/local/bin/tlsrelay"
for library in $libraries; do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
done
cp -rL /etc/ssl "$root/etc/ssl"
cp "$repository/docker/tlsrelay.toml" "$root/etc/tlsrelay/tlsrelay.toml"
ln -s /usr/local/bin/tlsrelay "$root/usr/sbin/sendmail"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "tlsrelay:x:$image_uid:$image_uid::/var/spool/tlsrelay:/usr/sbin/nologin" >>"$root/etc/passwd"
printf 'root:x:0:\ntlsrelay:x:%s:\n' "$image_uid" >"$root/etc/group"
echo "tlsrelay.example" >"$root/etc/hostname"
# The namespace has no DNS server; the relay must still start and queue.
echo "nameserver 127.0.0.1" >"$root/etc/resolv.conf"
chown "$image_uid:$image_uid" "$root/var/spool/tlsrelay"
chmod 0700 "$root/var/spool/tlsrelay"

# --- 2 to 6: run the image's command in namespaces --------------------------
# The script below runs as root inside new namespaces, chroots into the
# tree and drops to the image's user, as USER tlsrelay does.
cat >"$work/inside.sh" <<EOF
set -u
ip link set lo up
# A container engine provides these device nodes; wolfSSL needs /dev/urandom.
for device in null zero random urandom; do
    touch "$root/dev/\$device"
    mount --bind "/dev/\$device" "$root/dev/\$device"
done
as_user() { chroot --userspec=$image_uid:$image_uid "$root" "\$@"; }
export TLSRELAY_MYHOSTNAME=sidecar.example
count_queue_files() { find "$root/var/spool/tlsrelay" -type f ! -path '*/tls/*' | wc -l; }
echo "queue_files_before=\$(count_queue_files)" >>"$work/results"
# chroot execs the relay, so \$! is the relay's PID.
chroot --userspec=$image_uid:$image_uid "$root" /usr/local/bin/tlsrelay serve --config /etc/tlsrelay/tlsrelay.toml \
    >"$work/stdout" 2>"$work/stderr" &
relay=\$!
echo "\$relay" >"$work/relay.pid"
for attempt in \$(seq 1 50); do
    as_user /usr/local/bin/tlsrelay healthcheck --config /etc/tlsrelay/tlsrelay.toml 2>/dev/null && break
    sleep 0.2
done
as_user /usr/local/bin/tlsrelay healthcheck --config /etc/tlsrelay/tlsrelay.toml
echo "healthcheck_running=\$?" >>"$work/results"
printf 'To: someone@example.org\nSubject: rootfs test\n\nbody\n' |
    as_user /usr/sbin/sendmail -t -f app@example.net
echo "sendmail=\$?" >>"$work/results"
sleep 0.5
echo "queued_files=\$(( \$(count_queue_files) - \$(sed -n 's/^queue_files_before=//p' "$work/results") ))" >>"$work/results"
started=\$(date +%s)
kill -TERM "\$relay"
wait "\$relay"
echo "serve_exit=\$?" >>"$work/results"
echo "stop_seconds=\$(( \$(date +%s) - started ))" >>"$work/results"
as_user /usr/local/bin/tlsrelay healthcheck --config /etc/tlsrelay/tlsrelay.toml 2>/dev/null
echo "healthcheck_stopped=\$?" >>"$work/results"
echo "queued_after_stop=\$(( \$(count_queue_files) - \$(sed -n 's/^queue_files_before=//p' "$work/results") ))" >>"$work/results"
EOF
: >"$work/results"
timeout 60 unshare --mount --pid --net --fork --mount-proc bash "$work/inside.sh" || fail "the namespace script failed"
cat "$work/results"

result() { sed -n "s/^$1=//p" "$work/results"; }
[[ $(result healthcheck_running) == 0 ]] && pass "healthcheck passes while the relay runs" ||
    fail "healthcheck did not pass while the relay ran"
[[ $(result sendmail) == 0 ]] && pass "sendmail submitted the message" || fail "sendmail failed"
[[ $(result queued_files) -ge 1 ]] && pass "the message is queued on the volume" ||
    fail "no queue file on the volume"
[[ $(result serve_exit) == 0 ]] && pass "SIGTERM stops the relay with status 0" ||
    fail "the relay exited with status $(result serve_exit) after SIGTERM"
[[ $(result stop_seconds) -le 7 ]] && pass "stopped within $(result stop_seconds) s" ||
    fail "stopping took $(result stop_seconds) s"
[[ $(result healthcheck_stopped) != 0 ]] && pass "healthcheck fails once the relay stopped" ||
    fail "healthcheck passed with the relay stopped"
[[ $(result queued_after_stop) -ge 1 ]] && pass "the message stays queued after the stop" ||
    fail "the queue is empty after the stop"
if [[ -s $work/stdout ]]; then
    fail "standard output is not empty: $(head -3 "$work/stdout")"
else
    pass "standard output is empty"
fi
if grep -q "started: myhostname=sidecar.example" "$work/stderr"; then
    pass "the log is on standard error, and TLSRELAY_MYHOSTNAME applied"
else
    fail "no start line with myhostname=sidecar.example on standard error"
fi
echo "--- relay log (standard error) ---"
cat "$work/stderr"

if [[ $failures -ne 0 ]]; then
    echo "test-rootfs: $failures check(s) failed"
    exit 1
fi
echo "test-rootfs: all checks passed"
