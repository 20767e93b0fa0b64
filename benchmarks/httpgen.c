/*
 * httpgen.c -- HTTP/1.1 load generator and minimal server for benchmarks/http.py (Linux).
 *
 *   httpgen keepalive HOST PORT CONNECTIONS PATH FILE WARMUP_S DURATION_S VERIFY_EVERY
 *   httpgen churn     HOST PORT CONNECTIONS PATH FILE WARMUP_S DURATION_S VERIFY_EVERY
 *   httpgen serve     FILE
 *
 * keepalive: CONNECTIONS persistent connections; each sends "GET PATH", reads
 *   the response (status line, Content-Length, body) and sends the next one.
 * churn: CONNECTIONS slots; each connects, sends "GET PATH" with
 *   "Connection: close", reads the response and then to EOF, closes, and
 *   starts over; a request's latency includes its connect.
 * Both check every response's status and length; the body of every
 * VERIFY_EVERY-th response per connection (0: none) is compared with FILE,
 * the file the server serves, byte for byte.  One thread, epoll,
 * non-blocking sockets, TCP_NODELAY.  Prints one JSON line: requests and
 * body bytes in the measured window, latency percentiles (microseconds),
 * errors (failed connections or responses; the first few are described on
 * stderr) and the generator's own CPU seconds over the window.
 *
 * serve: listens on 127.0.0.1 (a free port, printed on stdout), answers each
 *   request with FILE's bytes and "Connection: close", then closes; runs until
 *   killed.  It is the fixed server for the Python client-churn test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HEADERS, BODY, TO_EOF };

typedef struct slot {
    int fd, state, verify;
    char head[8192];
    size_t head_len;
    long long content_length, body_seen;
    unsigned long long responses;
    double started;
} slot;

static int ep, churn, verify_every;
static struct sockaddr_in server_addr;
static char request[1024];
static size_t request_len;
static const unsigned char *expected;
static size_t expected_len;
static double measure_from, measure_until;
static unsigned long long requests, body_bytes, errors;
static float *latencies;   /* microseconds, one per measured request */
static size_t n_latencies, cap_latencies;
static char rbuf[256 * 1024];

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double own_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fatal(const char *what)
{
    perror(what);
    exit(1);
}

static void note_error(slot *s, const char *fmt, ...)
{
    va_list ap;
    errors++;
    if (errors > 5)
        return;
    fprintf(stderr, "httpgen: connection %d, response %llu: ", s->fd, s->responses);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void map_file(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) != 0)
        fatal(path);
    expected_len = (size_t)st.st_size;
    expected = expected_len ? mmap(NULL, expected_len, PROT_READ, MAP_PRIVATE, fd, 0)
                            : (const unsigned char *)"";
    if (expected == MAP_FAILED)
        fatal("mmap");
    close(fd);
}

static void watch(slot *s, int op, uint32_t events)
{
    struct epoll_event ev;
    ev.events = events;
    ev.data.ptr = s;
    if (epoll_ctl(ep, op, s->fd, &ev) != 0)
        fatal("epoll_ctl");
}

/* The request fits an empty socket buffer: one send.  0, or -1 after an error. */
static int send_request(slot *s)
{
    ssize_t w = send(s->fd, request, request_len, MSG_NOSIGNAL);
    if (w != (ssize_t)request_len) {
        note_error(s, "send: %s", w < 0 ? strerror(errno) : "short write");
        return -1;
    }
    s->state = HEADERS;
    s->head_len = 0;
    s->verify = verify_every > 0 && s->responses % (unsigned)verify_every == 0;
    return 0;
}

static void start(slot *s)
{
    int one = 1;
    s->started = mono();
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0)
        fatal("socket");
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->state = CONNECTING;   /* the request goes out once the socket is writable */
    if (connect(s->fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0
        && errno != EINPROGRESS)
        fatal("connect");
    watch(s, EPOLL_CTL_ADD, EPOLLOUT);
}

static void restart(slot *s)
{
    close(s->fd);   /* also leaves the epoll set */
    start(s);
}

static void finished(slot *s)
{
    double t = mono();
    if (t >= measure_from && t < measure_until) {
        if (n_latencies == cap_latencies) {
            cap_latencies = cap_latencies ? cap_latencies * 2 : 65536;
            latencies = realloc(latencies, cap_latencies * sizeof(float));
            if (!latencies)
                fatal("realloc");
        }
        latencies[n_latencies++] = (float)((t - s->started) * 1e6);
        requests++;
        body_bytes += (unsigned long long)s->content_length;
    }
    s->responses++;
    s->started = t;
}

