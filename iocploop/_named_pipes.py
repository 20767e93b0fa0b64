"""Windows named pipes: loop.start_serving_pipe and loop.create_pipe_connection,
the two methods CPython's ProactorEventLoop offers, with the same results
(a list with one PipeServer; (transport, protocol)), and the stream helpers
iocploop.start_pipe_server / iocploop.open_pipe_connection on top.

Server: a few instances of the pipe wait for clients at all times, each
with a ConnectNamedPipe posted to the completion port, so that a burst of
clients does not meet ERROR_PIPE_BUSY (CPython keeps one).  A connected
instance becomes a DuplexPipeTransport and a fresh instance takes its
place.  Instances are byte-mode pipes: a stream transport has no use for
message boundaries.  The first instance is created with
FILE_FLAG_FIRST_PIPE_INSTANCE, so serving an address another server owns
fails at once.

Client: CreateFile, retried with a growing delay while every instance of
the pipe is busy (there is no overlapped connect for a pipe client).
"""
from __future__ import annotations

import asyncio
import sys
from asyncio import events, streams, tasks
from typing import Any, Callable

__all__ = ["PipeMethods", "PipeServer", "open_pipe_connection", "start_pipe_server"]

IS_WINDOWS = sys.platform == "win32"
if IS_WINDOWS:
    import _winapi
    from asyncio import windows_events, windows_utils
    _PipeServerBase = windows_events.PipeServer   # isinstance() checks keep working
else:
    _PipeServerBase = object

from ._transports import DuplexPipeTransport

_PENDING_INSTANCES = 4              # ConnectNamedPipe calls kept posted per server
_CONNECT_DELAY_FIRST = 0.001        # client retry while all instances are busy
_CONNECT_DELAY_MAX = 0.1
_ERROR_PIPE_BUSY = 231
_ERROR_NO_DATA = 232                # the client connected and left before we saw it
_NOT_ON_THIS_SYSTEM = ("named pipes are a Windows feature; on Linux use Unix domain sockets "
                       "(create_unix_server / create_unix_connection)")


class PipeServer(_PipeServerBase):
    """A served pipe address: close() stops accepting clients (connections
    already made stay open), as with CPython's PipeServer -- of which it is
    a subclass on Windows, so code checking for that class accepts it; none
    of the base's machinery is used."""

    def __init__(self, loop, address, protocol_factory):   # not the base's: see _fill
        self._loop = loop
        self._address = address
        self._protocol_factory = protocol_factory
        self._waiting = {}          # Operation -> the PipeHandle it waits on
        self._first = True

    def __repr__(self):
        return f"<PipeServer {self._address!r}{' closed' if self.closed() else ''}>"

    @property
    def address(self) -> str:
        return self._address

    def closed(self) -> bool:
        return self._address is None

    def close(self) -> None:
        if self._address is None:
            return
        self._address = None
        # The waiting instances close now, as asyncio's do, so that the name
        # is gone once no connection holds it; closing a handle aborts its
        # ConnectNamedPipe, whose record the port keeps until that completes.
        for op, pipe in list(self._waiting.items()):
            self._loop._port.cancel(op)
            self._loop._port.forget_handle(pipe.fileno())
            pipe.close()

    def __del__(self):
        pass   # the base closes its own instances here; ours close with their operations

    def _fill(self):
        while not self.closed() and len(self._waiting) < _PENDING_INSTANCES:
            pipe = self._new_instance()
            try:
                op = self._loop._port.connect_pipe(pipe.fileno(), self._on_client)
            except OSError:
                pipe.close()
                raise
            self._waiting[op] = pipe

    def _new_instance(self):
        flags = _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
        if self._first:
            flags |= _winapi.FILE_FLAG_FIRST_PIPE_INSTANCE
        handle = _winapi.CreateNamedPipe(
            self._address, flags, _winapi.PIPE_WAIT,   # byte mode: PIPE_TYPE_BYTE is 0
            _winapi.PIPE_UNLIMITED_INSTANCES, windows_utils.BUFSIZE, windows_utils.BUFSIZE,
            _winapi.NMPWAIT_WAIT_FOREVER, _winapi.NULL)
        self._first = False
        return windows_utils.PipeHandle(handle)

    def _on_client(self, op):
        pipe = self._waiting.pop(op)
        if op.cancelled or self.closed():
            if pipe.handle is not None:   # not closed by close() already
                self._loop._port.forget_handle(pipe.fileno())
                pipe.close()
            return
        if op.result < 0:
            self._loop._port.forget_handle(pipe.fileno())
            pipe.close()
            if op.error.winerror != _ERROR_NO_DATA:
                self._loop.call_exception_handler({
                    "message": "Pipe accept failed", "exception": op.error, "pipe": pipe})
        else:
            try:
                protocol = self._protocol_factory()
                DuplexPipeTransport(self._loop, pipe, protocol,
                                    extra={"addr": self._address})
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                pipe.close()
                self._loop.call_exception_handler({
                    "message": "Creating a pipe transport for a client failed",
                    "exception": exc, "pipe": pipe})
        try:
            self._fill()
        except OSError as exc:
            self._loop.call_exception_handler({
                "message": "Creating a pipe instance failed", "exception": exc})


