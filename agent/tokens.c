/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/log.h"
#include "agent/tokens.h"
#include "common/error.h"
#include "pkcs11/pcsc.h"

/* Reader removals waiting for the watcher; past this many it rescans everything anyway. */
#define MAX_PENDING 32
#define MAX_TIMEOUT_S 3600u
#define MAX_POLL_MS 3600000u
#define MIN_POLL_MS 50u

enum call_state { CALL_QUEUED, CALL_RUNNING, CALL_ANSWERED };

struct mk_tokens_call {
	mk_tokens_call *prev, *next;
	mk_tokens *t;
	void *job;
	char *queue;
	mk_p11_watch *watch;
	enum call_state state;
	bool stuck; /* given up as not answering: counted in its queue's stuck entry */
};

/* A worker queue whose token has a call that did not answer. */
typedef struct stuck_queue {
	char *key;
	unsigned n;
	long long since_ms;
	char token[72];
} stuck_queue;

struct mk_tokens {
	mk_tokens_settings s;
	pthread_mutex_t lock;  /* everything below */
	pthread_cond_t cond;   /* the watcher's: work to do (CLOCK_MONOTONIC) */
	pthread_cond_t wd_cond; /* the watchdog's (CLOCK_MONOTONIC) */
	pthread_cond_t p11_cond; /* p11_users dropped */
	mk_p11 *p11;           /* from the hook */
	unsigned p11_users;
	mk_agent *agent;
	mk_tokens_notify_fn notify;
	mk_tokens_answer_fn answer;
	void *userdata;
	mk_pcsc *pcsc;
	pthread_t watcher, watchdog;
	bool watcher_started, watchdog_started;
	bool stop;
	/* the watcher's requests */
	char *removed[MAX_PENDING];
	size_t n_removed;
	bool pcsc_event;
	/* calls */
	mk_tokens_call *calls;
	bool wd_idle;     /* the watchdog sleeps without a deadline */
	bool wd_activity; /* a call began since the watchdog's last look */
	stuck_queue *stuck;
	size_t n_stuck;
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec at_ms(long long ms)
{
	return (struct timespec){ .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
}

/* --- settings -------------------------------------------------------------------------------- */

void mk_tokens_settings_from_config(const mk_config *c, mk_tokens_settings *ret)
{
	*ret = (mk_tokens_settings){
		.timeout_ms = MK_MIN(c->token_timeout_s, MAX_TIMEOUT_S) * 1000,
		.poll_ms = c->slot_poll_ms && c->slot_poll_ms < MIN_POLL_MS
				   ? MIN_POLL_MS
				   : MK_MIN(c->slot_poll_ms, MAX_POLL_MS),
		.pcsc = c->pcsc,
	};
}

/* --- the token layer, through the hook ---------------------------------------------------- */

static void on_p11(mk_p11 *p, bool opened, void *userdata)
{
	mk_tokens *t = userdata;

	pthread_mutex_lock(&t->lock);
	if (opened) {
		if (!t->p11)
			t->p11 = p;
	} else if (t->p11 == p) {
		/* it goes: wait until nobody here uses it */
		while (t->p11_users > 0)
			pthread_cond_wait(&t->p11_cond, &t->lock);
		t->p11 = NULL;
	}
	pthread_mutex_unlock(&t->lock);
}

static mk_p11 *p11_get(mk_tokens *t)
{
	mk_p11 *p;

	pthread_mutex_lock(&t->lock);
	p = t->p11;
	if (p)
		t->p11_users++;
	pthread_mutex_unlock(&t->lock);
	return p;
}

static void p11_put(mk_tokens *t)
{
	pthread_mutex_lock(&t->lock);
	t->p11_users--;
	pthread_cond_broadcast(&t->p11_cond);
	pthread_mutex_unlock(&t->lock);
}

int mk_tokens_list_slots(mk_tokens *t, mk_slot_info **ret, size_t *ret_n)
{
	mk_p11 *p = t ? p11_get(t) : NULL;
	int r;

	if (!p)
		return mk_error(-ENODEV, "no token modules are loaded");
	r = mk_p11_list_slots(p, ret, ret_n);
	p11_put(t);
	return r;
}

/* --- the watcher: PC/SC events and the slot poll ------------------------------------------ */

static void on_pcsc(const mk_pcsc_event *ev, void *userdata)
{
	mk_tokens *t = userdata;

	mk_log(LOG_INFO, "PC/SC: %s: %s", mk_pcsc_event_name(ev->kind), ev->reader);
	pthread_mutex_lock(&t->lock);
	if (ev->kind == MK_PCSC_CARD_REMOVED || ev->kind == MK_PCSC_READER_REMOVED) {
		bool known = false;

		for (size_t i = 0; i < t->n_removed && !known; i++)
			known = strcmp(t->removed[i], ev->reader) == 0;
		if (!known && t->n_removed < MAX_PENDING) {
			t->removed[t->n_removed] = strdup(ev->reader);
			if (t->removed[t->n_removed])
				t->n_removed++;
		}
	}
	t->pcsc_event = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

static bool in_list(char **a, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i], s) == 0)
			return true;
	return false;
}

