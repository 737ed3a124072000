"""Take the next job of one queue and read its hash in one round trip: RQ's LMOVE and Job.fetch's HGETALL, in one script."""

from rq.exceptions import NoSuchJobError

# RQ's dequeue from one queue: LMOVE from the queue's list to its intermediate list (the job
# stays there until it is prepared), then HGETALL of the job's hash, two round trips. Here both
# run in one Lua script, so no other client acts between them, as a MULTI would make it. The
# job's key is built in the script from the id it took (a key not passed in KEYS: fine on one
# Redis server and with Sentinel, not on Redis Cluster, which RQ does not support either).
TAKE_AND_READ = """
local job_id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not job_id then
    return false
end
return {job_id, redis.call('HGETALL', ARGV[1] .. job_id)}
"""


class Taker:
    """The one-round-trip dequeue of one worker's single queue (RQ: Queue.lmove, then Queue._fetch_dequeued_job)."""

    def __init__(self, connection):
        """The script, registered on the worker's connection (redis-py sends EVALSHA, and loads it on NOSCRIPT)."""
        self.script = connection.register_script(TAKE_AND_READ)

    def take(self, queue, job_class, serializer):
        """The next (job, queue) of `queue` without waiting, or None if it is empty.

        As RQ's dequeue: a job id whose hash is gone is passed over (the id stays in the
        intermediate list for RQ's cleanup), and an error while reading the hash is raised with
        `job_id` and `queue` set on it, which the worker's handling of unreadable jobs reads.
        """
        while True:
            taken = self.script(keys=[queue.key, queue.intermediate_queue_key], args=[job_class.redis_job_namespace_prefix])
            if taken is None:
                return None
            job_id, flat = taken[0].decode(), taken[1]
            if not flat:
                continue  # RQ's dequeue: "Silently pass on jobs that don't exist (anymore)"
            job = job_class(job_id, connection=queue.connection, serializer=serializer)
            try:
                job.restore(dict(zip(flat[::2], flat[1::2], strict=True)))
            except NoSuchJobError:  # a hash without `data` (RQ's restore raises this): passed over, as RQ does
                continue
            except Exception as exc:
                exc.job_id, exc.queue = job_id, queue  # as Queue._fetch_dequeued_job attaches them
                raise
            return job, queue
