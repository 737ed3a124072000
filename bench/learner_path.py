#!/usr/bin/env python3
"""Count the learner's path: the definitions a signup's confirmation mail runs through, view to Flask-Mail.

    python3 bench/learner_path.py

The path is signup view -> create_account -> the app's mails (app/auth/emails.py) -> the
outbox -> deliver_later -> the job -> Flask-Mail, on the mail's way when it is sent (the
failure classification it runs through included). Not on it: the worker process
(app.worker.MailWorker runs jobs the way `rq worker` does in microblog), the Procfile line
that starts it, and the connection helpers called by one name (get_queue, redis_client,
relay_connections, wait_for_replica). Lines are non-blank source lines, decorators included.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = {
    "app/auth/routes.py": ["signup", "create_account"],
    "app/auth/emails.py": ["confirmation_mail"],
    "app/outbox.py": ["stage_mail", "deliver_staged"],
    "app/delivery.py": ["deliver_later", "refuse_header_injection", "has_line_break", "new_message_id", "job_id_for",
                        "build_message", "send_mail_job", "retried_unless_permanent", "is_permanent", "describe",
                        "mark_sent", "sent_marker"],
    "app/worker.py": ["AppContextJob"],
}


def definition_lines(source, name):
    """The non-blank lines of the top-level function or class `name` in `source`, decorators included."""
    tree = ast.parse(source)
    node = next(node for node in tree.body
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name)
    first = min([decorator.lineno for decorator in node.decorator_list] + [node.lineno])
    return [line for line in source.splitlines()[first - 1:node.end_lineno] if line.strip()]


def main():
    """Print each definition's line count, then the files and the total."""
    total = 0
    for path, names in PATH.items():
        source = (ROOT / path).read_text()
        for name in names:
            count = len(definition_lines(source, name))
            total += count
            print(f"{count:4d}  {path}:{name}")
    print(f"{len(PATH)} files, {total} lines")


if __name__ == "__main__":
    main()
