"""Build recipe for iocploop's C core (cffi, API mode).

`setup.py` hands `ffibuilder` to cffi (``cffi_modules``) for the host system.
`tools/wine.py` calls `make_ffibuilder("windows")` to emit the C source of the
Windows module and cross-compiles it with MinGW.

The declarations below mirror ``csrc/ioc_core.h``; tests/test_cdef_in_step.py
keeps the two (and _scheduler.pyx's function-pointer types) in step.
"""
from __future__ import annotations

import os
import sys

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(ROOT, "csrc")
MODULE_NAME = "iocploop._ioc"

CDEF = """
typedef struct ioc_core ioc_core;
typedef struct ioc_op ioc_op;

typedef struct ioc_completion {
    uint64_t token;
    int64_t result;
    uint32_t flags;
} ioc_completion;

typedef struct ioc_stats {
    uint64_t submitted;
    uint64_t completed;
    uint64_t cancels;
    uint64_t waits;
    uint64_t enters;
    uint64_t wakeups_sent;
    uint64_t wakeups_merged;
    uint64_t in_flight;
    uint64_t strays;
    uint64_t immediate;
} ioc_stats;

#define IOC_EXT_ACCEPTEX ...
#define IOC_EXT_CONNECTEX ...
#define IOC_EXT_GETACCEPTEXSOCKADDRS ...
#define IOC_EXT_TRANSMITFILE ...
#define IOC_EXT_DISCONNECTEX ...
#define IOC_EXT_TRANSMITPACKETS ...
#define IOC_EXT_WSARECVMSG ...
#define IOC_EXT_WSASENDMSG ...

int ioc_core_open(ioc_core **out, unsigned int queue_depth, char *err, size_t errlen);
int ioc_core_close(ioc_core *core, int drain_ms);
void ioc_core_forked(ioc_core *core);
int ioc_associate(ioc_core *core, intptr_t handle);
int ioc_submit_recv(ioc_core *core, intptr_t sock, void *buf, uint32_t len,
                    int flags, uint64_t token, ioc_op **op_out);
int ioc_submit_send(ioc_core *core, intptr_t sock, const void *buf, uint32_t len,
                    int flags, uint64_t token, ioc_op **op_out);
typedef struct ioc_iovec {
    void *base;
    size_t len;
} ioc_iovec;
int ioc_submit_sendv(ioc_core *core, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                     int flags, uint64_t token, ioc_op **op_out);

#define IOC_ACCEPT_ADDRBUF 288
int ioc_submit_accept(ioc_core *core, intptr_t listen_sock, intptr_t accept_sock,
                      void *addrbuf, uint32_t *addrlen, uint32_t recv_len, uint64_t token,
                      ioc_op **op_out);
typedef struct ioc_addr {
    int family;
    int port;
    uint8_t addr[16];
    uint32_t flowinfo;
    uint32_t scope_id;
} ioc_addr;
int ioc_accept_finish(ioc_core *core, intptr_t listen_sock, intptr_t accept_sock,
                      void *addrbuf, uint32_t addrlen, uint32_t recv_len,
                      ioc_addr *local, ioc_addr *remote);
int ioc_submit_connect(ioc_core *core, intptr_t sock, const void *addr, int addrlen,
                       uint64_t token, ioc_op **op_out);
int ioc_connect_finish(ioc_core *core, intptr_t sock);
int ioc_encode_addr(const ioc_addr *in, void *sockaddr_out, int out_len);
int ioc_decode_sockaddr(const void *sockaddr_in, int len, ioc_addr *out);

#define IOC_SENDFILE_MAX 0x7FFFFFFE
typedef struct ioc_msg_result {
    uint32_t namelen;
    uint32_t controllen;
    int32_t flags;
} ioc_msg_result;
int ioc_submit_recvmsg(ioc_core *core, intptr_t sock, void *buf, uint32_t len,
                       void *name, uint32_t namelen, void *control, uint32_t controllen,
                       int flags, ioc_msg_result *result, uint64_t token, ioc_op **op_out);
int ioc_recvmsg_now(intptr_t sock, void *buf, uint32_t len, void *name, uint32_t namelen,
                    void *control, uint32_t controllen, ioc_msg_result *result);
int ioc_submit_sendmsg(ioc_core *core, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                       const void *name, int namelen, const void *control,
                       uint32_t controllen, int flags, uint64_t token, ioc_op **op_out);
#define IOC_PKTINFO_SPACE 64
int ioc_pktinfo_enable(intptr_t sock, int family);
int ioc_pktinfo_parse(const void *control, uint32_t controllen, ioc_addr *local,
                      uint32_t *ifindex);
int ioc_pktinfo_build(void *control, uint32_t cap, const ioc_addr *local, uint32_t ifindex);

int ioc_submit_sendfile(ioc_core *core, intptr_t sock, intptr_t file, uint64_t offset,
                        uint32_t count, uint64_t token, ioc_op **op_out);
int ioc_submit_poll(ioc_core *core, intptr_t sock, uint32_t events, uint64_t token,
                    ioc_op **op_out);
int ioc_submit_poll_multishot(ioc_core *core, intptr_t sock, uint32_t events, uint64_t token,
                              ioc_op **op_out);
int ioc_submit_read(ioc_core *core, intptr_t handle, void *buf, uint32_t len, uint64_t token,
                    ioc_op **op_out);
int ioc_submit_write(ioc_core *core, intptr_t handle, const void *buf, uint32_t len,
                     uint64_t token, ioc_op **op_out);
int ioc_submit_connect_pipe(ioc_core *core, intptr_t pipe, uint64_t token, ioc_op **op_out);
int ioc_submit_wait_handle(ioc_core *core, intptr_t handle, uint64_t token, ioc_op **op_out);
int ioc_submit_disconnect(ioc_core *core, intptr_t sock, uint64_t token, ioc_op **op_out);
int ioc_socket_dissolve(intptr_t sock);

int ioc_cancel(ioc_core *core, ioc_op *op, uint64_t token);
extern "Python" void ioc_py_before_publish(void *arg);
void ioc_set_publish_hook(ioc_core *core, void (*before_publish)(void *), void *arg,
                          int *armed);
int ioc_void_queued(ioc_core *core, ioc_op *op, uint64_t token);
int ioc_wait(ioc_core *core, int64_t timeout_ns, ioc_completion *out, int max,
             int *stored);
int ioc_flush(ioc_core *core);
int ioc_ring_thread(ioc_core *core);
int ioc_wakeup(ioc_core *core);
int ioc_watch_sigint(ioc_core *core, intptr_t event);
intptr_t ioc_py_sigint_event(void);
int ioc_extensions(ioc_core *core, intptr_t sock);
void ioc_get_stats(ioc_core *core, ioc_stats *out);
#define IOC_COMPLETION_MORE ...
#define IOC_COMPLETION_STRAY ...
const char *ioc_backend_name(void);
int ioc_err_cancelled(void);
"""

