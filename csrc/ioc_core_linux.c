/*
 * ioc_core_linux.c -- the io_uring backend of the completion core.
 *
 * Raw io_uring syscalls against the kernel's uapi header rather than
 * liburing: the core needs a dozen operations, the ring setup is ~100 lines,
 * and this way the build needs nothing beyond the kernel headers that come
 * with any C toolchain (Debian's liburing is 2.3 and lags the kernel).
 *
 * Shape of one loop iteration (ioc_wait):
 *   submit calls only fill SQEs in the shared ring (no syscall);
 *   ioc_wait publishes them and, in the same io_uring_enter, waits for
 *   completions with a timeout (IORING_ENTER_EXT_ARG); CQEs are then reaped
 *   in a batch from the shared CQ ring.
 *
 * Cross-thread wakeup: an eventfd with a read kept posted in the ring.  A
 * waker writes to the eventfd only when the loop thread says it is sleeping
 * and no other wakeup is already on its way (see ioc_wakeup).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <stddef.h>
#include <sys/uio.h>

/* SENDMSG / RECVMSG read their msghdr (and RECVMSG its iovec) from the
 * record, which lives until completion; RECVMSG's kernel writes the name,
 * control lengths and flags back into it, copied to *result when reaped. */
#define IOC_OP_BACKEND_FIELDS \
    struct msghdr msg; \
    struct iovec iov; \
    ioc_msg_result *result;
#include "ioc_ops.h"
#include "ioc_addr.h"
#include "ioc_wakeup.h"

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif

/* user_data values that are not operation records. */
#define UD_WAKEUP ((uint64_t)1)
#define UD_CANCEL ((uint64_t)2)
/* An operation's cancellation: its record's address with the low bit set
 * (records are 8-byte aligned; UD_WAKEUP is handled first). */
#define UD_OP_CANCEL_BIT ((uint64_t)1)

struct ioc_core {
    int ring_fd;
    int event_fd;
    int forked;
    int closing;                     /* ioc_core_close is draining */
    int wake_armed;                  /* the eventfd read is in the kernel */
    unsigned features;
    unsigned depth;                  /* as asked of io_uring_setup */
    /* FLAGS_ONE_THREAD: only the creator may enter the ring (ring_for_this_thread) */
    int one_thread;
    uint64_t owner;                  /* this_thread() of the ring's creator */

    /* submission ring */
    unsigned *sq_khead, *sq_ktail, *sq_kflags, *sq_array;
    unsigned sq_mask, sq_entries;
    unsigned sq_local_tail;          /* SQEs filled, published at flush */
    struct io_uring_sqe *sqes;

    /* completion ring */
    unsigned *cq_khead, *cq_ktail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;

    void *sq_ring_ptr, *cq_ring_ptr;
    size_t sq_ring_size, cq_ring_size, sqes_size;

    ioc_wake_state wake;             /* see ioc_wakeup.h */
    uint64_t wake_value;             /* target of the eventfd read */

    ioc_op_pool pool;
    ioc_stats stats;

    /* ioc_set_publish_hook: called before a publish while *hook_armed. */
    void (*before_publish)(void *);
    void *hook_arg;
    int *hook_armed;
};

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
                              unsigned flags, void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
}

