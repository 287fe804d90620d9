"""Per-item jobs in a pool of forked processes, each with OpenCV single-threaded."""
import collections
import itertools
import signal

__all__ = ["jobs_results"]


def _init_worker():
    import cv2
    cv2.setNumThreads(1)  # one frame per process; OpenCV's own threads would only oversubscribe


def _init_pool_worker():
    _init_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks


def jobs_results(job, jobs, workers, serial_single_thread=True):
    """`job(j)` for each of `jobs`, in order: in a pool of `workers` forked processes, each with OpenCV
    single-threaded; with `workers` <= 1 in this process, whose OpenCV is then made single-threaded too only if
    `serial_single_thread`."""
    if workers <= 1:
        if serial_single_thread:
            _init_worker()
        for j in jobs:
            yield job(j)
        return
    import multiprocessing as mp

    # A few tasks in flight, and on any exit close + join instead of Pool.terminate: terminating a worker while it
    # writes its result leaves the result queue's lock held, and the pool's shutdown then waits on it forever.
    jobs, pending = iter(jobs), collections.deque()
    pool = mp.get_context("fork").Pool(workers, initializer=_init_pool_worker)
    try:
        for j in itertools.islice(jobs, 2 * workers):
            pending.append(pool.apply_async(job, (j,)))
        while pending:
            result = pending.popleft().get()
            pending.extend(pool.apply_async(job, (j,)) for j in itertools.islice(jobs, 1))
            yield result
    finally:
        pool.close()
        pool.join()
