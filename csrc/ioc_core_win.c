/*
 * ioc_core_win.c -- the Windows I/O completion port backend.
 *
 * One completion port per core.  Sockets are associated with completion key
 * KEY_IO; every operation is an OVERLAPPED embedded at the start of an
 * ioc_op record, so the OVERLAPPED* that GetQueuedCompletionStatusEx hands
 * back is the record itself.  Other keys carry core events: KEY_WAKEUP for
 * cross-thread wakeups (PostQueuedCompletionStatus, no socket pair) and
 * KEY_SIGINT to end a wait when Python's SIGINT event is set.
 *
 * Sockets whose provider allows it (XP1_IFS_HANDLES), pipes and the AFD
 * device skip the port on success (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS): an
 * operation that finishes inside its submit call queues no packet, and the
 * core hands its completion out itself, from the next ioc_wait, in the order
 * a packet would have had (see ioc_wait).  Datagram sockets keep their
 * packets (see wants_skip_mode).
 *
 * Keep this file portable between MSVC and MinGW: no GCC extensions, and
 * winsock2.h before windows.h.
 */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <stdio.h>
#include <string.h>

/* IOCTL_AFD_POLL, the readiness query under Winsock's select() and WSAPoll,
 * reached straight through the socket driver (\\Device\\Afd) so that its
 * completion arrives at the port like any other operation.  libuv, wepoll
 * and trio use the same ioctl; the layout below is the driver's. */
#define IOC_IOCTL_AFD_POLL 0x00012024
#define IOC_AFD_POLL_RECEIVE 0x0001
#define IOC_AFD_POLL_RECEIVE_EXPEDITED 0x0002
#define IOC_AFD_POLL_SEND 0x0004
#define IOC_AFD_POLL_DISCONNECT 0x0008
#define IOC_AFD_POLL_ABORT 0x0010
#define IOC_AFD_POLL_LOCAL_CLOSE 0x0020
#define IOC_AFD_POLL_ACCEPT 0x0080
#define IOC_AFD_POLL_CONNECT_FAIL 0x0100

typedef struct ioc_afd_poll_handle {
    HANDLE handle;
    ULONG events;
    LONG status;
} ioc_afd_poll_handle;

typedef struct ioc_afd_poll_info {
    LARGE_INTEGER timeout;
    ULONG count;
    ULONG exclusive;
    ioc_afd_poll_handle handles[1];
} ioc_afd_poll_info;

/* Datagram sends carry at most this many buffers on Windows. */
#define IOC_WIN_MSG_BUFS 4

#define IOC_OP_BACKEND_FIELDS \
    OVERLAPPED ov;   /* must stay first: OVERLAPPED* == ioc_op* */ \
    DWORD msg_flags; /* WSARecv's in/out flags */ \
    uint64_t seq;    /* submission order, for the ready list (ioc_wait) */ \
    WSAMSG wsamsg;   /* WSARecvMsg / WSASendMsg: read at completion */ \
    WSABUF wsabufs[IOC_WIN_MSG_BUFS]; \
    INT fromlen;     /* WSARecvFrom's address length, written at completion */ \
    int uses_msg;    /* recvmsg went through WSARecvMsg */ \
    ioc_msg_result *result; \
    int stray;       /* see make_stray: parked until its packet comes */ \
    int stray_out;   /* its note (IOC_COMPLETION_STRAY) was handed out */ \
    int stray_packet; /* its packet arrived */ \
    int maybe_packet; /* completed by the core, yet a packet may come: see finish_submit */ \
    struct ioc_op *ready_next; /* the core's ready list (see ioc_wait) */ \
    int64_t done_result;       /* the result, once known */ \
    struct ioc_core *core;   /* wait registrations: the port to post to */ \
    HANDLE wait;             /* RegisterWaitForSingleObject's handle */ \
    volatile LONG wait_posted; /* 1 once a packet for the wait was posted */ \
    ioc_afd_poll_info afd;   /* IOCTL_AFD_POLL's in/out block */
#include "ioc_ops.h"
#include "ioc_addr.h"
#include "ioc_wakeup.h"

#define KEY_IO ((ULONG_PTR)1)
#define KEY_WAKEUP ((ULONG_PTR)2)
#define KEY_SIGINT ((ULONG_PTR)3)

/* OVERLAPPED.Internal before a submit: no NTSTATUS has this value. */
#define IOC_NOT_STARTED ((ULONG_PTR)0x1C0C0DE1u)

#ifndef STATUS_BUFFER_OVERFLOW
#define STATUS_BUFFER_OVERFLOW ((LONG)0x80000005L)
#endif
#ifndef STATUS_CANCELLED
#define STATUS_CANCELLED ((LONG)0xC0000120L)
#endif
#ifndef STATUS_PENDING
#define STATUS_PENDING ((LONG)0x00000103L)
#endif
#ifndef FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
#define FILE_SKIP_COMPLETION_PORT_ON_SUCCESS 0x1
#endif
#ifndef FILE_SKIP_SET_EVENT_ON_HANDLE
#define FILE_SKIP_SET_EVENT_ON_HANDLE 0x2
#endif
#ifndef XP1_IFS_HANDLES
#define XP1_IFS_HANDLES 0x00020000
#endif

/* NT_ERROR: the status is an error (not a success, note or warning). */
#define IOC_NT_ERROR(status) ((((ULONG)(status)) >> 30) == 3)

/* Handle values (multiples of 4) up to this many are tracked in the bitmap
 * of handles that skip the port; a larger one just keeps its packets. */
#define IOC_SKIP_MAX_INDEX (1u << 24)

/* The Winsock extension functions of one provider (see ioc_win_provider). */
typedef struct ioc_provider {
    GUID id;
    int mask;
    int ifs;   /* XP1_IFS_HANDLES: its sockets are kernel file handles */
    LPFN_ACCEPTEX accept_ex;
    LPFN_CONNECTEX connect_ex;
    LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs;
    LPFN_TRANSMITFILE transmit_file;
    LPFN_DISCONNECTEX disconnect_ex;
    LPFN_TRANSMITPACKETS transmit_packets;
    LPFN_WSARECVMSG wsa_recv_msg;
    LPFN_WSASENDMSG wsa_send_msg;
} ioc_provider;

#define IOC_MAX_PROVIDERS 8

struct ioc_core;
static void on_sigint_packet(struct ioc_core *c);

struct ioc_core {
    HANDLE port;
    OVERLAPPED_ENTRY *entries;
    ULONG entries_max;

    ioc_wake_state wake;   /* see ioc_wakeup.h */

    int forked;   /* unused on Windows, kept for the shared interface */
    HANDLE sigint_event;   /* Python's SIGINT event while watched, else NULL */
    HANDLE sigint_wait;    /* the armed thread-pool wait on it */
    ioc_provider providers[IOC_MAX_PROVIDERS];
    int provider_count;

    HANDLE afd;            /* \\Device\\Afd, opened at the first poll */
    int afd_error;         /* the error opening it gave, if it failed */

    ioc_op *strays;        /* failed submits whose packet may still come */
    unsigned stray_count;
    unsigned ghost_count;  /* on the same list: see park_ghost */
    unsigned strays_held;  /* strays whose note the caller has not had yet */

    /* Completions the core hands out itself, in order, before any packet
     * dequeued later: operations that finished inside their submit call
     * without a packet, and the notes of strays. */
    ioc_op *ready_head, *ready_tail;
    unsigned ready_count;
    /* Operations that finished inside their submit call on a handle that
     * skips the port, in submission order, not yet placed in the ready
     * list (ioc_wait places them among the packets). */
    ioc_op *now_head, *now_tail;
    uint64_t next_seq;

    uint32_t *skip_bits;   /* handles set to skip the port on success */
    size_t skip_words;
    int afd_skip;          /* the AFD device handle skips it too */

    ioc_op_pool pool;
    ioc_stats stats;
};

const char *ioc_backend_name(void) { return "iocp"; }
int ioc_err_cancelled(void) { return -(int)ERROR_OPERATION_ABORTED; }

