"""A transaction sent as one script, run only while its guard keys are as expected: WATCH, read and EXEC in one round trip."""

import redis.exceptions

# RQ guards its success transaction with WATCH on the job's dependents set and reads the set
# (SMEMBERS) before MULTI ... EXEC: three round trips, for a set that almost never exists.
# Here the check and the writes run in one Lua script, which Redis runs as atomically as a
# MULTI: no other client acts between the check and the writes. KEYS[1] must not exist (the
# dependents set); KEYS[2], if given, must exist (the job's hash, which the writes only update).
# ARGV holds the commands one after the other, each as its length and then its words. The
# written keys are not passed in KEYS: fine on one Redis server and with Sentinel, not on
# Redis Cluster, which RQ does not support either.
RUN_UNLESS_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 or (#KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 0) then
    return 0
end
local i = 1
while i <= #ARGV do
    local length = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + length))
    i = i + length + 1
end
return 1
"""


class GuardedTransaction:
    """Sends the commands queued in a redis-py pipeline as one script, unless a guard key exists or a needed one does not."""

    def __init__(self, connection):
        """The script, registered on `connection` (redis-py sends EVALSHA, and loads it on NOSCRIPT)."""
        self.connection = connection
        self.script = connection.register_script(RUN_UNLESS_EXISTS)

    def pipeline(self):
        """A pipeline to queue the commands in (nothing is sent until run())."""
        return self.connection.pipeline(transaction=True)

    def run(self, pipeline, guard_key, needed_key=None):
        """Run the pipeline's commands if `guard_key` does not exist (and `needed_key` does); else raise WatchError, nothing written.

        WatchError is what redis-py raises when a WATCHed key changed before EXEC: the caller
        retries the way it would after a failed WATCH.
        """
        args = []
        for command, _options in pipeline.command_stack:
            words = [*command[0].split(), *command[1:]]  # redis-py names some commands in two words ("CLIENT SETNAME")
            args.append(len(words))
            args.extend(words)
        pipeline.reset()
        if not args:
            return
        if self.script(keys=[guard_key, needed_key] if needed_key else [guard_key], args=args) == 0:
            raise redis.exceptions.WatchError(f"{guard_key} exists" + (f" or {needed_key} does not" if needed_key else ""))
