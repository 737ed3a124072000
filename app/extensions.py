"""The Flask extension object every process binds, the worker's included: Flask-Mail's `mail`.

The worker's jobs need only Redis (app.connections) and Flask-Mail. Every other extension object,
the database's included, is in app.web_extensions, which the worker never imports.
"""

from flask_mail import Mail

mail = Mail()
