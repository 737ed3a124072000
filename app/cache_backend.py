"""Flask-Caching's backend for the app: RedisCache on the app's own `cache` client, storing JSON."""

from flask_caching.backends.rediscache import RedisCache

from app.serializers import JSONCacheSerializer


class RoleRedisCache(RedisCache):
    """Flask-Caching's RedisCache on app.extensions['redis']['cache'] (plain Redis or Sentinel, app.connections).

    Values are JSON: cachelib's default serializer pickles, and would unpickle what Redis hands back.
    """

    serializer = JSONCacheSerializer()

    @classmethod
    def factory(cls, app, config, args, kwargs):
        """Build the cache on the app's `cache` client instead of a client of its own."""
        kwargs.update(host=app.extensions["redis"]["cache"], key_prefix=config["CACHE_KEY_PREFIX"])
        return cls(*args, **kwargs)
