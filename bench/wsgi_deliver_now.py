"""The app with signup mail sent inside the request (deliver-now), for benchmark 4 only.

    gunicorn bench.wsgi_deliver_now:app
"""

import app.auth.routes
from app import create_app
from app.mail.delivery import deliver_now


def deliver_now_instead(template, to, subject, context, message_id=None, wait=None, wait_until=None):
    """What deliver_later() would stage and queue, sent right away: the request waits for SMTP."""
    deliver_now(template, to, subject, context, message_id)


# The views send every mail with deliver_later(), imported into app.auth.routes.
app.auth.routes.deliver_later = deliver_now_instead
app = create_app()
