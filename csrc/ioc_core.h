/*
 * ioc_core.h -- the one interface of iocploop's completion core.
 *
 * Two backends implement it, chosen at build time:
 *   ioc_core_win.c    Windows I/O completion port (GetQueuedCompletionStatusEx)
 *   ioc_core_linux.c  Linux io_uring (raw syscalls, see docs/architecture.md)
 *
 * Conventions shared by both backends:
 *   - A result >= 0 is success (a byte count for recv/send).
 *   - A result < 0 is a negated system error: -errno on Linux, -winerror
 *     (WSA* or ERROR_*) on Windows.  Cancelled operations complete with
 *     IOC_ERR_CANCELLED (-ECANCELED / -ERROR_OPERATION_ABORTED).
 *   - Every submitted operation yields exactly one completion, unless the
 *     submit call itself failed.  Then *op_out normally stays NULL: no
 *     completion ever comes and the caller may release its buffer at once.
 *     Windows only: a provider may fail the call after it started the
 *     operation (a "stray"); then *op_out is set, and one completion with
 *     IOC_COMPLETION_STRAY and the operation's token comes once the kernel
 *     is done with its memory: the caller keeps the memory until then, and
 *     runs no callback for it.
 *   - Memory handed to a submit call (the buffer) must stay valid until that
 *     operation's completion has been returned by ioc_wait().  The per-op
 *     records (OVERLAPPED / SQE user data) are owned by the core and never
 *     freed before the kernel is done with them.
 *   - Tokens are the caller's, and never 0.
 *
 * This header is plain C89-with-stdint so that MSVC, MinGW and GCC all take it.
 */
#ifndef IOC_CORE_H
#define IOC_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ioc_core ioc_core;
typedef struct ioc_op ioc_op;

/* One dequeued completion as handed to Python. */
typedef struct ioc_completion {
    uint64_t token;   /* the caller's token for the op */
    int64_t result;   /* bytes (>= 0) or negated system error */
    uint32_t flags;   /* backend flags (io_uring CQE flags) */
} ioc_completion;

/* Counters, cheap to read, for tests and statistics. */
typedef struct ioc_stats {
    uint64_t submitted;       /* operations accepted by a submit call */
    uint64_t completed;       /* operation completions returned to the caller */
    uint64_t cancels;         /* cancellation requests issued */
    uint64_t waits;           /* calls of ioc_wait */
    uint64_t enters;          /* kernel calls made by ioc_wait */
    uint64_t wakeups_sent;    /* wakeups that actually reached the kernel */
    uint64_t wakeups_merged;  /* wakeups that needed no kernel call */
    uint64_t in_flight;       /* operations submitted and not yet completed */
    uint64_t strays;          /* Windows: strays whose memory the caller still keeps */
    uint64_t immediate;       /* Windows: completions the core made without a packet */
} ioc_stats;

/* Open a core.  queue_depth sizes the submission/completion queues.
 * Returns 0, or a positive system error with a message in err. */
int ioc_core_open(ioc_core **out, unsigned int queue_depth, char *err, size_t errlen);

/* Cancel every operation in flight, wait up to drain_ms for the kernel to
 * finish them, then release the core.  Returns the number of operations the
 * kernel had not finished by then: their records are deliberately leaked
 * (never freed while the kernel may still write them); the caller must leak
 * their buffers too. */
int ioc_core_close(ioc_core *core, int drain_ms);

/* Mark a core as inherited through fork(): every later call refuses to touch
 * the kernel object (which belongs to the parent), close only unmaps. */
void ioc_core_forked(ioc_core *core);

/* Associate a socket or file handle with the core (Windows: the completion
 * port; Linux: nothing to do).  Returns 0 or a negated system error. */
int ioc_associate(ioc_core *core, intptr_t handle);

/* Submit a receive / send on a socket.  flags are MSG_* flags.
 * On success returns 0 and sets *op_out; on failure returns a negated error
 * and no completion will follow. */
