"""Signup and login forms (Flask-WTF: every form carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length, ValidationError

from app.delivery import has_line_break


def no_line_breaks(form, field):
    """Reject CR/LF, which could smuggle extra headers into a mail."""
    if field.data and has_line_break(field.data):
        raise ValidationError("Line breaks are not allowed here.")


def strip(value):
    """Drop spaces a paste may carry around an address."""
    return value.strip() if isinstance(value, str) else value


class SignupForm(FlaskForm):
    """A new account: an address and a password typed twice."""

    email = EmailField("Email", filters=[strip], validators=[DataRequired(), no_line_breaks, Length(max=254), Email(check_deliverability=False)])
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