int ioc_core_open(ioc_core **out, unsigned int queue_depth, char *err, size_t errlen)
{
    WSADATA wsa;
    ioc_core *c;
    int e;

    *out = NULL;
    queue_depth = ioc_clamp_queue_depth(queue_depth);
    e = WSAStartup(MAKEWORD(2, 2), &wsa);
    if (e != 0) {
        snprintf(err, errlen, "WSAStartup failed with error %d", e);
        return e;
    }
    c = (ioc_core *)calloc(1, sizeof(*c));
    if (c != NULL)
        c->entries = (OVERLAPPED_ENTRY *)calloc(queue_depth, sizeof(OVERLAPPED_ENTRY));
    if (c == NULL || c->entries == NULL) {
        if (c != NULL)
            free(c);
        WSACleanup();
        snprintf(err, errlen, "out of memory");
        return ERROR_NOT_ENOUGH_MEMORY;
    }
    c->entries_max = queue_depth;
    c->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
    if (c->port == NULL) {
        e = (int)GetLastError();
        snprintf(err, errlen, "CreateIoCompletionPort failed with error %d", e);
        free(c->entries);
        free(c);
        WSACleanup();
        return e;
    }
    ioc_pool_init(&c->pool);
    *out = c;
    return 0;
}

void ioc_core_forked(ioc_core *c) { c->forked = 1; }

/* ---- Winsock extension functions, loaded once per provider ---- */

static void *load_extension(SOCKET s, GUID guid)
{
    void *fn = NULL;
    DWORD bytes = 0;
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), &fn, sizeof(fn),
                 &bytes, NULL, NULL) != 0)
        return NULL;
    return fn;
}

/* The provider entry for sock (loading its functions on first sight), or NULL;
 * *sock_type (if not NULL) gets the socket's type (SOCK_STREAM, SOCK_DGRAM). */
static ioc_provider *ioc_win_provider_of(ioc_core *c, SOCKET s, int *sock_type)
{
    WSAPROTOCOL_INFOW info;
    int len = sizeof(info), i;
    ioc_provider *p;
    GUID g_accept = WSAID_ACCEPTEX, g_connect = WSAID_CONNECTEX;
    GUID g_sockaddrs = WSAID_GETACCEPTEXSOCKADDRS, g_transmit = WSAID_TRANSMITFILE;
    GUID g_disconnect = WSAID_DISCONNECTEX, g_packets = WSAID_TRANSMITPACKETS;
    GUID g_recvmsg = WSAID_WSARECVMSG, g_sendmsg = WSAID_WSASENDMSG;

    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
        return NULL;
    if (sock_type != NULL)
        *sock_type = info.iSocketType;
    for (i = 0; i < c->provider_count; i++)
        if (memcmp(&c->providers[i].id, &info.ProviderId, sizeof(GUID)) == 0)
            return &c->providers[i];
    if (c->provider_count == IOC_MAX_PROVIDERS)
        return NULL;
    p = &c->providers[c->provider_count++];
    memset(p, 0, sizeof(*p));
    p->id = info.ProviderId;
    p->ifs = (info.dwServiceFlags1 & XP1_IFS_HANDLES) != 0;
    p->accept_ex = (LPFN_ACCEPTEX)load_extension(s, g_accept);
    p->connect_ex = (LPFN_CONNECTEX)load_extension(s, g_connect);
    p->get_accept_ex_sockaddrs = (LPFN_GETACCEPTEXSOCKADDRS)load_extension(s, g_sockaddrs);
    p->transmit_file = (LPFN_TRANSMITFILE)load_extension(s, g_transmit);
    p->disconnect_ex = (LPFN_DISCONNECTEX)load_extension(s, g_disconnect);
    p->transmit_packets = (LPFN_TRANSMITPACKETS)load_extension(s, g_packets);
    p->wsa_recv_msg = (LPFN_WSARECVMSG)load_extension(s, g_recvmsg);
    p->wsa_send_msg = (LPFN_WSASENDMSG)load_extension(s, g_sendmsg);
    p->mask = (p->accept_ex ? IOC_EXT_ACCEPTEX : 0) | (p->connect_ex ? IOC_EXT_CONNECTEX : 0) |
              (p->get_accept_ex_sockaddrs ? IOC_EXT_GETACCEPTEXSOCKADDRS : 0) |
              (p->transmit_file ? IOC_EXT_TRANSMITFILE : 0) |
              (p->disconnect_ex ? IOC_EXT_DISCONNECTEX : 0) |
              (p->transmit_packets ? IOC_EXT_TRANSMITPACKETS : 0) |
              (p->wsa_recv_msg ? IOC_EXT_WSARECVMSG : 0) |
              (p->wsa_send_msg ? IOC_EXT_WSASENDMSG : 0);
    return p;
}

static ioc_provider *ioc_win_provider(ioc_core *c, SOCKET s)
{
    return ioc_win_provider_of(c, s, NULL);
}

int ioc_extensions(ioc_core *c, intptr_t sock)
{
    ioc_provider *p = ioc_win_provider(c, (SOCKET)sock);
    if (p == NULL)
        return -WSAGetLastError();
    return p->mask;
}

/* ---- skipping the port on success ----
 * A bitmap by handle value / 4 says which associated handles were set to
 * FILE_SKIP_COMPLETION_PORT_ON_SUCCESS; each association sets or clears the
 * handle's bit, so a handle value reused by a later handle is right again. */

static int skip_index(intptr_t handle, size_t *index)
{
    uintptr_t u = (uintptr_t)handle;
    if ((u & 3) != 0 || (u >> 2) >= IOC_SKIP_MAX_INDEX)
        return 0;
    *index = (size_t)(u >> 2);
    return 1;
}

static int skips_port(ioc_core *c, intptr_t handle)
{
    size_t i;
    if (!skip_index(handle, &i) || i / 32 >= c->skip_words)
        return 0;
    return (int)((c->skip_bits[i / 32] >> (i % 32)) & 1u);
}

/* Room in the bitmap for handle's bit; 0 if the handle cannot be tracked. */
static int skip_room(ioc_core *c, intptr_t handle)
{
    size_t i, words;
    uint32_t *bits;
    if (!skip_index(handle, &i))
        return 0;
    if (i / 32 < c->skip_words)
        return 1;
    words = c->skip_words ? c->skip_words : 64;
    while (words <= i / 32)
        words *= 2;
    bits = (uint32_t *)realloc(c->skip_bits, words * sizeof(uint32_t));
    if (bits == NULL)
        return 0;
    memset(bits + c->skip_words, 0, (words - c->skip_words) * sizeof(uint32_t));
    c->skip_bits = bits;
    c->skip_words = words;
    return 1;
}

static void skip_mark(ioc_core *c, intptr_t handle, int on)
{
    size_t i;
    if (!skip_index(handle, &i) || i / 32 >= c->skip_words)
        return;   /* never tracked: reads as "keeps its packets" */
    if (on)
        c->skip_bits[i / 32] |= (uint32_t)1u << (i % 32);
    else
        c->skip_bits[i / 32] &= ~((uint32_t)1u << (i % 32));
}

/* Whether handle should skip the port on success.  Sockets: only those of
 * a provider whose sockets are kernel file handles (XP1_IFS_HANDLES, known
 * once per provider), as libuv checks, and only stream sockets: on a
 * datagram socket Windows' Winsock reports a datagram cut short by a
 * synchronous STATUS_BUFFER_OVERFLOW as WSA_IO_PENDING, and with the mode no
 * packet would ever come for it (the bug libuv works around with its own
 * AFD receive).  A handle that is no socket (a pipe) always may. */
static int wants_skip_mode(ioc_core *c, intptr_t handle)
{
    int sock_type = 0;
    ioc_provider *p = ioc_win_provider_of(c, (SOCKET)handle, &sock_type);
    if (p == NULL)
        return WSAGetLastError() == WSAENOTSOCK;
    return p->ifs && sock_type == SOCK_STREAM;
}

int ioc_associate(ioc_core *c, intptr_t handle)
{
    int on = 0;
    if (CreateIoCompletionPort((HANDLE)handle, c->port, KEY_IO, 0) == NULL)
        return -(int)GetLastError();
    if (skip_room(c, handle) && wants_skip_mode(c, handle))
        on = SetFileCompletionNotificationModes(
                 (HANDLE)handle,
                 FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE) != 0;
    skip_mark(c, handle, on);
    return 0;
}

/* ---- operations ---- */

