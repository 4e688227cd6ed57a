# csync2-watch %preun: on erase ($1 = 0, not on upgrade), stop and disable
# the daemons before their binary goes away.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop csync2-watch.service 'csync2-watch@*.service' >/dev/null 2>&1 || :
    fi
    rm -f /etc/systemd/system/multi-user.target.wants/csync2-watch.service \
        /etc/systemd/system/multi-user.target.wants/csync2-watch@*.service
fi