static void list_free(char **a, size_t n)
{
	for (size_t i = 0; a && i < n; i++)
		free(a[i]);
	free(a);
}

static void kick_watchdog(mk_tokens *t)
{
	pthread_mutex_lock(&t->lock);
	pthread_cond_signal(&t->wd_cond);
	pthread_mutex_unlock(&t->lock);
}

/* Tells the token layer which readers PC/SC watches now: their modules wait for events. */
static void pcsc_update(mk_tokens *t, mk_p11 *p)
{
	mk_pcsc_reader *rd = NULL;
	const char **names;
	bool *cards;
	size_t n = 0;

	if (t->pcsc && mk_pcsc_connected(t->pcsc) && mk_pcsc_readers(t->pcsc, &rd, &n) < 0)
		return;
	names = calloc(n + 1, sizeof(*names));
	cards = calloc(n + 1, sizeof(*cards));
	if (names && cards) {
		for (size_t i = 0; i < n; i++) {
			names[i] = rd[i].name;
			cards[i] = rd[i].card_present;
		}
		(void)mk_p11_pcsc_update(p, names, cards, n);
	}
	free(names);
	free(cards);
	mk_pcsc_reader_array_free(rd, n);
}

/*
 * One round of the watcher: cards pulled out first (their tokens absent at once, so that
 * calls in flight on them are answered), then the cheap slot check, and on any change a
 * rescan through the agent.
 */
static void watch_round(mk_tokens *t, char **removed, size_t n_removed, bool event, bool poll)
{
	char **before = NULL, **mid = NULL, **after = NULL;
	size_t nb = 0, nm = 0, na = 0;
	mk_token_info *ti = NULL;
	size_t n_ti = 0;
	bool changed = event;
	unsigned what = 0;
	mk_p11 *p = p11_get(t);

	if (!p)
		return;
	if (mk_p11_present_tokens(p, &before, &nb) < 0)
		goto out;
	for (size_t i = 0; i < n_removed; i++)
		if (mk_p11_reader_removed(p, removed[i]) > 0)
			changed = true;
	if (mk_p11_present_tokens(p, &mid, &nm) < 0)
		goto out;
	if (nm != nb)
		kick_watchdog(t); /* calls in flight on those tokens get their answer now */
	/* a card or reader came or went: say so now, the rescan below may take seconds (a
	 * module tries every driver on a new card) and says it again if tokens changed */
	if (event && t->notify)
		t->notify(MK_TOKENS_CHANGED, t->userdata);
	if (event)
		pcsc_update(t, p);
	if (poll && !event) {
		bool c = false;

		if (mk_p11_check_slots(p, &c) == 0 && c)
			changed = true;
	}
	if (!changed)
		goto out;
	/* the rescan, as ListTokens does it: the agent sees the change and drops cached keys */
	if (mk_agent_list_tokens(t->agent, &ti, &n_ti) == 0)
		mk_token_info_array_free(ti, n_ti);
	mk_error_clear();
	if (mk_p11_present_tokens(p, &after, &na) < 0)
		goto out;
	for (size_t i = 0; i < nb; i++)
		if (!in_list(mid, nm, before[i]) || !in_list(after, na, before[i])) {
			mk_log(LOG_NOTICE, "token removed: %s", before[i]);
			mk_agent_token_gone(t->agent, before[i]);
			what |= MK_TOKENS_CHANGED | MK_KEYS_CHANGED;
		}
	for (size_t i = 0; i < na; i++)
		if (!in_list(before, nb, after[i])) {
			mk_log(LOG_NOTICE, "token inserted: %s", after[i]);
			what |= MK_TOKENS_CHANGED | MK_KEYS_CHANGED;
		}
	kick_watchdog(t);
	if (what && t->notify)
		t->notify(what, t->userdata);
out:
	list_free(before, nb);
	list_free(mid, nm);
	list_free(after, na);
	p11_put(t);
}

