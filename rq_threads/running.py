"""One job running in a job thread (one at a time per thread), and how it is stopped: at its next Python instruction."""

import ctypes
import heapq
import itertools
import os
import threading
import time

from rq.timeouts import TimerDeathPenalty

from rq_threads import rq_internals

# The RunningJob whose thread this is (set by the job's own thread, read by its death penalty).
this_thread = threading.local()

# What became of a job's start record (RunningJob.start).
SENT = "sent"  # sent to Redis (or its reply was lost: it may be there)
HELD = "held"  # not sent yet: Redis does not show the job started
DROPPED = "dropped"  # the job ended while it was held: it is never sent


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


class _Flushed(BaseException):
    """Raised in a thread by its own flush_pending_in_this_thread, and caught there at once."""


def _check_point():
    """A Python call: CPython looks for a pending async exception when a call starts and ends."""


def flush_pending_in_this_thread():
    """Drop an async exception set for this thread that has not been raised yet.

    Clearing it with PyThreadState_SetAsyncExc(id, NULL) would leave CPython 3.11's "async
    exception pending" flag set with nothing to raise, and under a trace function (coverage.py,
    a debugger) the thread's next Python call then never starts. So one exception of our own
    replaces the pending one and is raised and caught here, which also clears that flag.
    """
    try:
        raise_in_thread(threading.get_ident(), _Flushed)
        for _ in range(100):  # CPython raises it at the first check point: the end of the call above
            _check_point()
    except _Flushed:
        return
    raise RuntimeError("a pending exception of this thread could not be flushed")  # never left to surface later


class RunningJob:
    """A job, its execution and its thread; knows whether the job's function is running right now."""

    def __init__(self, worker, job, queue):
        """Nothing runs yet: the thread is started by the worker."""
        self.worker, self.job, self.queue = worker, job, queue
        self.execution = rq_internals.new_execution(worker, job)  # not in Redis yet: its thread writes it (run)
        self.execution_written = False
        self.handed_at = time.monotonic()
        # The job's start record (ThreadPoolWorker.prepare_job_execution): SENT once sent (at once,
        # or later with record_start_after), HELD until then, DROPPED if the job ended before.
        self.start = SENT
        self.held_start = None  # what the start writes, until it is sent: (heartbeat TTL, the job's fields)
        self.in_intermediate_list = False  # taken into its queue's in-progress list (one queue), which the start leaves
        self.held_back = False  # the worker holds starts back (record_start_after)
        self.start_maybe_sent = False  # a send of the start was tried: it may be in Redis
        self.start_lock = threading.Lock()
        self.thread = None
        self.lock = threading.Lock()
        self.in_function = False
        self.stop_with = None  # JobStopped or JobKilled, once a stop is asked for
        self.finalized = False  # True once the worker recorded the stop: the thread's own outcome is dropped
        self.started = False  # the function was entered
        self.function_timed = False  # RQ's perform_job made the death penalty of the job's function

    def stop(self, exception_class=JobStopped, record_now=False):
        """Ask the job to stop: raised in its function if that runs now, else at its start (after its end: no effect).

        With `record_now`, returns True if the function was running: the caller then records the
        outcome at once, and the thread's own outcome, when its function gets there, is dropped.
        """
        with self.lock:
            if self.stop_with is not None:
                return False
            if not self.in_function and self.started:
                return False  # the function returned: too late, the job ends as it ended
            self.stop_with = exception_class
            if not self.in_function:
                return False
            raise_in_thread(self.thread.ident, exception_class)
            self.finalized = record_now
            return record_now

    @property
    def stopped_by_command(self):
        """True if a stop command (not a cold shutdown) ended this job."""
        return self.stop_with is JobStopped

    def run(self, perform_job):
        """In the job's own thread: `perform_job(job, queue, execution)`, with this thread known as this job's.

        RQ's forking worker writes the execution record (the started registry's entry) in its
        main loop before it forks the horse. Here the work loop's thread, which hands out
        every job, only makes the Execution; the job's thread writes it in the transaction
        that marks the job started (the worker's prepare_job_execution), or, if perform_job
        ended without getting there, right after it.
        """
        this_thread.running = self
        try:
            try:
                return perform_job(self.job, self.queue, self.execution)
            finally:
                if not self.execution_written:
                    self.execution_written = True
                    self.worker.write_execution_alone(self)
        finally:
            this_thread.running = None

    def wrap_perform(self):
        """Make `job.perform()` (called by RQ's perform_job in this thread) stoppable while it runs, and only then."""
        perform = self.job.perform

        def stoppable_perform():
            with self.lock:
                if self.stop_with is not None:
                    raise self.stop_with()
                self.in_function = self.started = True
            # RQ's perform_job has just set started_at to now(), in this thread; the job started when
            # the work loop handed it over (its Execution's created_at), in the order the jobs were taken.
            self.job.started_at = self.execution.created_at
            try:
                return perform()
            finally:
                with self.lock:
                    self.in_function = False
                    stop_with = self.stop_with
                    if stop_with is not None:
                        flush_pending_in_this_thread()  # a stop that was set but not raised yet ...
                if stop_with is not None:
                    raise stop_with()  # ... is raised here, so a stop asked for while the function ran always counts

        self.job.perform = stoppable_perform