/* The response head is complete in s->head[0..len): check it.  0 or -1. */
static int parse_head(slot *s, size_t len)
{
    const char *p, *end = s->head + len;
    char *num_end;
    if (len < 12 || memcmp(s->head, "HTTP/1.1 200", 12) != 0) {
        note_error(s, "status line %.40s", s->head);
        return -1;
    }
    s->content_length = -1;
    for (p = s->head; p < end; p++) {
        if (*p == '\n' && end - p > 16 && strncasecmp(p + 1, "content-length:", 15) == 0) {
            s->content_length = strtoll(p + 16, &num_end, 10);
            break;
        }
    }
    if (s->content_length < 0) {
        note_error(s, "no Content-Length");
        return -1;
    }
    if (s->verify && (size_t)s->content_length != expected_len) {
        note_error(s, "Content-Length %lld, the file has %zu bytes", s->content_length,
                   expected_len);
        return -1;
    }
    s->body_seen = 0;
    s->state = BODY;
    return 0;
}

/* Bytes from the server.  0, or -1 after an error. */
static int feed(slot *s, const char *p, size_t n)
{
    while (n > 0) {
        if (s->state == HEADERS) {
            size_t room = sizeof(s->head) - 1 - s->head_len;
            size_t take = n < room ? n : room;
            char *end;
            memcpy(s->head + s->head_len, p, take);
            s->head_len += take;
            s->head[s->head_len] = '\0';
            end = strstr(s->head, "\r\n\r\n");
            if (end == NULL) {
                if (s->head_len == sizeof(s->head) - 1) {
                    note_error(s, "response head over %zu bytes", sizeof(s->head));
                    return -1;
                }
                p += take;
                n -= take;
                continue;
            }
            {
                size_t head_len = (size_t)(end + 4 - s->head);
                size_t used = take - (s->head_len - head_len);
                if (parse_head(s, head_len) != 0)
                    return -1;
                p += used;
                n -= used;
            }
        } else if (s->state == BODY) {
            size_t left = (size_t)(s->content_length - s->body_seen);
            size_t take = n < left ? n : left;
            if (s->verify && memcmp(expected + s->body_seen, p, take) != 0) {
                size_t i = 0;
                while (expected[s->body_seen + i] == (unsigned char)p[i])
                    i++;
                note_error(s, "wrong body byte at offset %lld", s->body_seen + (long long)i);
                return -1;
            }
            s->body_seen += (long long)take;
            p += take;
            n -= take;
        } else {
            note_error(s, "%zu bytes after the response", n);
            return -1;
        }
        if (s->state == BODY && s->body_seen == s->content_length) {
            if (churn) {
                s->state = TO_EOF;
            } else {
                finished(s);
                if (n > 0) {
                    note_error(s, "%zu bytes after the response", n);
                    return -1;
                }
                return send_request(s);
            }
        }
    }
    return 0;
}

static void on_event(slot *s)
{
    if (s->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            note_error(s, "connect: %s", strerror(err));
            restart(s);
            return;
        }
        watch(s, EPOLL_CTL_MOD, EPOLLIN);
        if (send_request(s) != 0)
            restart(s);
        return;
    }
    for (;;) {
        ssize_t r = recv(s->fd, rbuf, sizeof(rbuf), 0);
        if (r > 0) {
            if (feed(s, rbuf, (size_t)r) != 0) {
                restart(s);
                return;
            }
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r == 0 && s->state == TO_EOF) {
            finished(s);
        } else if (r == 0) {
            note_error(s, "server closed the connection (%lld body bytes of %lld)",
                       s->state == BODY ? s->body_seen : 0LL,
                       s->state == BODY ? s->content_length : -1LL);
        } else {
            note_error(s, "recv: %s", strerror(errno));
        }
        restart(s);
        return;
    }
}

