"""Why mail sent from a background thread is lost on restart (docs/why.md runs this).

A tiny "app" process accepts a signup and hands the confirmation mail to a thread, the way
an in-process async adapter does. Then the process restarts before the thread finishes.
A local SMTP server counts what actually arrived.

    python docs/examples/thread_mail.py
"""

import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Counter:
    """An SMTP handler that only counts messages."""

    def __init__(self):
        """No mail yet."""
        self.received = 0

    async def handle_DATA(self, server, session, envelope):
        """Count the message and accept it."""
        self.received += 1
        return "250 OK"


# --8<-- [start:app]
def app_process(port):
    """The 'web app': answer the signup, send the mail from a thread, then get restarted."""

    def send_later():
        time.sleep(1.0)  # rendering, DNS, a slow SMTP server...
        with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost") as smtp:
            smtp.sendmail("app@example.com", ["ada@example.com"], b"Subject: Confirm\r\n\r\nhello\r\n")

    threading.Thread(target=send_later, daemon=True).start()
    print("signup answered; the mail was handed to a background thread", flush=True)
    time.sleep(0.2)
    print("deploy: the app process restarts now", flush=True)
    os._exit(0)  # what a restart does to every thread in the process
# --8<-- [end:app]


def main():
    """Run the app process once, then count what the SMTP server received."""
    if len(sys.argv) == 3 and sys.argv[1] == "--app":
        app_process(int(sys.argv[2]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        subprocess.run([sys.executable, __file__, "--app", str(port)], check=True)
        time.sleep(2.0)  # far longer than the send would have taken
        lost = 1 - counter.received
        print(f"mails delivered: {counter.received} of 1; lost: {lost} (the thread died with the process)")
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