int ioc_submit_recv(ioc_core *core, intptr_t sock, void *buf, uint32_t len,
                    int flags, uint64_t token, ioc_op **op_out);
int ioc_submit_send(ioc_core *core, intptr_t sock, const void *buf, uint32_t len,
                    int flags, uint64_t token, ioc_op **op_out);

/* One buffer of a gathered send (same layout as struct iovec on Linux). */
typedef struct ioc_iovec {
    void *base;
    size_t len;
} ioc_iovec;

/* Send several buffers in one operation (WSASend with several WSABUFs /
 * IORING_OP_SENDMSG).  bufs must stay valid until the completion. */
int ioc_submit_sendv(ioc_core *core, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                     int flags, uint64_t token, ioc_op **op_out);

/* Accept a connection on a listening socket.
 * Windows: AcceptEx into accept_sock, a fresh (or DisconnectEx-recycled)
 *   unbound socket of the listener's family made by the caller; addrbuf gets
 *   recv_len bytes of first data, then the local and remote addresses
 *   (addrbuf holds at least recv_len + IOC_ACCEPT_ADDRBUF bytes).  With
 *   recv_len > 0 the accept completes only when the peer has sent data (or
 *   closed); the result is then the number of first-data bytes, else 0.
 *   Then call ioc_accept_finish with the same recv_len.
 * Linux: accept_sock and recv_len are ignored; addrbuf (a sockaddr_storage)
 *   and *addrlen (its size) get the peer's address; the result is the new
 *   socket's fd, non-blocking and close-on-exec.
 * addrbuf and addrlen must stay valid until the completion. */
#define IOC_ACCEPT_ADDRBUF 288
int ioc_submit_accept(ioc_core *core, intptr_t listen_sock, intptr_t accept_sock,
                      void *addrbuf, uint32_t *addrlen, uint32_t recv_len, uint64_t token,
                      ioc_op **op_out);

/* A socket address decoded into plain fields (IPv4: addr[0..3]). */
typedef struct ioc_addr {
    int family;        /* AF_INET, AF_INET6 of this system, or 0 if unknown */
    int port;
    uint8_t addr[16];
    uint32_t flowinfo;
    uint32_t scope_id;
} ioc_addr;

/* After a successful accept: Windows sets SO_UPDATE_ACCEPT_CONTEXT on
 * accept_sock and decodes both addresses with GetAcceptExSockaddrs; Linux
 * decodes the peer address from addrbuf/addrlen (local is left zeroed).
 * Returns 0 or a negated error. */
int ioc_accept_finish(ioc_core *core, intptr_t listen_sock, intptr_t accept_sock,
                      void *addrbuf, uint32_t addrlen, uint32_t recv_len,
                      ioc_addr *local, ioc_addr *remote);

/* Connect a socket: ConnectEx on Windows (the socket must be bound first),
 * IORING_OP_CONNECT on Linux.  addr (addrlen bytes) must stay valid until
 * the completion.  On Windows call ioc_connect_finish after success.
 * Windows, datagram sockets: connect() at once (ConnectEx is for
 * connection-oriented sockets only); its error is the submit's, and on
 * success the operation completes with 0 without involving the kernel. */
int ioc_submit_connect(ioc_core *core, intptr_t sock, const void *addr, int addrlen,
                       uint64_t token, ioc_op **op_out);
int ioc_connect_finish(ioc_core *core, intptr_t sock);

/* What a completed ioc_submit_recvmsg delivered besides the bytes: the
 * sender's address length, the control data length and the message flags
 * (MSG_TRUNC / MSG_CTRUNC on Linux, MSG_* of WSARecvMsg on Windows).  The
 * core fills it when the operation completes. */
typedef struct ioc_msg_result {
    uint32_t namelen;
    uint32_t controllen;
    int32_t flags;
} ioc_msg_result;

