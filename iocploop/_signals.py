"""add_signal_handler / remove_signal_handler.

Python's C-level signal handler writes each signal's number to the wakeup
fd (signal.set_wakeup_fd).  iocploop points it at one end of a socket pair
and keeps a receive posted on the other end through the completion port:
the receive completes, the loop wakes, and each number read schedules that
signal's handler as a callback, as asyncio's Unix loop does.

Windows has no POSIX signals; the C runtime turns console control events
into SIGINT (Ctrl+C) and SIGBREAK (Ctrl+Break), and Python's handler for
them runs the same wakeup path.  So iocploop supports those two there --
CPython's Windows loops support none -- and refuses the others with
NotImplementedError, as asyncio's Windows loops refuse every signal.
"""
from __future__ import annotations

import errno
import signal
import socket
import sys
from asyncio import base_events, coroutines, events

__all__ = ["SignalMethods"]

IS_WINDOWS = sys.platform == "win32"
WINDOWS_SIGNALS = frozenset(
    s for s in (signal.SIGINT, getattr(signal, "SIGBREAK", None)) if s is not None)


def _ignore_signal(signum, frame):
    """Python-level handler of a signal the loop handles: the C-level
    handler already wrote its number to the wakeup fd."""


class SignalMethods:
    """Loop methods for signals (mixed into Loop)."""

    def _init_signal_methods(self):
        self._signal_handlers: dict[int, events.Handle] = {}
        self._signal_socks = None     # (read end, write end) while handlers exist
        self._signal_op = None
        self._signal_buf = bytearray(256)
        self._retired_signal_socks = []   # closed once their receive is done

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")
        if IS_WINDOWS and sig not in WINDOWS_SIGNALS:
            raise NotImplementedError(
                f"iocploop on Windows handles SIGINT and SIGBREAK (console control events); "
                f"signal {sig} cannot be delivered to a Windows process")

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) in the loop whenever sig arrives.  Linux: any
        catchable signal; Windows: SIGINT and SIGBREAK."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        read_end, write_end = self._signal_channel()
        try:
            # Refused outside the main thread (ValueError): so a loop running
            # in another thread cannot take over a signal.
            signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            self._drop_signal_channel_if_unused()
            raise RuntimeError(str(exc))
        self._signal_handlers[sig] = events.Handle(callback, args, self, None)
        try:
            signal.signal(sig, _ignore_signal)
            if not IS_WINDOWS:
                signal.siginterrupt(sig, False)   # SA_RESTART: fewer EINTRs in user code
        except OSError as exc:
            del self._signal_handlers[sig]
            self._drop_signal_channel_if_unused()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler of sig; True if there was one.  The signal's
        disposition goes back to Python's default (KeyboardInterrupt for
        SIGINT, the system default for the others)."""
        self._check_signal(sig)
        if self._signal_handlers.pop(sig, None) is None:
            return False
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, default)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught") from None
            raise
        self._drop_signal_channel_if_unused()
        return True

    # -- the wakeup channel ----------------------------------------------------

    def _signal_channel(self):
        if self._signal_socks is None:
            read_end, write_end = socket.socketpair()
            read_end.setblocking(False)
            write_end.setblocking(False)
            self._signal_socks = (read_end, write_end)
            self._post_signal_recv()
        return self._signal_socks

    def _post_signal_recv(self):
        read_end = self._signal_socks[0]
        self._signal_op = self._port.recv(read_end, self._signal_buf, self._on_signal_bytes)

    def _on_signal_bytes(self, op):
        self._signal_op = None
        if self._signal_socks is None:
            return
        if op.result > 0:
            for sig in bytes(self._signal_buf[:op.result]):
                self._handle_signal(sig)
        elif op.result < 0 and not op.cancelled:
            base_events.logger.warning("signal wakeup channel failed: %s", op.error)
        if self._signal_socks is not None and not self.is_closed():
            self._post_signal_recv()

    def _handle_signal(self, sig):
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return   # removed after the signal arrived
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self._add_callback(handle)

    def _drop_signal_channel_if_unused(self):
        if self._signal_handlers or self._signal_socks is None:
            return
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            base_events.logger.info("set_wakeup_fd(-1) failed: %s", exc)
        socks, self._signal_socks = self._signal_socks, None
        op, self._signal_op = self._signal_op, None
        if op is not None and self._port.cancel(op):
            # The receive still holds the socket: close it when it is done.
            self._retired_signal_socks.append(socks)
            op.callback = lambda op, socks=socks: self._close_signal_socks(socks)
        else:
            self._close_signal_socks(socks)

    def _close_signal_socks(self, socks):
        if socks in self._retired_signal_socks:
            self._retired_signal_socks.remove(socks)
        for sock in socks:
            sock.close()

    def _close_signal_handlers(self):
        """At loop close, before the port closes: remove the loop's handlers
        (Python allows that in the main thread only, as asyncio's does)."""
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (ValueError, RuntimeError):
                pass   # not the main thread: Python refuses; the handler stays

    def _close_signal_channel(self):
        """After the port closed: the sockets whose receive never reported."""
        for socks in list(self._retired_signal_socks):
            self._close_signal_socks(socks)
        if self._signal_socks is not None:   # handlers left (not the main thread)
            self._close_signal_socks(self._signal_socks)
            self._signal_socks = None
