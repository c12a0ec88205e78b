"""Worker plugins shared by every sedscale cluster."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

from distributed import WorkerPlugin

from ..errors import SedscaleError

#: Environment variables read by OpenMP, MKL, OpenBLAS and numexpr thread pools.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
#: glibc ``mallopt`` parameters and the values set in workers (bytes).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 1024**2  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 128 * 1024**2


def thread_environment(n_threads: int) -> dict[str, str]:
    """Environment that limits native thread pools to ``n_threads``."""
    return {var: str(int(n_threads)) for var in THREAD_ENV_VARS}


def limit_threads(n_threads: int) -> None:
    """Limit BLAS/OpenMP and torch intra-op threads of this process.

    Environment variables only act before a library loads its thread pool,
    so already-loaded pools are also limited at run time (threadpoolctl,
    ``torch.set_num_threads``).  Oversubscription is expensive here: under
    CPU contention torch on 2 threads ran 3-5x slower than on 1.
    """
    os.environ.update(thread_environment(n_threads))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: env vars already cover pools loaded later
        pass
    else:
        threadpool_limits(n_threads)
    # torch reads OMP_NUM_THREADS when it is first imported; only a torch
    # already imported needs telling (importing it here would cost ~2 s).
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n_threads)


def tune_malloc() -> bool:
    """Let glibc reuse large numpy temporaries instead of mmap/munmap-ing each one.

    Dask nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    also freezes glibc's mmap threshold at 128 KiB: every array above it is a
    fresh mmap whose pages fault in on first touch.  The batched forward
    model allocates MB-sized temporaries per chunk, and this made a
    simulation partition 3x slower (6.7 s of system time against 4.9 s of
    user time for 30,000 rows; 0.1 s with the thresholds raised).  Returns
    False where glibc's ``mallopt`` is unavailable (other C libraries).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class WorkerTuning(WorkerPlugin):
    """Limit thread pools (:func:`limit_threads`), tune malloc (:func:`tune_malloc`),
    log sedscale errors in the driver only (:func:`quiet_expected_errors`) and,
    in worker processes, ignore Ctrl-C, in every worker, including workers that join later.

    Parameters
    ----------
    n_threads : int
        Native threads per worker process (normally its Dask thread count).
    """

    name = "sedscale-worker-tuning"

    def __init__(self, n_threads: int = 1):
        self.n_threads = int(n_threads)
        # Made in the driver: a worker in another process may ignore Ctrl-C, one in the driver's may not.
        self.driver_pid = os.getpid()

    def setup(self, worker) -> None:
        limit_threads(self.n_threads)
        tune_malloc()
        quiet_expected_errors()
        if os.getpid() != self.driver_pid and threading.current_thread() is threading.main_thread():
            # Ctrl-C in a terminal reaches every process of its group.  The driver stops the run and
            # shuts the cluster down; local workers interrupted as well each printed a traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class ExpectedErrorFilter(logging.Filter):
    """Drops a worker's "Compute Failed" log of a :class:`~sedscale.errors.SedscaleError`.

    Such an error (an input file changed, a corrupt partition) reaches the
    driver, which reports it in one line; the worker's traceback of it
    would bury that line.  Any other exception is still logged in full.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not str(record.msg).startswith("Compute Failed") or len(args) < 4:
            return True
        return not str(args[3]).startswith(tuple(f"{name}(" for name in _error_names(SedscaleError)))


def _error_names(cls: type) -> set[str]:
    """Names of ``cls`` and of all its subclasses."""
    names = {cls.__name__}
    sub: type
    for sub in cls.__subclasses__():
        names |= _error_names(sub)
    return names


def quiet_expected_errors() -> None:
    """Install :class:`ExpectedErrorFilter` on the worker logger of this process (once)."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, ExpectedErrorFilter) for f in logger.filters):
        logger.addFilter(ExpectedErrorFilter())
