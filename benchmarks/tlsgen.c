/*
 * tlsgen.c -- ping-pong TLS echo load generator for benchmarks/tls.py (Linux, OpenSSL).
 *
 *   tlsgen HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S CAFILE
 *
 * Opens CONNECTIONS TCP connections (TCP_NODELAY) and completes a TLS
 * handshake on each, one after the other, before any timing starts (the
 * server's certificate must chain to CAFILE and name "localhost"; SNI
 * "localhost"; a handshake that takes over 10 s fails the run).  Then, as
 * benchmarks/loadgen.c does in the clear, each connection sends one message,
 * waits until the same number of bytes came back, and repeats; WARMUP_S
 * seconds of that are not counted, the next DURATION_S are.  Then each
 * connection waits for its last echo (up to 1 s), sends close_notify and
 * closes, so the server sees a clean end.  One thread, epoll
 * (level-triggered), non-blocking sockets, non-blocking
 * SSL_write_ex/SSL_read_ex (partial writes on, so a 100 KiB message goes
 * out record by record as the socket takes it; read-ahead on, so a read
 * takes many records at once).
 *
 * Every echo is compared byte for byte with what was sent: a message is a
 * window of a random buffer that starts at an offset of its connection and
 * sequence number, so an echo of another message or another connection
 * shows up too.  A wrong echo counts as an error (the first few are
 * described on stderr) and the run goes on.
 *
 * Prints one JSON line: requests (echoes completed in the measured window),
 * seconds, p50_us and p99_us, errors (wrong echoes over the whole run),
 * stalled (connections whose last echo had not come back 1 s after the end),
 * loadgen_cpu_s (its own user+system CPU seconds over the window),
 * handshake_s (wall time of all the handshakes), protocol and cipher (of the
 * first connection).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "echogen.h"

#define PATTERN_OFFSETS 251   /* a message starts at one of these offsets of the pattern */
#define READ_CHUNK (256 * 1024)
#define DRAIN_S 1.0           /* how long the last echoes may take after the window */

typedef struct conn {
    int fd;
    SSL *ssl;
    uint32_t index, seq;
    const unsigned char *out;   /* the message in flight: a window of the pattern */
    size_t sent, received;
    int wrong;                  /* this echo already counted as an error */
    double started;
} conn;

static size_t size;
static unsigned char *pattern, *in;
static unsigned long long errors;

static void die_tls(const conn *c, const char *what, int ret)
{
    int saved = errno, err = c->ssl ? SSL_get_error(c->ssl, ret) : 0;
    fprintf(stderr, "connection %u: %s failed (SSL_get_error %d, errno %d: %s)\n", c->index,
            what, err, saved, strerror(saved));
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void next_message(conn *c)
{
    c->out = pattern + (c->index * 37u + c->seq * 13u) % PATTERN_OFFSETS;
    c->sent = c->received = 0;
    c->wrong = 0;
}

static void watch(int ep, conn *c, int op, uint32_t events)
{
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(ep, op, c->fd, &ev) != 0)
        die("epoll_ctl");
}

static void open_connection(conn *c, SSL_CTX *ctx, const struct sockaddr_in *addr)
{
    struct timeval limit = {10, 0};
    int one = 1, ret;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0)
        die("connect");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The handshake is blocking, bounded by these timeouts. */
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
    c->ssl = SSL_new(ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) ||
        !SSL_set_tlsext_host_name(c->ssl, "localhost") || !SSL_set1_host(c->ssl, "localhost"))
        die_tls(c, "SSL setup", 0);
    ret = SSL_connect(c->ssl);
    if (ret != 1)
        die_tls(c, "handshake", ret);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0)
        die("fcntl");
}

/* Check n echoed bytes at c->received against the message. */
static void check(conn *c, size_t n)
{
    size_t i;
    if (memcmp(in, c->out + c->received, n) == 0 || c->wrong)
        return;
    for (i = 0; in[i] == c->out[c->received + i]; i++)
        ;
    c->wrong = 1;
    if (++errors <= 5)
        fprintf(stderr, "connection %u, message %u: echo differs at byte %zu of %zu\n",
                c->index, c->seq, c->received + i, size);
}

