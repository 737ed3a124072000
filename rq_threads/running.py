"""One job running in a thread of its own, and how it is stopped: at its next Python instruction."""

import ctypes
import threading


class JobStopped(BaseException):
    """Raised in a job's thread by stop-job or stop-execution: the job ends STOPPED, on_stopped runs, no retry.

    A BaseException, like the KeyboardInterrupt it stands for, so that a job's own
    `except Exception` does not swallow it.
    """


class JobKilled(BaseException):
    """Raised in a job's thread by kill-horse or a cold shutdown: the job fails (and is retried if it may be).

    What happens to a job whose work horse RQ kills.
    """


def raise_in_thread(thread_id, exception_class):
    """Have `exception_class` raised in another thread at its next Python instruction (CPython's async exception)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception_class))


def clear_pending_in_this_thread():
    """Drop an async exception set for this thread that has not been raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)


class RunningJob:
    """A job, its execution and its thread; knows whether the job's function is running right now."""

    def __init__(self, job, queue, execution):
        """Nothing runs yet: the thread is started by the worker."""
        self.job, self.queue, self.execution = job, queue, execution
        self.thread = None
        self.lock = threading.Lock()
        self.in_function = False
        self.stop_with = None  # JobStopped or JobKilled, once a stop is asked for
        self.finalized = False  # True once the worker recorded the stop: the thread's own outcome is dropped

    def stop(self, exception_class=JobStopped):
        """Ask the job to stop: raised in its function if that runs now, else at its start (after its end: no effect).

        Returns True if the function was running: the caller then records the stop at once,
        without waiting for the function to reach its next Python instruction.
        """
        with self.lock:
            if self.stop_with is not None:
                return False
            self.stop_with = exception_class
            if not self.in_function:
                return False
            raise_in_thread(self.thread.ident, exception_class)
            self.finalized = exception_class is JobStopped
            return self.finalized

    @property
    def stopped_by_command(self):
        """True if a stop command (not a cold shutdown) ended this job."""
        return self.stop_with is JobStopped

    def wrap_perform(self):
        """Make `job.perform()` (called by RQ's perform_job in this thread) stoppable while it runs, and only then."""
        perform = self.job.perform

        def stoppable_perform():
            with self.lock:
                if self.stop_with is not None:
                    raise self.stop_with()
                self.in_function = True
            try:
                return perform()
            finally:
                with self.lock:
                    self.in_function = False
                    clear_pending_in_this_thread()  # a stop that was set but not raised yet ...
                    stop_with = self.stop_with
                if stop_with is not None:
                    raise stop_with()  # ... is raised here, so a stop asked for while the function ran always counts

        self.job.perform = stoppable_perform


__all__ = ["JobKilled", "JobStopped", "RunningJob"]