/* Receive one datagram with its sender's address (and, with control != NULL,
 * ancillary data such as IP_PKTINFO): IORING_OP_RECVMSG on Linux; WSARecvFrom
 * (no control) or WSARecvMsg on Windows.  buf, name (namelen bytes),
 * control (controllen bytes) and result must stay valid until the
 * completion.  Windows reports a datagram larger than buf as WSAEMSGSIZE;
 * Linux truncates it and sets MSG_TRUNC in result->flags. */
int ioc_submit_recvmsg(ioc_core *core, intptr_t sock, void *buf, uint32_t len,
                       void *name, uint32_t namelen, void *control, uint32_t controllen,
                       int flags, ioc_msg_result *result, uint64_t token, ioc_op **op_out);

/* Linux: the same receive done at once (recvmsg with MSG_DONTWAIT), for
 * draining a socket after a completion: returns the byte count, or a
 * negated error (-EAGAIN: nothing queued).  Windows returns -WSAEOPNOTSUPP:
 * IOCP keeps several receives posted instead (see iocploop/_transports/datagram.py). */
int ioc_recvmsg_now(intptr_t sock, void *buf, uint32_t len, void *name, uint32_t namelen,
                    void *control, uint32_t controllen, ioc_msg_result *result);

/* Send one datagram (several buffers gathered) to name (NULL: the connected
 * peer), with optional ancillary data (control, e.g. the source address
 * built by ioc_pktinfo_build): IORING_OP_SENDMSG on Linux; WSASendTo or
 * WSASendMsg on Windows.  Everything must stay valid until the completion. */
int ioc_submit_sendmsg(ioc_core *core, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                       const void *name, int namelen, const void *control,
                       uint32_t controllen, int flags, uint64_t token, ioc_op **op_out);

/* Arrival interface (IP_PKTINFO / IPV6_PKTINFO).
 * ioc_pktinfo_enable: ask the kernel to attach the local address each
 *   datagram arrived on.  ioc_pktinfo_parse: find it in received control
 *   data (1 found, 0 not there).  ioc_pktinfo_build: control data that makes
 *   a send leave from `local` (returns its length, or a negated error).
 *   IOC_PKTINFO_SPACE is enough control space for either family. */
#define IOC_PKTINFO_SPACE 64
int ioc_pktinfo_enable(intptr_t sock, int family);
int ioc_pktinfo_parse(const void *control, uint32_t controllen, ioc_addr *local,
                      uint32_t *ifindex);
int ioc_pktinfo_build(void *control, uint32_t cap, const ioc_addr *local, uint32_t ifindex);

/* Send count bytes of a file, from offset, on a connected socket: TransmitFile
 * on Windows (file is the file's HANDLE; count 1..IOC_SENDFILE_MAX; the
 * result is the byte count on success).  Linux has no completion-based
 * sendfile and returns -EOPNOTSUPP: the loop calls sendfile(2) when
 * ioc_submit_poll reports the socket writable. */
#define IOC_SENDFILE_MAX 0x7FFFFFFE
int ioc_submit_sendfile(ioc_core *core, intptr_t sock, intptr_t file, uint64_t offset,
                        uint32_t count, uint64_t token, ioc_op **op_out);

/* Complete when sock is ready for poll events (POLLIN 0x1, POLLOUT 0x4);
 * the result is the ready mask, poll(2)'s bits (POLLERR 0x8, POLLHUP 0x10
 * may come with either; POLLNVAL 0x20 alone: the socket was closed while
 * polled).  One shot.  Linux: IORING_OP_POLL_ADD, any pollable fd.
 * Windows: IOCTL_AFD_POLL on the socket driver (sockets only; the base
 * socket of a layered provider is polled). */
int ioc_submit_poll(ioc_core *core, intptr_t sock, uint32_t events, uint64_t token,
                    ioc_op **op_out);
