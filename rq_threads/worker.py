"""ThreadPoolWorker: RQ's worker loop, with each job run by RQ's perform_job in one of up to N long-lived job threads."""

import contextvars
import itertools
import threading
import time
from queue import SimpleQueue

import redis.exceptions
from rq.command import parse_payload
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.logutils import blue, green
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.utils import get_version, now, utcformat
from rq.worker import BaseWorker, WorkerStatus

from rq_threads import rq_internals
from rq_threads.dequeue import Taker
from rq_threads.running import DROPPED, HELD, SENT, JobKilled, JobStopped, RunningJob, ThreadDeathPenalty, this_thread
from rq_threads.scheduler import ThreadScheduler, unreadable
from rq_threads.transaction import GuardedTransaction

NEVER = float("-inf")  # a time.monotonic() before any other


class ThreadPoolWorker(BaseWorker):
    """An RQ worker that runs up to `concurrency` jobs at once, each in a thread, in one process.

    The main thread dequeues while a slot is free and hands each job to a job thread (started
    when none is free, kept for the next jobs until the worker stops), which runs RQ's own
    perform_job (started registry, success, retries, failure, callbacks); one thread keeps the
    heartbeats of every running job, one thread (running.Watchdog) times every job's timeout,
    and with `with_scheduler` one runs RQ's scheduler. Jobs that wait on the network (mail,
    HTTP) release the GIL, so 25 threads keep 25 of them in flight.
    """

    # SIGALRM reaches the main thread only: RQ's timer-based death penalty raises in the job's thread,
    # and this one also records the timeout when it falls due (running.ThreadDeathPenalty).
    death_penalty_class = ThreadDeathPenalty
    concurrency = 25
    # How long a cold shutdown (a second SIGINT/SIGTERM) waits for stopped jobs to wind down.
    cold_shutdown_timeout = 5
    # The work loop's own heartbeats and suspension checks, at most once per this many seconds.
    work_loop_check_interval = 1.0
    # None: a job's start record (its started-registry entry, its execution record, STARTED on
    # its hash) is sent before its function runs, as RQ sends it. A number of seconds: the
    # record is held back, and the heartbeat thread sends it only for a job that still runs
    # that long after it was taken; a job that ends sooner goes from queued to its end, and its
    # end takes it out of the queue's in-progress list. Its failure paths send it first.
    record_start_after = None

    def __init__(self, queues, *args, concurrency=None, **kwargs):
        """RQ's worker arguments, plus how many jobs may run at once."""
        super().__init__(queues, *args, **kwargs)
        if concurrency is not None:
            self.concurrency = concurrency
        self.running = set()  # the RunningJobs handed to job threads and not ended
        self.running_changed = threading.Condition()
        self.jobs_ended = 0
        self.stopping = threading.Event()
        self.helper_threads = []
        self.job_threads = set()  # the long-lived job threads of the current work() call
        self.job_queue = SimpleQueue()  # RunningJobs handed to them; None tells one to end
        self.job_thread_numbers = itertools.count()  # each job thread's name is its own (a log line names one)
        self.thread_scheduler = None
        self.cold_shutdown = False
        self.tearing_down = False
        self.failure_lock = threading.Lock()  # RQ's failure handling reads one "stopped job" attribute
        self.work_loop_thread = None  # the thread in work(): its lone heartbeats are throttled
        self.handing_over = False  # execute_job is handing a job to a job thread
        self.work_loop_heartbeat_at = NEVER  # time.monotonic() of its last one
        self.suspension_checked_at = NEVER  # time.monotonic() of the last check outside burst mode
        self.taker = None  # the one-round-trip dequeue (rq_threads.dequeue), made at its first use
        self.counts_lock = threading.Lock()
        self.unsent_successes, self.unsent_working_seconds = 0, 0.0  # job threads' counts (send_job_counts)
        self.success_transaction = None  # the one-round-trip success (handle_job_success), made at its first use

    # --- the work loop -------------------------------------------------------------------------

    def work(self, burst=False, *args, with_scheduler=False, **kwargs):
        """RQ's work loop; the heartbeat thread and (with_scheduler, not burst) the scheduler thread live as long as it."""
        if self.record_start_after is not None and not self.record_start_after > 0:
            raise ValueError(f"record_start_after must be None or a number of seconds above 0, not {self.record_start_after!r}")
        self.stopping.clear()
        self.cold_shutdown = False
        self.work_loop_thread = threading.current_thread()
        self.work_loop_heartbeat_at = self.suspension_checked_at = NEVER
        self.job_threads, self.job_queue = set(), SimpleQueue()  # threads of an earlier call end on their own
        self.helper_threads = [threading.Thread(target=self.keep_heartbeats, name="rq-heartbeats", daemon=True)]
        if with_scheduler and not burst:
            self.thread_scheduler = ThreadScheduler(
                self.queues,
                connection=self.connection,
                serializer=self.serializer,
                worker=self,
                retry_locks_every=self.maintenance_interval,
            )
            self.scheduler = self.thread_scheduler  # what RQ's worker and its users look at
            self.helper_threads.append(
                threading.Thread(
                    target=self.thread_scheduler.run, args=(self.stopping,), name="rq-scheduler", daemon=True
                )
            )
        for thread in self.helper_threads:
            thread.start()
        # In burst mode RQ's own one-round scheduler runs (no process is started for it).
        try:
            return super().work(burst, *args, with_scheduler=with_scheduler and burst, **kwargs)
        finally:
            self.work_loop_thread = None

    # --8<-- [start:threads]
    def execute_job(self, job, queue):
        """Hand the job to a job thread (started if none is free), then return once a slot is free for the next one."""
        # Busy from here on, whatever a job thread that ends meanwhile says: RQ's warm-shutdown
        # handler raises StopRequested in this thread when the worker is idle, which would leave
        # this job half started; busy, it lets the job run and stops the loop after it.
        self.handing_over = True
        try:
            running = self.running_job(job, queue)
            with self.running_changed:
                self.running.add(running)
                self.job_queue.put(running)
                if len(self.job_threads) < len(self.running):  # each running job has a thread, or one that is free now
                    self.start_job_thread()
        finally:
            self.handing_over = False
        with self.running_changed:
            while len(self.running) >= self.concurrency:
                self.running_changed.wait(1)
                if len(self.job_threads) < len(self.running):
                    self.start_job_thread()

    def running_job(self, job, queue):
        """The job as a RunningJob, its function stoppable; its Execution is made here and written by its thread."""
        running = RunningJob(self, job, queue)
        running.wrap_perform()
        return running

    def start_job_thread(self):
        """One more long-lived job thread, which runs the jobs handed to this work() call's queue."""
        thread = threading.Thread(
            target=self.run_jobs, args=(self.job_queue,), name=f"rq-job-{next(self.job_thread_numbers)}", daemon=True
        )
        self.job_threads.add(thread)
        thread.start()

    def run_jobs(self, jobs):
        """A job thread: run each job it is handed, until it is handed None (teardown)."""
        try:
            while (running := jobs.get()) is not None:
                running.thread = threading.current_thread()
                try:
                    # A context of its own per job, as a new thread had: what a stopped job left
                    # pushed (a Flask app context is a context variable) does not reach the next one.
                    contextvars.Context().run(self.run_job, running)
                except BaseException:  # freeing the slot itself raised (Redis away): the thread goes on
                    self.log.exception("Worker %s: the end of job %s raised", self.name, running.job.id)
        finally:
            with self.running_changed:
                self.job_threads.discard(threading.current_thread())

    def run_job(self, running):
        """RQ's life cycle for one job, then free its slot."""
        try:
            running.run(self.perform_job)
        except BaseException:  # RQ's bookkeeping itself raised: what a forking worker sees as a dead horse
            self.log.exception("Worker %s: the thread of job %s crashed", self.name, running.job.id)
            self.fail_crashed_job(running)
        finally:
            with self.running_changed:
                self.running.discard(running)
                self.jobs_ended += 1  # what a job makes ready (dependents, retries) is on the queue by now
                self.running_changed.notify_all()  # first: a state write that raises (Redis away) must not delay the waiters
                if self.get_state() == WorkerStatus.BUSY:
                    self.set_state(WorkerStatus.IDLE)  # stays busy while another job runs

    # --8<-- [end:threads]

    def fail_crashed_job(self, running):
        """A job whose thread died outside its function: failed (or retried) unless it got to an end already."""
        job = running.job
        try:
            if job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED):
                return
            job.ended_at = now()
            self.handle_job_failure(
                job, running.queue, exc_string="Job thread terminated unexpectedly", execution=running.execution
            )
        except Exception:  # Redis away: RQ's abandoned-job cleanup finds the job later
            self.log.exception("Worker %s: could not record the failure of job %s", self.name, job.id)

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's heartbeat; a job's thread (RQ's prepare_job_execution) never shortens the worker's own TTL below RQ's.

        RQ's work loop sends a lone heartbeat (3 round trips) three times per job; here it sends
        at most one a second (work_loop_check_interval). The worker key lives worker_ttl + 60 s,
        and while jobs run the heartbeat thread renews it every job_monitoring_interval, so it
        never expires. Heartbeats with a timeout or a pipeline, and calls outside work(), are
        sent as RQ sends them.
        """
        if timeout is None and pipeline is None and threading.current_thread() is self.work_loop_thread:
            if time.monotonic() - self.work_loop_heartbeat_at < self.work_loop_check_interval:
                return
            self.work_loop_heartbeat_at = time.monotonic()
        super().heartbeat(max(timeout or 0, self.worker_ttl + 60), pipeline=pipeline)
        if pipeline is None:
            self.send_job_counts()

    def prepare_job_execution(self, job, remove_from_intermediate_queue=False):
        """RQ's, in a job's thread with the job's execution record in the same transaction, less the worker heartbeat.

        RQ's forking worker writes the execution record (RQ's prepare_execution: the started
        registry's entry, the worker busy) in one transaction before it forks, and the horse
        then marks the job started in a second one. Here the job's thread sends both in one
        (RunningJob.run made the Execution; rq_internals.write_execution). The worker
        heartbeat RQ adds keeps a forking worker's key alive while its horse runs; here the
        heartbeat thread and the work loop keep it. The transaction is sent by send_held_start:
        at once, or, with record_start_after, later if the job still runs (and only the
        worker's busy state, if it was idle, is sent now). Called from any other thread (RQ's
        tests call it directly), it is RQ's as it is.
        """
        this_thread.ended_job = None  # handle_execution_ended sets it
        running = getattr(this_thread, "running", None)
        if running is None or running.execution_written:
            return super().prepare_job_execution(job, remove_from_intermediate_queue)
        running.execution_written = True  # tried: if the transaction fails, RQ's failure path cleans up after it
        self.log.debug("Worker %s: preparing for execution of job ID %s", self.name, job.id)
        # RQ's prepare_for_execution sets the job's fields here and now; what it writes to the
        # job's hash goes with the rest of the start, sent now or held (record_start_after).
        job_fields = rq_internals.started_fields(job, self.name)
        running.held_start = (self.get_heartbeat_ttl(job), job_fields)
        running.start, running.in_intermediate_list = HELD, remove_from_intermediate_queue
        if self.record_start_after is None:
            self.send_held_start(running)
        else:
            running.held_back = True
            if BaseWorker.get_state(self) != WorkerStatus.BUSY:
                self.set_state(WorkerStatus.BUSY)  # sent now: `rq info` shows the worker busy though no start may be sent
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    # --- a start held back (record_start_after) ------------------------------------------------

    def send_held_start(self, running):
        """Send a job's held-back start record now, unless it was sent or dropped already."""
        with running.start_lock:
            if running.start != HELD:
                return
            heartbeat_ttl, job_fields = running.held_start
            job = running.job
            with self.connection.pipeline() as pipeline:
                rq_internals.write_execution(self, running.execution, job, heartbeat_ttl, pipeline)
                pipeline.hset(job.key, mapping=job_fields)  # with the job's heartbeat (last_heartbeat)
                pipeline.persist(job.key)
                if running.in_intermediate_list:
                    pipeline.lrem(running.queue.intermediate_queue_key, 1, job.id)
                if running.held_back:
                    # Set by RQ's maintenance while the start was held; left, a later attempt of the
                    # same job would look stuck in the list for more than a minute, and be failed.
                    pipeline.delete(rq_internals.first_seen_key(running.queue, job.id))
                running.start_maybe_sent = True  # from here on: if the reply is lost, it may be in Redis
                pipeline.execute()
            running.start, running.held_start = SENT, None  # not before: a send that raised is tried again

    def send_held_start_of(self, execution):
        """send_held_start for the job of that execution, if it runs here (a failure path: RQ's expects the record)."""
        running = self.running_of(execution)
        if running is not None:
            self.send_held_start(running)

    def running_of(self, execution):
        """The RunningJob of that execution (None, or None if it does not run here): this thread's own first."""
        if execution is None:
            return None
        running = getattr(this_thread, "running", None)
        if running is not None and running.execution.id == execution.id:
            return running
        return self.running_execution(execution.id)

    def drop_held_start(self, running):
        """Never send the job's start record, if it is still held (the job succeeded before it was due).

        True if nothing of it can be in Redis: it was held and no send of it was tried.
        """
        with running.start_lock:
            if running.start != HELD:
                return False
            running.start, running.held_start = DROPPED, None
            return not running.start_maybe_sent

    def cleanup_execution(self, job, pipeline, execution=None):
        """RQ's, in every end of a job (success, failure, retry); for a job whose start was held back, more or less.

        More: its id leaves the queue's in-progress list and RQ's first-seen key is deleted, as
        RQ's start would have done, whether or not the start was sent (or its send raised).
        Less: for a start never sent, RQ's removal of the execution record, which is not in Redis.
        """
        running = self.running_of(execution)
        if running is not None and running.held_back:
            if running.in_intermediate_list:
                pipeline.lrem(running.queue.intermediate_queue_key, 1, job.id)
                pipeline.delete(rq_internals.first_seen_key(running.queue, job.id))
            if running.start == DROPPED and not running.start_maybe_sent:
                self.executions.pop(execution.id, None)
                return None
        return super().cleanup_execution(job, pipeline=pipeline, execution=execution)

    def send_due_starts(self, held_for):
        """Send each start record held back for `held_for` seconds or longer (its job still runs)."""
        for running in list(self.running):
            if running.start == HELD and time.monotonic() - running.handed_at >= held_for:
                try:
                    self.send_held_start(running)
                except Exception:  # Redis away, say: still held, tried again; the heartbeat thread must go on
                    self.log.warning("Worker %s: the start of job %s could not be sent", self.name, running.job.id,
                                     exc_info=True)

    def write_execution_alone(self, running):
        """Write a job's execution record in a transaction of its own (its perform_job ended before preparing the job)."""
        with self.connection.pipeline() as pipeline:
            rq_internals.write_execution(self, running.execution, running.job, self.get_heartbeat_ttl(running.job), pipeline)
            pipeline.execute()

    def handle_job_success(self, job, queue, started_job_registry, execution):
        """RQ's, in a job's thread in one round trip when the job has no dependents; RQ's own otherwise.

        RQ WATCHes the job's dependents set, reads it, then sends its writes in MULTI ... EXEC:
        three round trips. Here the same writes, queued by the same RQ calls in the same order,
        go to Redis as one script that first checks that the set does not exist
        (rq_threads.transaction), with one change: the job's hash gets only the fields that
        changed since it was read (record_finished), where RQ writes all of it again. So the
        script also checks that the hash is still there. If the set exists or the hash is gone,
        nothing was written, and RQ's handle_job_success runs as it is: it moves the dependents
        to ready, and it writes the whole hash again. A job that repeats (RQ's Repeat) is left to
        RQ as well.
        """
        running = getattr(this_thread, "running", None)
        if running is None or job.repeats_left:
            if running is not None:
                self.send_held_start(running)
            return super().handle_job_success(job, queue, started_job_registry, execution)
        never_started = self.drop_held_start(running)  # from here on the heartbeat thread cannot send it
        if self.success_transaction is None:
            self.success_transaction = GuardedTransaction(self.connection)
        self.log.debug("Worker %s: handling successful execution of job %s", self.name, job.id)
        with self.success_transaction.pipeline() as pipeline:
            # The body of RQ's handle_job_success between its MULTI and its EXEC, without a repeat
            # and without the worker's counters, which are added up once the script ran (count_success).
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if never_started and job.ttl is not None:
                pipeline.persist(job.key)  # as RQ's start: the TTL a job was enqueued with ends when it runs
            if result_ttl != 0:
                self.record_finished(job, result_ttl, execution, pipeline)
            self.expire_finished(job, result_ttl, pipeline)
            job._status = JobStatus.FINISHED
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            try:
                self.success_transaction.run(pipeline, guard_key=job.dependents_key, needed_key=job.key)
            except redis.exceptions.WatchError:  # dependents, or the hash gone: nothing was written
                left_to_rq = True
            else:
                left_to_rq = False
        if left_to_rq:  # RQ's own path writes the same, moves the dependents to ready, saves the whole hash
            if never_started and job.ttl is not None:
                self.connection.persist(job.key)
            return super().handle_job_success(job, queue, started_job_registry, execution)
        self.count_success(job.ended_at - job.started_at)
        release_slot(job)
        described = f"{job.description} job" if self.log_job_description else f"job {job.id}"
        self.log.info("Successfully completed %s in %ss on worker %s", described, job.ended_at - job.started_at, self.name)
        return None

    def record_finished(self, job, result_ttl, execution, pipeline):
        """What RQ's Job._handle_success writes, in `pipeline`, but only the job's fields that changed while it ran.

        RQ sets the status, then saves the whole job (about 1 KB: its arguments compressed
        again, its description, its callbacks), then adds its result and its entry in the
        finished registry. The job's thread changed four fields since the job was read:
        status, started_at (running.RunningJob.wrap_perform), ended_at and last_heartbeat
        (handle_execution_ended), and the worker's name, which prepare_job_execution wrote
        unless it held the job's start back (record_start_after).
        """
        pipeline.hset(job.key, mapping={
            "status": JobStatus.FINISHED,
            "worker_name": job.worker_name,
            "started_at": utcformat(job.started_at),
            "ended_at": utcformat(job.ended_at),
            "last_heartbeat": utcformat(job.last_heartbeat),
        })
        Result.create(job, Result.Type.SUCCESSFUL, return_value=rq_internals.return_value(job), ttl=result_ttl,
                      worker_name=self.name, pipeline=pipeline, execution_id=execution.id,
                      execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
        job.finished_job_registry.add(job, result_ttl, pipeline)

    def expire_finished(self, job, result_ttl, pipeline):
        """RQ's Job.cleanup(result_ttl), less the EXPIREs of two sets that a job in the success script does not have.

        Job.cleanup sets the TTL of the job's hash, of its set of dependent jobs and of its set
        of dependencies. The script runs only when the first set does not exist, and the second
        exists only for a job enqueued with `depends_on`.
        """
        if result_ttl is not None and result_ttl > 0 and not rq_internals.dependency_ids(job):
            pipeline.expire(job.key, result_ttl)
        else:
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)

    def count_success(self, time_taken):
        """Add one success and its time to the worker's counters, sent with its next heartbeat (send_job_counts)."""
        with self.counts_lock:
            self.unsent_successes += 1
            self.unsent_working_seconds += time_taken.total_seconds()

    def send_job_counts(self):
        """Add the job threads' counts to the worker's hash, in one round trip: at most once a second, and at teardown.

        RQ sends HINCRBY and HINCRBYFLOAT in every job's success transaction; they are
        statistics (`rq info`, rq-dashboard), and for the successes of handle_job_success's
        script they lag by at most a heartbeat (RQ's own path still sends them in its
        transaction). If Redis does not answer, they are kept for the next time.
        """
        with self.counts_lock:
            successes, seconds = self.unsent_successes, self.unsent_working_seconds
            self.unsent_successes, self.unsent_working_seconds = 0, 0.0
        if not successes and not seconds:
            return
        try:
            with self.connection.pipeline() as pipeline:
                pipeline.hincrby(self.key, "successful_job_count", successes)
                pipeline.hincrbyfloat(self.key, "total_working_time", seconds)
                pipeline.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            with self.counts_lock:
                self.unsent_successes += successes
                self.unsent_working_seconds += seconds

    def handle_job_retry(self, job, queue, retry, started_job_registry, execution):
        """RQ's, for a job that returned a Retry, once its held-back start record, if any, is sent."""
        self.send_held_start_of(execution)
        return super().handle_job_retry(job, queue, retry, started_job_registry, execution)

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        """RQ's, except that in a job's own thread the job's heartbeat joins the job's last transaction.

        RQ writes `last_heartbeat` to the job's hash at once (a lone round trip), then records
        the outcome in one transaction. Here the value is only set on the job, and that
        transaction writes it: a success with the job's other changed fields (record_finished,
        or RQ's save of the whole job), a failure in increment_failed_job_count, which RQ calls
        inside it. From any other thread (a timeout, a stop command) it is RQ's as it is.
        """
        if getattr(this_thread, "running", None) is None:
            return super().handle_execution_ended(job, queue, heartbeat_ttl)
        job.ended_at = job.last_heartbeat = now()
        this_thread.ended_job = job
        return None

    def increment_failed_job_count(self, pipeline=None):
        """RQ's counter, plus the `last_heartbeat` of this thread's job that ended (handle_execution_ended set it)."""
        job = getattr(this_thread, "ended_job", None)
        if job is not None:
            job.heartbeat(job.last_heartbeat, 0, pipeline=pipeline)
        super().increment_failed_job_count(pipeline=pipeline)

    def check_for_suspension(self, burst):
        """RQ's check for `rq suspend`, at most once a second outside burst mode (it is a round trip and 6 commands).

        The first check of each work() and every check in burst mode run as RQ runs them, so
        `rq suspend` takes effect within work_loop_check_interval (RQ: before the next job).
        """
        if not burst:
            if time.monotonic() - self.suspension_checked_at < self.work_loop_check_interval:
                return
            self.suspension_checked_at = time.monotonic()
        super().check_for_suspension(burst)

    def get_state(self):
        """RQ's state, except busy while execute_job hands a job over (RQ's shutdown handler reads it)."""
        return WorkerStatus.BUSY if self.handing_over else super().get_state()

    def set_state(self, state, pipeline=None):
        """RQ's states, except that a worker with any job in flight (not stopped) reads busy (rq info, rq-dashboard).

        A lone write of the state it already has is not sent: RQ asks for `idle` before every
        dequeue and after every job, which here, with jobs running, would write `busy` again.
        """
        if state == WorkerStatus.IDLE and (self.handing_over or any(not r.finalized for r in list(self.running))):
            state = WorkerStatus.BUSY
            if pipeline is None and self.get_state() == WorkerStatus.BUSY:
                return
        super().set_state(state, pipeline=pipeline)

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue, in one-second slices that look for `rq suspend` and a stop request between them.

        Burst mode: when the queues are empty but jobs still run, wait for them (they may enqueue
        dependents or retries) and look again; quit only when nothing runs and nothing is queued.
        """
        idle_since = time.monotonic()
        while True:
            if timeout is None:
                ended_before = self.jobs_ended
                result = self.dequeue_readable(None, max_idle_time)
                if result is not None or not self.wait_for_a_job_to_end(ended_before):
                    return result
                continue
            result = self.dequeue_readable(1, max_idle_time=1)
            if result is not None or rq_internals.stop_requested(self):
                return result
            if max_idle_time is not None and not self.running and time.monotonic() - idle_since >= max_idle_time:
                return None
            if self.running:
                idle_since = time.monotonic()
            self.check_for_suspension(False)

    def wait_for_a_job_to_end(self, ended_before):
        """Block until a job ends after `ended_before` jobs had ended (True), or say at once that none runs (False)."""
        with self.running_changed:
            while self.jobs_ended == ended_before:
                if not self.running:
                    return False
                self.running_changed.wait(1)
            return True

    def dequeue_readable(self, timeout, max_idle_time):
        """RQ's dequeue, except that a job whose hash cannot be read goes to handle_unreadable_job and the worker goes on."""
        while True:
            try:
                return self.take_waiting_job() or super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except StopRequested:
                raise
            except Exception as exc:
                job_id = rq_internals.dequeue_error_job_id(exc)
                if job_id is None:
                    raise
                self.handle_unreadable_job(job_id, rq_internals.dequeue_error_queue(exc), exc)

    def take_waiting_job(self):
        """A job already waiting on the worker's one queue, taken and read in one round trip (None: RQ's dequeue waits).

        What RQ's dequeue does around its LMOVE and HGETALL is done here too: the lone
        heartbeat (throttled), the maintenance tasks when due, the queue order kept by the
        dequeue strategy, the server version on the job, and the line that names the job.
        """
        # As RQ: LMOVE to an intermediate list for one queue on Redis 6.2+; several queues: LPOP, no such list.
        if len(self.queues) != 1 or get_version(self.connection) < (6, 2, 0):
            return None
        if self.taker is None:
            self.taker = Taker(self.connection)
        try:
            self.heartbeat()
            if self.should_run_maintenance_tasks:
                self.run_maintenance_tasks()
            result = self.taker.take(self.queues[0], self.job_class, self.serializer)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return None  # RQ's dequeue, next, logs it and waits for Redis as it does
        if result is not None:
            job, queue = result
            self.reorder_queues(reference_queue=queue)
            job.redis_server_version = self.get_redis_server_version()
            if self.log_job_description:
                self.log.info("Worker %s: %s: %s (%s)", self.name, green(queue.name), blue(job.description), job.id)
            else:
                self.log.info("Worker %s: %s: %s", self.name, green(queue.name), job.id)
        return result

    # --- heartbeats --------------------------------------------------------------------------------

    def keep_heartbeats(self):
        """Every job_monitoring_interval, tell Redis that the worker and each running job are alive.

        With record_start_after, it also sends the start records that fall due, looking as often.
        """
        wake_every = self.job_monitoring_interval
        if self.record_start_after is not None:
            wake_every = min(wake_every, self.record_start_after)
        next_beat = time.monotonic() + self.job_monitoring_interval
        while not self.stopping.wait(max(0.0, min(wake_every, next_beat - time.monotonic()))):
            if self.record_start_after is not None:
                self.send_due_starts(self.record_start_after)
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.job_monitoring_interval
            for running in list(self.running):
                if not running.execution_written or running.start != SENT:  # nothing in Redis to keep alive (yet)
                    continue
                try:
                    self.maintain_heartbeats(running.job, running.execution)
                except Exception:  # a job that just ended, Redis away: this thread must go on
                    self.log.debug("heartbeat for job %s skipped", running.job.id, exc_info=True)

    # --- stopping jobs: stop-job, stop-execution, kill-horse, cold shutdown ----------------------

    def handle_payload(self, message):
        """RQ's commands, for a worker that runs many jobs: stop-job finds its job among them all; kill-horse stops them."""
        payload = parse_payload(message)
        if payload.get("command") == "kill-horse":  # RQ's handler looks for a horse pid; there is none here
            self.log.info("Worker %s: received kill horse command", self.name)
            self.kill_horse()
            return
        if payload.get("command") == "stop-job":
            self.log.debug("Worker %s: received command to stop job %s", self.name, payload.get("job_id"))
            running = [r for r in list(self.running) if r.job.id == payload.get("job_id")]
            if not running:
                self.log.warning("Worker %s: not working on job %s, command ignored.", self.name, payload.get("job_id"))
            for one in running:
                self.stop_running_job(one)
            return
        super().handle_payload(message)

    def running_execution(self, execution_id):
        """The RunningJob of that execution id, if it runs here (None if not)."""
        for running in list(self.running):
            if running.execution.id == execution_id:
                return running
        return None

    def request_stop_execution(self, execution_id):
        """stop-execution: stop that one execution, if it runs here."""
        running = self.running_execution(execution_id)
        if running is None:
            self.log.warning("Worker %s: not running execution %s, command ignored.", self.name, execution_id)
            return
        self.stop_running_job(running)

    def stop_running_job(self, running):
        """Stop one job: recorded STOPPED at once (on_stopped runs), its function stopped at its next Python instruction.

        A function blocked in a call (a socket read, time.sleep) stops when that call returns;
        its slot stays taken until then. A job whose function already returned runs on.
        """
        if running.stop(JobStopped, record_now=True):
            self._handle_stopped_job(running.job, running.queue, running.execution)
            self.set_state(WorkerStatus.IDLE)  # busy only if another job runs

    def _handle_stopped_job(self, job, queue, execution):
        """Record a job stopped on request, as RQ's forking Worker does: on_stopped runs, then STOPPED in the failed registry.

        A raising on_stopped callback is logged and does not keep the job from being recorded.
        """
        self.log.warning("Worker %s: job %s stopped by user, moving job to FailedJobRegistry", self.name, job.id)
        self.send_held_start_of(execution)
        self.handle_execution_ended(job, queue, job.stopped_callback_timeout)
        try:
            rq_internals.execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", self.name, job.id)
        with self.failure_lock:
            rq_internals.mark_stopped(self, job.id)
            try:
                super().handle_job_failure(
                    job, queue=queue, exc_string="Job stopped by user, its thread stopped.", execution=execution
                )
            finally:
                rq_internals.mark_stopped(self, None)

    def kill_horse(self, sig=None):
        """kill-horse: every running job fails as if its horse died (a thread cannot be killed: at its next Python instruction)."""
        for running in list(self.running):
            running.stop(JobKilled)

    def wait_for_horse(self):
        """Nothing to wait for: teardown() waits until no job runs, then hands each job thread its end."""
        return None, None, None

    def record_timeout(self, running, exception_class, message):
        """A job's function ran past its timeout: RQ's failure path now (retry or failed registry), from the timer thread."""
        error = exception_class(message)
        self.log.warning(
            "Worker %s: job %s timed out; recorded now, its thread ends at its next instruction",
            self.name,
            running.job.id,
        )
        rq_internals.finalize_failure(
            self, running.job, running.queue, running.execution, (exception_class, error, None)
        )
        self.set_state(WorkerStatus.IDLE)  # busy only if another job runs

    def _finalize_failure(self, job, queue, execution, exc_info):
        """RQ's failure handling, except for a job whose stop was recorded already (stop_running_job) or comes now."""
        self.send_held_start_of(execution)  # RQ's failure path cleans up after the record
        running = self.running_execution(execution.id)
        if running is not None and running.finalized:
            return None
        if running is not None and running.stopped_by_command:  # stopped before its function started
            running.finalized = True
            return self._handle_stopped_job(job, queue, execution)
        return super()._finalize_failure(job, queue, execution, exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        """RQ's failure handling; RQ reads one "stopped job" attribute for all threads, so one thread at a time here."""
        self.send_held_start_of(execution)
        with self.failure_lock:
            return super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def request_force_stop(self, signum, frame):
        """A second SIGINT/SIGTERM (cold shutdown): cut every running job; each goes through RQ's failure path (retried)."""
        if rq_internals.within_a_second_of_the_first_signal(self):
            self.log.debug("Worker %s: shutdown signal ignored, received twice in less than 1 second", self.name)
            return
        self.log.warning("Worker %s: cold shut down, stopping %d running job(s)", self.name, len(self.running))
        self.cold_shutdown = True
        for running in list(self.running):
            running.stop(JobKilled)
        if not self.tearing_down:  # teardown() is waiting for the jobs: it raises SystemExit once they ended
            raise SystemExit()

    # --- shutdown --------------------------------------------------------------------------------

    def teardown(self):
        """Wait for the running jobs (a warm shutdown), then RQ's teardown: the worker is unregistered in any case."""
        self.tearing_down = True
        try:
            self.wait_for_running_jobs()
        finally:
            self.send_job_counts()
            self.end_job_threads()
            self.stopping.set()
            for thread in self.helper_threads:
                thread.join(timeout=5)
            super().teardown()
            self.tearing_down = False
        if self.cold_shutdown:
            raise SystemExit()  # as RQ's cold shutdown: work() does not return

    def end_job_threads(self):
        """Tell each job thread to end once it is free (one still in a blocking call ends when the call returns)."""
        with self.running_changed:
            for _ in range(len(self.job_threads)):
                self.job_queue.put(None)

    def unsubscribe(self):
        """RQ's, except that the pubsub thread is told to stop first, so the reply to UNSUBSCRIBE ends its wait.

        In RQ's order, the reply can arrive before the stop flag is set, the thread waits for the
        next message again, and the worker exits a second late (the join's timeout).
        """
        if self.pubsub_thread:
            self.pubsub_thread.stop()
        super().unsubscribe()

    def wait_for_running_jobs(self):
        """Until every job thread ended; after a cold shutdown at most cold_shutdown_timeout seconds."""
        deadline = None
        while True:
            with self.running_changed:
                if not self.running:
                    return
                if self.cold_shutdown and deadline is None:
                    deadline = time.monotonic() + self.cold_shutdown_timeout
                if deadline is not None and time.monotonic() >= deadline:
                    self.send_due_starts(0)  # what RQ's abandoned-job cleanup looks for
                    self.log.warning(
                        "Worker %s: %d job(s) still in a blocking call, left to RQ's abandoned-job cleanup",
                        self.name,
                        len(self.running),
                    )
                    return
                self.set_state(WorkerStatus.BUSY)
                self.running_changed.wait(0.2)

    # --- a job hash that cannot be read ------------------------------------------------------------

    def queue_named(self, name):
        """This worker's Queue of that name (a new one if it does not listen there)."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        return self.queue_class(name, connection=self.connection, serializer=self.serializer, job_class=self.job_class)

    def clean_registries(self):
        """RQ's maintenance, after handing expired started jobs whose hash cannot be read to handle_unreadable_job.

        RQ's StartedJobRegistry.cleanup() fetches each one and stops at the first it cannot read,
        and the worker quits ("found an unhandled exception"), again at every restart.
        """
        for queue in self.queues:
            registry = StartedJobRegistry(
                queue.name, connection=self.connection, serializer=self.serializer, job_class=self.job_class
            )
            for job_id in registry.get_expired_job_ids():
                error = unreadable(job_id, self.connection, self.serializer, self.job_class)
                if error is not None:
                    self.handle_unreadable_job(job_id, queue, error, registry)
        super().clean_registries()

    def handle_unreadable_job(self, job_id, queue, exc, registry=None):
        """A job hash that cannot be decoded: take it out of `registry` (or the queue's in-progress list) and log it.

        The hash itself is left as it is for someone to look at. Subclasses may do more (the app
        turns it into a readable failed job).
        """
        self.log.error(
            "Worker %s: job %s cannot be read (%s: %s); taken out of %s",
            self.name,
            job_id,
            type(exc).__name__,
            exc,
            registry.key if registry is not None else queue.intermediate_queue_key,
        )
        self.forget_unreadable(job_id, queue, registry)

    def forget_unreadable(self, job_id, queue, registry=None, pipeline=None):
        """Remove the id from the registry it sits in, or from the queue's in-progress list (where dequeue left it)."""
        connection = pipeline if pipeline is not None else self.connection
        if registry is not None:
            rq_internals.remove_registry_entries(registry, job_id, connection)
        else:
            connection.lrem(queue.intermediate_queue_key, 1, job_id)


__all__ = ["JobStatus", "ThreadPoolWorker"]