class Watchdog:
    """One thread that waits for every job timeout of the process (RQ's TimerDeathPenalty starts a Timer thread per job).

    Deadlines sit in a heap; a cancelled one is marked and left there, and the heap is rebuilt
    without them once they are most of it. A deadline that falls due runs its function in a
    thread of its own, as a Timer does, so a slow one (it writes to Redis) delays no other.
    """

    def __init__(self):
        """No deadline yet; the thread starts with the first one."""
        self.condition = threading.Condition(threading.Lock())
        self.heap = []  # [deadline, order, function]; function None once cancelled or fired
        self.order = itertools.count()
        self.cancelled = 0
        self.thread = None

    def add(self, seconds, function):
        """Call `function()` in `seconds` s unless cancel() gets the returned entry first."""
        entry = [time.monotonic() + seconds, next(self.order), function]
        with self.condition:
            heapq.heappush(self.heap, entry)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self.run, name="rq-timeouts", daemon=True)
                self.thread.start()
            elif self.heap[0] is entry:  # the thread sleeps until a later deadline
                self.condition.notify()
        return entry

    def cancel(self, entry):
        """The deadline will not fire (one that fired already has run or runs: a Timer's cancel() is the same)."""
        with self.condition:
            if entry[2] is None:
                return
            entry[2] = None
            self.cancelled += 1
            if self.cancelled > 64 and 2 * self.cancelled > len(self.heap):
                self.heap = [each for each in self.heap if each[2] is not None]
                heapq.heapify(self.heap)
                self.cancelled = 0

    def run(self):
        """Sleep until the nearest deadline; start the function of each one that is due and not cancelled."""
        while True:
            with self.condition:
                while True:
                    while self.heap and self.heap[0][2] is None:
                        heapq.heappop(self.heap)
                        self.cancelled -= 1
                    if not self.heap:
                        self.condition.wait()
                        continue
                    wait = self.heap[0][0] - time.monotonic()
                    if wait <= 0:
                        entry = heapq.heappop(self.heap)
                        function, entry[2] = entry[2], None
                        break
                    self.condition.wait(wait)
            threading.Thread(target=function, name="rq-timeout", daemon=True).start()

    def after_fork(self):
        """In a forked child: the parent's thread and deadlines are not there (their jobs do not run here)."""
        self.__init__()


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG.after_fork)


class ThreadDeathPenalty(TimerDeathPenalty):
    """RQ's timer-based job timeout, timed by the shared Watchdog, which also records a job's timeout at the deadline.

    Raised in the job's thread, the timeout takes effect at the thread's next Python
    instruction; a thread blocked in a call (a socket read) gets there only when the call
    returns. So the worker records the job's timeout (failed, or retried) when it falls due,
    and the thread's outcome is dropped; its slot stays taken until the call returns.

    The first death penalty made in a job's thread is its function's (RQ's perform_job makes
    it before it calls the function); later ones time the job's callbacks. A callback's timeout
    is raised in its thread while the callback runs, as RQ raises it, and never after its
    `with` block: it must not reach RQ's bookkeeping or the thread's next job.
    """

    def __init__(self, timeout, exception=None, **kwargs):
        """RQ's arguments; remembers the running job of this thread (none outside a worker's job thread)."""
        if exception is None:
            super().__init__(timeout, **kwargs)
        else:
            super().__init__(timeout, exception, **kwargs)
        running = getattr(this_thread, "running", None)
        in_job_thread = running is not None and running.thread is threading.current_thread()
        self.running = running if in_job_thread and not running.function_timed else None  # the function's own
        self.times_callback = in_job_thread and running.function_timed
        if in_job_thread:
            running.function_timed = True
        self.lock = threading.Lock()
        self.active = False  # a callback runs inside the `with` block
        self.fired = False
        self._deadline = None

    def setup_death_penalty(self):
        """RQ's Timer, as a deadline of the shared watchdog thread (no thread started per job)."""
        if self._timeout > 0:
            self.active = True
            self._deadline = WATCHDOG.add(self._timeout, self.handle_death_penalty)

    def cancel_death_penalty(self):
        """RQ's Timer.cancel(), for the watchdog's deadline; a callback's timeout not raised by now never will be."""
        with self.lock:
            self.active = False
        if self._deadline is not None:
            WATCHDOG.cancel(self._deadline)
            self._deadline = None
        if self.fired:
            flush_pending_in_this_thread()  # the callback ended as it fell due: RQ counts the block as done

    def handle_death_penalty(self):
        """At the deadline: the worker records the timeout of a job's function; a callback's is raised in its thread."""
        if self.running is not None:
            if self.running.stop(self._exception, record_now=True):
                message = f"Task exceeded maximum timeout value ({self._timeout} seconds)"
                self.running.worker.record_timeout(self.running, self._exception, message)
            return None
        if not self.times_callback:
            return super().handle_death_penalty()
        with self.lock:
            if self.active:
                self.fired = True
                raise_in_thread(self._target_thread_id, self._exception)
        return None


__all__ = ["JobKilled", "JobStopped", "RunningJob", "ThreadDeathPenalty", "Watchdog"]
