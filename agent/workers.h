/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Worker queues: one FIFO per token, each served by up to N threads started on demand, so
 * that a slow card stalls only the calls waiting for that card. Jobs are opaque; the bus
 * thread submits them and never waits for one.
 */
#pragma once

typedef struct mk_workers mk_workers;

/*
 * Runs one job. status is 0 when a worker runs it, or -ECANCELED when mk_workers_free()
 * drops it unstarted (then on the thread that frees). Either way the function owns the job.
 */
typedef void (*mk_work_fn)(void *job, int status);

/* At most this many queues; calls for further tokens share the queue named "". */
#define MK_WORKERS_MAX_QUEUES 64

/*
 * Creates the pool: each queue gets up to threads_per_queue threads (>= 1) and holds at
 * most max_queue jobs waiting. Returns 0 and *ret, -ENOMEM.
 */
int mk_workers_new(unsigned threads_per_queue, unsigned max_queue, mk_workers **ret);

/*
 * After finishing a job, a worker whose queue is empty stays awake for up to spin_us
 * microseconds before it sleeps, so that a call arriving meanwhile needs no wake-up (0: sleep
 * at once). Applies from the next idle period on.
 */
void mk_workers_set_spin(mk_workers *w, unsigned spin_us);

/*
 * Queues fn(job) on the queue named key (NUL-terminated; "" for calls of no one token).
 * Never blocks on a job. Returns 0 (fn now owns job), -EBUSY when max_queue jobs already
 * wait on that queue, -ECANCELED after shutdown began, -ENOMEM / -EAGAIN (no thread).
 * On failure the caller keeps job.
 */
int mk_workers_submit(mk_workers *w, const char *key, mk_work_fn fn, void *job);

/* Jobs waiting on all queues together (for tests and logs). */
unsigned mk_workers_waiting(mk_workers *w);

/*
 * Stops the pool: jobs not yet started are called with -ECANCELED, running jobs finish
 * (abort blocking ones beforehand, e.g. PIN dialogs), threads are joined. Accepts NULL.
 */
mk_workers *mk_workers_free(mk_workers *w);
