"""Signup -> confirmation mail -> confirm -> login, plus resend and logout."""

import secrets
from functools import lru_cache
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth import bp
from app.auth.forms import LoginForm, LogoutForm, ResendForm, SignupForm, normalize_email
from app.auth.tokens import TokenExpired, TokenInvalid, make_confirm_token, read_confirm_token
from app.mail.delivery import deliver_later
from app.mail.messages import account_notice, claim_notice, confirmation_mail
from app.main.routes import forget_home_page
from app.models import User, utcnow
from app.web_extensions import db, limiter


def signup_rate_limit():
    """The per-client signup limit, read from config so tests and deployments can tune it."""
    return current_app.config["SIGNUP_RATE_LIMIT"]


def login_rate_limit():
    """The per-client login limit (LOGIN_RATE_LIMIT)."""
    return current_app.config["LOGIN_RATE_LIMIT"]


def login_address_rate_limit():
    """The per-account-address login limit (LOGIN_ADDRESS_RATE_LIMIT), whoever tries it."""
    return current_app.config["LOGIN_ADDRESS_RATE_LIMIT"]


def login_address_key():
    """Rate-limit key: the address being tried, normalised, so spreading guesses over clients does not help."""
    return "login:" + normalize_email(request.form.get("email", ""))


@lru_cache(maxsize=4)
def dummy_password_hash(method):
    """A hash of a random password, to check against when the address has no account."""
    return generate_password_hash(secrets.token_hex(16), method=method)


def spend_password_check(password):
    """Check `password` against a dummy hash: an unknown address costs what a known one does."""
    check_password_hash(dummy_password_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)


def spend_password_hash(password):
    """Hash `password` and drop it: signing up an existing address costs what a new one does."""
    generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


# --8<-- [start:signup]
@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(signup_rate_limit, methods=["POST"])
def signup():
    """Create an account and send its confirmation mail; never tell whether the address exists (nor whether Redis is up)."""
    form = SignupForm()
    if not form.validate_on_submit():
        return render_template("auth/signup.html", form=form), 400 if request.method == "POST" else 200

    email = normalize_email(form.email.data)
    existing = db.session.scalar(select(User).filter_by(email=email))
    if existing is None:
        existing = create_account(email, form.password.data)
        forget_home_page()  # the user count changed
    else:
        spend_password_hash(form.password.data)  # same cost as creating the account: no timing tell
    if existing is not None:
        notify_existing_account(existing)
    return redirect(url_for("auth.check_inbox"))


def create_account(email, password):
    """Commit a new user with its confirmation mail (enqueued after the commit); return the existing user on a race."""
    user = User(email=email)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.flush()  # gives the user its id, which the signed link carries
        deliver_later(**confirmation_mail(user, make_confirm_token(user)))  # the user and its mail: both or neither
        db.session.commit()
    except IntegrityError:  # two submits of the same address at once: the other one created it
        db.session.rollback()
        return db.session.scalar(select(User).filter_by(email=email))
    claim_notice(user)  # the signup counts as this window's notice: a second submit sends nothing
    return None


def notify_existing_account(user):
    """Tell an address that already has an account so, at most once per window, with the same durability."""
    if not claim_notice(user):
        return
    deliver_later(**account_notice(user))
    try:
        db.session.commit()
    except IntegrityError:  # the same window's notice, staged at the same moment by another submit
        db.session.rollback()

# --8<-- [end:signup]

@bp.route("/check-inbox")
def check_inbox():
    """The page after signup; identical for new and already registered addresses."""
    return render_template("auth/check_inbox.html")


@bp.route("/confirm/<token>")
def confirm(token):
    """Confirm the account named in a signed token, once."""
    try:
        user_id, email = read_confirm_token(token)
    except TokenExpired:
        return render_template("auth/confirm_failed.html", reason="expired"), 400
    except TokenInvalid:
        return render_template("auth/confirm_failed.html", reason="invalid"), 400

    user = db.session.get(User, user_id)
    if user is None or user.email != email:
        return render_template("auth/confirm_failed.html", reason="invalid"), 400
    if user.confirmed:
        return render_template("auth/confirm_failed.html", reason="used"), 409

    user.confirmed_at = utcnow()
    db.session.commit()
    forget_home_page()  # the confirmed count changed
    flash("Your account is confirmed. Welcome!", "success")
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    return redirect(url_for("auth.login"))


# --8<-- [start:login]
@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_address_rate_limit, key_func=login_address_key, methods=["POST"])
@limiter.limit(login_rate_limit, methods=["POST"])
def login():
    """Sign in; the session gets a new id so one planted before login is worthless."""
    form = LoginForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("auth/login.html", form=form), status

    user = db.session.scalar(select(User).filter_by(email=normalize_email(form.email.data)))
    if user is None:
        spend_password_check(form.password.data)  # as slow as a wrong password: no timing tell
    if user is None or not user.check_password(form.password.data):
        form.password.errors.append("Invalid email or password.")
        return render_template("auth/login.html", form=form), 400

    login_user(user)
    session.permanent = True  # signed in: the session now lives PERMANENT_SESSION_LIFETIME
    current_app.session_interface.regenerate(session)
    return redirect(safe_next_url(request.args.get("next")) or url_for("main.index"))
# --8<-- [end:login]


def safe_next_url(target):
    """Accept only a local path as the post-login destination (no open redirect, never a 500)."""
    # CR/LF would make the redirect's Location header raise; browsers read a backslash as a slash.
    if not target or "\\" in target or any(ord(char) < 32 or ord(char) == 127 for char in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out and drop the server-side session."""
    if LogoutForm().validate_on_submit():
        logout_user()
        session.clear()
        flash("You have been logged out.", "info")
    return redirect(url_for("main.index"))


@bp.route("/unconfirmed")
@login_required
def unconfirmed():
    """Ask a signed-in but unconfirmed user to confirm first."""
    if current_user.confirmed:
        return redirect(url_for("main.index"))
    return render_template("auth/unconfirmed.html", form=ResendForm())


@bp.route("/resend", methods=["POST"])
@login_required
@limiter.limit("5 per hour", methods=["POST"])
def resend():
    """Enqueue a fresh confirmation mail for the signed-in user."""
    if current_user.confirmed:
        return redirect(url_for("main.index"))
    if ResendForm().validate_on_submit():
        deliver_later(**confirmation_mail(current_user, make_confirm_token(current_user)))
        db.session.commit()
        flash("A new confirmation mail is on its way.", "info")
    return redirect(url_for("auth.unconfirmed"))


@bp.before_app_request
def ask_unconfirmed_to_confirm():
    """Send a signed-in, unconfirmed user from the main pages to the 'please confirm' page."""
    if (
        current_user.is_authenticated
        and not current_user.confirmed
        and request.blueprint == "main"
    ):
        return redirect(url_for("auth.unconfirmed"))
    return None
