"""The development-only announcement form."""

from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.auth.forms import no_line_breaks


class AnnouncementForm(FlaskForm):
    """Subject and text of a mail to every confirmed user."""

    subject = StringField("Subject", validators=[DataRequired(), no_line_breaks, Length(max=200)])
    body = TextAreaField("Text", validators=[DataRequired(), Length(max=20_000)])
    submit = SubmitField("Send to all confirmed users")
