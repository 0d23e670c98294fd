#!/usr/bin/env bash
# Fetch the peer shippers the end-to-end benchmark compares logflume against.
#
# Idempotent: does nothing when both are already there.
#   rsyslog   -> installed with apt-get (its binary: /usr/sbin/rsyslogd)
#   syslog-ng -> Debian's syslog-ng-core conflicts with rsyslog, so it is NOT installed:
#                its .deb and the libraries it needs that are not installed are fetched
#                with `apt-get download` and unpacked with `dpkg -x` into bench/peers/syslog-ng
#                (git-ignored); bench/e2e/peers.py runs it with LD_LIBRARY_PATH pointing there.
# Needs root (apt-get) and Debian's package index; run `apt-get update` first on a fresh machine.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/peers"
sng="$peers/syslog-ng"

if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then
    echo "setup_peers: installing rsyslog"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rsyslog >/dev/null
fi
# A freshly installed rsyslog must not run as the system logger inside a container/CI machine:
# the benchmark starts its own instances with their own configs.

if [ ! -x "$sng/usr/sbin/syslog-ng" ]; then
    echo "setup_peers: unpacking syslog-ng-core into $sng"
    mkdir -p "$peers/debs" "$sng"
    chmod 777 "$peers/debs"  # apt-get download runs as _apt when it can
    cd "$peers/debs"
    apt-get download -q syslog-ng-core >/dev/null 2>&1
    # Libraries syslog-ng needs that this machine lacks: fetched and unpacked beside it.
    for dep in libivykis0 libnet1 libjson-c5 libpcre3 libwrap0 libglib2.0-0 libcap2 libsystemd0 libssl3; do
        if ! dpkg -s "$dep" >/dev/null 2>&1; then
            apt-get download -q "$dep" >/dev/null 2>&1
        fi
    done
    for deb in ./*.deb; do
        dpkg -x "$deb" "$sng"
    done
fi

# Check that it loads: every shared library resolves.
export LD_LIBRARY_PATH="$sng/usr/lib/syslog-ng:$sng/usr/lib/x86_64-linux-gnu:$sng/usr/lib/x86_64-linux-gnu/syslog-ng:$sng/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$sng/usr/sbin/syslog-ng" | grep -q "not found"; then
    echo "setup_peers: syslog-ng has unresolved libraries:" >&2
    ldd "$sng/usr/sbin/syslog-ng" | grep "not found" >&2
    exit 1
fi
echo "setup_peers: rsyslog $(rsyslogd -v | head -1 | awk '{print $2}'), syslog-ng $("$sng/usr/sbin/syslog-ng" --version | head -1 | awk '{print $NF}') ready"
