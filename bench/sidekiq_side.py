"""Sidekiq beside RQ and Celery (the seed's stack): Debian's ruby-sidekiq 6.4 and ruby-mail, the same mail, the same sink.

The jobs are enqueued the way Sidekiq's client does it (a JSON payload LPUSHed onto
queue:mailers, the queue's name SADDed to `queues`), into a Redis DB of their own on the
benchmark's Redis. bench/sidekiq/mailer.rb renders ERB copies of the project's confirmation
templates, written here from what the project itself renders, so both send the same mail.
"""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent / "sidekiq"
PACKAGES = ("ruby-sidekiq", "ruby-mail")
SIDEKIQ_DB = 2
# Stand-ins rendered by the project's templates, then turned into ERB tags (plain words: no escaping touches them).
PLACEHOLDERS = {"email": "SIDEKIQEMAILPLACEHOLDER", "confirm_url": "SIDEKIQURLPLACEHOLDER"}


def ruby_has_sidekiq():
    """True if `ruby` can load sidekiq and mail."""
    check = ["ruby", "-e", 'require "sidekiq"; require "mail"']
    return shutil.which("ruby") is not None and subprocess.run(check, capture_output=True).returncode == 0


def ensure_installed():
    """Install Debian's ruby-sidekiq and ruby-mail with apt-get when Ruby cannot load them."""
    if ruby_has_sidekiq():
        return
    if shutil.which("apt-get") is None:
        raise RuntimeError("the Sidekiq side needs Ruby with sidekiq 6.4 and mail (Debian: apt-get install ruby-sidekiq ruby-mail)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    print(f"==> installing {' '.join(PACKAGES)} for the Sidekiq side", flush=True)
    if subprocess.run(install, env=env).returncode != 0:  # stale package lists: refresh them once
        subprocess.run([*sudo, "apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    if not ruby_has_sidekiq():
        raise RuntimeError("ruby still cannot load sidekiq and mail after apt-get install")


def erb(rendered):
    """ERB source from a page the project rendered with the placeholders (HTML-escaped in the .html one)."""
    return {
        "text": rendered["text"].replace(PLACEHOLDERS["email"], "<%= email %>")
                                .replace(PLACEHOLDERS["confirm_url"], "<%= confirm_url %>"),
        "html": rendered["html"].replace(PLACEHOLDERS["email"], "<%= ERB::Util.html_escape(email) %>")
                                .replace(PLACEHOLDERS["confirm_url"], "<%= ERB::Util.html_escape(confirm_url) %>"),
    }


class SidekiqSide:
    """Sidekiq on a stack's Redis (DB 2): an enqueuer for the same mails, and `sidekiq -c N` processes."""

    def __init__(self, stack, app):
        """Write the ERB templates from the app's own confirmation templates; connect to DB 2."""
        import redis

        from app.mail.messages import build_message

        ensure_installed()
        self.stack, self.app = stack, app
        self.redis_url = stack.redis_url.rsplit("/", 1)[0] + f"/{SIDEKIQ_DB}"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.templates = Path(stack.workdir) / "sidekiq-templates"
        self.templates.mkdir(exist_ok=True)
        with app.app_context():
            message = build_message("email/confirm", "x@example.com", "Confirm your account", dict(PLACEHOLDERS), "<x@example.com>")
            self.sender, self.subject = app.config["MAIL_DEFAULT_SENDER"], message.subject
        sources = erb({"text": message.body, "html": message.html})
        (self.templates / "confirm.text.erb").write_text(sources["text"])
        (self.templates / "confirm.html.erb").write_text(sources["html"])
        self.env = {**stack.env, "REDIS_URL": self.redis_url, "MAIL_PORT": str(stack.smtp_port),
                    "SIDEKIQ_MAIL_TEMPLATES": str(self.templates), "RAILS_ENV": "production"}

    def job_args(self, kwargs):
        """The job's arguments for one mail of bench.run.mail_kwargs()."""
        context = kwargs["context"]
        return [kwargs["to"], self.subject, self.sender, context["email"], context["confirm_url"], kwargs["message_id"]]

    def enqueue(self, tag, count):
        """Queue `count` confirmation mails as Sidekiq's client does (LPUSH queue:mailers, SADD queues)."""
        from bench.run import mail_kwargs

        with self.redis.pipeline(transaction=False) as pipe:
            for n in range(count):
                now = time.time()
                payload = {"class": "ConfirmationMailJob", "args": self.job_args(mail_kwargs(n, tag)), "queue": "mailers",
                           "retry": True, "jid": uuid.uuid4().hex[:24], "created_at": now, "enqueued_at": now}
                pipe.sadd("queues", "mailers")
                pipe.lpush("queue:mailers", json.dumps(payload))
                if n % 500 == 499:
                    pipe.execute()
            pipe.execute()

    def start(self, processes, concurrency=25):
        """Start `processes` Sidekiq processes with `concurrency` threads each on `mailers`."""
        command = [shutil.which("sidekiq") or "sidekiq", "-r", str(HERE / "mailer.rb"), "-c", str(concurrency),
                   "-q", "mailers", "-e", "production"]
        return [self.stack.spawn("sidekiq", command, self.env) for _ in range(processes)]

    def mail_bytes(self, kwargs):
        """The size of the mail Sidekiq's side sends for these arguments (mailer.rb run on its own)."""
        out = subprocess.run(["ruby", str(HERE / "mailer.rb"), *self.job_args(kwargs)], env=self.env,
                             capture_output=True, check=True).stdout
        return len(out)
