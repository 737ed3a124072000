"""Signup and login forms (Flask-WTF: every form carries a CSRF token)."""

from email_validator import EmailNotValidError, validate_email
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length, ValidationError

from app.mail.messages import has_line_break


def no_line_breaks(form, field):
    """Reject CR/LF, which could smuggle extra headers into a mail."""
    if field.data and has_line_break(field.data):
        raise ValidationError("Line breaks are not allowed here.")


def ascii_local_part(form, field):
    """Refuse a non-ASCII part before the @: our mail path cannot deliver to it (no SMTPUTF8)."""
    local, _, _ = (field.data or "").rpartition("@")
    if not local.isascii():
        raise ValidationError(
            "Use an address with only plain letters, digits and punctuation before the @: "
            "we cannot send mail to addresses like üser@example.com yet."
        )


def normalize_email(address):
    """The one form of an address we store and look up: lower case, the domain in ASCII (IDNA).

    `ada@bücher.com` and `ada@xn--bcher-kva.com` are one mailbox, so they are one account.
    """
    address = address.strip()
    try:
        address = validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        pass  # login with something that is not an address: it matches no account
    return address.lower()


def strip(value):
    """Drop spaces a paste may carry around an address."""
    return value.strip() if isinstance(value, str) else value


class SignupForm(FlaskForm):
    """A new account: an address and a password typed twice."""

    email = EmailField("Email", filters=[strip], validators=[DataRequired(), no_line_breaks, Length(max=254), Email(check_deliverability=False), ascii_local_part])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=128, message="Use 8 to 128 characters.")])
    password2 = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", message="The passwords do not match.")])
    submit = SubmitField("Sign up")


class LoginForm(FlaskForm):
    """Sign in with address and password."""

    email = EmailField("Email", filters=[strip], validators=[DataRequired(), no_line_breaks, Length(max=254), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=128)])
    submit = SubmitField("Log in")


class ResendForm(FlaskForm):
    """A button that asks for a new confirmation mail (the form exists for its CSRF token)."""

    submit = SubmitField("Send a new confirmation mail")


class LogoutForm(FlaskForm):
    """Logging out changes state, so it is a POST with a CSRF token."""

    submit = SubmitField("Log out")
