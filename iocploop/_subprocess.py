"""Subprocesses and pipes: the hooks BaseEventLoop's subprocess_exec,
subprocess_shell, connect_read_pipe and connect_write_pipe call.

asyncio's BaseSubprocessTransport does the protocol side (pipe protocols,
process_exited, wait(), the ordering of connection_lost); this module
starts the child and tells the transport when it has exited, without a
thread and without blocking the loop:

* Linux (_subprocess_linux.py): the child's pidfd (pidfd_open, Linux 5.3) is polled through
  io_uring; when it is readable the child is reaped with waitpid.  Where
  pidfd_open is refused (old kernels, seccomp filters) one thread per child
  waits in waitpid instead, as asyncio's ThreadedChildWatcher does.
* Windows (_subprocess_windows.py): windows_utils.Popen (overlapped pipes, as CPython's Proactor),
  and a wait registration on the process handle that posts to the
  completion port (ioc_submit_wait_handle).

Pipes are read and written through the completion port (_transports/pipes.py).
"""
from __future__ import annotations

import sys
from asyncio import base_subprocess

from ._transports import ReadPipeTransport, WritePipeTransport

# How a child starts and how its exit is learned: one module per platform.
if sys.platform == "win32":
    from ._subprocess_windows import ExitWatches, popen
else:
    from ._subprocess_linux import ExitWatches, popen

__all__ = ["SubprocessMethods"]


class ProcessTransport(base_subprocess.BaseSubprocessTransport):

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = popen(args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                           bufsize=bufsize, **kwargs)
        self._loop._exit_watches.watch(self)

    def _on_exit(self, returncode):
        if self._returncode is None:   # not told already
            self._process_exited(returncode)


class SubprocessMethods:
    """Loop methods for subprocesses and pipes (mixed into Loop)."""

    def _init_subprocess_methods(self):
        self._exit_watches = ExitWatches(self)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr,
                                         bufsize, extra=None, **kwargs):
        waiter = self.create_future()
        transport = ProcessTransport(self, protocol, args, shell, stdin, stdout, stderr,
                                     bufsize, waiter=waiter, extra=extra, **kwargs)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _close_exit_watches(self):
        """At loop close: stop watching the children still running.  They are
        not reaped here; asyncio's loops leave them too."""
        self._exit_watches.close()
