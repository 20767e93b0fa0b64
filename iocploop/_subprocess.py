"""Subprocesses and pipes: the hooks BaseEventLoop's subprocess_exec,
subprocess_shell, connect_read_pipe and connect_write_pipe call.

asyncio's BaseSubprocessTransport does the protocol side (pipe protocols,
process_exited, wait(), the ordering of connection_lost); this module
starts the child and tells the transport when it has exited, without a
thread and without blocking the loop:

* Linux: the child's pidfd (pidfd_open, Linux 5.3) is polled through
  io_uring; when it is readable the child is reaped with waitpid.  Where
  pidfd_open is refused (old kernels, seccomp filters) one thread per child
  waits in waitpid instead, as asyncio's ThreadedChildWatcher does.
* Windows: windows_utils.Popen (overlapped pipes, as CPython's Proactor),
  and a wait registration on the process handle that posts to the
  completion port (ioc_submit_wait_handle).

Pipes are read and written through the completion port (_transports/pipes.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from asyncio import base_events, base_subprocess

from ._transports import ReadPipeTransport, WritePipeTransport

__all__ = ["SubprocessMethods"]

IS_WINDOWS = sys.platform == "win32"
_POLLIN = 0x1

if IS_WINDOWS:
    from asyncio import windows_utils


class ProcessTransport(base_subprocess.BaseSubprocessTransport):

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        if IS_WINDOWS:
            self._proc = windows_utils.Popen(
                args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                bufsize=bufsize, **kwargs)
        else:
            self._proc = subprocess.Popen(
                args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                universal_newlines=False, bufsize=bufsize, **kwargs)
        self._loop._watch_process_exit(self)

    def _on_exit(self, returncode):
        if self._returncode is None:   # not told already
            self._process_exited(returncode)


def _exit_code_of(proc, pid):
    """Reap pid and return asyncio's returncode (-signal for a killed child)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Reaped elsewhere (Popen.poll() in transport.close(), for one).
        if proc.returncode is not None:
            return proc.returncode
        base_events.logger.warning(
            "child process pid %d exit status already read: will report returncode 255", pid)
        return 255
    return os.waitstatus_to_exitcode(status)


class SubprocessMethods:
    """Loop methods for subprocesses and pipes (mixed into Loop)."""

    def _init_subprocess_methods(self):
        self._exit_watches = {}   # Linux: pidfd -> transport, while polled

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

    # -- process exit ------------------------------------------------------------

    def _watch_process_exit(self, transport):
        proc = transport._proc
        if IS_WINDOWS:
            def exited(op):
                if not op.cancelled:
                    transport._on_exit(proc.poll())
            self._port.wait_handle(int(proc._handle), exited)
            return
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._watch_exit_in_thread(transport)
            return
        try:
            self._port.poll_ready(pidfd, _POLLIN, self._on_pidfd)
        except OSError:
            os.close(pidfd)
            self._watch_exit_in_thread(transport)
            return
        self._exit_watches[pidfd] = transport

    def _on_pidfd(self, op):
        pidfd = op.buffer
        transport = self._exit_watches.pop(pidfd, None)
        os.close(pidfd)
        if transport is None or op.cancelled:
            return
        transport._on_exit(_exit_code_of(transport._proc, transport._proc.pid))

    def _watch_exit_in_thread(self, transport):
        proc = transport._proc

        def wait():
            code = _exit_code_of(proc, proc.pid)
            try:
                self.call_soon_threadsafe(transport._on_exit, code)
            except RuntimeError:   # the loop closed meanwhile
                pass

        threading.Thread(target=wait, name=f"iocploop-waitpid-{proc.pid}", daemon=True).start()

    def _close_exit_watches(self):
        """At loop close: the pidfds of children still running.  The children
        are not reaped here; asyncio's loops leave them too."""
        for pidfd in list(self._exit_watches):
            os.close(pidfd)
        self._exit_watches.clear()
