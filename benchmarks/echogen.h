/*
 * echogen.h -- what the ping-pong echo load generators share (Linux):
 * benchmarks/loadgen.c (TCP) and benchmarks/tlsgen.c (TLS).
 *
 * Both take HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S first,
 * keep round-trip latencies in a histogram (1 us buckets up to 100 ms, 100 us
 * buckets up to 10 s: thousands of connections wait longer than 100 ms) and
 * report their own CPU time.
 */
#ifndef ECHOGEN_H
#define ECHOGEN_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define HIST_FINE 100000      /* 1 us buckets up to 100 ms */
#define HIST_COARSE_US 100    /* then 100 us buckets */
#define HIST_BUCKETS (HIST_FINE + (10000000 - HIST_FINE) / HIST_COARSE_US)   /* to 10 s */

typedef struct echo_target {
    struct sockaddr_in addr;
    int nconn;
    size_t size;
    double warmup, duration;
} echo_target;

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

/* The generator's own user+system CPU seconds so far. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Room for many connections: the soft file descriptor limit up to the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* argv[1..6]: HOST PORT CONNECTIONS MESSAGE_BYTES WARMUP_S DURATION_S. */
static void parse_target(char **argv, echo_target *t)
{
    memset(t, 0, sizeof(*t));
    t->addr.sin_family = AF_INET;
    t->addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &t->addr.sin_addr) != 1)
        die("inet_pton");
    t->nconn = atoi(argv[3]);
    t->size = (size_t)atol(argv[4]);
    t->warmup = atof(argv[5]);
    t->duration = atof(argv[6]);
}

/* A histogram of HIST_BUCKETS + 1 counters. */
static uint64_t *new_histogram(void)
{
    uint64_t *hist = calloc(HIST_BUCKETS + 1, sizeof(uint64_t));
    if (!hist)
        die("malloc");
    return hist;
}

static void hist_add(uint64_t *hist, double us)
{
    int i = us < HIST_FINE ? (int)us : HIST_FINE + (int)((us - HIST_FINE) / HIST_COARSE_US);
    hist[i < HIST_BUCKETS ? i : HIST_BUCKETS]++;
}

/* The latency (us) at the start of bucket i. */
static double bucket_us(int i)
{
    return i < HIST_FINE ? (double)i : (double)HIST_FINE + (double)(i - HIST_FINE) * HIST_COARSE_US;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
    uint64_t want = (uint64_t)(total * p), seen = 0;
    int i;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            return bucket_us(i);
    }
    return bucket_us(HIST_BUCKETS);
}

#endif
