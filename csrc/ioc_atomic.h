/*
 * ioc_atomic.h -- the few atomic operations the core needs, for GCC/Clang
 * (including MinGW) and MSVC.  All are sequentially consistent: the wakeup
 * handshake (see ioc_wakeup) is a Dekker-style pair of stores and loads and
 * needs a full fence between them on both sides.
 */
#ifndef IOC_ATOMIC_H
#define IOC_ATOMIC_H

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
typedef volatile long ioc_atomic_int;
#define ioc_atomic_load(p) _InterlockedOr((p), 0)
#define ioc_atomic_store(p, v) ((void)_InterlockedExchange((p), (v)))
#define ioc_atomic_exchange(p, v) _InterlockedExchange((p), (v))
#define ioc_atomic_inc(p) _InterlockedIncrement(p)
#else
typedef int ioc_atomic_int;
#define ioc_atomic_load(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define ioc_atomic_store(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ioc_atomic_exchange(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define ioc_atomic_inc(p) __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#endif

#endif /* IOC_ATOMIC_H */
