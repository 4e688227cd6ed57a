# csync2-watch %postun: forget removed units; on upgrade ($1 >= 1) restart
# the daemons that are running onto the new binary.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart csync2-watch.service 'csync2-watch@*.service' >/dev/null 2>&1 || :
    fi
fi
