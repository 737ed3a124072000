"""Bad input gets a form error or a 400: no job enqueued, no user half-saved, never a 500."""

import pytest
import redis

from app.models import User
from app.web_extensions import db
from tests.support import csrf_token, mailers_queue, signup


def queued_mails(app):
    """How many jobs wait on `mailers`."""
    return mailers_queue(app).count


def user_count(app):
    """How many user rows exist."""
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(User.id)))


@pytest.mark.parametrize(
    ("email", "password", "password2", "error"),
    [
        ("not-an-address", "long enough pw", None, "Invalid email address."),
        ("", "long enough pw", None, "This field is required."),
        ("ada@example.com", "short", None, "Use 8 to 128 characters."),
        ("ada@example.com", "long enough pw", "different pw!!", "The passwords do not match."),
        ("ada@example.com\r\nBcc: victim@example.com", "long enough pw", None, "Line breaks are not allowed here."),
        ("a" * 250 + "@example.com", "long enough pw", None, "Field cannot be longer than 254 characters."),
    ],
)
def test_invalid_signup_shows_the_error_and_saves_nothing(app, client, email, password, password2, error):
    response = signup(client, email, password, password2)
    assert response.status_code == 400
    assert error in response.get_data(as_text=True)
    assert queued_mails(app) == 0
    assert user_count(app) == 0


def test_missing_csrf_token_is_a_400(app, client):
    response = client.post(
        "/auth/signup", data={"email": "ada@example.com", "password": "long enough pw", "password2": "long enough pw"}
    )
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert queued_mails(app) == 0 and user_count(app) == 0


def test_invalid_csrf_token_is_a_400(app, client):
    client.get("/auth/signup")
    response = client.post(
        "/auth/signup",
        data={"csrf_token": "forged", "email": "ada@example.com", "password": "long enough pw", "password2": "long enough pw"},
    )
    assert response.status_code == 400
    assert queued_mails(app) == 0 and user_count(app) == 0


def test_duplicate_signup_answers_the_same_and_keeps_one_user(app, client):
    first = signup(client, "ada@example.com")
    second = signup(app.test_client(), "ADA@example.com ")
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    assert user_count(app) == 1
    assert queued_mails(app) == 1  # the confirmation; the account notice waits for its window


def test_existing_confirmed_address_gets_an_account_notice_not_a_new_account(app, client):
    signup(client, "ada@example.com")
    with app.app_context():
        user = db.session.scalar(db.select(User))
        user.confirmed_at = db.func.now()
        db.session.commit()
    redis.Redis.from_url(app.config["RQ_REDIS_URL"]).delete("mail:notice:1")  # the window passed
    signup(app.test_client(), "ada@example.com")
    queue = mailers_queue(app)
    templates = sorted(job.kwargs["template"] for job in queue.jobs)
    assert templates == ["email/account_exists", "email/confirm"]
    assert user_count(app) == 1


@pytest.mark.parametrize(
    ("token", "status", "text"),
    [("garbage", 400, "not valid"), ("eyJ1aWQiOjF9.tampered.sig", 400, "not valid")],
)
def test_bad_confirmation_tokens_get_a_clear_page(client, token, status, text):
    response = client.get(f"/auth/confirm/{token}")
    assert response.status_code == status
    assert text in response.get_data(as_text=True)


def test_expired_and_reused_tokens(app, client):
    from app.auth.tokens import make_confirm_token

    signup(client, "ada@example.com")
    with app.app_context():
        user = db.session.scalar(db.select(User))
        with app.test_request_context():
            token = make_confirm_token(user)
    app.config["CONFIRM_TOKEN_MAX_AGE"] = -1
    expired = client.get(f"/auth/confirm/{token}")
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    app.config["CONFIRM_TOKEN_MAX_AGE"] = 3600
    assert client.get(f"/auth/confirm/{token}").status_code == 302
    reused = client.get(f"/auth/confirm/{token}")
    assert reused.status_code == 409 and "already used" in reused.get_data(as_text=True)


def test_token_signed_with_another_key_is_rejected(app, client):
    from itsdangerous import URLSafeTimedSerializer

    signup(client, "ada@example.com")
    forged = URLSafeTimedSerializer("not the secret", salt="email-confirm").dumps({"uid": 1, "email": "ada@example.com"})
    assert client.get(f"/auth/confirm/{forged}").status_code == 400


def test_login_with_unknown_address_is_a_form_error(client):
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post(
        "/auth/login", data={"csrf_token": csrf_token(page), "email": "nobody@example.com", "password": "whatever1"}
    )
    assert response.status_code == 400
    assert "Invalid email or password." in response.get_data(as_text=True)


def test_open_redirect_after_login_is_ignored(app, client):
    signup(client, "ada@example.com")
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post(
        "/auth/login?next=https://evil.example/",
        data={"csrf_token": csrf_token(page), "email": "ada@example.com", "password": "correct horse battery"},
    )
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", ["/%0d%0aSet-Cookie:%20a=b", "/%0a", "/a%00b", "/a%09b", "/%5Cevil.example"])
def test_a_next_with_control_characters_or_a_backslash_goes_home(app, client, target):
    # CR/LF once made the redirect itself raise (a 500); a backslash reads as // in browsers.
    signup(client, "ada@example.com")
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post(
        f"/auth/login?next={target}",
        data={"csrf_token": csrf_token(page), "email": "ada@example.com", "password": "correct horse battery"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
