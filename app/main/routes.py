"""The home page, cached in Redis for anonymous visitors."""

from datetime import datetime, timezone

from flask import current_app, render_template, request
from redis.exceptions import RedisError
from sqlalchemy import func, select

from app.main import bp
from app.models import User
from app.page_cache import shared_page_key
from app.web_extensions import cache, db

HOME_CACHE_KEY = "page:home"
#: The pages that may be cached (app.page_cache.shared_page_key says for whom): path -> cache key.
CACHED_PAGES = {"/": HOME_CACHE_KEY}


def user_counts():
    """Count users and confirmed users (the panel that makes the page worth caching)."""
    total = db.session.scalar(select(func.count(User.id)))
    confirmed = db.session.scalar(select(func.count(User.id)).where(User.confirmed_at.is_not(None)))
    return {"users": total, "confirmed": confirmed}


def render_home():
    """Render the home page with fresh counts and the time they were computed."""
    computed_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return render_template("main/index.html", counts=user_counts(), computed_at=computed_at)


def forget_home_page():
    """Drop the cached home page: the counts just changed (a signup, a confirmation)."""
    try:
        cache.delete(HOME_CACHE_KEY)
    except RedisError as exc:
        current_app.logger.warning("cache unreachable, home page not refreshed: %s", exc)


# --8<-- [start:index]
@bp.route("/")
def index():
    """The home page: from the cache for 90 minutes or until the counts change; rendered if the cache fails."""
    key = shared_page_key(request.environ, CACHED_PAGES, current_app.config)  # the one rule
    if key is None:  # a session or remember-me cookie, a query string, another method
        return render_home()
    try:
        page = cache.get(key)
    except RedisError as exc:  # unreachable or hung (a short socket timeout)
        current_app.logger.warning("cache unusable, rendering uncached: %s", exc)
        return render_home()
    if not isinstance(page, str):  # a miss, or an entry that is not a page: render and store
        page = None
    if page is None:
        page = render_home()
        try:
            cache.set(key, page)  # CACHE_DEFAULT_TIMEOUT: 5400 s, the Rails tutorial's 90 minutes
        except RedisError as exc:
            current_app.logger.warning("cache unreachable, not storing: %s", exc)
    return page
# --8<-- [end:index]
