#!/usr/bin/env python3
"""Measure what one copy of an announcement costs to write, in-process: Flask-Mail per copy vs SharedCopies.

    python3 bench/bulk_copy.py

Both ways give a Flask-Mail Message for each recipient that Connection.send() can send; this
times only making its bytes (as_bytes()), 2,000 copies, median of 5 runs, on one core.
"""

import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
COPIES = 2000


def per_copy_ms(make_bytes):
    """The median over 5 runs of the time to make COPIES copies' bytes, per copy, in ms."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for n in range(COPIES):
            make_bytes(f"reader{n}@example.com", f"<announce.{n}@example.com>")
        runs.append((time.perf_counter() - started) / COPIES * 1000)
    return statistics.median(runs)


def main():
    """Print the cost per copy both ways."""
    from app import create_app
    from app.mail.announcement_batch import PreparedCopy, SharedCopies
    from app.mail.messages import ANNOUNCEMENT, build_message

    app = create_app("testing", {"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    with app.test_request_context():
        context = {"body": "We made mail fast.\nThanks for reading."}
        first = build_message(ANNOUNCEMENT, "reader@example.com", "News", context, "<announce.0@example.com>", PreparedCopy)

        def flask_mail_writes(address, message_id):
            message = copy.copy(first)
            message.recipients, message.msgId = [address], message_id
            return message.as_bytes()

        shared = SharedCopies(first)
        results = {"Flask-Mail writes each copy": per_copy_ms(flask_mail_writes),
                   "SharedCopies: written once, two header lines per copy": per_copy_ms(
                       lambda address, message_id: shared.copy_for(address, message_id).as_bytes())}
    for name, ms in results.items():
        print(f"{ms:7.3f} ms  {name}")


if __name__ == "__main__":
    main()
