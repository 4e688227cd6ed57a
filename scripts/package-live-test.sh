#!/usr/bin/env bash
# The live-system package test: the .deb on a minimal Debian 12 under a
# real systemd, as a new user would install it.
#
#   scripts/package-live-test.sh target/debian/csync2-watch_VERSION-1_ARCH.deb
#
# Needs root, debootstrap and systemd-container (scripts/setup.sh installs
# them). tests/package/live.rs runs it as part of `cargo test`.
#
# A pristine minimal root (debootstrap --variant=minbase plus systemd) is
# cached in $CSYNC2_WATCH_TEST_ROOT_CACHE (default
# /var/cache/csync2-watch-tests): built once into a temporary directory and
# renamed into place, so a half-built root is never used. Besides the base
# system it holds apt's package lists and the .debs of csync2 and
# libsqlite3-0 in apt's cache (downloaded, never installed), so the install
# inside the containers resolves offline and is quick; the packages are
# installed only into throw-away copies (systemd-nspawn -x), so the
# dependency list is proven on every run.
#
# Two containers (node1, node2) boot that root with systemd as PID 1. They
# share the host's network and use IP literals on loopback as csync2 node
# names (127.77.X.1, 127.77.X.2, X from this script's pid): `csync2 -ii -N
# ADDR` binds its own address there, so the two csync2 servers do not
# collide, and apt could still reach the mirror if the cached lists went
# stale. Then, timing each step: install with --no-install-recommends,
# `systemctl enable --now` on both, a change on one node arrives on the
# other (both ways), `systemctl reload` applies an edited csync2.cfg,
# `systemctl kill -s SIGKILL` is followed by a restart that loses nothing,
# the watchdog restarts a frozen (SIGSTOP) daemon, `systemctl stop` and
# `apt-get purge` leave no process, unit or state behind.
#
# Any failure prints both containers' `journalctl -u csync2-watch`. Every
# container is stopped by the pid this script started it with, and every
# temporary directory is removed.
set -euo pipefail

