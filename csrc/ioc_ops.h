/*
 * ioc_ops.h -- per-operation records shared by both backends.
 *
 * Records are allocated in slabs that live as long as the core, and recycled
 * through a free list.  A record is on the in-flight list from submission
 * until its completion is handed out; only then does it go back to the free
 * list.  Because slabs are never freed early, a stale pointer held by Python
 * always points at a valid record, and the token check in ioc_cancel stops it
 * from cancelling whatever operation now uses that record.
 *
 * The backend defines IOC_OP_BACKEND_FIELDS (the OVERLAPPED on Windows, which
 * must come first so that an OVERLAPPED* is also an ioc_op*) before including
 * this header.
 */
#ifndef IOC_OPS_H
#define IOC_OPS_H

#include <stdlib.h>
#include <string.h>
#include "ioc_core.h"

enum ioc_op_kind {
    IOC_OP_RECV = 1, IOC_OP_SEND, IOC_OP_SENDV, IOC_OP_ACCEPT, IOC_OP_CONNECT,
    IOC_OP_SENDFILE, IOC_OP_POLL, IOC_OP_DISCONNECT, IOC_OP_RECVMSG, IOC_OP_SENDMSG,
    IOC_OP_READ, IOC_OP_WRITE, IOC_OP_CONNECT_PIPE, IOC_OP_WAIT_HANDLE
};

struct ioc_op {
    IOC_OP_BACKEND_FIELDS
    uint64_t token;        /* caller's token; 0 while the record is free */
    intptr_t handle;       /* socket the op runs on */
    int kind;              /* enum ioc_op_kind */
    int cancel_requested;
    int voided;            /* Linux: its SQE became a NOP (ioc_void_queued) */
    int cancels_out;       /* Linux: its cancellations the kernel has not completed */
    int finished;          /* Linux: completed, the record kept for cancels_out */
    struct ioc_op *prev;   /* in-flight list, or free list (next only) */
    struct ioc_op *next;
};

/* The queue depth both backends accept: small values would make every
 * iteration flush, huge ones only waste locked memory. */
static unsigned int ioc_clamp_queue_depth(unsigned int depth)
{
    return depth < 8 ? 8 : depth > 32768 ? 32768 : depth;
}

#define IOC_SLAB_OPS 256

typedef struct ioc_slab {
    struct ioc_slab *next;
    struct ioc_op ops[IOC_SLAB_OPS];
} ioc_slab;

typedef struct ioc_op_pool {
    ioc_slab *slabs;
    struct ioc_op *free_list;
    struct ioc_op in_flight;   /* sentinel of a circular list */
    uint64_t count_in_flight;
} ioc_op_pool;

static void ioc_pool_init(ioc_op_pool *pool)
{
    pool->slabs = NULL;
    pool->free_list = NULL;
    pool->in_flight.next = pool->in_flight.prev = &pool->in_flight;
    pool->count_in_flight = 0;
}

/* Take a zeroed record and put it on the in-flight list. */
static struct ioc_op *ioc_pool_take(ioc_op_pool *pool, uint64_t token, intptr_t handle, int kind)
{
    struct ioc_op *op;
    if (pool->free_list == NULL) {
        int i;
        ioc_slab *slab = (ioc_slab *)calloc(1, sizeof(ioc_slab));
        if (slab == NULL)
            return NULL;
        slab->next = pool->slabs;
        pool->slabs = slab;
        for (i = IOC_SLAB_OPS - 1; i >= 0; i--) {
            slab->ops[i].next = pool->free_list;
            pool->free_list = &slab->ops[i];
        }
    }
    op = pool->free_list;
    pool->free_list = op->next;
    memset(op, 0, sizeof(*op));
    op->token = token;
    op->handle = handle;
    op->kind = kind;
    op->next = pool->in_flight.next;
    op->prev = &pool->in_flight;
    pool->in_flight.next->prev = op;
    pool->in_flight.next = op;
    pool->count_in_flight++;
    return op;
}

/* The kernel is done with op: unlink it and recycle the record. */
static void ioc_pool_give_back(ioc_op_pool *pool, struct ioc_op *op)
{
    op->prev->next = op->next;
    op->next->prev = op->prev;
    op->prev = NULL;
    op->token = 0;
    op->next = pool->free_list;
    pool->free_list = op;
    pool->count_in_flight--;
}

static void ioc_pool_free(ioc_op_pool *pool)
{
    while (pool->slabs) {
        ioc_slab *next = pool->slabs->next;
        free(pool->slabs);
        pool->slabs = next;
    }
    pool->free_list = NULL;
}

static int ioc_op_is_live(struct ioc_op *op, uint64_t token)
{
    return op != NULL && token != 0 && op->token == token && op->prev != NULL;
}

#endif /* IOC_OPS_H */
