/*
 * uring_echo.c -- the physical-limit reference of the echo benchmark: an
 * echo server in C on io_uring, as lean as a completion loop gets (Linux).
 *
 *   uring_echo        listens on 127.0.0.1 (a free port), prints the port,
 *                     serves until killed
 *
 * One thread, one ring, raw system calls (<linux/io_uring.h>, no liburing
 * needed).  Each connection has a 256 KiB buffer and one operation at a
 * time: a receive, then a send of what came (again for the rest after a
 * short send), then the next receive.  Completions are reaped in batches and
 * the next operations go to the kernel with the same io_uring_enter that
 * waits, which is what iocploop's core does too; the difference to iocploop
 * is the Python above it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DEPTH 4096
#define BUF_SIZE (256 * 1024)
#define LISTENER_TAG UINT64_MAX

typedef struct conn {
    int fd;
    int sending;          /* 0: a receive is posted; 1: a send */
    size_t filled, sent;  /* bytes received into buf / sent of them */
    char buf[BUF_SIZE];
} conn;

static struct {
    int fd;
    unsigned *sq_tail, *sq_array, sq_mask;
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    unsigned local_tail, to_submit;
} ring;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void ring_setup(void)
{
    struct io_uring_params p;
    char *sq, *cq;
    size_t sq_size, cq_size;
    unsigned i;

    memset(&p, 0, sizeof(p));
    ring.fd = (int)syscall(__NR_io_uring_setup, DEPTH, &p);
    if (ring.fd < 0)
        die("io_uring_setup");
    sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cq_size > sq_size)
        sq_size = cq_size;   /* IORING_FEAT_SINGLE_MMAP (Linux 5.4+) */
    sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd,
              IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED)
        die("mmap");
    cq = sq;
    ring.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, ring.fd, IORING_OFF_SQES);
    if (ring.sqes == MAP_FAILED)
        die("mmap");
    ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring.sq_array = (unsigned *)(sq + p.sq_off.array);
    ring.sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    ring.cq_head = (unsigned *)(cq + p.cq_off.head);
    ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring.cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    for (i = 0; i <= ring.sq_mask; i++)
        ring.sq_array[i] = i;
    ring.local_tail = *ring.sq_tail;
}

static struct io_uring_sqe *next_sqe(int opcode, int fd, uint64_t tag)
{
    struct io_uring_sqe *sqe = &ring.sqes[ring.local_tail & ring.sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = (uint8_t)opcode;
    sqe->fd = fd;
    sqe->user_data = tag;
    ring.local_tail++;
    ring.to_submit++;
    return sqe;
}

static void post_accept(int listener)
{
    next_sqe(IORING_OP_ACCEPT, listener, LISTENER_TAG);
}

static void post_recv(conn *c)
{
    struct io_uring_sqe *sqe = next_sqe(IORING_OP_RECV, c->fd, (uint64_t)(uintptr_t)c);
    c->sending = 0;
    sqe->addr = (uint64_t)(uintptr_t)c->buf;
    sqe->len = BUF_SIZE;
}

static void post_send(conn *c)
{
    struct io_uring_sqe *sqe = next_sqe(IORING_OP_SEND, c->fd, (uint64_t)(uintptr_t)c);
    c->sending = 1;
    sqe->addr = (uint64_t)(uintptr_t)(c->buf + c->sent);
    sqe->len = (unsigned)(c->filled - c->sent);
    sqe->msg_flags = MSG_NOSIGNAL;
}

static void on_completion(int listener, uint64_t tag, int res)
{
    conn *c;
    if (tag == LISTENER_TAG) {
        int one = 1;
        if (res >= 0) {
            c = malloc(sizeof(conn));
            if (c == NULL)
                die("malloc");
            c->fd = res;
            setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            post_recv(c);
        }
        post_accept(listener);
        return;
    }
    c = (conn *)(uintptr_t)tag;
    if (res <= 0) {   /* end of file or error: the connection is over */
        close(c->fd);
        free(c);
        return;
    }
    if (!c->sending) {
        c->filled = (size_t)res;
        c->sent = 0;
        post_send(c);
    } else if ((c->sent += (size_t)res) < c->filled) {
        post_send(c);   /* a short send: the rest */
    } else {
        post_recv(c);
    }
}

int main(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int listener, one = 1;

    listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(listener, 1024) != 0)
        die("listen");
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    ring_setup();
    post_accept(listener);
    for (;;) {
        unsigned head, tail;
        __atomic_store_n(ring.sq_tail, ring.local_tail, __ATOMIC_RELEASE);
        if (syscall(__NR_io_uring_enter, ring.fd, ring.to_submit, 1, IORING_ENTER_GETEVENTS,
                    NULL, 0) < 0 && errno != EINTR)
            die("io_uring_enter");
        ring.to_submit = 0;
        head = *ring.cq_head;
        tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & ring.cq_mask];
            on_completion(listener, cqe->user_data, cqe->res);
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
    }
}
