"""The security headers every response carries, in one place (the page cache sends them too)."""

# Scripts only from our own origin; inline <style> is allowed (base.html has one), inline scripts
# are not. frame-ancestors 'none' (and X-Frame-Options for old browsers): no site can frame ours.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def security_headers(config):
    """The (name, value) pairs for every response; HSTS only where HSTS_MAX_AGE is set (production)."""
    headers = [
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
    ]
    if config["HSTS_MAX_AGE"]:
        headers.append(("Strict-Transport-Security", f"max-age={config['HSTS_MAX_AGE']}; includeSubDomains"))
    return headers


def init_security_headers(app):
    """Add the headers to every response of `app`; a page that needs another CSP sets its own first."""
    headers = security_headers(app.config)

    @app.after_request
    def add_security_headers(response):
        """Set each header unless the view already chose a value (rq-dashboard's CSP in development)."""
        for name, value in headers:
            response.headers.setdefault(name, value)
        return response

    return headers
