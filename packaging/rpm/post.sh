# csync2-watch %post: make the state directory, tell systemd about the
# units. Never enables or starts the daemon: it needs /etc/csync2.cfg first
# (see README-install.md).
[ -d /var/lib/csync2-watch ] || install -d -m 0755 /var/lib/csync2-watch
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