static unsigned load_acquire(const unsigned *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void store_release(unsigned *p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

const char *ioc_backend_name(void) { return "io_uring"; }
int ioc_err_cancelled(void) { return -ECANCELED; }

/* ---- opening: explain every way io_uring can be unavailable ---- */

static int read_int_file(const char *path, int *value)
{
    FILE *f = fopen(path, "r");
    int ok;
    if (f == NULL)
        return 0;
    ok = fscanf(f, "%d", value) == 1;
    fclose(f);
    return ok;
}

static void explain_setup_failure(int err, char *msg, size_t len)
{
    int disabled = 0;
    int have_sysctl = read_int_file("/proc/sys/kernel/io_uring_disabled", &disabled);

    if (err == ENOSYS) {
        snprintf(msg, len,
                 "io_uring is not available: io_uring_setup() failed with ENOSYS. The kernel "
                 "was built without io_uring (CONFIG_IO_URING) or is older than Linux 5.11, or a "
                 "seccomp filter answers ENOSYS for it. iocploop needs io_uring on Linux: use a "
                 "kernel with io_uring enabled, or run this program on asyncio's default loop.");
    } else if ((err == EPERM || err == EACCES) && have_sysctl && disabled == 2) {
        snprintf(msg, len,
                 "io_uring is disabled on this system: io_uring_setup() failed with %s because "
                 "the sysctl kernel.io_uring_disabled is 2. Set it to 0 (or to 1 and add this "
                 "user to kernel.io_uring_group) to use iocploop, or run this program on "
                 "asyncio's default loop.", strerror(err));
    } else if ((err == EPERM || err == EACCES) && have_sysctl && disabled == 1) {
        snprintf(msg, len,
                 "io_uring is restricted on this system: io_uring_setup() failed with %s because "
                 "kernel.io_uring_disabled is 1 and this process is not in kernel.io_uring_group. "
                 "Add the user to that group or set the sysctl to 0 to use iocploop, or run "
                 "this program on asyncio's default loop.", strerror(err));
    } else if (err == EPERM || err == EACCES) {
        snprintf(msg, len,
                 "io_uring is blocked: io_uring_setup() failed with %s. Container runtimes' "
                 "default seccomp profiles (Docker, containerd, Podman) block io_uring. Allow the "
                 "io_uring_setup/io_uring_enter/io_uring_register syscalls in the seccomp profile "
                 "to use iocploop, or run this program on asyncio's default loop.", strerror(err));
    } else if (err == ENOMEM) {
        snprintf(msg, len,
                 "io_uring could not be set up: io_uring_setup() failed with ENOMEM (locked-memory "
                 "limit, see `ulimit -l`, or memory pressure). Raise RLIMIT_MEMLOCK or use a "
                 "newer kernel (5.12+ accounts ring memory differently).");
    } else {
        snprintf(msg, len, "io_uring could not be set up: io_uring_setup() failed: %s (errno %d).",
                 strerror(err), err);
    }
}

static void unmap_rings(ioc_core *c)
{
    if (c->sqes && c->sqes != MAP_FAILED)
        munmap(c->sqes, c->sqes_size);
    if (c->cq_ring_ptr && c->cq_ring_ptr != MAP_FAILED && c->cq_ring_ptr != c->sq_ring_ptr)
        munmap(c->cq_ring_ptr, c->cq_ring_size);
    if (c->sq_ring_ptr && c->sq_ring_ptr != MAP_FAILED)
        munmap(c->sq_ring_ptr, c->sq_ring_size);
    c->sqes = NULL;
    c->cq_ring_ptr = c->sq_ring_ptr = NULL;
}

/* The ring's flag sets, most capable first; each later set drops what older
 * kernels refuse.  The first defers the kernel's completion work (a wakeup
 * posting its completion) to our io_uring_enter, in one batch, instead of
 * running it at the end of every recv and send: 9% less server CPU per
 * request for echo at 1 and 10 KiB (docs/performance.md, #21 step 7).  Its
 * price is that only the creating thread may enter the ring. */
#define FLAGS_ONE_THREAD 0
#define FLAGS_ANY_THREAD 1
static const unsigned flag_sets[] = {
    IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL |
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL |
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP,
};

/* A number for the calling thread that no other thread of the process ever
 * gets (pthread_t values and thread ids are reused after a thread ends). */
static uint64_t this_thread(void)
{
    static uint64_t last;
    static __thread uint64_t mine;
    if (mine == 0)
        mine = __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
    return mine;
}

static int setup_ring(ioc_core *c, unsigned depth, size_t first_set, char *err, size_t errlen)
{
    struct io_uring_params p;
    size_t i;
    int fd = -1, e = EINVAL;

    for (i = first_set; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i];
        p.cq_entries = depth * 4;
        fd = sys_io_uring_setup(depth, &p);
        if (fd >= 0)
            break;
        e = errno;
        if (e != EINVAL)
            break;
    }
    if (fd < 0) {
        explain_setup_failure(e, err, errlen);
        return e;
    }
    c->ring_fd = fd;
    c->features = p.features;
    c->one_thread = (i == FLAGS_ONE_THREAD);
    c->owner = this_thread();
    c->depth = depth;
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
        snprintf(err, errlen,
                 "io_uring on this kernel is too old for iocploop: it lacks "
                 "IORING_FEAT_EXT_ARG/IORING_FEAT_NODROP (Linux 5.11 or newer is needed). "
                 "Upgrade the kernel or run this program on asyncio's default loop.");
        return ENOTSUP;
    }

    c->sq_ring_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    c->cq_ring_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (c->cq_ring_size > c->sq_ring_size)
            c->sq_ring_size = c->cq_ring_size;
        c->cq_ring_size = c->sq_ring_size;
    }
    c->sq_ring_ptr = mmap(NULL, c->sq_ring_size, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (c->sq_ring_ptr == MAP_FAILED)
        goto map_failed;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        c->cq_ring_ptr = c->sq_ring_ptr;
    } else {
        c->cq_ring_ptr = mmap(NULL, c->cq_ring_size, PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (c->cq_ring_ptr == MAP_FAILED)
            goto map_failed;
    }
    c->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    c->sqes = mmap(NULL, c->sqes_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (c->sqes == MAP_FAILED)
        goto map_failed;

    {
        char *sq = (char *)c->sq_ring_ptr, *cq = (char *)c->cq_ring_ptr;
        unsigned k;
        c->sq_khead = (unsigned *)(sq + p.sq_off.head);
        c->sq_ktail = (unsigned *)(sq + p.sq_off.tail);
        c->sq_kflags = (unsigned *)(sq + p.sq_off.flags);
        c->sq_array = (unsigned *)(sq + p.sq_off.array);
        c->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
        c->sq_entries = *(unsigned *)(sq + p.sq_off.ring_entries);
        c->cq_khead = (unsigned *)(cq + p.cq_off.head);
        c->cq_ktail = (unsigned *)(cq + p.cq_off.tail);
        c->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
        c->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
        /* SQE index i always sits in array slot i: publish once. */
        for (k = 0; k < c->sq_entries; k++)
            c->sq_array[k] = k;
        c->sq_local_tail = *c->sq_ktail;
    }
    return 0;

map_failed:
    e = errno;
    snprintf(err, errlen, "io_uring ring could not be mapped: %s", strerror(e));
    return e;
}

/* ---- submission ---- */

static unsigned sq_unpublished_or_pending(ioc_core *c)
{
    /* SQEs filled by us and not yet consumed by the kernel. */
    return c->sq_local_tail - load_acquire(c->sq_khead);
}

static int arm_wakeup_read(ioc_core *c);

/* A ring set up with FLAGS_ONE_THREAD answers EEXIST to any thread but its
 * creator.  A loop made in one thread and run in another (a thread running
 * loop.run_forever, say) gets a ring that any thread may enter, set up anew
 * the first time another thread needs it.  That is possible while no
 * operation is in flight: the old ring then holds only the wakeup read,
 * which its closing cancels (a cancelled read writes nothing).  With
 * operations in flight the ring cannot move: -EEXIST. */
static int ring_for_this_thread(ioc_core *c)
{
    char err[200];
    int e;

    if (!c->one_thread || c->owner == this_thread())
        return 0;
    if (c->pool.count_in_flight != 0)
        return -EEXIST;
    unmap_rings(c);
    close(c->ring_fd);
    c->ring_fd = -1;
    c->wake_armed = 0;
    e = setup_ring(c, c->depth, FLAGS_ANY_THREAD, err, sizeof(err));
    if (e == 0 && arm_wakeup_read(c) < 0)
        e = EBUSY;
    if (e != 0) {
        /* Unusable from now on: every call refuses, as after a fork. */
        unmap_rings(c);
        c->forked = 1;
        return -e;
    }
    return 0;
}

static int flush_submissions(ioc_core *c, unsigned min_complete, unsigned flags,
                             void *arg, size_t argsz)
{
    int r = ring_for_this_thread(c);
    if (r < 0)
        return r;
    if (c->one_thread && sq_unpublished_or_pending(c) &&
        (__atomic_load_n(c->sq_kflags, __ATOMIC_ACQUIRE) & IORING_SQ_TASKRUN)) {
        /* Completion work the kernel deferred to us (FLAGS_ONE_THREAD) runs
         * after an enter's submissions: a receive whose data came would
         * lose it to a receive submitted after it on the same socket, and
         * a cancellation would miss an operation waiting there.  Run it
         * first (only when some is waiting and something is to submit). */
        c->stats.enters++;
        if (sys_io_uring_enter(c->ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0 &&
            errno != EINTR && errno != EBUSY && errno != EAGAIN)
            return -errno;
    }
    if (c->hook_armed != NULL && *c->hook_armed) {
        *c->hook_armed = 0;
        c->before_publish(c->hook_arg);   /* may void queued SQEs */
    }
    store_release(c->sq_ktail, c->sq_local_tail);
    c->stats.enters++;
    r = sys_io_uring_enter(c->ring_fd, sq_unpublished_or_pending(c), min_complete, flags, arg, argsz);
    return r < 0 ? -errno : r;
}

/* A zeroed SQE, or NULL when the ring is full even after a flush. */
static struct io_uring_sqe *get_sqe(ioc_core *c)
{
    struct io_uring_sqe *sqe;
    if (ring_for_this_thread(c) < 0)
        return NULL;
    if (sq_unpublished_or_pending(c) >= c->sq_entries) {
        int r = flush_submissions(c, 0, 0, NULL, 0);
        if (r < 0 && r != -EBUSY && r != -EAGAIN && r != -EINTR)
            return NULL;
        if (sq_unpublished_or_pending(c) >= c->sq_entries)
            return NULL;
    }
    sqe = &c->sqes[c->sq_local_tail & c->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    c->sq_local_tail++;
    return sqe;
}

static int arm_wakeup_read(ioc_core *c)
{
    struct io_uring_sqe *sqe = get_sqe(c);
    if (sqe == NULL)
        return -EBUSY;
    sqe->opcode = IORING_OP_READ;
    sqe->fd = c->event_fd;
    sqe->addr = (uint64_t)(uintptr_t)&c->wake_value;
    sqe->len = sizeof(c->wake_value);
    sqe->off = (uint64_t)-1;
    sqe->user_data = UD_WAKEUP;
    c->wake_armed = 1;
    return 0;
}

int ioc_core_open(ioc_core **out, unsigned int queue_depth, char *err, size_t errlen)
{
    ioc_core *c;
    int e;

    *out = NULL;
    queue_depth = ioc_clamp_queue_depth(queue_depth);
    c = (ioc_core *)calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return ENOMEM;
    }
    c->ring_fd = c->event_fd = -1;
    ioc_pool_init(&c->pool);
    e = setup_ring(c, queue_depth, FLAGS_ONE_THREAD, err, errlen);
    if (e == 0) {
        c->event_fd = eventfd(0, EFD_CLOEXEC);
        if (c->event_fd < 0) {
            e = errno;
            snprintf(err, errlen, "eventfd() failed: %s", strerror(e));
        } else if (arm_wakeup_read(c) < 0) {
            e = EBUSY;
            snprintf(err, errlen, "could not post the wakeup read");
        }
    }
    if (e != 0) {
        unmap_rings(c);
        if (c->ring_fd >= 0)
            close(c->ring_fd);
        if (c->event_fd >= 0)
            close(c->event_fd);
        free(c);
        return e;
    }
    *out = c;
    return 0;
}

void ioc_core_forked(ioc_core *c) { c->forked = 1; }

int ioc_associate(ioc_core *c, intptr_t handle)
{
    (void)handle;
    return c->forked ? -EBADF : 0;
}

/* Claim an SQE and a record for a new operation; NULL with *err set on failure. */
static struct io_uring_sqe *prep_op(ioc_core *c, int opcode, int kind, intptr_t sock,
                                    uint64_t token, ioc_op **op_out, int *err)
{
    struct io_uring_sqe *sqe;
    ioc_op *op;

    *op_out = NULL;
    *err = c->forked ? -EBADF : token == 0 ? -EINVAL : ring_for_this_thread(c);
    if (*err)
        return NULL;
    sqe = get_sqe(c);
    if (sqe == NULL) {
        *err = -EBUSY;
        return NULL;
    }
    op = ioc_pool_take(&c->pool, token, sock, kind);
    if (op == NULL) {
        /* Turn the claimed SQE into a harmless no-op whose CQE is ignored. */
        sqe->opcode = IORING_OP_NOP;
        sqe->user_data = UD_CANCEL;
        *err = -ENOMEM;
        return NULL;
    }
    sqe->opcode = (uint8_t)opcode;
    sqe->fd = (int)sock;
    sqe->user_data = (uint64_t)(uintptr_t)op;
    c->stats.submitted++;
    *op_out = op;
    return sqe;
}

int ioc_submit_recv(ioc_core *c, intptr_t sock, void *buf, uint32_t len, int flags,
                    uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe = prep_op(c, IORING_OP_RECV, IOC_OP_RECV, sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->msg_flags = (uint32_t)flags;
    return 0;
}

int ioc_submit_send(ioc_core *c, intptr_t sock, const void *buf, uint32_t len, int flags,
                    uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe = prep_op(c, IORING_OP_SEND, IOC_OP_SEND, sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    /* MSG_NOSIGNAL: a peer that went away gives EPIPE, never SIGPIPE. */
    sqe->msg_flags = (uint32_t)(flags | MSG_NOSIGNAL);
    return 0;
}

/* ioc_iovec is passed to the kernel as struct iovec. */
typedef char ioc_iovec_matches_iovec[(sizeof(ioc_iovec) == sizeof(struct iovec) &&
                                      offsetof(ioc_iovec, len) == offsetof(struct iovec, iov_len))
                                     ? 1 : -1];

int ioc_submit_sendv(ioc_core *c, intptr_t sock, const ioc_iovec *bufs, int nbufs, int flags,
                     uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe;

    if (nbufs <= 0 || nbufs > IOV_MAX)
        return -EINVAL;
    sqe = prep_op(c, IORING_OP_SENDMSG, IOC_OP_SENDV, sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    (*op_out)->msg.msg_iov = (struct iovec *)bufs;
    (*op_out)->msg.msg_iovlen = (size_t)nbufs;
    sqe->addr = (uint64_t)(uintptr_t)&(*op_out)->msg;
    sqe->msg_flags = (uint32_t)(flags | MSG_NOSIGNAL);
    return 0;
}

int ioc_submit_accept(ioc_core *c, intptr_t listen_sock, intptr_t accept_sock, void *addrbuf,
                      uint32_t *addrlen, uint32_t recv_len, uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe;

    (void)accept_sock;
    (void)recv_len;   /* first data: the loop posts a receive after the accept */
    sqe = prep_op(c, IORING_OP_ACCEPT, IOC_OP_ACCEPT, listen_sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    sqe->addr = (uint64_t)(uintptr_t)addrbuf;
    sqe->addr2 = (uint64_t)(uintptr_t)addrlen;
    sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    return 0;
}

int ioc_accept_finish(ioc_core *c, intptr_t listen_sock, intptr_t accept_sock, void *addrbuf,
                      uint32_t addrlen, uint32_t recv_len, ioc_addr *local, ioc_addr *remote)
{
    (void)c;
    (void)recv_len;
    (void)listen_sock;
    (void)accept_sock;
    memset(local, 0, sizeof(*local));
    ioc_decode_addr((const struct sockaddr *)addrbuf, (int)addrlen, remote);
    return 0;
}

int ioc_submit_connect(ioc_core *c, intptr_t sock, const void *addr, int addrlen,
                       uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe;

    if (addrlen <= 0)
        return -EINVAL;
    sqe = prep_op(c, IORING_OP_CONNECT, IOC_OP_CONNECT, sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->off = (uint64_t)addrlen;
    return 0;
}

int ioc_connect_finish(ioc_core *c, intptr_t sock)
{
    (void)c;
    (void)sock;
    return 0;
}

int ioc_submit_sendfile(ioc_core *c, intptr_t sock, intptr_t file, uint64_t offset,
                        uint32_t count, uint64_t token, ioc_op **op_out)
{
    (void)c; (void)sock; (void)file; (void)offset; (void)count; (void)token;
    *op_out = NULL;
    return -EOPNOTSUPP;
}

int ioc_submit_poll(ioc_core *c, intptr_t sock, uint32_t events, uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe = prep_op(c, IORING_OP_POLL_ADD, IOC_OP_POLL, sock, token, op_out,
                                       &err);
    if (sqe == NULL)
        return err;
    sqe->poll32_events = events;   /* one shot: no IORING_POLL_ADD_MULTI */
    return 0;
}

int ioc_submit_poll_multishot(ioc_core *c, intptr_t sock, uint32_t events, uint64_t token,
                              ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe = prep_op(c, IORING_OP_POLL_ADD, IOC_OP_POLL, sock, token, op_out,
                                       &err);
    if (sqe == NULL)
        return err;
    sqe->poll32_events = events;
    sqe->len = IORING_POLL_ADD_MULTI;   /* stays posted: a completion per wakeup */
    return 0;
}

/* Pipes and other streams that are not sockets: IORING_OP_READ / WRITE at
 * the current position (offset -1), which is the only one a pipe has. */
static int submit_rw(ioc_core *c, int opcode, int kind, intptr_t fd, void *buf, uint32_t len,
                     uint64_t token, ioc_op **op_out)
{
    int err;
    struct io_uring_sqe *sqe = prep_op(c, opcode, kind, fd, token, op_out, &err);
    if (sqe == NULL)
        return err;
    sqe->addr = (uint64_t)(uintptr_t)buf;
    sqe->len = len;
    sqe->off = (uint64_t)-1;
    return 0;
}

int ioc_submit_read(ioc_core *c, intptr_t handle, void *buf, uint32_t len, uint64_t token,
                    ioc_op **op_out)
{
    return submit_rw(c, IORING_OP_READ, IOC_OP_READ, handle, buf, len, token, op_out);
}

int ioc_submit_write(ioc_core *c, intptr_t handle, const void *buf, uint32_t len,
                     uint64_t token, ioc_op **op_out)
{
    return submit_rw(c, IORING_OP_WRITE, IOC_OP_WRITE, handle, (void *)buf, len, token, op_out);
}

int ioc_submit_connect_pipe(ioc_core *c, intptr_t pipe, uint64_t token, ioc_op **op_out)
{
    (void)c; (void)pipe; (void)token;
    *op_out = NULL;
    return -EOPNOTSUPP;
}

int ioc_submit_wait_handle(ioc_core *c, intptr_t handle, uint64_t token, ioc_op **op_out)
{
    (void)c; (void)handle; (void)token;
    *op_out = NULL;
    return -EOPNOTSUPP;
}

int ioc_submit_disconnect(ioc_core *c, intptr_t sock, uint64_t token, ioc_op **op_out)
{
    (void)c; (void)sock; (void)token;
    *op_out = NULL;
    return -EOPNOTSUPP;
}

int ioc_socket_dissolve(intptr_t sock)
{
    struct sockaddr unspec;
    struct tcp_info info;
    socklen_t len = sizeof(info);

    /* Only a connection that is over at the TCP level (both FINs exchanged,
     * or reset): on a live one, AF_UNSPEC would reset it and lose data. */
    memset(&info, 0, sizeof(info));
    if (getsockopt((int)sock, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
        return -errno;
    if (info.tcpi_state != TCP_CLOSE)
        return -EISCONN;
    memset(&unspec, 0, sizeof(unspec));
    unspec.sa_family = AF_UNSPEC;
    if (connect((int)sock, &unspec, sizeof(unspec)) != 0)
        return -errno;
    return 0;
}

int ioc_submit_recvmsg(ioc_core *c, intptr_t sock, void *buf, uint32_t len,
                       void *name, uint32_t namelen, void *control, uint32_t controllen,
                       int flags, ioc_msg_result *result, uint64_t token, ioc_op **op_out)
{
    int err;
    ioc_op *op;
    struct io_uring_sqe *sqe = prep_op(c, IORING_OP_RECVMSG, IOC_OP_RECVMSG, sock, token,
                                       op_out, &err);
    if (sqe == NULL)
        return err;
    op = *op_out;
    op->iov.iov_base = buf;
    op->iov.iov_len = len;
    op->msg.msg_name = name;
    op->msg.msg_namelen = name != NULL ? namelen : 0;
    op->msg.msg_iov = &op->iov;
    op->msg.msg_iovlen = 1;
    op->msg.msg_control = control;
    op->msg.msg_controllen = control != NULL ? controllen : 0;
    op->result = result;
    sqe->addr = (uint64_t)(uintptr_t)&op->msg;
    sqe->msg_flags = (uint32_t)flags;
    return 0;
}

int ioc_recvmsg_now(intptr_t sock, void *buf, uint32_t len, void *name, uint32_t namelen,
                    void *control, uint32_t controllen, ioc_msg_result *result)
{
    struct msghdr msg;
    struct iovec iov;
    ssize_t n;

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = buf;
    iov.iov_len = len;
    msg.msg_name = name;
    msg.msg_namelen = name != NULL ? namelen : 0;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = control != NULL ? controllen : 0;
    n = recvmsg((int)sock, &msg, MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    result->namelen = (uint32_t)msg.msg_namelen;
    result->controllen = (uint32_t)msg.msg_controllen;
    result->flags = msg.msg_flags;
    return (int)n;
}

int ioc_submit_sendmsg(ioc_core *c, intptr_t sock, const ioc_iovec *bufs, int nbufs,
                       const void *name, int namelen, const void *control,
                       uint32_t controllen, int flags, uint64_t token, ioc_op **op_out)
{
    int err;
    ioc_op *op;
    struct io_uring_sqe *sqe;

    if (nbufs <= 0 || nbufs > IOV_MAX || (name != NULL && namelen <= 0))
        return -EINVAL;
    sqe = prep_op(c, IORING_OP_SENDMSG, IOC_OP_SENDMSG, sock, token, op_out, &err);
    if (sqe == NULL)
        return err;
    op = *op_out;
    op->msg.msg_name = (void *)name;
    op->msg.msg_namelen = name != NULL ? (socklen_t)namelen : 0;
    op->msg.msg_iov = (struct iovec *)bufs;
    op->msg.msg_iovlen = (size_t)nbufs;
    op->msg.msg_control = (void *)control;
    op->msg.msg_controllen = control != NULL ? controllen : 0;
    sqe->addr = (uint64_t)(uintptr_t)&op->msg;
    sqe->msg_flags = (uint32_t)(flags | MSG_NOSIGNAL);
    return 0;
}

/* ---- arrival interface (IP_PKTINFO / IPV6_PKTINFO) ---- */

int ioc_pktinfo_enable(intptr_t sock, int family)
{
    int one = 1, r;
    if (family == AF_INET)
        r = setsockopt((int)sock, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    else if (family == AF_INET6)
        r = setsockopt((int)sock, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
    else
        return -EAFNOSUPPORT;
    return r != 0 ? -errno : 0;
}

int ioc_pktinfo_parse(const void *control, uint32_t controllen, ioc_addr *local,
                      uint32_t *ifindex)
{
    struct msghdr msg;
    struct cmsghdr *cmsg;

    memset(&msg, 0, sizeof(msg));
    memset(local, 0, sizeof(*local));
    *ifindex = 0;
    msg.msg_control = (void *)control;
    msg.msg_controllen = controllen;
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO &&
            cmsg->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(cmsg), sizeof(pi));
            local->family = AF_INET;
            memcpy(local->addr, &pi.ipi_addr, 4);
            *ifindex = (uint32_t)pi.ipi_ifindex;
            return 1;
        }
        if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO &&
            cmsg->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(cmsg), sizeof(pi));
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
    struct cmsghdr *cmsg = (struct cmsghdr *)control;

    if (local->family == AF_INET) {
        struct in_pktinfo pi;
        if (cap < CMSG_SPACE(sizeof(pi)))
            return -ENOBUFS;
        memset(control, 0, CMSG_SPACE(sizeof(pi)));
        memset(&pi, 0, sizeof(pi));
        pi.ipi_ifindex = (int)ifindex;
        memcpy(&pi.ipi_spec_dst, local->addr, 4);   /* the source address to use */
        cmsg->cmsg_level = IPPROTO_IP;
        cmsg->cmsg_type = IP_PKTINFO;
        cmsg->cmsg_len = CMSG_LEN(sizeof(pi));
        memcpy(CMSG_DATA(cmsg), &pi, sizeof(pi));
        return (int)CMSG_SPACE(sizeof(pi));
    }
    if (local->family == AF_INET6) {
        struct in6_pktinfo pi;
        if (cap < CMSG_SPACE(sizeof(pi)))
            return -ENOBUFS;
        memset(control, 0, CMSG_SPACE(sizeof(pi)));
        memset(&pi, 0, sizeof(pi));
        pi.ipi6_ifindex = ifindex;
        memcpy(&pi.ipi6_addr, local->addr, 16);
        cmsg->cmsg_level = IPPROTO_IPV6;
        cmsg->cmsg_type = IPV6_PKTINFO;
        cmsg->cmsg_len = CMSG_LEN(sizeof(pi));
        memcpy(CMSG_DATA(cmsg), &pi, sizeof(pi));
        return (int)CMSG_SPACE(sizeof(pi));
    }
    return -EAFNOSUPPORT;
}

/* ioc_completion.flags are the CQE's flags, limited to the one the header
 * names (the kernel adds others, such as IORING_CQE_F_SOCK_NONEMPTY, which
 * would read as IOC_COMPLETION_STRAY): the header's name must match. */
#define IOC_LINUX_FLAGS IORING_CQE_F_MORE
typedef char ioc_completion_flags_match[IOC_COMPLETION_MORE == IORING_CQE_F_MORE ? 1 : -1];

/* The record of an operation with a cancellation in flight is not given
 * back before that cancellation completes (see reap), so the cancellation
 * can be matched to its operation, and asked again while it misses. */
static int submit_cancel(ioc_core *c, ioc_op *op)
{
    struct io_uring_sqe *sqe = get_sqe(c);
    if (sqe == NULL)
        return -EBUSY;
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->addr = (uint64_t)(uintptr_t)op;
    sqe->user_data = (uint64_t)(uintptr_t)op | UD_OP_CANCEL_BIT;
    op->cancel_requested = 1;
    op->cancels_out++;
    c->stats.cancels++;
    return 0;
}

/* A cancellation's completion.  -ENOENT while its operation has not
 * completed: the kernel held the operation where a cancellation does not
 * look, in the queue of completion work FLAGS_ONE_THREAD defers to our next
 * enter (a send retried there after a poll said it had room, say).  Ask
 * again: the next enter submits it, and the operation is by then in the
 * poll table or in io-wq, or done. */
static void cancel_completed(ioc_core *c, ioc_op *op, int res)
{
    op->cancels_out--;
    if (op->finished) {
        if (op->cancels_out == 0)
            ioc_pool_give_back(&c->pool, op);
    } else if (res == -ENOENT && op->cancels_out == 0) {
        (void)submit_cancel(c, op);
    }
}

int ioc_cancel(ioc_core *c, ioc_op *op, uint64_t token)
{
    if (c->forked)
        return -EBADF;
    if (!ioc_op_is_live(op, token))
        return 1;
    if (op->cancel_requested)
        return 0;
    /* An operation still queued in the ring holds no file reference yet: the
     * caller may close the fd right after cancelling, and the next socket
     * with that number would get the operation at the next enter.  Publish
     * the queue first (only when something is queued), so the kernel takes
     * the file now and the cancellation finds it. */
    if (sq_unpublished_or_pending(c))
        (void)flush_submissions(c, 0, 0, NULL, 0);
    return submit_cancel(c, op);
}

void ioc_set_publish_hook(ioc_core *c, void (*before_publish)(void *), void *arg, int *armed)
{
    c->before_publish = before_publish;
    c->hook_arg = arg;
    c->hook_armed = before_publish != NULL ? armed : NULL;
}

int ioc_void_queued(ioc_core *c, ioc_op *op, uint64_t token)
{
    unsigned i;
    if (c->forked || !ioc_op_is_live(op, token) || op->voided)
        return 0;
    /* Our own SQEs past the published tail: the kernel has not seen them. */
    for (i = *c->sq_ktail; i != c->sq_local_tail; i++) {
        struct io_uring_sqe *sqe = &c->sqes[i & c->sq_mask];
        if (sqe->user_data == (uint64_t)(uintptr_t)op) {
            memset(sqe, 0, sizeof(*sqe));
            sqe->opcode = IORING_OP_NOP;
            sqe->user_data = (uint64_t)(uintptr_t)op;
            op->voided = 1;
            return 1;
        }
    }
    return 0;
}

/* ---- completion ---- */

static int reap(ioc_core *c, ioc_completion *out, int max)
{
    unsigned head = *c->cq_khead;
    unsigned tail = load_acquire(c->cq_ktail);
    int n = 0;

    while (head != tail && n < max) {
        struct io_uring_cqe *cqe = &c->cqes[head & c->cq_mask];
        uint64_t ud = cqe->user_data;
        head++;
        if (ud == UD_WAKEUP) {
            /* Consumed the eventfd: later wakeups must signal again. */
            c->wake_armed = 0;
            ioc_wake_consumed(&c->wake);
            if (!c->closing)
                arm_wakeup_read(c);
            continue;
        }
        if (ud == UD_CANCEL)
            continue;
        if (ud & UD_OP_CANCEL_BIT) {
            cancel_completed(c, (ioc_op *)(uintptr_t)(ud & ~UD_OP_CANCEL_BIT), cqe->res);
            continue;
        }
        {
            ioc_op *op = (ioc_op *)(uintptr_t)ud;
            int64_t res = cqe->res;
            if (op->voided)   /* its NOP's 0 is not a result of the op */
                res = -EBADF;
            if (op->cancel_requested && res == -EINTR)
                res = -ECANCELED;
            if (c->closing && op->kind == IOC_OP_ACCEPT && res >= 0) {
                /* Accepted as the port closes: nobody will take the fd. */
                close((int)res);
                res = -ECANCELED;
            }
            if (op->kind == IOC_OP_RECVMSG && res >= 0 && op->result != NULL) {
                op->result->namelen = (uint32_t)op->msg.msg_namelen;
                op->result->controllen = (uint32_t)op->msg.msg_controllen;
                op->result->flags = op->msg.msg_flags;
            }
            out[n].token = op->token;
            out[n].result = res;
            out[n].flags = cqe->flags & IOC_LINUX_FLAGS;
            n++;
            if (!(cqe->flags & IORING_CQE_F_MORE)) {
                if (op->cancels_out == 0)
                    ioc_pool_give_back(&c->pool, op);
                else
                    op->finished = 1;   /* until its cancellation completes */
            }
        }
    }
    store_release(c->cq_khead, head);
    c->stats.completed += (uint64_t)n;
    return n;
}

static int kernel_has_work_for_us(ioc_core *c)
{
    unsigned flags = __atomic_load_n(c->sq_kflags, __ATOMIC_RELAXED);
    return sq_unpublished_or_pending(c) != 0 ||
           (flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

int ioc_wait(ioc_core *c, int64_t timeout_ns, ioc_completion *out, int max, int *stored)
{
    int n, r;

    if (c->forked)
        return -EBADF;
    if (max <= 0)
        return -EINVAL;
    c->stats.waits++;
    n = reap(c, out, max);
    if (n == 0 && timeout_ns != 0) {
        struct __kernel_timespec ts;
        struct io_uring_getevents_arg arg;

        if (!ioc_wake_prepare_sleep(&c->wake))
            timeout_ns = 0;   /* a wakeup raced in: poll, don't block */
        memset(&arg, 0, sizeof(arg));
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        if (timeout_ns != 0) {
            r = flush_submissions(c, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                                  &arg, sizeof(arg));
        } else {
            r = flush_submissions(c, 0, IORING_ENTER_GETEVENTS, NULL, 0);
        }
        ioc_wake_after_sleep(&c->wake);
        /* -ETIME: timed out; -EINTR: a signal, the caller's handlers run when
         * we return; -EBUSY/-EAGAIN: completions backed up, reap them. */
        if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
            return r;
        n = reap(c, out, max);
    } else if (kernel_has_work_for_us(c)) {
        /* Publish submissions (and run deferred task work) without waiting. */
        r = flush_submissions(c, 0, IORING_ENTER_GETEVENTS, NULL, 0);
        if (r < 0 && n == 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
            return r;   /* with completions in hand, report them; the error recurs */
        n += reap(c, out + n, max - n);
    }
    ioc_wake_end_of_wait(&c->wake);
    if (stored != NULL)
        *stored = n;
    return n;
}

int ioc_flush(ioc_core *c)
{
    int r;
    if (c->forked)
        return -EBADF;
    if (!kernel_has_work_for_us(c))
        return 0;
    r = flush_submissions(c, 0, IORING_ENTER_GETEVENTS, NULL, 0);
    return (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN) ? r : 0;
}

int ioc_wakeup(ioc_core *c)
{
    if (ioc_wake_request(&c->wake)) {
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(c->event_fd, &one, sizeof(one));
        } while (w < 0 && errno == EINTR);
        return w < 0 ? -errno : 0;
    }
    return 0;
}

int ioc_watch_sigint(ioc_core *c, intptr_t event)
{
    (void)c;
    (void)event;
    return 0;
}

int ioc_ring_thread(ioc_core *c)
{
    if (c->forked || !c->one_thread)
        return 0;
    return c->owner == this_thread() ? 1 : -1;
}

int ioc_extensions(ioc_core *c, intptr_t sock)
{
    (void)c;
    (void)sock;
    return 0;
}

void ioc_get_stats(ioc_core *c, ioc_stats *out)
{
    *out = c->stats;
    out->in_flight = c->pool.count_in_flight;
    ioc_wake_stats(&c->wake, out);
}

/* ---- closing ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ioc_core_close(ioc_core *c, int drain_ms)
{
    int left = 0;

    if (!c->forked && c->one_thread && c->owner != this_thread()) {
        /* Another thread's ring: nothing can be cancelled or reaped from
         * here.  With nothing in flight its closing ends the wakeup read. */
        left = (int)c->pool.count_in_flight;
    } else if (!c->forked) {
        ioc_completion sink[64];
        int64_t deadline = now_ms() + (drain_ms > 0 ? drain_ms : 0);
        ioc_op *op;

        c->closing = 1;
        if (c->wake_armed) {
            struct io_uring_sqe *sqe = get_sqe(c);
            if (sqe != NULL) {
                sqe->opcode = IORING_OP_ASYNC_CANCEL;
                sqe->addr = UD_WAKEUP;
                sqe->user_data = UD_CANCEL;
            }
        }
        for (op = c->pool.in_flight.next; op != &c->pool.in_flight; op = op->next)
            if (!op->cancel_requested)
                submit_cancel(c, op);
        while (c->pool.count_in_flight > 0 || c->wake_armed) {
            int64_t rest = deadline - now_ms();
            if (rest <= 0)
                break;
            if (ioc_wait(c, rest * 1000000, sink, 64, NULL) < 0)
                break;
        }
        left = (int)c->pool.count_in_flight + c->wake_armed;
    }
    /* Closing the ring makes the kernel cancel what is left.  Records (and
     * the caller's buffers) of operations still in flight are leaked on
     * purpose: the kernel may finish them after we return. */
    unmap_rings(c);
    close(c->ring_fd);
    close(c->event_fd);
    if (left == 0) {
        ioc_pool_free(&c->pool);
        free(c);
    }
    return left;
}