/* A poll that stays posted (Linux 5.13, IORING_POLL_ADD_MULTI): a
 * completion with IOC_COMPLETION_MORE each time sock wakes up ready for
 * events -- new data, not data left unread -- and a last one without it
 * (the cancellation, or the kernel ending it).  Windows: -WSAEOPNOTSUPP. */
int ioc_submit_poll_multishot(ioc_core *core, intptr_t sock, uint32_t events, uint64_t token,
                              ioc_op **op_out);

/* Read / write a stream that is not a socket (a pipe, a character device)
 * at its current position: IORING_OP_READ / WRITE on Linux, ReadFile /
 * WriteFile on Windows (the handle must be open for overlapped I/O and
 * associated with ioc_associate).  A read's result 0 is end of file;
 * Windows reports a pipe whose other end closed as -ERROR_BROKEN_PIPE. */
int ioc_submit_read(ioc_core *core, intptr_t handle, void *buf, uint32_t len, uint64_t token,
                    ioc_op **op_out);
int ioc_submit_write(ioc_core *core, intptr_t handle, const void *buf, uint32_t len,
                     uint64_t token, ioc_op **op_out);

/* Windows: wait for a client on a server instance of a named pipe
 * (ConnectNamedPipe); result 0 when one connected.  Linux: -EOPNOTSUPP. */
int ioc_submit_connect_pipe(ioc_core *core, intptr_t pipe, uint64_t token, ioc_op **op_out);

/* Windows: complete when a waitable handle (a process) is signalled, through
 * a thread-pool wait registration that posts to the port; result 0.
 * Cancelling unregisters the wait.  Linux: -EOPNOTSUPP (a process exit is a
 * pidfd that ioc_submit_poll watches). */
int ioc_submit_wait_handle(ioc_core *core, intptr_t handle, uint64_t token, ioc_op **op_out);

/* End a connection so that its socket can be used again: DisconnectEx with
 * TF_REUSE_SOCKET on Windows (may take as long as TCP's TIME_WAIT when this
 * side closed first).  On success the socket may be handed to AcceptEx or
 * ConnectEx again -- if the provider allows it.  Linux returns -EOPNOTSUPP
 * (see ioc_socket_dissolve). */
int ioc_submit_disconnect(ioc_core *core, intptr_t sock, uint64_t token, ioc_op **op_out);

/* Linux: dissolve the association of a TCP socket whose connection is over
 * (connect with AF_UNSPEC), so that it can connect again.  Returns 0, or a
 * negated error; -EISCONN if the connection is not fully closed (dissolving
 * it would reset it).  Windows returns -WSAEOPNOTSUPP. */
int ioc_socket_dissolve(intptr_t sock);

/* Fill a sockaddr for (family, port, addr, flowinfo, scope_id); returns its
 * length, or a negated error for an unknown family. */
int ioc_encode_addr(const ioc_addr *in, void *sockaddr_out, int out_len);

/* Decode a sockaddr of len bytes; returns 0, or a negated error for a family
 * other than AF_INET / AF_INET6 (out->family is then 0). */
int ioc_decode_sockaddr(const void *sockaddr_in, int len, ioc_addr *out);

/* Ask the kernel to cancel op (identified by the record and its token, so a
 * stale or recycled record is never cancelled by mistake).  The op still
 * completes through ioc_wait, with IOC_ERR_CANCELLED or with its real result
 * if it finished first.  Returns 0 when a cancellation was requested, 1 when
 * the op is no longer in flight, or a negated error. */
int ioc_cancel(ioc_core *core, ioc_op *op, uint64_t token);

/* Linux queues each submission in the ring until the next ioc_wait,
 * ioc_flush or ioc_cancel publishes it; the kernel resolves its fd number
 * only then.  A caller whose fds may be closed meanwhile (a user's socket)
 * registers before_publish: the core calls it before publishing whenever
 * *armed is set (it clears *armed first), and the hook calls
 * ioc_void_queued for each operation whose fd was closed.
 * Windows starts every operation inside its submit call: nothing is ever
 * queued, the hook is never called. */