# Compiled into the extension module itself, where Python's C API is at hand:
# the handle of the event the interpreter sets on SIGINT (Windows only; the
# symbol is exported by python3X.dll, its declaration moved to an internal
# header in 3.13, so we declare it ourselves).
PREAMBLE = """
#include "ioc_core.h"
#ifdef _WIN32
PyAPI_FUNC(void *) _PyOS_SigintEvent(void);
static intptr_t ioc_py_sigint_event(void) { return (intptr_t)_PyOS_SigintEvent(); }
#else
static intptr_t ioc_py_sigint_event(void) { return 0; }
#endif
"""

# Per target: the backend source and the libraries it links.
SOURCES = {
    "linux": ["ioc_core_linux.c"],
    "windows": ["ioc_core_win.c"],
}
LIBRARIES = {
    "linux": [],
    "windows": ["ws2_32", "mswsock"],
}


def host_target() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform.startswith("linux"):
        return "linux"
    raise RuntimeError(
        f"iocploop has backends for Windows (IOCP) and Linux (io_uring) only, not {sys.platform!r}"
    )


def source_paths(target: str, relative: bool = True) -> list[str]:
    """Paths of the C sources for target (relative to the project root for setuptools)."""
    base = "csrc" if relative else CSRC
    return [os.path.join(base, name) for name in SOURCES[target]]


# AddressSanitizer build of the Linux core (tools/asan.sh): catches any
# use-after-free of operation records or buffers the kernel still owns.
SANITIZE_COMPILE = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
SANITIZE_LINK = ["-fsanitize=address"]


def make_ffibuilder(target: str, absolute_paths: bool = False,
                    sanitize: bool = False) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    extra_compile_args = ["-O2"] if target == "linux" else []
    extra_link_args = []
    if sanitize:
        extra_compile_args, extra_link_args = SANITIZE_COMPILE, SANITIZE_LINK
    ffi.set_source(
        MODULE_NAME,
        PREAMBLE,
        sources=source_paths(target, relative=not absolute_paths),
        include_dirs=[CSRC if absolute_paths else "csrc"],
        libraries=LIBRARIES[target],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
        define_macros=[("WIN32_LEAN_AND_MEAN", None)] if target == "windows" else [],
    )
    return ffi


ffibuilder = make_ffibuilder(host_target())


def build_in_place(package_dir: str = os.path.join(ROOT, "iocploop"),
                   sanitize: bool = False) -> str:
    """Compile the host module into package_dir (for development and tests).

    Compiles in a scratch folder: setuptools would otherwise read our
    pyproject.toml with whatever (possibly old) setuptools runs this."""
    import glob
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="iocploop-build-") as tmp:
        ffi = make_ffibuilder(host_target(), absolute_paths=True, sanitize=sanitize)
        built = ffi.compile(tmpdir=tmp)
        target = os.path.join(package_dir, os.path.basename(built))
        for stale in glob.glob(os.path.join(package_dir, "_ioc.*")):
            os.remove(stale)
        shutil.copy2(built, target)
    return target


if __name__ == "__main__":
    # python _cffi_build/build_core.py [--sanitize PACKAGE_DIR]
    if len(sys.argv) == 3 and sys.argv[1] == "--sanitize":
        print(build_in_place(sys.argv[2], sanitize=True))
    else:
        print(build_in_place())
