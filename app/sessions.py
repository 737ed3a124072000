"""Server-side sessions in Redis: short-lived until sign-in, and the 503 page when Redis is down."""

from datetime import timedelta

from flask import session
from flask.sessions import NullSession
from flask_session.defaults import Defaults
from flask_session.redis import RedisSessionInterface
from redis.exceptions import RedisError

from app.serializers import JSONOnlySessionSerializer


class UnavailableSession(NullSession):
    """Stands in for a session Redis could not load: reads as empty, remembers why."""

    def __init__(self, error):
        """Keep the RedisError that made the session unavailable."""
        super().__init__()
        self.error = error


# --8<-- [start:interface]
class RedisSessions(RedisSessionInterface):
    """Flask-Session's Redis sessions, as JSON, with two changes.

    - A session that is not permanent (nobody signed in: a form's CSRF token, a flash message)
      is stored for ANONYMOUS_SESSION_LIFETIME, not PERMANENT_SESSION_LIFETIME: a flood of
      anonymous GETs leaves keys that expire within the hour. Login makes the session permanent.
    - A RedisError while loading a session gives an UnavailableSession instead of an exception
      inside Flask's request setup (a bare 500): refuse_unavailable_session() turns it into the
      app's 503 page. A RedisError while saving one reaches the same page through Flask's 500.
    """

    def __init__(self, app):
        """Configure from the app's SESSION_* settings, with the JSON-only serializer."""
        config = app.config
        super().__init__(
            app,
            client=app.extensions["redis"]["sessions"],  # made by app.connections.init_redis
            key_prefix=config["SESSION_KEY_PREFIX"],
            use_signer=False,
            permanent=config["SESSION_PERMANENT"],
            sid_length=config.get("SESSION_ID_LENGTH", Defaults.SESSION_ID_LENGTH),
            serialization_format=config["SESSION_SERIALIZATION_FORMAT"],
        )
        self.serializer = JSONOnlySessionSerializer()
        self.anonymous_lifetime = timedelta(seconds=config["ANONYMOUS_SESSION_LIFETIME"])

    def open_session(self, app, request):
        """Load the session, or return an UnavailableSession if its Redis does not answer."""
        try:
            return super().open_session(app, request)
        except RedisError as error:
            return UnavailableSession(error)

    def save_session(self, app, session, response):
        """Save as Flask-Session does; a RedisError goes on to the 503 page, whose own save is skipped."""
        if getattr(session, "save_failed", False):
            return
        try:
            super().save_session(app, session, response)
        except RedisError:
            session.save_failed = True
            raise  # Flask's 500 handling; register_error_handlers() answers it with the 503 page

    def _upsert_session(self, session_lifetime, session, store_id):
        """Store the session with the lifetime its kind deserves (Flask-Session's storage hook)."""
        lifetime = session_lifetime if session.permanent else self.anonymous_lifetime
        super()._upsert_session(lifetime, session, store_id)


def refuse_unavailable_session():
    """before_request: a request whose session could not be loaded gets the 503 page."""
    if isinstance(session._get_current_object(), UnavailableSession):
        raise session.error


def init_sessions(app):
    """Use RedisSessions for `app` and refuse requests whose session Redis is down."""
    app.session_interface = RedisSessions(app)
    app.before_request(refuse_unavailable_session)
# --8<-- [end:interface]
