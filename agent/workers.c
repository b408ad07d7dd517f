/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/workers.h"
#include "common/macros.h"

typedef struct wjob {
	struct wjob *next;
	mk_work_fn fn;
	void *job;
} wjob;

typedef struct wqueue {
	char *key;
	wjob *head, **tail;
	unsigned waiting; /* jobs queued, not yet taken */
	unsigned threads; /* threads serving this queue */
	unsigned idle;    /* of which asleep, waiting for work */
	unsigned spinning; /* of which briefly awake, watching `pending` */
	unsigned running;  /* of which running a job */
	atomic_uint pending; /* == waiting, readable without the lock */
	uint64_t crowded_until_ns; /* CLOCK_MONOTONIC: two jobs met in the queue lately */
	pthread_cond_t cond;
} wqueue;

typedef struct wthread {
	struct wthread *next;
	pthread_t tid;
	mk_workers *w;
	wqueue *q;
} wthread;

struct mk_workers {
	pthread_mutex_t lock;
	wqueue *queues[MK_WORKERS_MAX_QUEUES];
	size_t n_queues;
	wthread *threads;
	unsigned per_queue, max_queue;
	unsigned spin_us;
	atomic_bool stopping;
};

void mk_workers_set_spin(mk_workers *w, unsigned spin_us)
{
	pthread_mutex_lock(&w->lock);
	w->spin_us = spin_us;
	pthread_mutex_unlock(&w->lock);
}

int mk_workers_new(unsigned threads_per_queue, unsigned max_queue, mk_workers **ret)
{
	mk_workers *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	w->per_queue = threads_per_queue ? threads_per_queue : 1;
	w->max_queue = max_queue ? max_queue : 1;
	*ret = w;
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * How long after two jobs last met in a queue (one waiting while another waits or runs) its
 * workers do not spin: several clients are calling, the queue refills by itself, and a
 * spinning worker would take a core from them and from the bus thread (mlskey bench with 8
 * clients on 2 cores). One client calling again and again never has two jobs at once.
 */
#define CROWDED_NS (20u * 1000u * 1000u)

/*
 * Called with w->lock held and the queue empty: stays awake for up to spin_us watching for
 * the next job before the thread goes to sleep. A client that calls again right after its
 * reply (the usual MLS pattern: sign a batch, open a few Welcomes) then finds a worker
 * awake: no futex wake and no context switch on its call's path, which on a small VM
 * costs as much as the token operation itself. An idle agent still sleeps.
 */
static void spin_for_work(mk_workers *w, wqueue *q)
{
	uint64_t deadline = now_ns() + (uint64_t)w->spin_us * 1000u;

	q->spinning++;
	pthread_mutex_unlock(&w->lock);
	while (!atomic_load_explicit(&q->pending, memory_order_acquire) &&
	       !atomic_load_explicit(&w->stopping, memory_order_relaxed) && now_ns() < deadline)
		__builtin_ia32_pause();
	pthread_mutex_lock(&w->lock);
	q->spinning--;
}

static void *worker_main(void *arg)
{
	wthread *t = arg;
	mk_workers *w = t->w;
	wqueue *q = t->q;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		bool spun = false;
		wjob *j;

		while (!w->stopping && !q->head) {
			/* Watch only when this queue has gone quiet (no other job running, no
			 * other watcher): that is the one-caller-at-a-time case that the spin is
			 * for. Under load the queue refills by itself, and spinning threads would
			 * only take CPU from the bus and the clients. */
			if (w->spin_us && !spun && q->spinning == 0 && q->running == 0 &&
			    now_ns() >= q->crowded_until_ns) {
				spin_for_work(w, q);
				spun = true;
				continue;
			}
			q->idle++;
			pthread_cond_wait(&q->cond, &w->lock);
			q->idle--;
		}
		if (w->stopping)
			break;
		j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = &q->head;
		q->waiting--;
		atomic_fetch_sub_explicit(&q->pending, 1, memory_order_relaxed);
		q->running++;
		pthread_mutex_unlock(&w->lock);
		j->fn(j->job, 0);
		free(j);
		pthread_mutex_lock(&w->lock);
		q->running--;
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Under w->lock. */
static wqueue *get_queue(mk_workers *w, const char *key)
{
	wqueue *q;

	for (size_t i = 0; i < w->n_queues; i++)
		if (strcmp(w->queues[i]->key, key) == 0)
			return w->queues[i];
	/* the last slot is kept for the shared queue "" */
	if (w->n_queues >= MK_WORKERS_MAX_QUEUES - 1 && key[0])
		return get_queue(w, "");
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->key = strdup(key);
	if (!q->key) {
		free(q);
		return NULL;
	}
	q->tail = &q->head;
	pthread_cond_init(&q->cond, NULL);
	w->queues[w->n_queues++] = q;
	return q;
}

/* Under w->lock. */
static int add_thread(mk_workers *w, wqueue *q)
{
	wthread *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	t->w = w;
	t->q = q;
	r = pthread_create(&t->tid, NULL, worker_main, t);
	if (r != 0) {
		free(t);
		return -r;
	}
	t->next = w->threads;
	w->threads = t;
	q->threads++;
	return 0;
}

int mk_workers_submit(mk_workers *w, const char *key, mk_work_fn fn, void *job)
{
	wjob *j;
	wqueue *q;
	int r = 0;

	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->fn = fn;
	j->job = job;
	pthread_mutex_lock(&w->lock);
	if (w->stopping) {
		r = -ECANCELED;
		goto fail;
	}
	q = get_queue(w, key);
	if (!q) {
		r = -ENOMEM;
		goto fail;
	}
	if (q->waiting >= w->max_queue) {
		r = -EBUSY;
		goto fail;
	}
	/* more jobs waiting than idle or watching threads to take them: start one, up to the limit */
	if (q->waiting + 1 > q->idle + q->spinning && q->threads < w->per_queue) {
		r = add_thread(w, q);
		if (r < 0 && q->threads == 0)
			goto fail;
		r = 0;
	}
	*q->tail = j;
	q->tail = &j->next;
	q->waiting++;
	if (q->waiting + q->running >= 2)
		q->crowded_until_ns = now_ns() + CROWDED_NS;
	atomic_fetch_add_explicit(&q->pending, 1, memory_order_release);
	/* a thread that is awake and watching takes it; wake a sleeper only for the rest */
	if (q->waiting > q->spinning)
		pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
fail:
	pthread_mutex_unlock(&w->lock);
	free(j);
	return r;
}

unsigned mk_workers_waiting(mk_workers *w)
{
	unsigned n = 0;

	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->n_queues; i++)
		n += w->queues[i]->waiting;
	pthread_mutex_unlock(&w->lock);
	return n;
}

mk_workers *mk_workers_free(mk_workers *w)
{
	wthread *t;

	if (!w)
		return NULL;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	for (size_t i = 0; i < w->n_queues; i++)
		pthread_cond_broadcast(&w->queues[i]->cond);
	pthread_mutex_unlock(&w->lock);
	/* running jobs finish; then nobody touches the queues but us */
	while ((t = w->threads)) {
		w->threads = t->next;
		pthread_join(t->tid, NULL);
		free(t);
	}
	for (size_t i = 0; i < w->n_queues; i++) {
		wqueue *q = w->queues[i];
		wjob *j;

		while ((j = q->head)) {
			q->head = j->next;
			j->fn(j->job, -ECANCELED);
			free(j);
		}
		pthread_cond_destroy(&q->cond);
		free(q->key);
		free(q);
	}
	pthread_mutex_destroy(&w->lock);
	free(w);
	return NULL;
}
