/*
 * loadgen.c -- ping-pong echo load generator for benchmarks/echo.py (Linux).
 *
 *   loadgen HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S
 *
 * Each connection sends one message, waits until the same number of bytes
 * came back, and repeats (as uvloop's vmbench client does).  One thread,
 * epoll, non-blocking sockets, TCP_NODELAY, so it spends little CPU per
 * request; it reports its own CPU time so a reader can tell it was not the
 * bottleneck.  Prints one JSON line: requests, seconds, latency percentiles
 * (microseconds), and the generator's user+system CPU seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_BUCKETS 100000   /* 1 us buckets up to 100 ms, then the last bucket */

typedef struct conn {
    int fd;
    size_t sent, received;
    double started;
} conn;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
    uint64_t want = (uint64_t)(total * p), seen = 0;
    int i;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            return (double)i;
    }
    return (double)HIST_BUCKETS;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr;
    int nconn, ep, i, one = 1;
    size_t size;
    double warmup, duration, t_start, t_end, cpu_start = 0, measure_from;
    conn *conns;
    char *out, *in;
    uint64_t *hist, requests = 0, measured = 0;
    struct epoll_event ev, events[1024];

    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S\n",
                argv[0]);
        return 2;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
        die("inet_pton");
    nconn = atoi(argv[3]);
    size = (size_t)atol(argv[4]);
    warmup = atof(argv[5]);
    duration = atof(argv[6]);
    conns = calloc((size_t)nconn, sizeof(conn));
    out = malloc(size);
    in = malloc(size > 65536 ? size : 65536);
    hist = calloc(HIST_BUCKETS + 1, sizeof(uint64_t));
    if (!conns || !out || !in || !hist)
        die("malloc");
    memset(out, 'x', size);
    ep = epoll_create1(0);

    for (i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
            die("connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conns[i].fd = fd;
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        conns[i].started = now();
    }

    t_start = now();
    measure_from = t_start + warmup;
    t_end = measure_from + duration;
    for (;;) {
        double t = now();
        int n, k;
        if (t >= t_end)
            break;
        if (cpu_start == 0 && t >= measure_from) {
            cpu_start = cpu_seconds();
            measured = 0;
        }
        n = epoll_wait(ep, events, 1024, 100);
        for (k = 0; k < n; k++) {
            conn *c = &conns[events[k].data.u32];
            if (c->sent < size) {
                ssize_t w = send(c->fd, out + c->sent, size - c->sent, MSG_NOSIGNAL);
                if (w > 0)
                    c->sent += (size_t)w;
                else if (w < 0 && errno != EAGAIN)
                    die("send");
            }
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
                requests++;
                if (done >= measure_from) {
                    hist[us < HIST_BUCKETS ? (int)us : HIST_BUCKETS]++;
                    measured++;
                }
                c->sent = c->received = 0;
                c->started = done;
                ev.events = EPOLLIN | EPOLLOUT;
                ev.data.u32 = events[k].data.u32;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else if (c->sent == size) {
                ev.events = EPOLLIN;   /* all sent: only wait for the echo */
                ev.data.u32 = events[k].data.u32;
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"loadgen_cpu_s\": %.3f}\n",
           (unsigned long long)measured, duration, percentile(hist, measured, 0.50),
           percentile(hist, measured, 0.99), cpu_seconds() - cpu_start);
    for (i = 0; i < nconn; i++)
        close(conns[i].fd);
    return 0;
}
