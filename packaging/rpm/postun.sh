# csync2-watch %postun: forget removed units; on upgrade ($1 >= 1) restart
# the daemons that are running onto the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart csync2-watch.service 'csync2-watch@*.service' >/dev/null 2>&1 || :
    fi
fi
# On erase ($1 = 0) the Prometheus textfiles in /run go too (the state in
# /var/lib/csync2-watch is kept, as RPM keeps what it did not install).
if [ "$1" -eq 0 ]; then
    rm -rf /run/csync2-watch
fi
