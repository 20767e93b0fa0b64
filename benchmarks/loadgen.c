/*
 * loadgen.c -- ping-pong echo load generator for benchmarks/echo.py (Linux).
 *
 *   loadgen HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S [LINES]
 *
 * Each connection sends a request of LINES messages (default 1) of
 * MESSAGE_BYTES each, every message ending in a newline (vmbench's framing,
 * which its readline servers need), waits until the same number of bytes
 * came back, and repeats (as uvloop's vmbench client does).  One thread,
 * epoll, non-blocking sockets, TCP_NODELAY, the next request sent as soon as
 * the echo is in (one send and one recv per request, no epoll_ctl), so it
 * spends little CPU per request; it reports its own CPU time so a reader can
 * tell it was not the bottleneck.  A request counts when its echo completes
 * inside the measured window.  Prints one JSON line: requests, seconds,
 * latency percentiles (microseconds), and the generator's user+system CPU
 * seconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echogen.h"

typedef struct conn {
    int fd;
    size_t sent, received;
    int blocked;   /* part of the message waits for EPOLLOUT */
    double started;
} conn;

/* Sends what is left of c's message; while part of it stays unsent the
 * connection also waits for EPOLLOUT, otherwise for EPOLLIN only (no
 * epoll_ctl per request in the common case). */
static void send_rest(int ep, conn *c, uint32_t id, const char *out, size_t size)
{
    struct epoll_event ev;
    int was_blocked = c->blocked;
    ssize_t w = send(c->fd, out + c->sent, size - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0)
        c->sent += (size_t)w;
    else if (w < 0 && errno != EAGAIN)
        die("send");
    c->blocked = c->sent < size;
    if (c->blocked != was_blocked) {
        ev.events = EPOLLIN | (c->blocked ? EPOLLOUT : 0);
        ev.data.u32 = id;
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

int main(int argc, char **argv)
{
    echo_target target;
    int nconn, ep, i, one = 1;
    size_t size;
    double t_start, t_end, cpu_start = 0, measure_from;
    conn *conns;
    char *out, *in;
    uint64_t *hist, measured = 0;
    int lines;
    struct epoll_event ev, events[1024];

    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S "
                        "[LINES]\n", argv[0]);
        return 2;
    }
    parse_target(argv, &target);
    raise_fd_limit();
    nconn = target.nconn;
    lines = argc == 8 ? atoi(argv[7]) : 1;
    if (lines < 1 || target.size < 1) {
        fprintf(stderr, "loadgen: LINES and MESSAGE_BYTES must be at least 1\n");
        return 2;
    }
    size = target.size * (size_t)lines;
    conns = calloc((size_t)nconn, sizeof(conn));
    out = malloc(size);
    in = malloc(size > 65536 ? size : 65536);
    hist = new_histogram();
    if (!conns || !out || !in || !hist)
        die("malloc");
    memset(out, 'x', size);
    for (i = 1; i <= lines; i++)
        out[i * target.size - 1] = '\n';
    ep = epoll_create1(0);

    for (i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&target.addr, sizeof(target.addr)) != 0)
            die("connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns[i].fd = fd;
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (i = 0; i < nconn; i++) {
        conns[i].started = now();
        send_rest(ep, &conns[i], (uint32_t)i, out, size);
    }

    t_start = now();
    measure_from = t_start + target.warmup;
    t_end = measure_from + target.duration;
    for (;;) {
        double t = now();
        int n, k;
        if (t >= t_end)
            break;
        if (cpu_start == 0 && t >= measure_from)
            cpu_start = cpu_seconds();
        n = epoll_wait(ep, events, 1024, 100);
        for (k = 0; k < n; k++) {
            uint32_t id = events[k].data.u32;
            conn *c = &conns[id];
            if ((events[k].events & EPOLLOUT) && c->sent < size)
                send_rest(ep, c, id, out, size);
            if (!(events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                continue;
            for (;;) {
                ssize_t r = recv(c->fd, in, size - c->received < 65536 ? size - c->received : 65536,
                                 MSG_DONTWAIT);
                if (r > 0) {
                    c->received += (size_t)r;
                    if (c->received == size)
                        break;
                    continue;
                }
                if (r == 0) {
                    fprintf(stderr, "server closed the connection\n");
                    return 1;
                }
                if (errno != EAGAIN)
                    die("recv");
                break;
            }
            if (c->received == size && c->sent == size) {
                double done = now();
                double us = (done - c->started) * 1e6;
                if (done >= measure_from && done < t_end) {
                    hist_add(hist, us);
                    measured++;
                }
                /* The next request goes out at once; EPOLLOUT is only asked
                 * for when the socket buffer refuses part of it. */
                c->sent = c->received = 0;
                c->started = done;
                send_rest(ep, c, id, out, size);
            }
        }
    }
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"loadgen_cpu_s\": %.3f}\n",
           (unsigned long long)measured, target.duration, percentile(hist, measured, 0.50),
           percentile(hist, measured, 0.99), cpu_seconds() - cpu_start);
    for (i = 0; i < nconn; i++)
        close(conns[i].fd);
    return 0;
}