static void *watcher_main(void *arg)
{
	mk_tokens *t = arg;
	long long next_poll = t->s.poll_ms ? now_ms() + t->s.poll_ms : -1;

	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		char *removed[MAX_PENDING];
		size_t n_removed;
		bool event, poll;

		if (!t->pcsc_event && t->n_removed == 0) {
			if (next_poll < 0) {
				pthread_cond_wait(&t->cond, &t->lock);
			} else if (now_ms() < next_poll) {
				struct timespec until = at_ms(next_poll);

				pthread_cond_timedwait(&t->cond, &t->lock, &until);
			}
			if (t->stop)
				break;
		}
		poll = next_poll >= 0 && now_ms() >= next_poll;
		event = t->pcsc_event;
		if (!poll && !event && t->n_removed == 0)
			continue;
		t->pcsc_event = false;
		n_removed = t->n_removed;
		memcpy(removed, t->removed, n_removed * sizeof(*removed));
		t->n_removed = 0;
		pthread_mutex_unlock(&t->lock);

		watch_round(t, removed, n_removed, event || n_removed > 0, poll);
		for (size_t i = 0; i < n_removed; i++)
			free(removed[i]);

		pthread_mutex_lock(&t->lock);
		if (poll)
			next_poll = now_ms() + t->s.poll_ms;
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* --- calls and the watchdog --------------------------------------------------------------- */

/* Under t->lock. */
static stuck_queue *stuck_find(mk_tokens *t, const char *key)
{
	for (size_t i = 0; i < t->n_stuck; i++)
		if (strcmp(t->stuck[i].key, key) == 0)
			return &t->stuck[i];
	return NULL;
}

/* Under t->lock: the queue has one more call that does not answer. false: no memory. */
static bool stuck_add(mk_tokens *t, const char *key, const mk_p11_watch_state *st)
{
	stuck_queue *q = stuck_find(t, key), *a;

	if (q) {
		q->n++;
		return true;
	}
	a = realloc(t->stuck, (t->n_stuck + 1) * sizeof(*a));
	if (!a)
		return false;
	t->stuck = a;
	q = &a[t->n_stuck];
	*q = (stuck_queue){ .key = strdup(key), .n = 1, .since_ms = st->since_ms };
	if (!q->key)
		return false;
	snprintf(q->token, sizeof(q->token), "%s", st->token);
	t->n_stuck++;
	return true;
}

/* Under t->lock. */
static void stuck_drop(mk_tokens *t, const char *key)
{
	stuck_queue *q = stuck_find(t, key);

	if (!q || --q->n > 0)
		return;
	free(q->key);
	*q = t->stuck[--t->n_stuck];
}

int mk_tokens_call_new(mk_tokens *t, void *job, const char *queue, mk_tokens_call **ret)
{
	mk_tokens_call *c;
	stuck_queue *q;
	int r;

	pthread_mutex_lock(&t->lock);
	q = stuck_find(t, queue);
	if (q) {
		r = mk_error(-ETIMEDOUT, "token \"%s\" has not answered a call for %lld s; remove "
			     "and reinsert it, or retry later", q->token,
			     (now_ms() - q->since_ms) / 1000);
		pthread_mutex_unlock(&t->lock);
		return r;
	}
	pthread_mutex_unlock(&t->lock);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->t = t;
	c->job = job;
	c->queue = strdup(queue);
	if (!c->queue || mk_p11_watch_new(&c->watch) < 0) {
		free(c->queue);
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_lock(&t->lock);
	c->next = t->calls;
	if (t->calls)
		t->calls->prev = c;
	t->calls = c;
	pthread_mutex_unlock(&t->lock);
	*ret = c;
	return 0;
}

static bool call_unlink(mk_tokens_call *c)
{
	mk_tokens *t = c->t;
	bool answered;

	pthread_mutex_lock(&t->lock);
	answered = c->state == CALL_ANSWERED;
	if (c->stuck)
		stuck_drop(t, c->queue);
	if (c->prev)
		c->prev->next = c->next;
	else
		t->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&t->lock);
	mk_p11_watch_free(c->watch);
	free(c->queue);
	free(c);
	return answered;
}

bool mk_tokens_call_drop(mk_tokens_call *c)
{
	return c ? call_unlink(c) : false;
}

bool mk_tokens_call_begin(mk_tokens_call *c)
{
	mk_tokens *t = c->t;
	bool go;

	pthread_mutex_lock(&t->lock);
	go = c->state == CALL_QUEUED;
	if (go) {
		c->state = CALL_RUNNING;
		/* A watchdog asleep without a deadline must learn that one may start now. While
		 * calls keep coming it ticks once per timeout instead (watchdog_main), so that a
		 * call's path holds no wake-up of the watchdog, which costs as much as a
		 * signature on a small VM. */
		t->wd_activity = true;
		if (t->wd_idle && t->s.timeout_ms)
			pthread_cond_signal(&t->wd_cond);
	}
	pthread_mutex_unlock(&t->lock);
	if (go)
		mk_p11_watch_attach(c->watch);
	return go;
}

bool mk_tokens_call_end(mk_tokens_call *c)
{
	mk_p11_watch_attach(NULL);
	return !call_unlink(c);
}

/* Under t->lock: answers c with r; the message is this thread's mk_error_message(). */
static void answer(mk_tokens *t, mk_tokens_call *c, int r)
{
	c->state = CALL_ANSWERED;
	if (t->answer)
		t->answer(c->job, r, t->userdata);
	mk_error_clear();
}

/*
 * Under t->lock: one look at every call. Returns the time of the next deadline, or -1 when
 * there is none.
 */
static long long watchdog_round(mk_tokens *t)
{
	long long now = now_ms(), next = -1;
	unsigned timeout = t->s.timeout_ms;
	bool again = true;

	while (again) {
		again = false;
		next = -1;
		for (mk_tokens_call *c = t->calls; c; c = c->next) {
			mk_p11_watch_state st;

			if (c->state == CALL_QUEUED) {
				stuck_queue *q = stuck_find(t, c->queue);

				if (q) {
					mk_error(-ETIMEDOUT, "token \"%s\" has not answered a call for "
						 "%lld s; remove and reinsert it, or retry later",
						 q->token, (now - q->since_ms) / 1000);
					answer(t, c, -ETIMEDOUT);
				}
				continue;
			}
			if (c->state != CALL_RUNNING)
				continue;
			mk_p11_watch_get(c->watch, &st);
			if (!st.since_ms) {
				/* between two stretches, or in a PIN dialog: no deadline yet */
				if (timeout && (next < 0 || now + timeout < next))
					next = now + timeout;
				continue;
			}
			if (st.gone) {
				if (mk_p11_watch_give_up(c->watch, st.seq, false)) {
					mk_error(-ENOMEDIUM, "token \"%s\" (serial %s) was removed while "
						 "this call was using it; insert it and retry",
						 st.token, st.serial);
					answer(t, c, -ENOMEDIUM);
				}
				continue;
			}
			if (!timeout)
				continue;
			if (now - st.since_ms >= (long long)timeout) {
				if (!mk_p11_watch_give_up(c->watch, st.seq, true))
					continue;
				c->stuck = stuck_add(t, c->queue, &st);
				mk_log(LOG_WARNING, "token \"%s\" (serial %s) did not answer within "
				       "%u s; giving up on its calls until it does", st.token,
				       st.serial, timeout / 1000);
				mk_error(-ETIMEDOUT, "token \"%s\" (serial %s) did not answer within %u s; "
					 "remove and reinsert it, then retry", st.token, st.serial,
					 timeout / 1000);
				answer(t, c, -ETIMEDOUT);
				again = true; /* calls waiting behind it are answered too */
				continue;
			}
			if (next < 0 || st.since_ms + timeout < next)
				next = st.since_ms + timeout;
		}
	}
	return next;
}

static void *watchdog_main(void *arg)
{
	mk_tokens *t = arg;

	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		long long next = watchdog_round(t);

		if (next < 0 && t->wd_activity && t->s.timeout_ms) {
			/* calls came lately: look again after one timeout, and meanwhile let new
			 * calls start without waking us (every deadline is at least that far) */
			struct timespec until = at_ms(now_ms() + t->s.timeout_ms);

			t->wd_activity = false;
			pthread_cond_timedwait(&t->wd_cond, &t->lock, &until);
		} else if (next < 0) {
			t->wd_idle = true;
			pthread_cond_wait(&t->wd_cond, &t->lock);
			t->wd_idle = false;
		} else {
			struct timespec until = at_ms(next);

			pthread_cond_timedwait(&t->wd_cond, &t->lock, &until);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* --- life -------------------------------------------------------------------------------- */

static void cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

int mk_tokens_new(const mk_tokens_settings *s, mk_tokens **ret)
{
	mk_tokens *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->s = *s;
	pthread_mutex_init(&t->lock, NULL);
	cond_init_monotonic(&t->cond);
	cond_init_monotonic(&t->wd_cond);
	pthread_cond_init(&t->p11_cond, NULL);
	mk_p11_set_hook(on_p11, t);
	*ret = t;
	return 0;
}

int mk_tokens_start(mk_tokens *t, mk_agent *a, mk_tokens_notify_fn notify,
		    mk_tokens_answer_fn answer_fn, void *userdata)
{
	int r;

	t->agent = a;
	t->notify = notify;
	t->answer = answer_fn;
	t->userdata = userdata;
	r = -pthread_create(&t->watchdog, NULL, watchdog_main, t);
	if (r < 0)
		return mk_error(r, "cannot start the token watchdog: %s", strerror(-r));
	t->watchdog_started = true;
	r = -pthread_create(&t->watcher, NULL, watcher_main, t);
	if (r < 0)
		return mk_error(r, "cannot start the token watcher: %s", strerror(-r));
	t->watcher_started = true;
	if (t->s.pcsc) {
		r = mk_pcsc_start(on_pcsc, t, &t->pcsc);
		if (r < 0)
			mk_log(LOG_WARNING, "no PC/SC monitor (%s); cards are found by polling only",
			       strerror(-r));
	}
	mk_log(LOG_INFO, "watching tokens: PC/SC %s, slot check every %u ms, calls give up after "
	       "%u s", t->pcsc ? "on" : "off", t->s.poll_ms, t->s.timeout_ms / 1000);
	return 0;
}

mk_tokens *mk_tokens_free(mk_tokens *t)
{
	if (!t)
		return NULL;
	/* the monitor first: it feeds the watcher */
	t->pcsc = mk_pcsc_stop(t->pcsc);
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->cond);
	pthread_cond_broadcast(&t->wd_cond);
	pthread_mutex_unlock(&t->lock);
	if (t->watcher_started)
		pthread_join(t->watcher, NULL);
	if (t->watchdog_started)
		pthread_join(t->watchdog, NULL);
	mk_p11_set_hook(NULL, NULL);
	for (size_t i = 0; i < t->n_removed; i++)
		free(t->removed[i]);
	for (size_t i = 0; i < t->n_stuck; i++)
		free(t->stuck[i].key);
	free(t->stuck);
	while (t->calls)
		call_unlink(t->calls);
	pthread_cond_destroy(&t->p11_cond);
	pthread_cond_destroy(&t->wd_cond);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return NULL;
}
