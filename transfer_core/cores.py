"""The CPU cores this process may use: what the executors, the data path and the gate size themselves to.
A module of its own, without torch, so the command line can read it before anything heavy is imported."""

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container or ``taskset`` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
