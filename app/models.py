"""The User model."""

from datetime import datetime, timezone

from flask import current_app
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db, login_manager


def utcnow():
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class User(UserMixin, db.Model):
    """A person who signed up; confirmed once they follow the mailed link."""

    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(254), unique=True, nullable=False, index=True)
    password_hash = db.Column(db.String(256), nullable=False)
    created_at = db.Column(db.DateTime(timezone=True), nullable=False, default=utcnow)
    confirmed_at = db.Column(db.DateTime(timezone=True), nullable=True)

    @property
    def confirmed(self):
        """True once the confirmation link was followed."""
        return self.confirmed_at is not None

    def set_password(self, password):
        """Store a salted hash of the password (Werkzeug, PASSWORD_HASH_METHOD), never the password."""
        self.password_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password):
        """Return True if the password matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def __repr__(self):
        """Show the id and address when debugging."""
        return f"<User {self.id} {self.email}>"


@login_manager.user_loader
def load_user(user_id):
    """Flask-Login: load the signed-in user from the id kept in the session."""
    return db.session.get(User, int(user_id))
