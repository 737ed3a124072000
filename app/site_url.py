"""Absolute URLs (the links in mails) come from the configured SITE_URL, never from a request's Host."""

from urllib.parse import urlsplit

from flask import Flask


def apply_site_url(app):
    """Derive SERVER_NAME, PREFERRED_URL_SCHEME and APPLICATION_ROOT (and TRUSTED_HOSTS) from SITE_URL.

    Flask then builds absolute URLs outside a request (the CLI, a sweeper) from the same address.
    """
    site = urlsplit(app.config["SITE_URL"])
    app.config.update(
        SERVER_NAME=site.netloc,
        PREFERRED_URL_SCHEME=site.scheme,
        APPLICATION_ROOT=site.path or "/",
    )
    if app.config["TRUST_ONLY_SITE_HOST"] and not app.config["TRUSTED_HOSTS"]:
        app.config["TRUSTED_HOSTS"] = [site.hostname]


class SiteURLFlask(Flask):
    """Flask whose URL adapter routes by the request but builds absolute URLs from SITE_URL.

    Stock Flask takes the host of `url_for(..., _external=True)` from the request's Host header
    (or X-Forwarded-Host behind ProxyFix) and the scheme from the request: a signup sent with
    `Host: evil.example` would mail a genuine confirmation token inside a link to evil.example.
    """

    def create_url_adapter(self, request):
        """The request's adapter (TRUSTED_HOSTS checked, path matched), rebound to SITE_URL for building."""
        adapter = super().create_url_adapter(request)
        if request is None or adapter is None:
            return adapter
        site = urlsplit(self.config["SITE_URL"])
        return self.url_map.bind(
            site.netloc,
            script_name=site.path or "/",
            subdomain=adapter.subdomain,
            url_scheme=site.scheme,
            default_method=adapter.default_method,
            path_info=adapter.path_info,
            query_args=adapter.query_args,
        )
