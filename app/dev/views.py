"""Development pages: the hub, the mail inbox and the mail previews."""

from flask import abort, current_app, flash, redirect, render_template, request, url_for

from app.connections import ROLE_URL_SETTINGS
from app.dev import bp
from app.dev.dashboard import DASHBOARD_PREFIX
from app.dev.forms import AnnouncementForm
from app.dev.inbox import list_messages, read_message
from app.dev.previews import PREVIEWS
from app.mail.messages import build_message
from app.redis_info import role_problems, role_status


@bp.route("/")
def hub():
    """Links to every dev tool, and a per-role summary of Redis."""
    statuses = [role_status(role) for role in ROLE_URL_SETTINGS]
    return render_template(
        "dev/hub.html",
        statuses=[(status, role_problems(status)) for status in statuses],
        dashboard_url=DASHBOARD_PREFIX + "/",
    )


@bp.route("/mail/")
def inbox():
    """Every mail the local SMTP catcher received, newest first."""
    return render_template("dev/inbox.html", messages=list_messages(current_app.config["MAILDIR"]))


@bp.route("/mail/<key>")
def message(key):
    """One caught mail: text, HTML and headers."""
    found = read_message(current_app.config["MAILDIR"], key)
    if found is None:
        abort(404)
    return render_template("dev/message.html", message=found)


@bp.route("/previews/")
def previews():
    """Every mail template, rendered with sample data; nothing is sent."""
    rendered = []
    for template, sample in PREVIEWS.items():
        mail = build_message(template, "ada@example.com", sample["subject"], sample["context"](), "<preview@localhost>")
        rendered.append({"template": template, "subject": mail.subject, "text": mail.body, "html": mail.html})
    return render_template("dev/previews.html", previews=rendered)


@bp.route("/announce", methods=["GET", "POST"])
def announce():
    """Send an announcement to every confirmed user (batched jobs on `mailers`)."""
    from app.mail.announcements import announce as enqueue_announcement

    form = AnnouncementForm()
    if form.validate_on_submit():
        announcement_id, batches, recipients = enqueue_announcement(form.subject.data, form.body.data)
        flash(f"Announcement {announcement_id}: {recipients} recipient(s) in {batches} batch job(s).", "success")
        return redirect(url_for("dev.announce"))
    return render_template("dev/announce.html", form=form), 400 if request.method == "POST" else 200

