"""Linux: io_uring unavailable (seccomp) and a loop inherited through fork()."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import platform
import textwrap
import time
import warnings

import pytest

import iocploop
from _helpers import IS_LINUX, TIMEOUT, run_python, socketpair

pytestmark = pytest.mark.skipif(not IS_LINUX, reason="io_uring and fork() are Linux matters")

IS_X86_64 = platform.machine() in ("x86_64", "AMD64")

# A child that makes io_uring_setup fail with the given errno through a
# seccomp filter, then tries to create an iocploop loop.
_SECCOMP_CHILD = textwrap.dedent("""
    import ctypes, json, sys

    ERR = int(sys.argv[1])
    PR_SET_NO_NEW_PRIVS = 38
    PR_SET_SECCOMP = 22
    SECCOMP_MODE_FILTER = 2
    SECCOMP_RET_ALLOW = 0x7FFF0000
    SECCOMP_RET_ERRNO = 0x00050000
    AUDIT_ARCH_X86_64 = 0xC000003E
    NR_IO_URING_SETUP = 425
    BPF_LD_W_ABS = 0x20      # BPF_LD | BPF_W | BPF_ABS
    BPF_JEQ_K = 0x15         # BPF_JMP | BPF_JEQ | BPF_K
    BPF_RET_K = 0x06         # BPF_RET | BPF_K

    class sock_filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                    ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class sock_fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(sock_filter))]

    prog = [
        sock_filter(BPF_LD_W_ABS, 0, 0, 4),                   # A = seccomp_data.arch
        sock_filter(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),      # other arch: allow
        sock_filter(BPF_LD_W_ABS, 0, 0, 0),                   # A = seccomp_data.nr
        sock_filter(BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        sock_filter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ERR),
        sock_filter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    filters = (sock_filter * len(prog))(*prog)
    fprog = sock_fprog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                           ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        print(json.dumps({"setup": "no_new_privs", "errno": ctypes.get_errno()}))
        sys.exit(0)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        print(json.dumps({"setup": "seccomp", "errno": ctypes.get_errno()}))
        sys.exit(0)

    import asyncio
    import iocploop
    out = {"setup": "ok"}
    try:
        iocploop.new_event_loop()
    except iocploop.BackendUnavailableError as exc:
        out.update(type=type(exc).__name__, errno=exc.errno, message=str(exc),
                   is_oserror=isinstance(exc, OSError))
    else:
        out.update(type=None)
    coro = asyncio.sleep(0)
    try:
        iocploop.run(coro)
    except iocploop.BackendUnavailableError:
        out["run"] = "BackendUnavailableError"
    finally:
        coro.close()
    import gc
    gc.collect()
    # asyncio's own loop still works: the advice in the message is usable.
    out["asyncio_ok"] = asyncio.run(asyncio.sleep(0, "fine")) == "fine"
    print(json.dumps(out))
""")


def _io_uring_sysctl():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _run_seccomp_child(tmp_path, err: int):
    """Run the child; returns (its JSON report, its stderr)."""
    script = tmp_path / "seccomp_child.py"
    script.write_text(_SECCOMP_CHILD, encoding="utf-8")
    # -W always::ResourceWarning: an "unclosed event loop" warning would show.
    res = run_python(["-W", "always::ResourceWarning", str(script), str(err)],
                     timeout=60, cwd=str(tmp_path))
    assert res.returncode == 0, f"child crashed: rc={res.returncode}\n{res.stderr}"
    info = json.loads(res.stdout.strip().splitlines()[-1])
    if info["setup"] != "ok":
        pytest.skip(f"cannot install a seccomp filter here ({info['setup']} failed, "
                    f"errno {info['errno']})")
    return info, res.stderr


_NEEDS_X86_64 = pytest.mark.skipif(
    not IS_X86_64, reason="the seccomp filter hard-codes x86_64's AUDIT_ARCH and "
    "io_uring_setup syscall number (425)")


@_NEEDS_X86_64
def test_io_uring_blocked_by_seccomp_eperm(tmp_path):
    info, _stderr = _run_seccomp_child(tmp_path, errno.EPERM)
    assert info["type"] == "BackendUnavailableError"
    assert info["is_oserror"]
    assert info["errno"] == errno.EPERM
    assert info["run"] == "BackendUnavailableError"
    assert info["asyncio_ok"]
    msg = info["message"]
    assert "io_uring" in msg
    assert "Operation not permitted" in msg
    if _io_uring_sysctl() in (None, 0):
        assert "seccomp" in msg, msg
    assert "asyncio's default loop" in msg


@_NEEDS_X86_64
def test_io_uring_missing_enosys(tmp_path):
    info, _stderr = _run_seccomp_child(tmp_path, errno.ENOSYS)
    assert info["type"] == "BackendUnavailableError"
    assert info["errno"] == errno.ENOSYS
    assert info["run"] == "BackendUnavailableError"
    assert info["asyncio_ok"]
    msg = info["message"]
    assert "ENOSYS" in msg
    assert "io_uring" in msg
    assert "asyncio's default loop" in msg


@_NEEDS_X86_64
@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS], ids=["EPERM", "ENOSYS"])
def test_backend_unavailable_leaves_nothing_behind(tmp_path, err):
    """The failed new_event_loop() must not leave a half-built loop whose
    finaliser complains ("unclosed event loop", or an AttributeError from
    its repr) on stderr."""
    _info, stderr = _run_seccomp_child(tmp_path, err)
    assert "Exception ignored" not in stderr, stderr
    assert "unclosed event loop" not in stderr, stderr
    assert stderr.strip() == "", stderr


_SYSCTL_CHILD = textwrap.dedent("""
    import json, iocploop
    try:
        iocploop.new_event_loop().close()
        print(json.dumps({"type": None}))
    except iocploop.BackendUnavailableError as exc:
        print(json.dumps({"type": type(exc).__name__, "errno": exc.errno, "message": str(exc)}))
""")


def test_io_uring_disabled_by_sysctl(tmp_path):
    """kernel.io_uring_disabled=2 for real, for the few milliseconds a child
    needs; restored whatever happens."""
    path = "/proc/sys/kernel/io_uring_disabled"
    before = _io_uring_sysctl()
    if before is None:
        pytest.skip("this kernel has no kernel.io_uring_disabled sysctl (added in Linux 6.6)")
    if not os.access(path, os.W_OK):
        pytest.skip("changing kernel.io_uring_disabled needs root")
    script = tmp_path / "sysctl_child.py"
    script.write_text(_SYSCTL_CHILD, encoding="utf-8")
    try:
        with open(path, "w") as f:
            f.write("2")
        res = run_python([str(script)], timeout=60, cwd=str(tmp_path))
    finally:
        with open(path, "w") as f:
            f.write(str(before))
    assert _io_uring_sysctl() == before
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["type"] == "BackendUnavailableError"
    assert info["errno"] in (errno.EPERM, errno.EACCES)
    assert "kernel.io_uring_disabled is 2" in info["message"], info["message"]
    assert "asyncio's default loop" in info["message"]


def test_backend_unavailable_error_type():
    exc = iocploop.BackendUnavailableError(errno.EPERM, "io_uring is blocked")
    assert isinstance(exc, OSError)
    assert exc.errno == errno.EPERM
    assert "io_uring is blocked" in str(exc)


# -- fork ------------------------------------------------------------------------


def _wait_child(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("forked child did not exit in time")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_loop_inherited_through_fork_refuses_to_run(iocp_loop):
    # Use the loop once so the ring is live, and leave a receive posted
    # across the fork: the child's close must not cancel it.
    iocp_loop.run_until_complete(asyncio.sleep(0))
    a, b = socketpair()
    got = []
    iocp_loop._port.recv(a, bytearray(8), got.append)
    iocp_loop.run_until_complete(asyncio.sleep(0))
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns about fork() in a process with threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:   # pragma: no cover - child
        code = 1
        try:
            report = {}
            for name, action in [
                ("select", lambda: iocp_loop._port.select(0)),
                ("stats", lambda: iocp_loop._port.stats()),
                ("run", lambda: iocp_loop.run_until_complete(asyncio.sleep(0))),
            ]:
                try:
                    action()
                    report[name] = "no error"
                except RuntimeError as exc:
                    report[name] = "RuntimeError: " + str(exc)
                except BaseException as exc:
                    report[name] = f"{type(exc).__name__}: {exc}"
            try:
                iocp_loop.close()
                report["close"] = "ok"
            except BaseException as exc:
                report["close"] = f"{type(exc).__name__}: {exc}"
            try:
                fresh = iocploop.new_event_loop()
                report["fresh"] = fresh.run_until_complete(asyncio.sleep(0.01, "fresh ok"))
                fresh.close()
            except BaseException as exc:
                report["fresh"] = f"{type(exc).__name__}: {exc}"
            os.write(wfd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        assert _wait_child(pid) == 0
        data = b""
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rfd)
    report = json.loads(data)
    for name in ("select", "stats", "run"):
        assert report[name].startswith("RuntimeError"), report
        assert "fork" in report[name], report
    assert report["close"] == "ok"
    assert report["fresh"] == "fresh ok"
    # The parent's loop is unharmed by the child: the receive posted before
    # the fork is still there and completes.
    try:
        assert not got and iocp_loop._port.pending == 1
        b.send(b"parent")
        iocp_loop.run_until_complete(asyncio.wait_for(_until(lambda: got), TIMEOUT))
        assert got[0].result == 6
    finally:
        a.close()
        b.close()


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.005)
