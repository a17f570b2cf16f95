"""A TCP hop in front of a server (PostgreSQL, RabbitMQ), which a test can take away, freeze
and give back."""

import asyncio


class Hop:
    """A TCP hop in front of PostgreSQL or RabbitMQ that the test takes away (new connections
    refused, open ones cut) and gives back: a stopped and restarted server, as a client sees
    it. Or freezes: nothing more passes, and no error either, as with a server that hangs
    (``kill -STOP``) or a network that drops packets, until it thaws."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flows: set[asyncio.Event] = set()
        self._frozen = False
        self.port = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        for writer in self._open:  # first: from Python 3.12.1, wait_closed waits for them
            writer.transport.abort()
        self._open.clear()
        self.thaw()  # a frozen pipe ends now, rather than cancelled with the loop
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def freeze(self, *, new_connections: bool = True) -> None:
        """Silence the open connections, and the new ones unless ``new_connections`` is False:
        a server that failed over, say, whose old connections are silent for good."""
        for flowing in self._flows:
            flowing.clear()
        self._frozen = new_connections

    def thaw(self) -> None:
        for flowing in self._flows:
            flowing.set()
        self._frozen = False

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._open |= {writer, up_writer}
        flowing = asyncio.Event()
        if not self._frozen:
            flowing.set()
        self._flows.add(flowing)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