/* A fresh record for an operation, or NULL with *err set. */
static ioc_op *take_op(ioc_core *c, int kind, intptr_t handle, uint64_t token, int *err)
{
    ioc_op *op;
    *err = 0;
    if (token == 0) {
        *err = -(int)ERROR_INVALID_PARAMETER;
        return NULL;
    }
    op = ioc_pool_take(&c->pool, token, handle, kind);
    if (op == NULL) {
        *err = -(int)ERROR_NOT_ENOUGH_MEMORY;
    } else {
        op->ov.Internal = IOC_NOT_STARTED;
        op->seq = ++c->next_seq;
    }
    return op;
}

static void ready_append(ioc_core *c, ioc_op *op)
{
    op->ready_next = NULL;
    if (c->ready_tail != NULL)
        c->ready_tail->ready_next = op;
    else
        c->ready_head = op;
    c->ready_tail = op;
    c->ready_count++;
}

static ioc_op *ready_pop(ioc_core *c)
{
    ioc_op *op = c->ready_head;
    c->ready_head = op->ready_next;
    if (c->ready_head == NULL)
        c->ready_tail = NULL;
    c->ready_count--;
    return op;
}

/* A record whose submit failed although the kernel completed it (its
 * OVERLAPPED holds a final status, see finish_submit): off the in-flight
 * list (the caller got the error) and parked with its token, because its
 * packet follows and the record must not be reused before that.  The
 * kernel is done with the operation's memory, so its note
 * (IOC_COMPLETION_STRAY) is queued at once: the caller keeps that memory
 * until the note reaches it. */
static void make_stray(ioc_core *c, ioc_op *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    c->pool.count_in_flight--;
    op->stray = 1;
    op->stray_out = op->stray_packet = 0;
    op->next = c->strays;
    op->prev = NULL;
    c->strays = op;
    c->stray_count++;
    c->strays_held++;
    ready_append(c, op);
}

/* The packet of a stray arrived and its note is out: now the record may be
 * reused. */
static void release_stray(ioc_core *c, ioc_op *op)
{
    ioc_op **link = &c->strays;
    while (*link != NULL && *link != op)
        link = &(*link)->next;
    if (*link == op)
        *link = op->next;
    if (op->maybe_packet)
        c->ghost_count--;
    else
        c->stray_count--;
    op->stray = 0;
    op->token = 0;
    op->next = c->pool.free_list;
    c->pool.free_list = op;
}

/* op was handed out as completed (complete_now) although a packet may still
 * come for it (maybe_packet): park the record on the strays' list, out of
 * use, until that packet comes -- if it never does, it goes with the slabs
 * at close (its status is final: the kernel writes nothing more into it). */
static void park_ghost(ioc_core *c, ioc_op *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    c->pool.count_in_flight--;
    op->stray = 1;
    op->stray_out = 1;
    op->stray_packet = 0;
    op->next = c->strays;
    op->prev = NULL;
    c->strays = op;
    c->ghost_count++;
}

static void on_stray_packet(ioc_core *c, ioc_op *op)
{
    op->stray_packet = 1;
    if (op->stray_out)
        release_stray(c, op);
    /* else its note is still queued: the record goes once the note is out */
}

static int64_t completed_result(ioc_op *op, DWORD bytes);

/* op finished inside its submit call and no packet comes for it (its handle
 * skips the port on success, or the kernel was not involved): the core
 * hands its completion out itself, from the next ioc_wait.  Its status
 * block is written already. */
static void complete_now(ioc_core *c, ioc_op *op)
{
    op->done_result = completed_result(op, (DWORD)op->ov.InternalHigh);
    op->ready_next = NULL;
    if (c->now_tail != NULL)
        c->now_tail->ready_next = op;
    else
        c->now_head = op;
    c->now_tail = op;
    c->stats.immediate++;
}

/* error is 0 when the operation finished inside the call (it succeeded, or
 * completed with a warning such as a datagram cut short), WSA_IO_PENDING /
 * ERROR_IO_PENDING when it waits, else the call's error.  skips: the
 * handle skips the port on success (then an operation that finished in the
 * call gets no packet, and the core completes it itself: complete_now).
 * Otherwise success and WSA_IO_PENDING both mean a packet will come.  Any
 * other error normally means none will: the kernel writes an operation's
 * status block, and queues its packet, only once the operation ran, and a
 * call that fails at once did not run it.  take_op marks OVERLAPPED.Internal
 * with IOC_NOT_STARTED; Winsock may write STATUS_PENDING there itself before
 * it asks the driver (Wine's ws2_32 does, and leaves it when the driver
 * refuses: a send on a reset connection).  Either means not started: the
 * record is recycled at once and *op_out stays NULL.  A final status there
 * means the kernel completed the operation after all and its packet follows
 * (Wine refuses a WSASendTo with WSAEMSGSIZE after completing it with
 * STATUS_BUFFER_OVERFLOW): the record becomes a stray and *op_out is set. */
static int finish_submit(ioc_core *c, ioc_op *op, int error, int skips, ioc_op **op_out)
{
    if (error != 0 && error != WSA_IO_PENDING) {
        LONG status = (LONG)op->ov.Internal;
        int completed = op->ov.Internal != IOC_NOT_STARTED && status != (LONG)STATUS_PENDING;
        /* ... unless it completed without an error on a handle that skips
         * the port: then no packet follows either. */
        if (completed && !(skips && !IOC_NT_ERROR(status))) {
            make_stray(c, op);
            *op_out = op;
        } else {
            ioc_pool_give_back(&c->pool, op);
        }
        return -error;
    }
    if (error == 0 && skips)
        complete_now(c, op);   /* finished in the call: no packet comes */
    if (error == WSA_IO_PENDING && skips && op->ov.Internal != IOC_NOT_STARTED &&
        (LONG)op->ov.Internal != (LONG)STATUS_PENDING) {
        /* The call said "pending", yet the status block is final already.
         * Either the operation finished inside the call and the provider
         * reported it as pending (Wine's DisconnectEx does) -- then, the
         * handle skipping the port, no packet ever comes -- or it finished
         * just after the call (the kernel writes the status block, then
         * queues the packet).  The core completes it now, and keeps the
         * record out of use until a packet for it comes, if one does. */
        op->maybe_packet = 1;
        complete_now(c, op);
    }
    c->stats.submitted++;
    *op_out = op;
    return 0;
}

static int submit_wsabufs(ioc_core *c, int kind, intptr_t sock, WSABUF *bufs, DWORD nbufs,
                          int flags, uint64_t token, ioc_op **op_out)
{
    int err, r;
    ioc_op *op;

    *op_out = NULL;
    op = take_op(c, kind, sock, token, &err);
    if (op == NULL)
        return err;
    op->msg_flags = (DWORD)flags;
    if (kind == IOC_OP_RECV)
        r = WSARecv((SOCKET)sock, bufs, nbufs, NULL, &op->msg_flags, &op->ov, NULL);
    else
        r = WSASend((SOCKET)sock, bufs, nbufs, NULL, op->msg_flags, &op->ov, NULL);
    return finish_submit(c, op, r == 0 ? 0 : WSAGetLastError(), skips_port(c, sock), op_out);
}

int ioc_submit_recv(ioc_core *c, intptr_t sock, void *buf, uint32_t len, int flags,
                    uint64_t token, ioc_op **op_out)
{
    WSABUF one;
    one.buf = (char *)buf;
    one.len = len;
    return submit_wsabufs(c, IOC_OP_RECV, sock, &one, 1, flags, token, op_out);
}

int ioc_submit_send(ioc_core *c, intptr_t sock, const void *buf, uint32_t len, int flags,
                    uint64_t token, ioc_op **op_out)
{
    WSABUF one;
    one.buf = (char *)buf;
    one.len = len;
    return submit_wsabufs(c, IOC_OP_SEND, sock, &one, 1, flags, token, op_out);
}

#define IOC_MAX_SENDV 1024

int ioc_submit_sendv(ioc_core *c, intptr_t sock, const ioc_iovec *bufs, int nbufs, int flags,
                     uint64_t token, ioc_op **op_out)
{
    /* Winsock captures the WSABUF array before WSASend returns, so a
     * temporary array is enough; the data itself lives until completion. */
    WSABUF local[16], *wsabufs = local;
    int i, r;

    *op_out = NULL;
    if (nbufs <= 0 || nbufs > IOC_MAX_SENDV)
        return -(int)WSAEINVAL;
    if (nbufs > 16) {
        wsabufs = (WSABUF *)malloc(sizeof(WSABUF) * (size_t)nbufs);
        if (wsabufs == NULL)
            return -(int)ERROR_NOT_ENOUGH_MEMORY;
    }
    for (i = 0; i < nbufs; i++) {
        if (bufs[i].len > 0x7FFFFFFF) {
            if (wsabufs != local)
                free(wsabufs);
            return -(int)WSAEINVAL;
        }
        wsabufs[i].buf = (char *)bufs[i].base;
        wsabufs[i].len = (ULONG)bufs[i].len;
    }
    r = submit_wsabufs(c, IOC_OP_SENDV, sock, wsabufs, (DWORD)nbufs, flags, token, op_out);
    if (wsabufs != local)
        free(wsabufs);
    return r;
}

