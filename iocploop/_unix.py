"""Unix domain stream sockets (Linux): create_unix_connection and
create_unix_server, which asyncio.open_unix_connection and
asyncio.start_unix_server call.

The sockets run on the same completion operations as TCP (io_uring
connect / accept / recv / send; the accept pool and TCPTransport do not
care about the family).  What is particular to Unix sockets lives here:
the argument checks asyncio makes, removing a stale socket file before
bind, abstract names (a path starting with NUL), and removing the socket
file when the server closes.  That is done as the running asyncio does
it: by default from 3.13 on (cleanup_socket=True), never by default before
(asyncio and uvloop keep the file there); iocploop accepts cleanup_socket=
on every version, so cleanup_socket=True asks for it on 3.11 and 3.12 too.
Only a file that is still the one the server bound (same inode) is removed.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from asyncio import base_events, tasks

__all__ = ["UnixMethods"]

HAS_UNIX = hasattr(socket, "AF_UNIX") and sys.platform != "win32"
# asyncio removes the file of a server's socket when the server closes from
# 3.13 on (create_unix_server(cleanup_socket=True), its default).
_CLEANUP_BY_DEFAULT = sys.version_info >= (3, 13)


def _is_abstract(path) -> bool:
    return bool(path) and path[0] in (0, "\0")


def _check_unix_stream(sock):
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")


class UnixMethods:
    """Loop methods for Unix domain sockets (mixed into Loop)."""

    def _init_unix_methods(self):
        self._unix_socket_files = {}   # listening socket -> inode of the file it bound

    async def create_unix_connection(self, protocol_factory, path=None, *, ssl=None, sock=None,
                                     server_hostname=None, ssl_handshake_timeout=None,
                                     ssl_shutdown_timeout=None):
        if not HAS_UNIX:
            raise NotImplementedError
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            if ssl_handshake_timeout is not None:
                raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
            if ssl_shutdown_timeout is not None:
                raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            _check_unix_stream(sock)
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def create_unix_server(self, protocol_factory, path=None, *, sock=None, backlog=100,
                                 ssl=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                                 start_serving=True, cleanup_socket=None):
        if not HAS_UNIX:
            raise NotImplementedError
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if cleanup_socket is None:
            cleanup_socket = _CLEANUP_BY_DEFAULT
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            sock = self._bind_unix_path(os.fspath(path))
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            _check_unix_stream(sock)
        if cleanup_socket:
            bound = sock.getsockname()
            if bound and not _is_abstract(bound):
                try:
                    self._unix_socket_files[sock] = (bound, os.stat(bound).st_ino)
                except FileNotFoundError:
                    pass
        sock.setblocking(False)
        server = base_events.Server(self, [sock], protocol_factory, ssl, backlog,
                                    ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await tasks.sleep(0)   # let the accepts be posted, as asyncio does
        return server

    @staticmethod
    def _bind_unix_path(path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if not _is_abstract(path):
            # A socket file left by an earlier server would make bind fail.
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                base_events.logger.error("Unable to check or remove stale UNIX socket %r: %r",
                                         path, err)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
            raise
        except BaseException:
            sock.close()
            raise
        return sock

    def _remove_unix_socket_file(self, sock):
        """When a server's listening socket stops: its file goes, if the file
        at that path is still the one it bound."""
        entry = self._unix_socket_files.pop(sock, None)
        if entry is None:
            return
        path, inode = entry
        try:
            if os.stat(path).st_ino == inode:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            base_events.logger.error("Unable to clean up listening UNIX socket %r: %r",
                                     path, err)
