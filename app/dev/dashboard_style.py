"""A stylesheet of our own on rq-dashboard's pages, so its tables fit (rq_dashboard's files stay untouched)."""

from flask import request, url_for


def add_dashboard_stylesheet(response):
    """Link app/dev/static/dashboard.css after rq-dashboard's own CSS on its HTML pages."""
    if request.blueprint == "rq_dashboard" and response.mimetype == "text/html" and not response.direct_passthrough:
        body = response.get_data(as_text=True)
        if "</head>" in body:
            link = f'<link rel="stylesheet" href="{url_for("dev.static", filename="dashboard.css")}">'
            response.set_data(body.replace("</head>", f"{link}</head>", 1))
    return response


def fit_dashboard_tables(app):
    """Add the stylesheet hook to a development app."""
    app.after_request(add_dashboard_stylesheet)