/* Send what the socket takes, then read what arrived; 1 when the echo is whole. */
static int pump(conn *c)
{
    size_t n;
    int ret, err;
    while (c->sent < size) {
        ret = SSL_write_ex(c->ssl, c->out + c->sent, size - c->sent, &n);
        if (ret == 1) {
            c->sent += n;
            continue;
        }
        err = SSL_get_error(c->ssl, ret);
        if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ)
            die_tls(c, "SSL_write", ret);
        break;
    }
    while (c->received < size) {
        size_t want = size - c->received < READ_CHUNK ? size - c->received : READ_CHUNK;
        ret = SSL_read_ex(c->ssl, in, want, &n);
        if (ret == 1) {
            check(c, n);
            c->received += n;
            continue;
        }
        err = SSL_get_error(c->ssl, ret);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            break;
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0)) {
            fprintf(stderr, "connection %u: server closed the connection\n", c->index);
            exit(1);
        }
        die_tls(c, "SSL_read", ret);
    }
    return c->received == size && c->sent == size;
}

int main(int argc, char **argv)
{
    echo_target target;
    int nconn, ep, i;
    double t_start, t_end, cpu_start = 0, cpu_end = 0, measure_from;
    double handshake_s;
    conn *conns;
    uint64_t *hist, measured = 0;
    int remaining, stopping = 0;
    struct epoll_event events[1024];
    SSL_CTX *ctx;
    const char *protocol, *cipher;

    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S "
                        "CAFILE\n", argv[0]);
        return 2;
    }
    parse_target(argv, &target);
    nconn = target.nconn;
    size = target.size;
    if (nconn < 1 || size < 1) {
        fprintf(stderr, "tlsgen: CONNECTIONS and MESSAGE_BYTES must be at least 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    conns = calloc((size_t)nconn, sizeof(conn));
    pattern = malloc(size + PATTERN_OFFSETS);
    in = malloc(READ_CHUNK);
    hist = new_histogram();
    if (!conns || !pattern || !in)
        die("malloc");
    srandom(12345);
    for (i = 0; i < (int)(size + PATTERN_OFFSETS); i++)
        pattern[i] = (unsigned char)(random() >> 7);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[7], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, READ_CHUNK);

    ep = epoll_create1(0);
    handshake_s = now();
    for (i = 0; i < nconn; i++) {
        conns[i].index = (uint32_t)i;
        open_connection(&conns[i], ctx, &target.addr);
    }
    handshake_s = now() - handshake_s;
    protocol = SSL_get_version(conns[0].ssl);
    cipher = SSL_get_cipher_name(conns[0].ssl);

    t_start = now();
    for (i = 0; i < nconn; i++) {
        next_message(&conns[i]);
        conns[i].started = t_start;
        watch(ep, &conns[i], EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT);
    }
    measure_from = t_start + target.warmup;
    t_end = measure_from + target.duration;
    remaining = nconn;
    for (;;) {
        double t = now();
        int n, k;
        if (!stopping && t >= t_end) {
            stopping = 1;
            cpu_end = cpu_seconds();
        }
        if (stopping && (remaining == 0 || t >= t_end + DRAIN_S))
            break;
        if (cpu_start == 0 && t >= measure_from)
            cpu_start = cpu_seconds();
        n = epoll_wait(ep, events, 1024, 100);
        for (k = 0; k < n; k++) {
            conn *c = events[k].data.ptr;
            int had_unsent = c->sent < size;
            if (pump(c)) {
                double done = now();
                double us = (done - c->started) * 1e6;
                if (done >= measure_from && done < t_end) {
                    hist_add(hist, us);
                    measured++;
                }
                if (stopping || done >= t_end) {
                    /* The last echo is back: close_notify, close. */
                    if (epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL) != 0)
                        die("epoll_ctl");
                    SSL_shutdown(c->ssl);
                    close(c->fd);
                    c->fd = -1;
                    remaining--;
                    continue;
                }
                c->seq++;
                next_message(c);
                c->started = done;
                watch(ep, c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
            } else if (had_unsent && c->sent == size) {
                watch(ep, c, EPOLL_CTL_MOD, EPOLLIN);   /* all sent: only wait for the echo */
            }
        }
    }
    printf("{\"requests\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"errors\": %llu, \"stalled\": %d, \"loadgen_cpu_s\": %.3f, "
           "\"handshake_s\": %.4f, \"protocol\": \"%s\", \"cipher\": \"%s\"}\n",
           (unsigned long long)measured, target.duration, percentile(hist, measured, 0.50),
           percentile(hist, measured, 0.99), errors, remaining, cpu_end - cpu_start,
           handshake_s, protocol, cipher);
    for (i = 0; i < nconn; i++) {
        SSL_free(conns[i].ssl);
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    }
    SSL_CTX_free(ctx);
    return 0;
}
