"""A page cache in front of the app: cached pages go to visitors without a session, before Flask does any work."""

from flask_login.config import COOKIE_NAME as REMEMBER_COOKIE_DEFAULT
from redis.exceptions import RedisError
from werkzeug.http import parse_cookie
from werkzeug.sansio.utils import host_is_trusted


def shared_page_key(environ, pages, config):
    """The one rule for what is cached: the cache key of the page this request shares with everybody, or None.

    A plain GET (no query string) of a page in `pages` (path -> key), for a trusted host, by a
    visitor with neither a session cookie nor a remember-me cookie: signed out, and with no
    flash message waiting (both live in the session), so the page is the one everybody gets.
    The middleware below answers such a request from the cache; on a miss the view
    (app/main/routes.py) renders the page and stores it under the same key. Nobody else's
    page is ever read from or written to the cache.
    """
    if environ["REQUEST_METHOD"] != "GET" or environ.get("QUERY_STRING"):
        return None
    key = pages.get(environ.get("PATH_INFO"))
    private_cookies = {config["SESSION_COOKIE_NAME"], config.get("REMEMBER_COOKIE_NAME", REMEMBER_COOKIE_DEFAULT)}
    if key is None or private_cookies & parse_cookie(environ).keys():
        return None
    trusted_hosts = config["TRUSTED_HOSTS"]
    if trusted_hosts is not None and not host_is_trusted(environ.get("HTTP_HOST"), trusted_hosts):
        return None
    return key


class AnonymousPageCache:
    """WSGI middleware that answers a GET for a cached page straight from Redis.

    For a request that shared_page_key() above lets share the page, this skips what Flask
    would do before reaching the cache:
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
        self.config = app.config
        self.headers = [*self.HEADERS, *extra_headers]

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
        key = shared_page_key(environ, self.pages, self.config)
        if key is None:
            return None
        try:
            page = self.backend.get(key)
        except RedisError:
            return None  # the view renders the page, and logs why
        return page if isinstance(page, str) else None  # anything but a page is a miss
