"""The app with signup mail sent inside the request (deliver-now), for benchmark 4 only.

    gunicorn bench.wsgi_deliver_now:app
"""

import app.auth.emails
import app.outbox
from app import create_app
from app.delivery import deliver_now


def deliver_now_instead(template, to, subject, context, message_id=None):
    """What deliver_later() would queue, sent right away: the request waits for SMTP."""
    deliver_now(template, to, subject, context, message_id)


# Signup enqueues through the outbox (app.outbox.deliver_staged); the notices through app.auth.emails.
app.outbox.deliver_later = deliver_now_instead
app.auth.emails.deliver_later = deliver_now_instead
app = create_app()
