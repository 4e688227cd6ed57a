# csync2-watch %post: make the state directory (root's alone: the journal
# and the status file hold every changed path name; the units say the same
# with StateDirectoryMode=0700), apply the inotify limits, tell systemd
# about the units. Never enables or starts the daemon: it needs
# /etc/csync2.cfg first (see README-install.md).
if [ -d /var/lib/csync2-watch ]; then
    chmod 0700 /var/lib/csync2-watch
else
    install -d -m 0700 /var/lib/csync2-watch
fi
if [ -x /usr/lib/systemd/systemd-sysctl ]; then
    /usr/lib/systemd/systemd-sysctl 60-csync2-watch.conf >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
