/*
 * udpgen.c -- ping-pong UDP echo load generator for benchmarks/udp.py (Linux).
 *
 *   udpgen HOST PORT CLIENTS DATAGRAM_BYTES WARMUP_S DURATION_S TIMEOUT_MS
 *
 * CLIENTS UDP sockets, each connect()ed to the server (so each has its own
 * source port and the kernel hands it only the server's datagrams), each
 * with one datagram outstanding: it sends a datagram, waits for its echo,
 * then sends the next.  A datagram is DATAGRAM_BYTES (at least 8): the
 * client's index and a sequence number (two 32-bit words), then a pattern
 * of the client's own; every echo is checked whole (length, client, sequence,
 * pattern).  When no echo came back within TIMEOUT_MS the datagram counts as
 * lost and the client sends the next sequence number; an echo of an earlier
 * sequence number that still arrives counts as late (lost, then delayed
 * rather than dropped).  A round trip is timed from the send of the datagram
 * whose echo came back.  One thread, epoll, non-blocking sockets.
 *
 * Prints one JSON line: requests (echoes received in the measured window),
 * seconds, p50_us and p99_us, lost (timeouts in the window), lost_warmup
 * (timeouts before it), late, errors (wrong echoes, refused sends; the first
 * few are described on stderr), sent (datagrams sent in the window), and
 * loadgen_cpu_s (the generator's own CPU seconds over the window).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    int fd;
    uint32_t index, seq;
    double sent_at;          /* when the outstanding datagram left */
    unsigned char *out;      /* the datagram: header, then the pattern */
} client;

static size_t size;
static double measure_from, timeout_s;
static unsigned long long echoes, lost, lost_warmup, late, errors, sent;
static uint64_t *hist;       /* 1 us buckets, 0 .. timeout */
static size_t hist_len;
static unsigned char rbuf[65536];

static void fatal(const char *what)
{
    perror(what);
    exit(1);
}

/* Seconds on a clock: CLOCK_MONOTONIC, or CLOCK_PROCESS_CPUTIME_ID (own CPU). */
static double seconds_on(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        fatal("clock_gettime");
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define mono() seconds_on(CLOCK_MONOTONIC)
#define process_cpu() seconds_on(CLOCK_PROCESS_CPUTIME_ID)

static void bad(const client *c, const char *what)
{
    if (++errors <= 5)
        fprintf(stderr, "udpgen: client %u, sequence %u: %s\n", c->index, c->seq, what);
}

static void send_next(client *c, double t)
{
    uint32_t header[2] = {c->index, c->seq};
    memcpy(c->out, header, sizeof(header));
    c->sent_at = t;
    if (t >= measure_from)
        sent++;
    if (send(c->fd, c->out, size, MSG_DONTWAIT) == (ssize_t)size)
        return;
    if (errno == ECONNREFUSED || errno == EAGAIN || errno == ENOBUFS)
        bad(c, strerror(errno));   /* the timeout sends the next one */
    else
        fatal("send");
}

/* Read c's queued echoes up to the one it waits for, which triggers the next send. */
static void receive(client *c)
{
    for (;;) {
        uint32_t header[2];
        ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), MSG_DONTWAIT);
        double t;
        if (r < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == ECONNREFUSED) {   /* ICMP port unreachable */
                bad(c, "connection refused");
                continue;
            }
            fatal("recv");
        }
        if ((size_t)r != size) {
            bad(c, "echo of the wrong length");
            continue;
        }
        memcpy(header, rbuf, sizeof(header));
        if (header[0] != c->index) {
            bad(c, "echo of another client's datagram");
            continue;
        }
        if (header[1] != c->seq) {
            if (header[1] < c->seq)
                late++;
            else
                bad(c, "echo of a datagram not sent yet");
            continue;
        }
        if (memcmp(rbuf + sizeof(header), c->out + sizeof(header), size - sizeof(header)) != 0) {
            bad(c, "echo with different bytes");
            continue;
        }
        t = mono();
        if (t >= measure_from) {
            size_t us = (size_t)((t - c->sent_at) * 1e6);
            hist[us < hist_len ? us : hist_len - 1]++;
            echoes++;
        }
        c->seq++;
        send_next(c, t);
        return;   /* anything still queued keeps the socket readable for epoll */
    }
}

