"""The home page, cached in Redis for anonymous visitors."""

from datetime import datetime, timezone

from flask import current_app, render_template, session
from flask_login import current_user
from redis.exceptions import RedisError
from sqlalchemy import func, select

from app.extensions import db
from app.main import bp
from app.models import User
from app.web_extensions import cache

HOME_CACHE_KEY = "page:home"
#: Pages app.page_cache may serve to signed-out visitors without running the app: path -> cache key.
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


def cacheable():
    """Only anonymous pages without flash messages are the same for everybody."""
    return not current_user.is_authenticated and "_flashes" not in session


# --8<-- [start:index]
@bp.route("/")
def index():
    """The home page: from the cache for 90 minutes or until the counts change; rendered if the cache fails."""
    if not cacheable():
        return render_home()
    try:
        page = cache.get(HOME_CACHE_KEY)
    except RedisError as exc:  # unreachable or hung (a short socket timeout)
        current_app.logger.warning("cache unusable, rendering uncached: %s", exc)
        return render_home()
    if not isinstance(page, str):  # a miss, or an entry that is not a page: render and store
        page = None
    if page is None:
        page = render_home()
        try:
            cache.set(HOME_CACHE_KEY, page)  # CACHE_DEFAULT_TIMEOUT: 5400 s, the Rails tutorial's 90 minutes
        except RedisError as exc:
            current_app.logger.warning("cache unreachable, not storing: %s", exc)
    return page
# --8<-- [end:index]