/* AcceptEx's address areas: each must be 16 bytes more than the largest
 * address of the transport. */
#define ACCEPT_ADDR_LEN (sizeof(SOCKADDR_STORAGE) + 16)

int ioc_submit_accept(ioc_core *c, intptr_t listen_sock, intptr_t accept_sock, void *addrbuf,
                      uint32_t *addrlen, uint32_t recv_len, uint64_t token, ioc_op **op_out)
{
    ioc_provider *p = ioc_win_provider(c, (SOCKET)listen_sock);
    DWORD received = 0;
    ioc_op *op;
    int err;

    (void)addrlen;
    *op_out = NULL;
    if (p == NULL)
        return -WSAGetLastError();
    if (p->accept_ex == NULL)
        return -(int)WSAEOPNOTSUPP;
    op = take_op(c, IOC_OP_ACCEPT, listen_sock, token, &err);
    if (op == NULL)
        return err;
    /* recv_len == 0: the accept completes as soon as the peer connects;
     * otherwise when its first data (or its FIN) arrives. */
    if (p->accept_ex((SOCKET)listen_sock, (SOCKET)accept_sock, addrbuf, (DWORD)recv_len,
                     (DWORD)ACCEPT_ADDR_LEN, (DWORD)ACCEPT_ADDR_LEN, &received, &op->ov))
        err = 0;
    else
        err = WSAGetLastError();
    return finish_submit(c, op, err, skips_port(c, listen_sock), op_out);
}

int ioc_accept_finish(ioc_core *c, intptr_t listen_sock, intptr_t accept_sock, void *addrbuf,
                      uint32_t addrlen, uint32_t recv_len, ioc_addr *local, ioc_addr *remote)
{
    ioc_provider *p = ioc_win_provider(c, (SOCKET)listen_sock);
    SOCKET listener = (SOCKET)listen_sock;
    struct sockaddr *l = NULL, *r = NULL;
    int llen = 0, rlen = 0;

    (void)addrlen;
    memset(local, 0, sizeof(*local));
    memset(remote, 0, sizeof(*remote));
    /* Give the accepted socket the listener's properties, so that
     * getpeername, shutdown and friends work on it. */
    if (setsockopt((SOCKET)accept_sock, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                   (char *)&listener, sizeof(listener)) != 0)
        return -WSAGetLastError();
    if (p != NULL && p->get_accept_ex_sockaddrs != NULL) {
        p->get_accept_ex_sockaddrs(addrbuf, (DWORD)recv_len, (DWORD)ACCEPT_ADDR_LEN, (DWORD)ACCEPT_ADDR_LEN,
                                   &l, &llen, &r, &rlen);
        ioc_decode_addr(l, llen, local);
        ioc_decode_addr(r, rlen, remote);
    }
    return 0;
}

int ioc_submit_connect(ioc_core *c, intptr_t sock, const void *addr, int addrlen,
                       uint64_t token, ioc_op **op_out)
{
    int sock_type = 0;
    ioc_provider *p = ioc_win_provider_of(c, (SOCKET)sock, &sock_type);
    ioc_op *op;
    int err;

    *op_out = NULL;
    if (p == NULL)
        return -WSAGetLastError();
    if (sock_type == SOCK_DGRAM) {
        /* ConnectEx is documented for connection-oriented sockets only (a
         * bare probe under Wine saw it stay pending on a UDP socket).  A
         * datagram socket's connect() only names its default peer and never
         * waits, as CPython's proactor (WSAConnect) and libuv do it; the
         * operation then completes without the kernel. */
        if (connect((SOCKET)sock, (const struct sockaddr *)addr, addrlen) != 0)
            return -WSAGetLastError();
        op = take_op(c, IOC_OP_CONNECT, sock, token, &err);
        if (op == NULL)
            return err;
        op->ov.Internal = 0;   /* done, and no packet comes: the core completes it */
        op->ov.InternalHigh = 0;
        return finish_submit(c, op, 0, 1, op_out);
    }
    if (p->connect_ex == NULL)
        return -(int)WSAEOPNOTSUPP;
    op = take_op(c, IOC_OP_CONNECT, sock, token, &err);
    if (op == NULL)
        return err;
    if (p->connect_ex((SOCKET)sock, (const struct sockaddr *)addr, addrlen, NULL, 0, NULL,
                      &op->ov))
        err = 0;
    else
        err = WSAGetLastError();
    return finish_submit(c, op, err, skips_port(c, sock), op_out);
}

int ioc_connect_finish(ioc_core *c, intptr_t sock)
{
    int sock_type = 0, len = sizeof(sock_type);
    (void)c;
    /* Only a ConnectEx connection needs its context updated. */
    if (getsockopt((SOCKET)sock, SOL_SOCKET, SO_TYPE, (char *)&sock_type, &len) == 0 &&
        sock_type == SOCK_DGRAM)
        return 0;
    if (setsockopt((SOCKET)sock, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
        return -WSAGetLastError();
    return 0;
}

int ioc_submit_sendfile(ioc_core *c, intptr_t sock, intptr_t file, uint64_t offset,
                        uint32_t count, uint64_t token, ioc_op **op_out)
{
    ioc_provider *p = ioc_win_provider(c, (SOCKET)sock);
    ioc_op *op;
    int err;

    *op_out = NULL;
    if (p == NULL)
        return -WSAGetLastError();
    if (p->transmit_file == NULL)
        return -(int)WSAEOPNOTSUPP;
    if (count == 0 || count > IOC_SENDFILE_MAX)
        return -(int)WSAEINVAL;   /* 0 would mean "the whole file" to TransmitFile */
    op = take_op(c, IOC_OP_SENDFILE, sock, token, &err);
    if (op == NULL)
        return err;
    op->ov.Offset = (DWORD)(offset & 0xFFFFFFFFu);
    op->ov.OffsetHigh = (DWORD)(offset >> 32);
    if (p->transmit_file((SOCKET)sock, (HANDLE)file, count, 0, &op->ov, NULL, 0))
        err = 0;
    else
        err = WSAGetLastError();
    return finish_submit(c, op, err, skips_port(c, sock), op_out);
}

/* ---- readiness: AFD polling ---- */

typedef LONG (NTAPI *ioc_nt_create_file_fn)(PHANDLE, ACCESS_MASK, PVOID, PVOID, PLARGE_INTEGER,
                                             ULONG, ULONG, ULONG, ULONG, PVOID, ULONG);
typedef LONG (NTAPI *ioc_nt_ioctl_fn)(HANDLE, HANDLE, PVOID, PVOID, PVOID, ULONG, PVOID, ULONG,
                                       PVOID, ULONG);
typedef ULONG (NTAPI *ioc_nt_status_fn)(LONG);

typedef struct ioc_unicode_string {
    USHORT length;
    USHORT maximum_length;
    PWSTR buffer;
} ioc_unicode_string;

typedef struct ioc_object_attributes {
    ULONG length;
    HANDLE root;
    ioc_unicode_string *name;
    ULONG attributes;
    PVOID security_descriptor;
    PVOID security_qos;
} ioc_object_attributes;

static FARPROC ntdll_function(const char *name)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    return ntdll == NULL ? NULL : GetProcAddress(ntdll, name);
}

static int nt_error(LONG status)
{
    ioc_nt_status_fn to_dos = (ioc_nt_status_fn)ntdll_function("RtlNtStatusToDosError");
    return to_dos != NULL ? (int)to_dos(status) : (int)ERROR_GEN_FAILURE;
}

/* Open the socket driver once per core and tie it to the port: every poll
 * is an ioctl on this one handle, and completes through the port. */
static int open_afd(ioc_core *c)
{
    /* A name below the device keeps our handle apart from Winsock's own
     * (as wepoll does); some providers know only the plain device name. */
    static const wchar_t *names[] = {L"\\Device\\Afd\\iocploop", L"\\Device\\Afd"};
    ioc_nt_create_file_fn create = (ioc_nt_create_file_fn)ntdll_function("NtCreateFile");
    size_t i;
    LONG status = 0;

    if (c->afd != NULL)
        return 0;
    if (c->afd_error != 0)
        return -c->afd_error;
    if (create == NULL)
        return -(c->afd_error = (int)ERROR_PROC_NOT_FOUND);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ioc_unicode_string name;
        ioc_object_attributes attrs;
        {
            ULONG_PTR iosb[2] = {0, 0};
            HANDLE afd = NULL;
            name.length = (USHORT)(wcslen(names[i]) * sizeof(wchar_t));
            name.maximum_length = name.length;
            name.buffer = (PWSTR)names[i];
            memset(&attrs, 0, sizeof(attrs));
            attrs.length = sizeof(attrs);
            attrs.name = &name;
            attrs.attributes = 0x40;   /* OBJ_CASE_INSENSITIVE */
            status = create(&afd, SYNCHRONIZE, &attrs, iosb, NULL, 0,
                            FILE_SHARE_READ | FILE_SHARE_WRITE, 1 /* FILE_OPEN */, 0, NULL, 0);
            if (status >= 0) {
                if (CreateIoCompletionPort(afd, c->port, KEY_IO, 0) == NULL) {
                    c->afd_error = (int)GetLastError();
                    CloseHandle(afd);
                    return -c->afd_error;
                }
                c->afd_skip = SetFileCompletionNotificationModes(
                                  afd, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                           FILE_SKIP_SET_EVENT_ON_HANDLE) != 0;
                c->afd = afd;
                return 0;
            }
        }
    }
    c->afd_error = nt_error(status);
    return -c->afd_error;
}

