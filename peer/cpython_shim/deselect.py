"""Tests of CPython's test.test_asyncio that are taken out of the count.

DESELECT: tests that poke asyncio's private internals (a selector, a proactor,
the self-pipe socket, child watchers, mocked module globals of
asyncio.selector_events/unix_events/...) and so cannot apply to a completion
loop.  ONE list with a reason each, applied to BOTH targets (iocploop and
stock asyncio) so the two runs count the same tests; a test failing on
iocploop that stock asyncio passes does NOT belong here: it is an iocploop bug.

PLATFORM_EXCLUDE: tests that cannot run on a platform at all, whichever loop
(both targets).  Also counted as deselected.

Patterns are fnmatch patterns over the test id without the package prefix
"test.test_asyncio.", e.g. "test_events.*.test_internal_fds".  A pattern that
names a module alone ("test_ssl") takes the whole module.
"""

DESELECT: list[tuple[str, str]] = [
    # test_unix_events: SelectorEventLoopUnixSockSendfileTests builds its loop with
    # asyncio.new_event_loop() (so iocploop on that target) and then drives the
    # selector loop's private sendfile machinery.
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel1",
     "calls loop._sock_sendfile_native_impl() and inspects loop._selector (selector-loop internals)"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_cancel2",
     "calls loop._sock_sendfile_native_impl() and inspects loop._selector (selector-loop internals)"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_blocking_error",
     "calls loop._sock_sendfile_native_impl() with os.sendfile patched and reads loop._selector"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_first_call",
     "calls loop._sock_sendfile_native_impl() with os.sendfile patched and reads loop._selector"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_os_error_next_call",
     "calls loop._sock_sendfile_native_impl() with os.sendfile patched and reads loop._selector"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_exception",
     "calls loop._sock_sendfile_native_impl() with os.sendfile patched and reads loop._selector"),
    ("test_unix_events.SelectorEventLoopUnixSockSendfileTests.test_sock_sendfile_not_available",
     "patches the module global asyncio.unix_events.os (only the selector loop's code reads it)"),
    ("test_unix_events.*.test_create_unix_server_bind_error",
     "patches the module global asyncio.unix_events.socket (only the selector loop's code reads it)"),
    # Child watchers: iocploop waits for children through pidfds (Linux) / wait
    # registrations (Windows) and never consults the policy's watcher.
    ("test_subprocess.GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher",
     "installs a mock child watcher and expects subprocess creation to consult it "
     "(asyncio.unix_events child-watcher machinery; a pidfd-based loop has none)"),
    # test_windows_events.ProactorTests (and its iocploop twin): the IocpProactor object.
    ("test_windows_events.*.test_address_argument_type_error",
     "calls loop._proactor.connect()/sendto() (IocpProactor internals)"),
    ("test_windows_events.*.test_connect_pipe_cancel",
     "patches _overlapped.ConnectPipe and calls loop._proactor.connect_pipe() (IocpProactor internals)"),
    ("test_windows_events.*.test_wait_for_handle",
     "calls loop._proactor.wait_for_handle() (IocpProactor internals)"),
    ("test_windows_events.*.test_wait_for_handle_cancel",
     "calls loop._proactor.wait_for_handle() (IocpProactor internals)"),
    # Selector-only readiness path.
    ("test_sock_lowlevel.*.test_sendto_blocking",
     "passes a Mock socket whose sendto() raises BlockingIOError to exercise the selector "
     "loop's retry-on-EWOULDBLOCK path; CPython itself skips it for its completion loop "
     "(ProactorEventLoop: 'Not relevant'); a completion loop never calls sock.sendto()"),
]

PLATFORM_EXCLUDE: dict[str, list[tuple[str, str]]] = {
    "linux": [],
    "wine": [
        ("test_ssl", "hangs under Wine 8 (stock asyncio too): TLS over loopback never completes"),
        ("test_sendfile.*.test_sendfile_close_peer_in_the_middle_of_receiving",
         "asserts file.tell() after a transfer the peer cut: TransmitFile reports no partial "
         "count when it fails, so a completion loop cannot know it -- the test exempts "
         "CPython's ProactorEventLoop for that reason (docs/compat.md)"),
    ],
}
