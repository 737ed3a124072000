"""A TCP proxy in front of Redis that counts, per client connection, the commands and the round trips.

A round trip is one flight of requests: the bytes a client sends before Redis's next reply
reaches it (a pipeline or a MULTI/EXEC block sent in one go is one round trip). Commands are
parsed from the RESP arrays the client sends, so they are counted the way Redis's INFO
commandstats counts them (MULTI and EXEC included), but only for the clients that go through
this proxy. It runs an asyncio loop in a thread of the benchmark's process.
"""

import asyncio
import threading
from collections import Counter


class RespCommands:
    """An incremental parser of RESP requests: feed it bytes, it yields each complete command's name."""

    def __init__(self):
        """An empty buffer."""
        self.buffer = bytearray()

    def feed(self, data):
        """Add bytes; return the names (upper case) of the commands now complete."""
        self.buffer += data
        names, buffer, at = [], self.buffer, 0
        while at < len(buffer):
            end = buffer.find(b"\r\n", at)
            if end < 0:
                break
            if buffer[at:at + 1] != b"*":  # an inline command: one line
                names.append(bytes(buffer[at:end]).split(b" ", 1)[0].upper().decode())
                at = end + 2
                continue
            count, position, name = int(buffer[at + 1:end]), end + 2, None
            for _ in range(count):
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    break
                length = int(buffer[position + 1:line_end])
                if line_end + 2 + length + 2 > len(buffer):
                    line_end = -1
                    break
                if name is None:
                    name = bytes(buffer[line_end + 2:line_end + 2 + length]).upper().decode()
                position = line_end + 2 + length + 2
            else:
                names.append(name or "")
                at = position
                continue
            break  # incomplete: wait for more bytes
        del buffer[:at]
        return names


class CountingProxy:
    """Forwards 127.0.0.1:port to a Redis on `target_port`, counting commands and round trips."""

    def __init__(self, target_port, port):
        """Listen on `port` (call start())."""
        self.target_port, self.port = target_port, port
        self.lock = threading.Lock()
        self.commands = Counter()
        self.round_trips = 0
        self.connections = 0
        self.loop = None

    def snapshot(self):
        """A copy of the counts so far: commands by name, round trips, connections opened."""
        with self.lock:
            return {"commands": Counter(self.commands), "round_trips": self.round_trips, "connections": self.connections}

    async def handle(self, client_reader, client_writer):
        """Pipe one client connection to Redis and back, counting as it goes."""
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        with self.lock:
            self.connections += 1
        parser, state = RespCommands(), {"replied": True}

        async def upstream():
            """Client to Redis: count the commands and each new flight of them."""
            while data := await client_reader.read(65536):
                names = parser.feed(data)
                with self.lock:
                    if state["replied"]:
                        self.round_trips += 1
                        state["replied"] = False
                    self.commands.update(names)
                server_writer.write(data)
                await server_writer.drain()
            server_writer.close()

        async def downstream():
            """Redis to client: a reply ends the flight."""
            while data := await server_reader.read(65536):
                state["replied"] = True
                client_writer.write(data)
                await client_writer.drain()
            client_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    def start(self):
        """Serve in a daemon thread; return once listening."""
        ready = threading.Event()

        async def serve():
            """Listen, then serve until the process ends."""
            server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
            ready.set()
            async with server:
                await server.serve_forever()

        def run():
            """The proxy thread: its own event loop."""
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(serve())

        threading.Thread(target=run, name="redis-counter", daemon=True).start()
        ready.wait(10)
        return self