static int by_value(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double quantile(double q)
{
    size_t i;
    if (n_latencies == 0)
        return 0;
    i = (size_t)(q * (double)n_latencies);
    return latencies[i < n_latencies ? i : n_latencies - 1];
}

static int run_client(int argc, char **argv)
{
    int nconn, i;
    double warmup, duration, cpu_from = -1;
    slot *slots;
    struct epoll_event events[256];

    if (argc != 10) {
        fprintf(stderr, "usage: %s keepalive|churn HOST PORT CONNECTIONS PATH FILE WARMUP_S "
                        "DURATION_S VERIFY_EVERY\n", argv[0]);
        return 2;
    }
    churn = strcmp(argv[1], "churn") == 0;
    memset(&server_addr, 0, sizeof(server_addr));
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &server_addr.sin_addr) != 1)
        fatal("inet_pton");
    nconn = atoi(argv[4]);
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", argv[5], argv[2],
                                   churn ? "Connection: close\r\n" : "");
    map_file(argv[6]);
    warmup = atof(argv[7]);
    duration = atof(argv[8]);
    verify_every = atoi(argv[9]);
    slots = calloc((size_t)nconn, sizeof(slot));
    if (!slots)
        fatal("calloc");
    ep = epoll_create1(0);
    measure_from = mono() + warmup;
    measure_until = measure_from + duration;
    for (i = 0; i < nconn; i++)
        start(&slots[i]);
    for (;;) {
        double t = mono();
        int n, k;
        if (t >= measure_until)
            break;
        if (cpu_from < 0 && t >= measure_from)
            cpu_from = own_cpu();
        n = epoll_wait(ep, events, 256, 100);
        for (k = 0; k < n; k++)
            on_event(events[k].data.ptr);
    }
    if (cpu_from < 0)
        cpu_from = own_cpu();
    qsort(latencies, n_latencies, sizeof(float), by_value);
    printf("{\"requests\": %llu, \"bytes\": %llu, \"seconds\": %.3f, \"p50_us\": %.0f, "
           "\"p99_us\": %.0f, \"errors\": %llu, \"loadgen_cpu_s\": %.3f}\n",
           requests, body_bytes, duration, quantile(0.50), quantile(0.99), errors,
           own_cpu() - cpu_from);
    return 0;
}

/* ---- serve: the fixed server of the client-churn test ----------------------- */

static int run_server(int argc, char **argv)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    struct epoll_event ev, events[256];
    char *response, **pending;
    size_t head_len, response_len, *pending_len;
    int listener, one = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: %s serve FILE\n", argv[0]);
        return 2;
    }
    map_file(argv[2]);
    response = malloc(expected_len + 256);
    if (!response)
        fatal("malloc");
    head_len = (size_t)sprintf(response, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n"
                                         "Connection: close\r\n\r\n", expected_len);
    memcpy(response + head_len, expected, expected_len);
    response_len = head_len + expected_len;
    pending = calloc(65536, sizeof(char *));        /* request bytes so far, by fd */
    pending_len = calloc(65536, sizeof(size_t));
    if (!pending || !pending_len)
        fatal("calloc");

    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(listener, 1024) != 0
        || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        fatal("listen");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.fd = listener;
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1), k;
        for (k = 0; k < n; k++) {
            int fd = events[k].data.fd;
            ssize_t r;
            if (fd == listener) {
                int conn;
                while ((conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (conn >= 65536) {
                        close(conn);
                        continue;
                    }
                    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    if (!pending[conn] && !(pending[conn] = malloc(4096)))
                        fatal("malloc");
                    pending_len[conn] = 0;
                    ev.events = EPOLLIN;
                    ev.data.fd = conn;
                    epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ev);
                }
                continue;
            }
            r = recv(fd, pending[fd] + pending_len[fd], 4095 - pending_len[fd], 0);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r > 0) {
                pending_len[fd] += (size_t)r;
                pending[fd][pending_len[fd]] = '\0';
                if (!strstr(pending[fd], "\r\n\r\n") && pending_len[fd] < 4095)
                    continue;
                /* The whole response fits the socket buffer of a fresh connection. */
                if (send(fd, response, response_len, MSG_NOSIGNAL) != (ssize_t)response_len)
                    fprintf(stderr, "httpgen serve: short send\n");
            }
            close(fd);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return run_server(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "keepalive") == 0 || strcmp(argv[1], "churn") == 0))
        return run_client(argc, argv);
    fprintf(stderr, "usage: %s keepalive|churn|serve ...\n", argv[0]);
    return 2;
}
