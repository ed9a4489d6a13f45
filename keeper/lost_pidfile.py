"""A daemon of this RBEE_HOME whose pidfile is gone, found by the state lock it holds.

Every rbee server holds `<state folder>/server.lock` (flock) for its whole life, so the
process holding that lock *is* the daemon of that folder, whatever happened to its
pidfile (a tmp cleaner, a hand, a crash between spawn and write). The kernel lists flock
holders in /proc/locks; `adopt` writes the pidfile again from the holder, so `stop` and
`start` treat the daemon as they would with its pidfile. Elsewhere than Linux nothing is
found and the pidfile rules alone apply.
"""

from __future__ import annotations

import os
from pathlib import Path

from keeper import daemons
from narration_core import Narrator

PROC_LOCKS = Path("/proc/locks")
NARRATE = Narrator("keeper")


def lock_holder(lock: Path) -> int | None:
    """The pid holding a flock on the file `lock`, if the kernel says (Linux)."""
    try:
        stat = os.stat(lock)
        table = PROC_LOCKS.read_text()
    except OSError:
        return None
    # "3: FLOCK  ADVISORY  WRITE 27220 fe:00:2951389 0 EOF" (waiters have "->" after "3:")
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            return int(fields[4]) if fields[4].isdigit() else None
    return None


def adopt(run_dir: Path, name: str, state_dir: Path, *, log: Path, label: str) -> None:
    """Write `name`'s pidfile again when it is missing or stale but a live process that
    listens on a TCP port holds the lock of `state_dir`: that process is the daemon, and
    the address it listens on (whatever its argv says) is in the URL. Does nothing otherwise."""
    pidfile = daemons.PidFile(run_dir, name)
    record = pidfile.read()
    if record is not None and daemons.live_process(record) is not None:
        return
    pid = lock_holder(state_dir / daemons.SERVER_LOCK.lstrip("/"))
    if pid is None:
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        argv, created = proc.cmdline(), proc.create_time()
        listening = [
            c.laddr
            for c in proc.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr
        ]
    except psutil.Error:
        return
    if not listening:  # not serving (a start failing, or not an rbee server): leave it be
        return
    url = _url(listening[0].ip, listening[0].port)
    pidfile.write(daemons.PidRecord(name, pid, created, url, str(log), argv))
    NARRATE.action("pidfile").target(pid).human(
        f"{label[:1].upper()}{label[1:]} runs (pid {pid}) without its pidfile; wrote it again"
    ).emit()


def _url(ip: str, port: int) -> str:
    """Where a local client reaches a server listening on `ip`:`port` (from its socket: its
    argv may not say, as with `--port 0`, `--port=N` or the program's default port)."""
    host = ip
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"