class PipeMethods:
    """Loop methods for named pipes (mixed into Loop)."""

    async def start_serving_pipe(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                 address: str) -> list[PipeServer]:
        """Serve the named pipe address (r'\\\\.\\pipe\\name'); returns
        [PipeServer], as ProactorEventLoop does."""
        if not IS_WINDOWS:
            raise NotImplementedError(_NOT_ON_THIS_SYSTEM)
        self._check_closed()
        server = PipeServer(self, address, protocol_factory)
        server._fill()
        return [server]

    async def create_pipe_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                     address: str) -> tuple[asyncio.BaseTransport, Any]:
        """Connect to the named pipe address; returns (transport, protocol)."""
        if not IS_WINDOWS:
            raise NotImplementedError(_NOT_ON_THIS_SYSTEM)
        self._check_closed()
        delay = _CONNECT_DELAY_FIRST
        while True:
            try:
                handle = _winapi.CreateFile(
                    address, _winapi.GENERIC_READ | _winapi.GENERIC_WRITE, 0, _winapi.NULL,
                    _winapi.OPEN_EXISTING, _winapi.FILE_FLAG_OVERLAPPED, _winapi.NULL)
                break
            except OSError as exc:
                if exc.winerror != _ERROR_PIPE_BUSY:
                    raise
            await tasks.sleep(delay)
            delay = min(delay * 2, _CONNECT_DELAY_MAX)
        pipe = windows_utils.PipeHandle(handle)
        waiter = self.create_future()
        try:
            protocol = protocol_factory()
            transport = DuplexPipeTransport(self, pipe, protocol, waiter, {"addr": address})
        except BaseException:
            pipe.close()
            raise
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol


async def open_pipe_connection(address: str, *, limit: int = streams._DEFAULT_LIMIT
                               ) -> tuple[streams.StreamReader, streams.StreamWriter]:
    """(StreamReader, StreamWriter) for a client of the named pipe address:
    asyncio.open_connection for Windows named pipes."""
    loop = events.get_running_loop()
    reader = streams.StreamReader(limit=limit, loop=loop)
    protocol = streams.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_pipe_connection(lambda: protocol, address)
    return reader, streams.StreamWriter(transport, protocol, reader, loop)


async def start_pipe_server(client_connected_cb: Callable[..., Any], address: str, *,
                            limit: int = streams._DEFAULT_LIMIT) -> PipeServer:
    """Serve the named pipe address with streams: client_connected_cb(reader,
    writer) runs for each client, as with asyncio.start_server.  Returns the
    PipeServer (close() stops accepting)."""
    loop = events.get_running_loop()

    def factory():
        reader = streams.StreamReader(limit=limit, loop=loop)
        return streams.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    [server] = await loop.start_serving_pipe(factory, address)
    return server

