#!/bin/sh
# Install what csync2-watch's tests, demo and benchmarks need on a fresh
# Debian (bookworm or later) machine. Safe to run again.
#
# --no-install-recommends matters: csync2 recommends openbsd-inetd, whose
# postinst puts `csync2 -i -l` on port 30865 and then collides with the
# `csync2 -ii` that csync2-watch supervises.
set -eu

# debootstrap and systemd-container: the live package test boots a minimal
# Debian under systemd-nspawn (tests/package/live.rs). lintian, rpmlint,
# cpio, binutils: tests/package/contents.rs checks the built packages.
# man-db and groff-base: tests/package/man_pages.rs renders the man pages.
packages="csync2 sqlite3 inotify-tools iproute2 util-linux procps psmisc rpm bindfs
    debootstrap systemd-container lintian rpmlint cpio binutils man-db groff-base"

missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: need root to install:$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

# csync2's package ships an inetd-style socket unit; make sure nothing
# already listens on csync2's port, or the tests' own servers cannot bind.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now csync2.socket >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# The packagers scripts/package.sh uses (a few minutes each, once).
need_tool() { # subcommand crate version
    if ! cargo "$1" --version 2>/dev/null | grep -q "$3"; then
        echo "setup.sh: installing $2 $3 (once; takes a few minutes)"
        cargo install --locked --quiet "$2" --version "$3"
    fi
}
need_tool deb cargo-deb 3.8.0
need_tool generate-rpm cargo-generate-rpm 0.21.1
echo "setup.sh: ready (csync2 $(dpkg-query -W -f='${Version}' csync2), $(cargo --version))"
