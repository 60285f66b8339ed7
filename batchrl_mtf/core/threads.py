"""CPU threads: the cores this process may use (:func:`usable_cores`) and limits for torch and
numpy's BLAS while a block runs (:func:`limit_threads`).

The toolkit's networks are small (64-unit layers, mini-batches of 256-1024 rows): splitting one
of their products over threads gains little, and on a busy machine the libraries' default of one
spinning thread per core each (torch's OpenMP pool and OpenBLAS's own pool) is far slower. Measured
on the 2-core machine at load average 2-3: ``make-env`` of a 2,000-session zoo world took
11-29 s with the defaults and 7.2-7.5 s with one thread (user time 10-27 s against 6 s), with
bit-identical predictors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from threadpoolctl import threadpool_limits

__all__ = ["limit_threads", "usable_cores"]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else the
    machine's count), at least 1: what "one per core" means in the toolkit's settings."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit torch's intra-op threads and the BLAS libraries' threads to ``n`` inside the block.

    Both are restored afterwards. ``n = 0`` leaves both libraries as they are (their defaults:
    one thread per core).

    Args:
        n: Threads (>= 1), or 0 for the libraries' defaults.
    """
    if n <= 0:
        yield
        return
    import torch  # heavy: only where a limit is asked for

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)