/* The socket the base provider knows: AFD polls only base sockets, and a
 * layered provider's handle is not one. */
static SOCKET base_socket(SOCKET s)
{
    SOCKET base = INVALID_SOCKET;
    DWORD got = 0;
    if (WSAIoctl(s, SIO_BASE_HANDLE, NULL, 0, &base, sizeof(base), &got, NULL, NULL) != 0 ||
        base == INVALID_SOCKET)
        return s;
    return base;
}

static ULONG afd_events_for(uint32_t events)
{
    /* Errors and hang-ups wake both directions, as poll() reports them. */
    ULONG afd = IOC_AFD_POLL_ABORT | IOC_AFD_POLL_LOCAL_CLOSE | IOC_AFD_POLL_CONNECT_FAIL;
    if (events & 0x1)
        afd |= IOC_AFD_POLL_RECEIVE | IOC_AFD_POLL_ACCEPT | IOC_AFD_POLL_DISCONNECT;
    if (events & 0x4)
        afd |= IOC_AFD_POLL_SEND;
    return afd;
}

/* The poll(2)-style mask of what a completed AFD poll found. */
static int64_t afd_result(ioc_op *op)
{
    ULONG found;
    int64_t mask = 0;
    if (op->afd.count < 1)
        return 0;
    found = op->afd.handles[0].events;
    if (found & IOC_AFD_POLL_LOCAL_CLOSE)
        return 0x20;   /* POLLNVAL: the socket was closed while polled */
    if (found & (IOC_AFD_POLL_RECEIVE | IOC_AFD_POLL_ACCEPT | IOC_AFD_POLL_DISCONNECT))
        mask |= 0x1;
    if (found & IOC_AFD_POLL_SEND)
        mask |= 0x4;
    if (found & (IOC_AFD_POLL_ABORT | IOC_AFD_POLL_CONNECT_FAIL))
        mask |= 0x8;   /* POLLERR */
    if (found & (IOC_AFD_POLL_DISCONNECT | IOC_AFD_POLL_ABORT))
        mask |= 0x10;  /* POLLHUP */
    return mask;
}

int ioc_submit_poll(ioc_core *c, intptr_t sock, uint32_t events, uint64_t token, ioc_op **op_out)
{
    ioc_nt_ioctl_fn ioctl = (ioc_nt_ioctl_fn)ntdll_function("NtDeviceIoControlFile");
    ioc_op *op;
    LONG status;
    int err;

    *op_out = NULL;
    err = open_afd(c);
    if (err != 0)
        return err;
    if (ioctl == NULL)
        return -(int)ERROR_PROC_NOT_FOUND;
    /* The record's handle is the AFD device: CancelIoEx targets it. */
    op = take_op(c, IOC_OP_POLL, (intptr_t)c->afd, token, &err);
    if (op == NULL)
        return err;
    op->ov.Internal = 0x103;   /* STATUS_PENDING until the driver says more */
    op->afd.timeout.QuadPart = 0x7FFFFFFFFFFFFFFFLL;
    op->afd.count = 1;
    op->afd.exclusive = FALSE;
    op->afd.handles[0].handle = (HANDLE)base_socket((SOCKET)sock);
    op->afd.handles[0].events = afd_events_for(events);
    op->afd.handles[0].status = 0;
    status = ioctl(c->afd, NULL, NULL, &op->ov, &op->ov.Internal, IOC_IOCTL_AFD_POLL,
                   &op->afd, sizeof(op->afd), &op->afd, sizeof(op->afd));
    if (IOC_NT_ERROR(status)) {   /* refused at once: nothing was queued */
        ioc_pool_give_back(&c->pool, op);
        return -nt_error(status);
    }
    if (status != (LONG)STATUS_PENDING && c->afd_skip)
        complete_now(c, op);   /* the socket was ready: no packet comes */
    c->stats.submitted++;
    *op_out = op;
    return 0;
}

/* ---- pipes and other handles ---- */

static int submit_file_io(ioc_core *c, int kind, intptr_t handle, void *buf, uint32_t len,
                          uint64_t token, ioc_op **op_out)
{
    ioc_op *op;
    BOOL ok;
    int err;

    *op_out = NULL;
    op = take_op(c, kind, handle, token, &err);
    if (op == NULL)
        return err;
    if (kind == IOC_OP_READ)
        ok = ReadFile((HANDLE)handle, buf, len, NULL, &op->ov);
    else
        ok = WriteFile((HANDLE)handle, buf, len, NULL, &op->ov);
    err = ok ? 0 : (int)GetLastError();
    if (err == ERROR_MORE_DATA)
        err = 0;   /* a message longer than buf: completed, with a warning */
    return finish_submit(c, op, err, skips_port(c, handle), op_out);
}

int ioc_submit_read(ioc_core *c, intptr_t handle, void *buf, uint32_t len, uint64_t token,
                    ioc_op **op_out)
{
    return submit_file_io(c, IOC_OP_READ, handle, buf, len, token, op_out);
}

int ioc_submit_write(ioc_core *c, intptr_t handle, const void *buf, uint32_t len,
                     uint64_t token, ioc_op **op_out)
{
    return submit_file_io(c, IOC_OP_WRITE, handle, (void *)buf, len, token, op_out);
}

/* Post a packet for op ourselves from another thread (a wait registration's
 * callback): status is the NTSTATUS op_result will read. */
static int post_own_packet(ioc_core *c, ioc_op *op, LONG status)
{
    op->ov.Internal = (ULONG_PTR)status;
    if (!PostQueuedCompletionStatus(c->port, 0, KEY_IO, &op->ov)) {
        op->ov.Internal = IOC_NOT_STARTED;   /* no packet will come */
        return (int)GetLastError();
    }
    return 0;
}

int ioc_submit_connect_pipe(ioc_core *c, intptr_t pipe, uint64_t token, ioc_op **op_out)
{
    ioc_op *op;
    int err;

    *op_out = NULL;
    op = take_op(c, IOC_OP_CONNECT_PIPE, pipe, token, &err);
    if (op == NULL)
        return err;
    if (ConnectNamedPipe((HANDLE)pipe, &op->ov))
        return finish_submit(c, op, 0, skips_port(c, pipe), op_out);
    err = (int)GetLastError();
    if (err == ERROR_PIPE_CONNECTED) {
        /* A client came first: the call failed, so the kernel queues no
         * packet, and the core completes the operation itself. */
        op->ov.Internal = 0;
        op->ov.InternalHigh = 0;
        return finish_submit(c, op, 0, 1, op_out);
    }
    return finish_submit(c, op, err, skips_port(c, pipe), op_out);
}

