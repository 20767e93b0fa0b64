/*
 * ioc_wakeup.h -- the cross-thread wakeup handshake shared by both backends.
 *
 * The loop thread announces `sleeping` before it blocks in the kernel and then
 * re-reads `posted`; a waker bumps `posted` and signals the kernel only if it
 * sees `sleeping` and is the first to set `wake_sent`.  With sequentially
 * consistent atomics on both sides, either the waker sees the sleeper (and
 * signals) or the sleeper sees the new count (and does not block).  So a burst
 * of wakeups costs one kernel signal per sleep, and none while the loop runs.
 * The backend supplies the signal itself (an eventfd write, a posted packet)
 * and calls ioc_wake_consumed when that signal has been dequeued.
 */
#ifndef IOC_WAKEUP_H
#define IOC_WAKEUP_H

#include "ioc_atomic.h"

typedef struct ioc_wake_state {
    ioc_atomic_int sleeping;
    ioc_atomic_int wake_sent;
    ioc_atomic_int posted;
    int seen_posted;                 /* loop thread only */
    ioc_atomic_int sent;             /* statistics: merged = posted - sent */
} ioc_wake_state;

/* Loop thread, before blocking: returns 0 if a wakeup raced in, in which case
 * the wait must not block (poll instead). */
static int ioc_wake_prepare_sleep(ioc_wake_state *w)
{
    ioc_atomic_store(&w->sleeping, 1);
    return ioc_atomic_load(&w->posted) == w->seen_posted;
}

/* Loop thread, after the kernel wait returned. */
static void ioc_wake_after_sleep(ioc_wake_state *w)
{
    ioc_atomic_store(&w->sleeping, 0);
}

/* Loop thread, at the end of every wait: wakeups posted so far are served by
 * the ready queue the caller is about to run. */
static void ioc_wake_end_of_wait(ioc_wake_state *w)
{
    w->seen_posted = ioc_atomic_load(&w->posted);
}

/* Loop thread: the kernel signal was dequeued; later wakeups signal again. */
static void ioc_wake_consumed(ioc_wake_state *w)
{
    ioc_atomic_store(&w->wake_sent, 0);
}

/* Any thread: returns 1 if the caller must signal the kernel now.  One
 * locked instruction when the loop is awake (a burst from another thread):
 * the count of merged wakeups is derived, not kept. */
static int ioc_wake_request(ioc_wake_state *w)
{
    ioc_atomic_inc(&w->posted);
    if (ioc_atomic_load(&w->sleeping) && ioc_atomic_exchange(&w->wake_sent, 1) == 0) {
        ioc_atomic_inc(&w->sent);
        return 1;
    }
    return 0;
}

static void ioc_wake_stats(ioc_wake_state *w, ioc_stats *out)
{
    /* 32-bit counters, as before: the difference is right modulo 2**32. */
    uint32_t sent = (uint32_t)ioc_atomic_load(&w->sent);
    uint32_t posted = (uint32_t)ioc_atomic_load(&w->posted);
    out->wakeups_sent = sent;
    out->wakeups_merged = (uint32_t)(posted - sent);
}

#endif /* IOC_WAKEUP_H */