DEB=${1:?usage: $0 PATH/csync2-watch_VERSION_ARCH.deb}
DEB=$(realpath "$DEB")
CACHE=${CSYNC2_WATCH_TEST_ROOT_CACHE:-/var/cache/csync2-watch-tests}
ROOT=$CACHE/bookworm-minbase
MIRROR=${CSYNC2_WATCH_TEST_MIRROR:-http://deb.debian.org/debian}
# Bump when the way the root is built changes: an older cached root is
# then rebuilt.
RECIPE="csync2-watch test root v1: bookworm minbase +systemd,systemd-sysv,dbus; lists; csync2 libsqlite3-0 downloaded"
STAMP=etc/csync2-watch-test-root

die() {
    echo "package-live-test: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (systemd-nspawn, debootstrap)"
for tool in debootstrap systemd-nspawn nsenter flock; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh (it installs debootstrap and systemd-container)"
done
[ -f "$DEB" ] || die "$DEB does not exist: run scripts/package.sh"

T0=$(date +%s.%N)
STEP_NAME=""
STEP_T=""
STEPS=0
elapsed() { echo "$(date +%s.%N) $1" | awk '{ printf "%.1f", $1 - $2 }'; }
step() {
    STEP_NAME=$1
    STEP_T=$(date +%s.%N)
    echo "package-live-test: ... $STEP_NAME"
}
ok() {
    STEPS=$((STEPS + 1))
    printf 'package-live-test: %-68s ok %6ss\n' "$STEP_NAME${1:+ ($1)}" "$(elapsed "$STEP_T")"
    STEP_NAME=""
}

WORK=$(mktemp -d /tmp/csync2-watch-live.XXXXXX)
declare -A NSPAWN=() INIT=()
BEFORE_COPIES=""

in_node() { # NODE CMD...: run CMD inside the container
    local n=$1
    shift
    nsenter -t "${INIT[$n]}" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

diagnose() {
    for n in "${!INIT[@]}"; do
        echo "----- $n: systemctl status csync2-watch -----" >&2
        in_node "$n" systemctl --no-pager status csync2-watch >&2 2>&1 || true
        echo "----- $n: journalctl -u csync2-watch -----" >&2
        in_node "$n" journalctl --no-pager -o short-monotonic -u csync2-watch -n 300 >&2 2>&1 || true
        echo "----- $n: failed units -----" >&2
        in_node "$n" systemctl --no-pager --failed >&2 2>&1 || true
    done
    for f in "$WORK"/*.console; do
        [ -f "$f" ] || continue
        echo "----- $(basename "$f") (last lines) -----" >&2
        tail -n 30 "$f" >&2 || true
    done
}

cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        [ -n "$STEP_NAME" ] && echo "package-live-test: step failed: $STEP_NAME (after $(elapsed "${STEP_T:-$T0}")s)" >&2
        diagnose
    fi
    for n in "${!NSPAWN[@]}"; do
        local pid=${NSPAWN[$n]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for n in "${!NSPAWN[@]}"; do
        local pid=${NSPAWN[$n]} i
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "package-live-test: $n's systemd-nspawn (pid $pid) did not stop; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    # A killed systemd-nspawn -x leaves its copy (.#machine.*) beside the
    # root: remove only the copies this run made.
    if [ -d "$CACHE" ]; then
        local c
        for c in "$CACHE"/.#machine.*; do
            [ -e "$c" ] || continue
            case " $BEFORE_COPIES " in *" $c "*) continue ;; esac
            echo "package-live-test: removing leftover container copy $c" >&2
            rm -rf --one-file-system "$c"
        done
    fi
    rm -rf "$WORK"
    if [ $rc -eq 0 ]; then
        echo "package-live-test: total $(elapsed "$T0")s (containers stopped, their copies removed)"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
step "pristine root: $ROOT"
mkdir -p "$CACHE"
# One live test at a time on a machine: the lock guards the cached root
# (a rebuild renames it) and the loopback addresses; held until exit.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    echo "package-live-test: another live package test runs on this machine; waiting for it"
    flock 9
fi
built=""
if [ ! -f "$ROOT/$STAMP" ] || [ "$(cat "$ROOT/$STAMP")" != "$RECIPE" ]; then
    built="built now"
    echo "package-live-test: building the minimal root (debootstrap, a few minutes, once per machine)"
    build=$(mktemp -d "$CACHE/.build.XXXXXX")
    if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm \
        "$build/root" "$MIRROR" >"$build/debootstrap.log" 2>&1; then
        tail -n 40 "$build/debootstrap.log" >&2
        rm -rf --one-file-system "$build"
        die "debootstrap could not build the minimal Debian root from $MIRROR (log above); the live package test cannot run without it"
    fi
    cp /etc/resolv.conf "$build/root/etc/resolv.conf"
    if ! chroot "$build/root" sh -c 'apt-get update -qq && apt-get install -y -qq --download-only --no-install-recommends csync2 libsqlite3-0' \
        >"$build/apt.log" 2>&1; then
        tail -n 40 "$build/apt.log" >&2
        rm -rf --one-file-system "$build"
        die "could not fetch apt's lists and csync2's packages into the minimal root (log above)"
    fi
    echo "$RECIPE" >"$build/root/$STAMP"
    if [ -e "$ROOT" ]; then
        mv "$ROOT" "$ROOT.old.$$"
    fi
    mv "$build/root" "$ROOT"
    rm -rf --one-file-system "$build" "$ROOT.old.$$"
fi
BEFORE_COPIES=$(echo "$CACHE"/.#machine.*)
ok "${built:-cached}"

# ---------------------------------------------------------------------------
OCT=$(($$ % 200 + 20))
ADDR[1]=127.77.$OCT.1
ADDR[2]=127.77.$OCT.2
mkdir "$WORK/pkg"
cp "$DEB" "$WORK/pkg/"
DEBNAME=$(basename "$DEB")

step "boot node1 and node2 (systemd-nspawn -x -b, systemd as PID 1)"
for i in 1 2; do
    n=node$i
    systemd-nspawn -q -x -b -D "$ROOT" --register=no --keep-unit --console=pipe \
        --machine="c2wlive$$-$i" --bind-ro="$WORK/pkg:/pkg" \
        >"$WORK/$n.console" 2>&1 </dev/null &
    NSPAWN[$n]=$!
done
for i in 1 2; do
    n=node$i
    for _ in $(seq 1 150); do
        INIT[$n]=$(pgrep -P "${NSPAWN[$n]}" | head -n 1 || true)
        [ -n "${INIT[$n]}" ] && break
        kill -0 "${NSPAWN[$n]}" 2>/dev/null || die "$n's systemd-nspawn exited: $(tail -n 20 "$WORK/$n.console")"
        sleep 0.1
    done
    [ -n "${INIT[$n]}" ] || die "$n: no container init process"
    state=""
    for _ in $(seq 1 300); do
        state=$(in_node "$n" systemctl is-system-running 2>/dev/null || true)
        case $state in running | degraded) break ;; esac
        sleep 0.2
    done
    case $state in
        running) ;;
        degraded) echo "package-live-test: $n booted degraded: $(in_node "$n" systemctl --failed --no-legend --plain | tr '\n' ' ')" ;;
        *) die "$n did not finish booting (systemctl is-system-running: ${state:-no answer})" ;;
    esac
done
ok "$(in_node node1 systemctl --version | head -n 1)"

# ---------------------------------------------------------------------------
step "pristine root has neither csync2 nor libsqlite3-0 installed"
for p in csync2 libsqlite3-0 csync2-watch; do
    if in_node node1 dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        die "$p is already installed in the pristine root: the dependency check would prove nothing"
    fi
done
ok

step "apt-get install --no-install-recommends ./$DEBNAME (both nodes)"
for n in node1 node2; do
    if ! in_node "$n" sh -c "cd /pkg && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./$DEBNAME" >"$WORK/$n.apt.log" 2>&1; then
        cat "$WORK/$n.apt.log" >&2
        die "$n: apt-get install failed"
    fi
done
for p in csync2-watch csync2 libsqlite3-0; do
    in_node node1 dpkg-query -W -f='${Status}' "$p" | grep -q "install ok installed" || die "$p not installed"
done
if in_node node1 dpkg-query -W -f='${Status}' openbsd-inetd 2>/dev/null | grep -q "install ok installed"; then
    die "openbsd-inetd came along despite --no-install-recommends"
fi
mode=$(in_node node1 stat -c %a /var/lib/csync2-watch)
[ "$mode" = 700 ] || die "/var/lib/csync2-watch has mode $mode, not 700"
in_node node1 test -f /usr/share/man/man8/csync2-watch.8.gz || die "no csync2-watch(8)"
in_node node1 test -f /usr/share/man/man5/csync2-watch.toml.5.gz || die "no csync2-watch.toml(5)"
in_node node1 test -f /usr/lib/sysctl.d/60-csync2-watch.conf || die "no sysctl.d default"
in_node node1 systemctl is-enabled csync2-watch >/dev/null 2>&1 && die "installing enabled the daemon"
ok "$(in_node node1 dpkg-query -W -f='csync2-watch ${Version}, Installed-Size ${Installed-Size} KiB' csync2-watch)"

# ---------------------------------------------------------------------------
step "configure a two-node cluster (${ADDR[1]}, ${ADDR[2]})"
in_node node1 csync2 -k /etc/csync2.key
in_node node1 cat /etc/csync2.key >"$WORK/csync2.key"
cfg="nossl * *;
group live {
    host ${ADDR[1]} ${ADDR[2]};
    key /etc/csync2.key;
    include /srv/live;
    exclude *.tmp;
    auto younger;
}"
for i in 1 2; do
    n=node$i
    in_node "$n" sh -c 'umask 077; cat > /etc/csync2.key' <"$WORK/csync2.key"
    printf '%s\n' "$cfg" | in_node "$n" sh -c 'cat > /etc/csync2.cfg'
    in_node "$n" mkdir -p /srv/live
    in_node "$n" sed -i "s/^CSYNC2_WATCH_OPTS=.*/CSYNC2_WATCH_OPTS=\"-N ${ADDR[$i]}\"/" /etc/default/csync2-watch
    in_node "$n" csync2-watch check-config -N "${ADDR[$i]}" >"$WORK/$n.check" 2>&1 ||
        { cat "$WORK/$n.check" >&2; die "$n: check-config failed"; }
done
ok

step "systemctl enable --now csync2-watch (both nodes)"
for n in node1 node2; do
    in_node "$n" systemctl enable --now csync2-watch >/dev/null 2>&1 || die "$n: systemctl enable --now failed"
done
for i in 1 2; do
    n=node$i
    [ "$(in_node "$n" systemctl is-active csync2-watch)" = active ] || die "$n: not active"
    wd=$(in_node "$n" systemctl show -P WatchdogUSec csync2-watch)
    [ "$wd" != 0 ] && [ -n "$wd" ] || die "$n: no watchdog (WatchdogUSec=$wd)"
    in_node "$n" csync2-watch status -N "${ADDR[$i]}" >"$WORK/$n.status" 2>&1 ||
        { cat "$WORK/$n.status" >&2; die "$n: csync2-watch status says it is not running"; }
done
ok "Type=notify ready, watchdog $(in_node node1 systemctl show -P WatchdogUSec csync2-watch)"

# wait_file NODE PATH CONTENT [SECONDS]: until PATH on NODE holds CONTENT.
wait_file() {
    local n=$1 path=$2 want=$3 limit=${4:-60} t
    t=$(date +%s)
    while true; do
        if [ "$(in_node "$n" cat "$path" 2>/dev/null || true)" = "$want" ]; then
            return 0
        fi
        if [ $(($(date +%s) - t)) -ge "$limit" ]; then
            echo "package-live-test: $path did not reach $n with the expected content within ${limit}s" >&2
            return 1
        fi
        sleep 0.1
    done
}
put() { # NODE PATH CONTENT
    printf '%s' "$3" | in_node "$1" sh -c "cat > '$2'"
}

step "a change on node1 arrives on node2, and one on node2 on node1"
t=$(date +%s.%N)
put node1 /srv/live/hello "hello from node1 $$"
wait_file node2 /srv/live/hello "hello from node1 $$"
one=$(elapsed "$t")
t=$(date +%s.%N)
put node2 /srv/live/back "hello from node2 $$"
wait_file node1 /srv/live/back "hello from node2 $$"
ok "node1->node2 ${one}s, node2->node1 $(elapsed "$t")s"

# ---------------------------------------------------------------------------
step "systemctl reload applies an edited csync2.cfg"
for n in node1 node2; do
    in_node "$n" mkdir -p /srv/more
    in_node "$n" sed -i 's|^    include /srv/live;|    include /srv/live;\n    include /srv/more;|' /etc/csync2.cfg
    in_node "$n" systemctl reload csync2-watch || die "$n: systemctl reload failed"
done
for n in node1 node2; do
    for _ in $(seq 1 100); do
        in_node "$n" journalctl -u csync2-watch --no-pager -q -g 'SIGHUP: reloading' >/dev/null 2>&1 && break
        sleep 0.1
    done
    in_node "$n" journalctl -u csync2-watch --no-pager -q -g 'SIGHUP: reloading' >/dev/null 2>&1 ||
        die "$n: the daemon never logged the reload"
    [ "$(in_node "$n" systemctl is-active csync2-watch)" = active ] || die "$n: not active after reload"
done
put node1 /srv/more/added "a tree added by reload $$"
wait_file node2 /srv/more/added "a tree added by reload $$"
ok

# ---------------------------------------------------------------------------
step "systemctl kill -s SIGKILL: the restart loses nothing"
pid1=$(in_node node1 systemctl show -P MainPID csync2-watch)
restarts1=$(in_node node1 systemctl show -P NRestarts csync2-watch)
for k in $(seq 1 20); do put node1 "/srv/live/before-kill-$k" "written just before SIGKILL $k"; done
# systemd 252 in a container on this host's hybrid cgroup tree may fail to
# signal the unit's other processes (EIO); what matters is that the daemon
# died without a chance to clean up.
how="systemctl kill -s SIGKILL"
if ! in_node node1 systemctl kill -s SIGKILL csync2-watch 2>"$WORK/kill.err"; then
    echo "package-live-test: note: $(cat "$WORK/kill.err")"
fi
dead=""
for _ in $(seq 1 30); do
    st=$(in_node node1 sh -c "cut -d' ' -f3 /proc/$pid1/stat 2>/dev/null" || true)
    if [ -z "$st" ] || [ "$st" = Z ]; then
        dead=1
        break
    fi
    sleep 0.1
done
if [ -z "$dead" ]; then
    how="systemctl kill -s SIGKILL --kill-whom=main"
    in_node node1 systemctl kill -s SIGKILL --kill-whom=main csync2-watch || true
fi
for k in $(seq 1 20); do put node1 "/srv/live/while-down-$k" "written while the daemon was down $k"; done
t=$(date +%s)
while true; do
    pid=$(in_node node1 systemctl show -P MainPID csync2-watch)
    state=$(in_node node1 systemctl is-active csync2-watch || true)
    if [ "$state" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$pid1" ]; then break; fi
    [ $(($(date +%s) - t)) -lt 60 ] || die "node1: no restart within 60s after SIGKILL (state $state)"
    sleep 0.2
done
restarted=$(($(date +%s) - t))
[ "$(in_node node1 systemctl show -P NRestarts csync2-watch)" -gt "$restarts1" ] || die "NRestarts did not grow"
for k in $(seq 1 20); do
    wait_file node2 "/srv/live/before-kill-$k" "written just before SIGKILL $k"
    wait_file node2 "/srv/live/while-down-$k" "written while the daemon was down $k"
done
ok "$how; restarted after ${restarted}s, 40 files arrived"

# ---------------------------------------------------------------------------
step "csync2 runs longer than a (2s) watchdog do not trip it"
# A drop-in shortens node1's watchdog to 2s; a burst of 5000 new files
# then keeps csync2 busy (check, then push to node2) for several times that
# (with the control loop's busy guard removed, this step fails).
in_node node1 mkdir -p /run/systemd/system/csync2-watch.service.d
printf '[Service]\nWatchdogSec=2s\n' | in_node node1 sh -c 'cat > /run/systemd/system/csync2-watch.service.d/live-test.conf'
in_node node1 systemctl daemon-reload
in_node node1 systemctl restart csync2-watch
restarts1=$(in_node node1 systemctl show -P NRestarts csync2-watch)
since=$(in_node node1 date '+%Y-%m-%d %H:%M:%S')
t=$(date +%s.%N)
in_node node1 sh -c 'mkdir /srv/live/burst && cd /srv/live/burst && for i in $(seq 1 5000); do echo "file $i" > "f$i"; done'
t0=$(date +%s)
while true; do
    n=$(in_node node2 sh -c 'ls /srv/live/burst 2>/dev/null | wc -l')
    [ "$n" -ge 5000 ] && break
    [ $(($(date +%s) - t0)) -lt 180 ] || die "only $n of 5000 burst files reached node2 within 180s"
    sleep 0.5
done
burst=$(elapsed "$t")
if in_node node1 journalctl -u csync2-watch --no-pager -q --since "$since" -g 'Watchdog timeout' >/dev/null 2>&1; then
    die "node1's watchdog fired during a legitimate csync2 run"
fi
[ "$(in_node node1 systemctl show -P NRestarts csync2-watch)" = "$restarts1" ] || die "node1 restarted during the burst"
in_node node1 rm -rf /run/systemd/system/csync2-watch.service.d
in_node node1 systemctl daemon-reload
in_node node1 systemctl restart csync2-watch
ok "5000 files in ${burst}s, no watchdog timeout, no restart"

# ---------------------------------------------------------------------------
step "the watchdog restarts a frozen daemon (SIGSTOP)"
wdusec=$(in_node node2 systemctl show -P WatchdogUSec csync2-watch)
pid2=$(in_node node2 systemctl show -P MainPID csync2-watch)
in_node node2 systemctl kill -s SIGSTOP --kill-whom=main csync2-watch
put node1 /srv/live/while-frozen "written while node2 was frozen $$"
t=$(date +%s)
while true; do
    pid=$(in_node node2 systemctl show -P MainPID csync2-watch)
    state=$(in_node node2 systemctl is-active csync2-watch || true)
    if [ "$state" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$pid2" ]; then break; fi
    [ $(($(date +%s) - t)) -lt 180 ] || die "node2: the frozen daemon was not restarted within 180s (watchdog $wdusec)"
    sleep 0.5
done
fired=$(($(date +%s) - t))
in_node node2 journalctl -u csync2-watch --no-pager -q -g 'Watchdog timeout' >/dev/null ||
    die "node2: restarted, but not by the watchdog"
wait_file node2 /srv/live/while-frozen "written while node2 was frozen $$" 120
ok "watchdog $wdusec: restarted ${fired}s after SIGSTOP, change caught up"

# ---------------------------------------------------------------------------
procs() { # NODE: csync2 and csync2-watch processes in the container
    in_node "$1" sh -c 'for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) || continue; case $c in csync2*) echo "${d#/proc/} $c";; esac; done'
}
step "systemctl stop leaves no process; apt-get purge leaves nothing"
for i in 1 2; do
    n=node$i
    in_node "$n" systemctl stop csync2-watch
    left=$(procs "$n")
    [ -z "$left" ] || die "$n: processes left after systemctl stop: $left"
    if in_node "$n" csync2-watch reload -N "${ADDR[$i]}" >/dev/null 2>&1; then
        die "$n: csync2-watch reload succeeded with no daemon running"
    fi
done
in_node node1 sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q csync2-watch' >"$WORK/purge.log" 2>&1 ||
    { cat "$WORK/purge.log" >&2; die "apt-get purge failed"; }
left=""
for f in /var/lib/csync2-watch /etc/csync2-watch /etc/default/csync2-watch \
    /lib/systemd/system/csync2-watch.service /lib/systemd/system/csync2-watch@.service \
    /etc/systemd/system/multi-user.target.wants/csync2-watch.service \
    /usr/sbin/csync2-watch /usr/lib/sysctl.d/60-csync2-watch.conf /run/csync2-watch; do
    in_node node1 test -e "$f" && left="$left $f"
done
[ -z "$left" ] || die "left after purge:$left"
units=$(in_node node1 systemctl list-units --all --no-legend --plain 'csync2-watch*' || true)
[ -z "$units" ] || die "units left after purge: $units"
files=$(in_node node1 systemctl list-unit-files --no-legend --plain 'csync2-watch*' || true)
[ -z "$files" ] || die "unit files left after purge: $files"
in_node node1 dpkg-query -W -f='${Status}' csync2-watch 2>/dev/null | grep -q "ok installed\|config-files" &&
    die "dpkg still knows csync2-watch: $(in_node node1 dpkg-query -W -f='${Status}' csync2-watch)"
left=$(procs node1)
[ -z "$left" ] || die "processes left after purge: $left"
in_node node1 test -f /etc/csync2.cfg || die "purge removed csync2's own configuration"
ok "csync2.cfg, the key and csync2's database stay"

echo "package-live-test: all $STEPS steps passed"
exit 0