/* A wait registration: the thread pool runs this once the handle is
 * signalled; the first of it and a cancellation to post wins. */
static VOID CALLBACK wait_fired(PVOID context, BOOLEAN timed_out)
{
    ioc_op *op = (ioc_op *)context;
    (void)timed_out;
    if (InterlockedExchange(&op->wait_posted, 1) == 0)
        post_own_packet(op->core, op, 0);
}

int ioc_submit_wait_handle(ioc_core *c, intptr_t handle, uint64_t token, ioc_op **op_out)
{
    ioc_op *op;
    int err;

    *op_out = NULL;
    op = take_op(c, IOC_OP_WAIT_HANDLE, handle, token, &err);
    if (op == NULL)
        return err;
    op->core = c;
    op->wait_posted = 0;
    if (!RegisterWaitForSingleObject(&op->wait, (HANDLE)handle, wait_fired, op, INFINITE,
                                     WT_EXECUTEONLYONCE)) {
        err = (int)GetLastError();
        ioc_pool_give_back(&c->pool, op);
        return -err;
    }
    c->stats.submitted++;
    *op_out = op;
    return 0;
}

/* Cancel a wait registration: once UnregisterWaitEx has returned no
 * callback runs any more, so exactly one packet is posted for the op. */
static void cancel_wait(ioc_core *c, ioc_op *op)
{
    if (op->wait != NULL) {
        UnregisterWaitEx(op->wait, INVALID_HANDLE_VALUE);
        op->wait = NULL;
    }
    if (InterlockedExchange(&op->wait_posted, 1) == 0)
        post_own_packet(c, op, (LONG)STATUS_CANCELLED);
}

int ioc_submit_disconnect(ioc_core *c, intptr_t sock, uint64_t token, ioc_op **op_out)
{
    ioc_provider *p = ioc_win_provider(c, (SOCKET)sock);
    ioc_op *op;
    int err;

    *op_out = NULL;
    if (p == NULL)
        return -WSAGetLastError();
    if (p->disconnect_ex == NULL)
        return -(int)WSAEOPNOTSUPP;
    op = take_op(c, IOC_OP_DISCONNECT, sock, token, &err);
    if (op == NULL)
        return err;
    if (p->disconnect_ex((SOCKET)sock, &op->ov, TF_REUSE_SOCKET, 0))
        err = 0;
    else
        err = WSAGetLastError();
    return finish_submit(c, op, err, skips_port(c, sock), op_out);
}

int ioc_socket_dissolve(intptr_t sock)
{
    (void)sock;
    return -(int)WSAEOPNOTSUPP;
}

int ioc_submit_recvmsg(ioc_core *c, intptr_t sock, void *buf, uint32_t len,
                       void *name, uint32_t namelen, void *control, uint32_t controllen,
                       int flags, ioc_msg_result *result, uint64_t token, ioc_op **op_out)
{
    ioc_provider *p = NULL;
    ioc_op *op;
    int err, r;

    *op_out = NULL;
    if (control != NULL) {
        p = ioc_win_provider(c, (SOCKET)sock);
        if (p == NULL)
            return -WSAGetLastError();
        if (p->wsa_recv_msg == NULL)
            return -(int)WSAEOPNOTSUPP;
    }
    op = take_op(c, IOC_OP_RECVMSG, sock, token, &err);
    if (op == NULL)
        return err;
    op->result = result;
    op->wsabufs[0].buf = (char *)buf;
    op->wsabufs[0].len = len;
    op->msg_flags = (DWORD)flags;
    if (control == NULL) {
        op->fromlen = (INT)namelen;
        r = WSARecvFrom((SOCKET)sock, op->wsabufs, 1, NULL, &op->msg_flags,
                        (struct sockaddr *)name, name != NULL ? &op->fromlen : NULL, &op->ov,
                        NULL);
    } else {
        op->uses_msg = 1;
        op->wsamsg.name = (LPSOCKADDR)name;
        op->wsamsg.namelen = name != NULL ? (INT)namelen : 0;
        op->wsamsg.lpBuffers = op->wsabufs;
        op->wsamsg.dwBufferCount = 1;
        op->wsamsg.Control.buf = (char *)control;
        op->wsamsg.Control.len = controllen;
        op->wsamsg.dwFlags = (DWORD)flags;
        r = p->wsa_recv_msg((SOCKET)sock, &op->wsamsg, NULL, &op->ov, NULL);
    }
    err = r == 0 ? 0 : WSAGetLastError();
    /* A datagram larger than the buffer: the call reports WSAEMSGSIZE, but
     * the operation completed (STATUS_BUFFER_OVERFLOW is a warning), and its
     * packet reaches the port, carrying the truncated datagram. */
    if (err == WSAEMSGSIZE)
        err = 0;
    return finish_submit(c, op, err, skips_port(c, sock), op_out);
}

/* A completed receive: copy what Winsock wrote back into the caller's result. */
static void finish_recvmsg(ioc_op *op)
{
    if (op->uses_msg) {
        op->result->namelen = (uint32_t)op->wsamsg.namelen;
        op->result->controllen = (uint32_t)op->wsamsg.Control.len;
        op->result->flags = (int32_t)op->wsamsg.dwFlags;
    } else {
        op->result->namelen = (uint32_t)op->fromlen;
        op->result->controllen = 0;
        op->result->flags = (int32_t)op->msg_flags;
    }
}

int ioc_recvmsg_now(intptr_t sock, void *buf, uint32_t len, void *name, uint32_t namelen,
                    void *control, uint32_t controllen, ioc_msg_result *result)
{
    (void)sock; (void)buf; (void)len; (void)name; (void)namelen;
    (void)control; (void)controllen; (void)result;
    return -(int)WSAEOPNOTSUPP;
}

int ioc_submit_sendmsg(ioc_core *c, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                       const void *name, int namelen, const void *control,
                       uint32_t controllen, int flags, uint64_t token, ioc_op **op_out)
{
    ioc_provider *p = NULL;
    ioc_op *op;
    int err, r, i;

    *op_out = NULL;
    if (nbufs <= 0 || nbufs > IOC_WIN_MSG_BUFS || (name != NULL && namelen <= 0))
        return -(int)WSAEINVAL;
    for (i = 0; i < nbufs; i++)
        if (bufs[i].len > 0x7FFFFFFF)
            return -(int)WSAEINVAL;
    if (control != NULL) {
        p = ioc_win_provider(c, (SOCKET)sock);
        if (p == NULL)
            return -WSAGetLastError();
        if (p->wsa_send_msg == NULL)
            return -(int)WSAEOPNOTSUPP;
    }
    op = take_op(c, IOC_OP_SENDMSG, sock, token, &err);
    if (op == NULL)
        return err;
    for (i = 0; i < nbufs; i++) {
        op->wsabufs[i].buf = (char *)bufs[i].base;
        op->wsabufs[i].len = (ULONG)bufs[i].len;
    }
    if (control == NULL) {
        r = WSASendTo((SOCKET)sock, op->wsabufs, (DWORD)nbufs, NULL, (DWORD)flags,
                      (const struct sockaddr *)name, name != NULL ? namelen : 0, &op->ov, NULL);
    } else {
        op->wsamsg.name = (LPSOCKADDR)name;
        op->wsamsg.namelen = name != NULL ? namelen : 0;
        op->wsamsg.lpBuffers = op->wsabufs;
        op->wsamsg.dwBufferCount = (DWORD)nbufs;
        op->wsamsg.Control.buf = (char *)control;
        op->wsamsg.Control.len = controllen;
        op->wsamsg.dwFlags = 0;
        r = p->wsa_send_msg((SOCKET)sock, &op->wsamsg, (DWORD)flags, NULL, &op->ov, NULL);
    }
    return finish_submit(c, op, r == 0 ? 0 : WSAGetLastError(), skips_port(c, sock), op_out);
}

/* ---- arrival interface (IP_PKTINFO / IPV6_PKTINFO) ---- */

int ioc_pktinfo_enable(intptr_t sock, int family)
{
    DWORD one = 1;
    int r;
    if (family == AF_INET)
        r = setsockopt((SOCKET)sock, IPPROTO_IP, IP_PKTINFO, (const char *)&one, sizeof(one));
    else if (family == AF_INET6)
        r = setsockopt((SOCKET)sock, IPPROTO_IPV6, IPV6_PKTINFO, (const char *)&one,
                       sizeof(one));
    else
        return -(int)WSAEAFNOSUPPORT;
    return r != 0 ? -WSAGetLastError() : 0;
}