static double quantile(double q)
{
    unsigned long long want = (unsigned long long)(echoes * q), seen = 0;
    size_t us;
    if (echoes == 0)
        return 0;
    for (us = 0; us < hist_len; us++) {
        seen += hist[us];
        if (seen > want)
            return (double)us;
    }
    return (double)hist_len;
}

int main(int argc, char **argv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    struct epoll_event ev, events[256];
    client *clients;
    int nclients, ep, i;
    double warmup, duration, t, t_end, scan_every, next_scan, cpu0 = -1;

    if (argc != 8) {
        fprintf(stderr,
                "usage: %s HOST PORT CLIENTS DATAGRAM_BYTES WARMUP_S DURATION_S TIMEOUT_MS\n",
                argv[0]);
        return 2;
    }
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1)
        fatal("inet_pton");
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    nclients = atoi(argv[3]);
    size = (size_t)atol(argv[4]);
    warmup = atof(argv[5]);
    duration = atof(argv[6]);
    timeout_s = atof(argv[7]) / 1e3;
    if (nclients < 1 || size < 8 || size > sizeof(rbuf) || timeout_s <= 0) {
        fprintf(stderr, "udpgen: need CLIENTS >= 1, 8 <= DATAGRAM_BYTES <= %zu, TIMEOUT_MS > 0\n",
                sizeof(rbuf));
        return 2;
    }
    hist_len = (size_t)(timeout_s * 1e6) + 1;
    hist = calloc(hist_len, sizeof(uint64_t));
    clients = calloc((size_t)nclients, sizeof(client));
    if (!hist || !clients)
        fatal("calloc");
    ep = epoll_create1(0);
    if (ep < 0)
        fatal("epoll_create1");

    t = mono();
    measure_from = t + warmup;
    t_end = measure_from + duration;
    for (i = 0; i < nclients; i++) {
        client *c = &clients[i];
        size_t k;
        c->index = (uint32_t)i;
        c->out = malloc(size);
        if (!c->out)
            fatal("malloc");
        for (k = 8; k < size; k++)
            c->out[k] = (unsigned char)(i * 7 + k);
        c->fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
            fatal("socket/connect");
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            fatal("epoll_ctl");
    }
    for (i = 0; i < nclients; i++)
        send_next(&clients[i], mono());

    /* Timeouts are looked for every tenth of TIMEOUT_MS (at most every 10 ms). */
    scan_every = timeout_s / 10 < 0.01 ? timeout_s / 10 : 0.01;
    next_scan = mono() + scan_every;
    while ((t = mono()) < t_end) {
        int n, k, wait_ms;
        if (cpu0 < 0 && t >= measure_from)
            cpu0 = process_cpu();
        if (t >= next_scan) {
            for (i = 0; i < nclients; i++) {
                client *c = &clients[i];
                if (t - c->sent_at >= timeout_s) {
                    if (t >= measure_from)
                        lost++;
                    else
                        lost_warmup++;
                    c->seq++;
                    send_next(c, t);
                }
            }
            next_scan = t + scan_every;
        }
        wait_ms = (int)((next_scan - t) * 1e3) + 1;
        n = epoll_wait(ep, events, 256, wait_ms);
        if (n < 0 && errno != EINTR)
            fatal("epoll_wait");
        for (k = 0; k < n; k++)
            receive(events[k].data.ptr);
    }
    if (cpu0 < 0)
        cpu0 = process_cpu();
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"lost\": %llu, \"lost_warmup\": %llu, \"late\": %llu, \"errors\": %llu, "
           "\"sent\": %llu, \"loadgen_cpu_s\": %.3f}\n",
           echoes, duration, quantile(0.50), quantile(0.99), lost, lost_warmup, late, errors,
           sent, process_cpu() - cpu0);
    for (i = 0; i < nclients; i++)
        close(clients[i].fd);
    return 0;
}
