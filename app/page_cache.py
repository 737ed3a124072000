"""A page cache in front of the app: cached pages go to visitors without a session, before Flask does any work."""

from flask_login.config import COOKIE_NAME as REMEMBER_COOKIE_DEFAULT
from redis.exceptions import RedisError
from werkzeug.http import parse_cookie
from werkzeug.sansio.utils import host_is_trusted


class AnonymousPageCache:
    """WSGI middleware that answers a GET for a cached page straight from Redis.

    A visitor with neither a session cookie nor a remember-me cookie is signed out and has
    no flash messages waiting (both live in the session), so the page is the same one
    everybody gets. For them, this skips what Flask would do before reaching the cache:
    the request context, the session, Flask-Login and Flask-Limiter's hooks (about 80% of
    a cached page's time). Everybody else, a miss, and a Redis error go on to the app,
    whose view renders the page and stores it under the same key.

    Responses from here skip the app's after_request hooks, so the headers every page carries
    (app.headers' security headers) are passed in and sent here too; and Flask's check of the
    Host header, so a request for a host outside TRUSTED_HOSTS goes on to the app (its 400).
    """

    HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Vary", "Cookie")]

    def __init__(self, app, cache, pages, extra_headers=()):
        """Wrap `app`'s WSGI callable; `pages` maps a path to its key in `cache` (Flask-Caching)."""
        with app.app_context():
            self.backend = cache.cache  # this app's Redis backend: usable without an app context
        self.wsgi_app = app.wsgi_app
        self.pages = pages
        self.headers = [*self.HEADERS, *extra_headers]
        self.private_cookies = {app.config["SESSION_COOKIE_NAME"], app.config.get("REMEMBER_COOKIE_NAME", REMEMBER_COOKIE_DEFAULT)}
        self.trusted_hosts = app.config["TRUSTED_HOSTS"]

    def __call__(self, environ, start_response):
        """Serve the cached page if this visitor may have it, else call the app."""
        page = self.cached_page(environ)
        if page is None:
            return self.wsgi_app(environ, start_response)
        body = page.encode()
        start_response("200 OK", [*self.headers, ("Content-Length", str(len(body)))])
        return [body]

    def cached_page(self, environ):
        """The cached page for this request, or None (not cacheable, a miss, a bad entry, Redis down or hung)."""
        key = self.cache_key(environ)
        if key is None:
            return None
        try:
            page = self.backend.get(key)
        except RedisError:
            return None  # the view renders the page, and logs why
        return page if isinstance(page, str) else None  # anything but a page is a miss

    def cache_key(self, environ):
        """The cache key for this request, or None if it is not a plain GET of a cached page by a stranger."""
        if environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING"):
            return None
        key = self.pages.get(environ.get("PATH_INFO"))
        if key is None or self.private_cookies & parse_cookie(environ).keys():
            return None
        if self.trusted_hosts is not None and not host_is_trusted(environ.get("HTTP_HOST"), self.trusted_hosts):
            return None
        return key