void ioc_set_publish_hook(ioc_core *core, void (*before_publish)(void *), void *arg,
                          int *armed);

/* Turn op, still queued and unpublished, into a no-op that completes with
 * -EBADF: its fd number is never looked up.  Returns 1 if op was voided, 0
 * if it is already in the kernel (or no longer in flight). */
int ioc_void_queued(ioc_core *core, ioc_op *op, uint64_t token);

/* Flush queued submissions and wait up to timeout_ns (-1 = forever,
 * 0 = poll) for completions; store at most max of them in out.
 * Returns the number stored, or a negated error; *stored (if not NULL) gets
 * the same count before the call returns, so a caller interrupted on the way
 * back still knows how many completions it holds.  -EINTR (Linux) means a
 * signal arrived: the caller should let its signal handlers run. */
int ioc_wait(ioc_core *core, int64_t timeout_ns, ioc_completion *out, int max,
             int *stored);

/* Hand the submissions queued so far to the kernel now, and let it finish
 * what that completes at once, without taking completions (they stay queued
 * for the next ioc_wait).  Linux: a cancellation flushed this way has
 * dropped the request's reference to its file when this returns, so a
 * closed listening socket frees its address at once.  Windows: a no-op. */
int ioc_flush(ioc_core *core);

/* Linux: 1 when only the calling thread may enter the core's ring (it made
 * it, and it defers the kernel's completion work to ioc_wait), -1 when
 * another thread made it, 0 when any thread may (a ring set up anew for a
 * second thread, or an older kernel).  Windows: 0. */
int ioc_ring_thread(ioc_core *core);

/* Wake a core blocked in ioc_wait.  Safe from any thread.  Bursts of
 * wakeups cost at most one kernel call per sleep of the waiting thread, and
 * none while it is not sleeping. */
int ioc_wakeup(ioc_core *core);

/* Windows: end the current ioc_wait whenever the manual-reset event `event`
 * is set -- the interpreter's SIGINT event, which Python's C signal handler
 * sets after tripping the signal (console Ctrl+C, signal.raise_signal from
 * any thread).  event = 0 stops watching; no callback runs after that.
 * Linux: a no-op (signals interrupt io_uring_enter with EINTR). */
int ioc_watch_sigint(ioc_core *core, intptr_t event);

/* Which optional Winsock extension functions the provider of sock offers:
 * a bit mask of IOC_EXT_* (Windows), loaded once per provider and cached.
 * Linux returns 0. */
#define IOC_EXT_ACCEPTEX            0x01
#define IOC_EXT_CONNECTEX           0x02
#define IOC_EXT_GETACCEPTEXSOCKADDRS 0x04
#define IOC_EXT_TRANSMITFILE        0x08
#define IOC_EXT_DISCONNECTEX        0x10
#define IOC_EXT_TRANSMITPACKETS     0x20
#define IOC_EXT_WSARECVMSG          0x40
#define IOC_EXT_WSASENDMSG          0x80
int ioc_extensions(ioc_core *core, intptr_t sock);

void ioc_get_stats(ioc_core *core, ioc_stats *out);

/* Completion flags.  IOC_COMPLETION_MORE: the operation stays in flight
 * (a multishot poll's wakeup).  IOC_COMPLETION_STRAY (Windows): the
 * completion of a stray (see the conventions above).  Flags hold only these
 * bits. */
#define IOC_COMPLETION_MORE 0x2
#define IOC_COMPLETION_STRAY 0x4

/* Static facts about the backend. */
const char *ioc_backend_name(void);   /* "iocp" or "io_uring" */
int ioc_err_cancelled(void);          /* the negated error of a cancelled op */

#ifdef __cplusplus
}
#endif
#endif /* IOC_CORE_H */
