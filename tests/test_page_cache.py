"""The page cache in front of the app: strangers get the cached page, nobody else does."""

import pytest

from tests.support import confirm_link, csrf_token, login, signup


@pytest.fixture()
def app_calls(app):
    """Record every request that gets past app.page_cache to the Flask app behind it."""
    page_cache = app.wsgi_app
    flask_app, calls = page_cache.wsgi_app, []

    def recording(environ, start_response):
        calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", "")))
        return flask_app(environ, start_response)

    page_cache.wsgi_app = recording
    return calls


def test_a_stranger_gets_the_cached_page_without_reaching_the_app(app, app_calls):
    rendered = app.test_client().get("/")
    served = app.test_client().get("/")
    assert app_calls == [("GET", "/", "")]  # the first visit rendered and stored it; the second never reached Flask
    assert served.status_code == 200
    assert served.get_data() == rendered.get_data()
    for header in ("Content-Type", "Content-Length", "Vary"):
        assert served.headers[header] == rendered.headers[header], header
    assert "Set-Cookie" not in served.headers


def test_a_signed_in_visitor_is_not_served_the_strangers_page(app, client, app_calls):
    app.test_client().get("/")  # cached now
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    app_calls.clear()
    response = client.get("/")
    assert app_calls == [("GET", "/", "")]
    assert response.headers["Location"].endswith("/auth/unconfirmed")  # her page, not the cached one


def test_a_visitor_with_a_flash_message_waiting_sees_it(app, client, app_calls):
    app.test_client().get("/")
    signup(client, "ada@example.com")
    login(client, "ada@example.com")
    client.post("/auth/logout", data={"csrf_token": _logout_token(client)})
    page = client.get("/").get_data(as_text=True)
    assert "You have been logged out." in page


@pytest.mark.parametrize("method, path", [("GET", "/?page=2"), ("HEAD", "/"), ("GET", "/auth/login")])
def test_other_requests_go_to_the_app(app, app_calls, method, path):
    app.test_client().get("/")
    app_calls.clear()
    app.test_client().open(path, method=method)
    assert len(app_calls) == 1


def _logout_token(client):
    """The CSRF token of the signed-in page's logout form."""
    return csrf_token(client.get("/auth/unconfirmed").get_data(as_text=True))


def test_a_cached_page_carries_every_header_the_app_sets(app, app_calls):
    rendered = app.test_client().get("/")  # rendered by the view, through the app's after_request hooks
    served = app.test_client().get("/")  # from the page cache, which skips them
    assert len(app_calls) == 1, "the second visit should have come from the cache"
    assert "Content-Security-Policy" in rendered.headers  # app.headers ran on the rendered page
    ignored = {"Date"}
    assert {k: v for k, v in served.headers.items() if k not in ignored} == {
        k: v for k, v in rendered.headers.items() if k not in ignored
    }


def test_signup_and_confirmation_show_on_the_cached_home_page_at_once(app, client, smtp_server, run_worker):
    assert "<strong>0</strong> users" in app.test_client().get("/").get_data(as_text=True)  # cached now
    signup(client, "ada@example.com")
    assert "<strong>1</strong> user, <strong>0</strong> confirmed" in app.test_client().get("/").get_data(as_text=True)
    run_worker()
    (message,) = smtp_server.wait_for_messages(1)
    app.test_client().get(confirm_link(message).split("localhost", 1)[1])
    assert "<strong>1</strong> user, <strong>1</strong> confirmed" in app.test_client().get("/").get_data(as_text=True)



def test_a_host_outside_trusted_hosts_gets_the_apps_400_not_the_cached_page(make_app, redis_url):
    app = make_app(redis_url, TRUSTED_HOSTS=["localhost"])  # as production sets it from SITE_URL
    page_cache, hosts = app.wsgi_app, []
    flask_app = page_cache.wsgi_app

    def recording(environ, start_response):
        hosts.append(environ["HTTP_HOST"])
        return flask_app(environ, start_response)

    page_cache.wsgi_app = recording
    assert app.test_client().get("/").status_code == 200  # rendered and stored
    assert app.test_client().get("/", headers={"Host": "evil.example"}).status_code == 400
    assert hosts == ["localhost", "evil.example"]  # the second went to Flask, which refused it


def test_home_page_says_one_user_and_two_users(app, client):
    assert "<strong>0</strong> users," in app.test_client().get("/").get_data(as_text=True)
    signup(client, "ada@example.com")
    assert "<strong>1</strong> user," in app.test_client().get("/").get_data(as_text=True)  # not "1 users"
    signup(app.test_client(), "bob@example.com")
    assert "<strong>2</strong> users," in app.test_client().get("/").get_data(as_text=True)


@pytest.mark.parametrize("visit", ["a query string", "a session cookie while signed out"])
def test_the_view_reads_the_cache_for_exactly_the_requests_the_middleware_would(app, visit):
    from app.web_extensions import cache

    with app.app_context():
        cache.set("page:home", "<p>the page everybody gets</p>")  # what a stranger's visit stored
    client, path = app.test_client(), "/"
    if visit == "a query string":
        path = "/?utm_source=mail"
    else:
        client.get("/auth/login")  # its form's CSRF token starts a session: a cookie, still signed out
        assert client.get_cookie(app.config["SESSION_COOKIE_NAME"]) is not None
    page = client.get(path).get_data(as_text=True)
    assert "the page everybody gets" not in page and "<strong>0</strong> users" in page  # rendered for this request