int ioc_pktinfo_parse(const void *control, uint32_t controllen, ioc_addr *local,
                      uint32_t *ifindex)
{
    WSAMSG msg;
    WSACMSGHDR *cmsg;

    memset(&msg, 0, sizeof(msg));
    memset(local, 0, sizeof(*local));
    *ifindex = 0;
    msg.Control.buf = (char *)control;
    msg.Control.len = controllen;
    for (cmsg = WSA_CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = WSA_CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO &&
            cmsg->cmsg_len >= WSA_CMSG_LEN(sizeof(IN_PKTINFO))) {
            IN_PKTINFO pi;
            memcpy(&pi, WSA_CMSG_DATA(cmsg), sizeof(pi));
            local->family = AF_INET;
            memcpy(local->addr, &pi.ipi_addr, 4);
            *ifindex = (uint32_t)pi.ipi_ifindex;
            return 1;
        }
        if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO &&
            cmsg->cmsg_len >= WSA_CMSG_LEN(sizeof(IN6_PKTINFO))) {
            IN6_PKTINFO pi;
            memcpy(&pi, WSA_CMSG_DATA(cmsg), sizeof(pi));
            local->family = AF_INET6;
            memcpy(local->addr, &pi.ipi6_addr, 16);
            *ifindex = (uint32_t)pi.ipi6_ifindex;
            return 1;
        }
    }
    return 0;
}

int ioc_pktinfo_build(void *control, uint32_t cap, const ioc_addr *local, uint32_t ifindex)
{
    WSACMSGHDR *cmsg = (WSACMSGHDR *)control;

    if (local->family == AF_INET) {
        IN_PKTINFO pi;
        if (cap < WSA_CMSG_SPACE(sizeof(pi)))
            return -(int)WSAENOBUFS;
        memset(control, 0, WSA_CMSG_SPACE(sizeof(pi)));
        memset(&pi, 0, sizeof(pi));
        memcpy(&pi.ipi_addr, local->addr, 4);
        pi.ipi_ifindex = ifindex;
        cmsg->cmsg_level = IPPROTO_IP;
        cmsg->cmsg_type = IP_PKTINFO;
        cmsg->cmsg_len = WSA_CMSG_LEN(sizeof(pi));
        memcpy(WSA_CMSG_DATA(cmsg), &pi, sizeof(pi));
        return (int)WSA_CMSG_SPACE(sizeof(pi));
    }
    if (local->family == AF_INET6) {
        IN6_PKTINFO pi;
        if (cap < WSA_CMSG_SPACE(sizeof(pi)))
            return -(int)WSAENOBUFS;
        memset(control, 0, WSA_CMSG_SPACE(sizeof(pi)));
        memset(&pi, 0, sizeof(pi));
        memcpy(&pi.ipi6_addr, local->addr, 16);
        pi.ipi6_ifindex = ifindex;
        cmsg->cmsg_level = IPPROTO_IPV6;
        cmsg->cmsg_type = IPV6_PKTINFO;
        cmsg->cmsg_len = WSA_CMSG_LEN(sizeof(pi));
        memcpy(WSA_CMSG_DATA(cmsg), &pi, sizeof(pi));
        return (int)WSA_CMSG_SPACE(sizeof(pi));
    }
    return -(int)WSAEAFNOSUPPORT;
}

static void request_cancel(ioc_core *c, ioc_op *op)
{
    /* ERROR_NOT_FOUND means the operation already finished and its packet is
     * queued; any other failure means the handle is gone, which aborts the
     * operation anyway.  Either way its completion still arrives, and the
     * record stays in flight until then. */
    if (op->kind == IOC_OP_WAIT_HANDLE)
        cancel_wait(c, op);
    else
        CancelIoEx((HANDLE)op->handle, &op->ov);
    op->cancel_requested = 1;
    c->stats.cancels++;
}

int ioc_cancel(ioc_core *c, ioc_op *op, uint64_t token)
{
    if (!ioc_op_is_live(op, token))
        return 1;
    if (!op->cancel_requested)
        request_cancel(c, op);
    return 0;
}

/* ---- completion ---- */

static int64_t op_result(ioc_op *op, DWORD bytes)
{
    LONG status = (LONG)op->ov.Internal;
    DWORD transferred = 0, flags = 0;
    int e;

    if (status >= 0)
        return (int64_t)bytes;
    /* A datagram cut to the buffer's size: its bytes, as asyncio's proactor
     * returns them (GetOverlappedResult's ERROR_MORE_DATA is not an error). */
    if (status == STATUS_BUFFER_OVERFLOW && op->kind == IOC_OP_RECVMSG)
        return (int64_t)bytes;
    if (status == STATUS_CANCELLED) {
        /* A send cut short by its cancellation: what it reports did leave
         * (Wine reports it in the packet, for TransmitFile too), so it is the
         * result -- a short send -- and the caller's byte accounting stays
         * exact. */
        if (bytes > 0 && (op->kind == IOC_OP_SEND || op->kind == IOC_OP_SENDV ||
                          op->kind == IOC_OP_SENDMSG || op->kind == IOC_OP_WRITE ||
                          op->kind == IOC_OP_SENDFILE))
            return (int64_t)bytes;
        return -(int64_t)ERROR_OPERATION_ABORTED;
    }
    if (op->kind >= IOC_OP_READ || op->kind == IOC_OP_POLL) {
        /* Not a socket: the NTSTATUS becomes the Win32 error as
         * GetOverlappedResult would give it.  A message longer than the
         * buffer (ERROR_MORE_DATA) still delivered the buffer's worth. */
        int e = nt_error(status);
        if (e == ERROR_MORE_DATA)
            return (int64_t)bytes;
        return -(int64_t)e;
    }
    /* Let Winsock translate the NTSTATUS into the WSA error asyncio expects. */
    if (WSAGetOverlappedResult((SOCKET)op->handle, &op->ov, &transferred, FALSE, &flags))
        return (int64_t)transferred;
    e = WSAGetLastError();
    if (e == WSAENOTSOCK || e == WSA_INVALID_HANDLE)
        return -(int64_t)ERROR_OPERATION_ABORTED;   /* socket closed under the op */
    return -(int64_t)e;
}

/* The result of an operation whose completion has come (bytes is what its
 * packet, or its OVERLAPPED, says was transferred). */
static int64_t completed_result(ioc_op *op, DWORD bytes)
{
    int64_t result = op_result(op, bytes);
    if (op->kind == IOC_OP_RECVMSG && result >= 0 && op->result != NULL)
        finish_recvmsg(op);
    if (op->kind == IOC_OP_POLL && result >= 0)
        result = afd_result(op);
    if (op->kind == IOC_OP_WAIT_HANDLE && op->wait != NULL) {
        UnregisterWaitEx(op->wait, NULL);   /* it fired: release the registration */
        op->wait = NULL;
    }
    return result;
}

/* Move the operations completed in their submit call that were submitted
 * before sequence number `before` to the ready list. */
static void place_done_now(ioc_core *c, uint64_t before)
{
    while (c->now_head != NULL && c->now_head->seq < before) {
        ioc_op *op = c->now_head;
        c->now_head = op->ready_next;
        if (c->now_head == NULL)
            c->now_tail = NULL;
        ready_append(c, op);
    }
}

/* The order of completions.  Packets come in the order the kernel completed
 * their operations.  An operation that completed inside its submit call
 * (complete_now) has no packet; it must come after every packet of an
 * operation that completed before it -- on one socket, a receive whose
 * packet waits in the port holds earlier bytes than a later receive that
 * completed at once -- and before every packet of an operation that
 * completed after it.  Neither is known directly, but an operation
 * submitted after it (a higher sequence number) completed after it, and
 * the packets are in completion order: so each one goes right before the
 * first dequeued packet of a later submission.  Those not placed so go
 * after the last packet once a dequeue found the port empty (fewer packets
 * than asked for); after a full dequeue the port may hold more packets
 * that completed earlier, so they wait for the next one.  The ready list
 * keeps what is placed, for the caller to take in order. */
