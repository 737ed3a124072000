"""The User model."""

from datetime import datetime, timezone

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from app.web_extensions import db, login_manager


def utcnow():
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class User(UserMixin, db.Model):
    """A person who signed up; confirmed once they follow the mailed link."""

    __tablename__ = "users"

    # Typed columns (SQLAlchemy 2.0): `Mapped[X | None]` is a nullable column, `Mapped[X]` is NOT NULL.
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

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
