"""A minimal, fast SMTP sink for benchmarks: accepts every message, counts it, keeps nothing.

aiosmtpd tops out near 250 messages/s on this machine kind, so benchmarking against it would
measure aiosmtpd. This sink speaks just enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT) over asyncio streams. It appends one line per accepted message, the time it accepted
it, to a log file the benchmark reads (its line count is the number of mails delivered).

    python bench/smtp_sink.py --port 2525 --log /tmp/sink.log [--delay 0.2]
"""

import argparse
import asyncio
import signal
import time


class Sink:
    """Logs the time each message was accepted."""

    def __init__(self, delay, log):
        """`delay` seconds are spent before answering each DATA (a slow remote server)."""
        self.delay = delay
        self.log = log

    async def handle(self, reader, writer):
        """Serve one SMTP connection until QUIT or EOF."""
        writer.write(b"220 sink ESMTP\r\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n" if verb == b"EHLO" else b"250 sink\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.log.write(f"{time.time():.6f}\n")
                self.log.flush()
                writer.write(b"250 2.0.0 accepted\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:  # MAIL, RCPT, RSET, NOOP
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


async def serve(port, log_path, delay):
    """Run until SIGTERM/SIGINT."""
    with open(log_path, "a") as log:
        sink = Sink(delay, log)
        server = await asyncio.start_server(sink.handle, "127.0.0.1", port, limit=1 << 20)
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
        async with server:
            await stop


def main():
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.log, args.delay))


if __name__ == "__main__":
    main()
