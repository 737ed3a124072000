"""Absolute URLs (the links in mails) come from the configured SITE_URL, never from a request's Host.

config.derive_site_settings gives Flask SERVER_NAME and the scheme from SITE_URL for URLs built
outside a request; SiteURLFlask builds those inside a request from it too.
"""

from urllib.parse import urlsplit

from flask import Flask


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
