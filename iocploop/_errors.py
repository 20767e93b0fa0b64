"""Exceptions of iocploop's own (everything else is what asyncio raises)."""


class BackendUnavailableError(OSError):
    """The system's completion facility cannot be used here.

    On Linux: io_uring is missing, disabled (kernel.io_uring_disabled) or
    blocked by a seccomp profile.  The message says which and what to do.
    """