int ioc_wait(ioc_core *c, int64_t timeout_ns, ioc_completion *out, int max, int *stored)
{
    ULONG removed = 0, i;
    DWORD timeout_ms;
    int n = 0, notes = 0;

    if (max <= 0)
        return -(int)ERROR_INVALID_PARAMETER;
    if ((ULONG)max > c->entries_max)
        max = (int)c->entries_max;
    c->stats.waits++;
    if (c->ready_count < (unsigned)max) {
        ULONG room = (ULONG)max - c->ready_count;
        if (c->ready_head != NULL || c->now_head != NULL)
            timeout_ns = 0;   /* completions are waiting already: only look */
        else if (timeout_ns != 0 && !ioc_wake_prepare_sleep(&c->wake))
            timeout_ns = 0;   /* a wakeup raced in: poll, don't block */
        if (timeout_ns < 0)
            timeout_ms = INFINITE;
        else if (timeout_ns / 1000000 >= (int64_t)INFINITE - 1)
            timeout_ms = INFINITE - 1;
        else
            timeout_ms = (DWORD)((timeout_ns + 999999) / 1000000);   /* never wake early */
        c->stats.enters++;
        if (!GetQueuedCompletionStatusEx(c->port, c->entries, room, &removed, timeout_ms,
                                         FALSE)) {
            DWORD e = GetLastError();
            removed = 0;
            if (e != WAIT_TIMEOUT && e != WAIT_IO_COMPLETION && c->ready_head == NULL) {
                ioc_wake_after_sleep(&c->wake);
                return -(int)e;
            }
        }
        ioc_wake_after_sleep(&c->wake);
        for (i = 0; i < removed; i++) {
            OVERLAPPED_ENTRY *e = &c->entries[i];
            ioc_op *op;
            if (e->lpCompletionKey == KEY_WAKEUP) {
                ioc_wake_consumed(&c->wake);
                continue;
            }
            if (e->lpCompletionKey == KEY_SIGINT) {
                on_sigint_packet(c);
                continue;
            }
            op = (ioc_op *)e->lpOverlapped;
            if (op->stray) {
                on_stray_packet(c, op);   /* reported already (an error, or a ghost) */
                continue;
            }
            if (op->maybe_packet) {
                op->stray_packet = 1;     /* completed by the core already */
                continue;
            }
            op->done_result = completed_result(op, e->dwNumberOfBytesTransferred);
            place_done_now(c, op->seq);
            ready_append(c, op);
        }
        if (removed < room)
            place_done_now(c, UINT64_MAX);   /* the port is empty: the rest go now */
    }
    while (n < max && c->ready_head != NULL) {
        ioc_op *op = ready_pop(c);
        out[n].token = op->token;
        if (op->stray) {
            /* Only its memory is let go now: no callback runs for it. */
            out[n].result = 0;
            out[n].flags = IOC_COMPLETION_STRAY;
            op->stray_out = 1;
            c->strays_held--;
            notes++;
            if (op->stray_packet)
                release_stray(c, op);
        } else {
            out[n].result = op->done_result;
            out[n].flags = 0;
            if (op->maybe_packet && !op->stray_packet)
                park_ghost(c, op);
            else
                ioc_pool_give_back(&c->pool, op);
        }
        n++;
    }
    c->stats.completed += (uint64_t)(n - notes);
    ioc_wake_end_of_wait(&c->wake);
    if (stored != NULL)
        *stored = n;
    return n;
}

/* Every Windows operation starts inside its submit call, on the handle the
 * caller holds then: no submission waits to be published, so there is
 * nothing for a publish hook to check and nothing to void. */
void ioc_set_publish_hook(ioc_core *c, void (*before_publish)(void *), void *arg, int *armed)
{
    (void)c; (void)before_publish; (void)arg; (void)armed;
}

int ioc_void_queued(ioc_core *c, ioc_op *op, uint64_t token)
{
    (void)c; (void)op; (void)token;
    return 0;
}

int ioc_flush(ioc_core *c)
{
    (void)c;   /* every Windows call reaches the kernel at once */
    return 0;
}

int ioc_ring_thread(ioc_core *c)
{
    (void)c;   /* any thread may use a completion port */
    return 0;
}

int ioc_wakeup(ioc_core *c)
{
    if (ioc_wake_request(&c->wake) &&
        !PostQueuedCompletionStatus(c->port, 0, KEY_WAKEUP, NULL))
        return -(int)GetLastError();
    return 0;
}

/* ---- SIGINT ----
 * A thread blocked in GetQueuedCompletionStatusEx is not interrupted by
 * Ctrl+C.  Python's C signal handler sets a manual-reset event after it has
 * tripped SIGINT; a thread-pool wait on that event posts KEY_SIGINT to the
 * port, the wait returns, and Python runs its handler as we return to it.
 * The wait is one-shot: ioc_wait resets the event and re-arms it, as
 * time.sleep() resets the same event before it waits. */
static VOID CALLBACK sigint_fired(PVOID context, BOOLEAN timed_out)
{
    ioc_core *c = (ioc_core *)context;
    (void)timed_out;
    PostQueuedCompletionStatus(c->port, 0, KEY_SIGINT, NULL);
}

static int arm_sigint_wait(ioc_core *c)
{
    if (!RegisterWaitForSingleObject(&c->sigint_wait, c->sigint_event, sigint_fired, c,
                                     INFINITE, WT_EXECUTEONLYONCE)) {
        c->sigint_wait = NULL;
        return -(int)GetLastError();
    }
    return 0;
}

/* blocking != 0: return only when no callback can run any more. */
static void disarm_sigint_wait(ioc_core *c, int blocking)
{
    if (c->sigint_wait != NULL) {
        UnregisterWaitEx(c->sigint_wait, blocking ? INVALID_HANDLE_VALUE : NULL);
        c->sigint_wait = NULL;
    }
}

static void on_sigint_packet(ioc_core *c)
{
    disarm_sigint_wait(c, 0);   /* it fired: its callback is done posting */
    if (c->sigint_event != NULL) {
        ResetEvent(c->sigint_event);
        arm_sigint_wait(c);
    }
}

int ioc_watch_sigint(ioc_core *c, intptr_t event)
{
    disarm_sigint_wait(c, 1);
    c->sigint_event = (HANDLE)event;
    if (c->sigint_event == NULL)
        return 0;
    ResetEvent(c->sigint_event);
    return arm_sigint_wait(c);
}

/* No multishot poll on Windows: a transport keeps one WSARecv posted. */
int ioc_submit_poll_multishot(ioc_core *c, intptr_t sock, uint32_t events, uint64_t token,
                              ioc_op **op_out)
{
    (void)c;
    (void)sock;
    (void)events;
    (void)token;
    *op_out = NULL;
    return -WSAEOPNOTSUPP;
}

void ioc_get_stats(ioc_core *c, ioc_stats *out)
{
    *out = c->stats;
    out->in_flight = c->pool.count_in_flight;
    out->strays = c->strays_held;
    ioc_wake_stats(&c->wake, out);
}

/* ---- closing ---- */

int ioc_core_close(ioc_core *c, int drain_ms)
{
    ULONGLONG deadline = GetTickCount64() + (ULONGLONG)(drain_ms > 0 ? drain_ms : 0);
    ioc_completion sink[64];
    ioc_op *op;
    int left;

    ioc_watch_sigint(c, 0);
    for (op = c->pool.in_flight.next; op != &c->pool.in_flight; op = op->next)
        if (!op->cancel_requested)
            request_cancel(c, op);
    /* The packets of strays are awaited too (until the same deadline), so
     * that every record is accounted for.  A stray's status is final (the
     * kernel writes nothing more into it), so one whose packet has not come
     * by then goes with the slabs all the same: the packet only names the
     * record, and goes with the port. */
    while (c->pool.count_in_flight > 0 || c->stray_count > 0) {
        ULONGLONG now = GetTickCount64();
        if (now >= deadline)
            break;
        if (ioc_wait(c, (int64_t)(deadline - now) * 1000000, sink, 64, NULL) < 0)
            break;
    }
    left = (int)c->pool.count_in_flight;
    if (c->afd != NULL)
        CloseHandle(c->afd);
    CloseHandle(c->port);
    WSACleanup();
    free(c->skip_bits);
    c->skip_bits = NULL;
    c->skip_words = 0;
    if (left == 0) {
        ioc_pool_free(&c->pool);
        free(c->entries);
        free(c);
    }
    /* Otherwise the records stay allocated: the kernel may still write the
     * OVERLAPPEDs of operations that have not completed. */
    return left;
}
