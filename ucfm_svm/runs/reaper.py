"""Stop the processes a driver started once it is gone: ``python -m ucfm_svm.runs.reaper PID``.

A local Ray instance runs as a tree of Ray's own processes (GCS server, raylet, its agents,
workers) under the driver; killed with SIGKILL, the driver runs no clean-up and some of them
(Ray's dashboard and runtime-env agents) were measured alive 40 s later. The reaper is a
small separate process in its own session: while the driver lives it records the driver's
descendants every :data:`INTERVAL` seconds; once the driver is gone it kills every recorded
process still running (psutil checks each is the same process, not a reused id) and exits.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

#: Seconds between two looks at the driver and its descendants.
INTERVAL = 0.25


def reap(driver_pid: int, interval: float = INTERVAL) -> int:
    """Watch ``driver_pid``; after it ends kill its recorded descendants; return how many."""
    import psutil

    me = os.getpid()
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return 0
    seen: dict[int, psutil.Process] = {}
    while True:
        try:
            if driver.status() == psutil.STATUS_ZOMBIE:
                break
            for child in driver.children(recursive=True):
                if child.pid != me:
                    seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    killed = 0
    for child in seen.values():
        with contextlib.suppress(psutil.Error):
            child.kill()
            killed += 1
    return killed


if __name__ == "__main__":
    reap(int(sys.argv[1]))
