/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PC/SC-lite monitor: one thread, one context, SCardGetStatusChange() on every reader and
 * on the PnP pseudo reader. SCARD_* codes are translated here and nowhere else.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <winscard.h>

#include "pkcs11/pcsc.h"

#define PNP_READER "\\\\?PnP?\\Notification"
#define BACKOFF_MAX_S 60u
/* at most this many reader-list refreshes in a row without a real wait, then back off */
#define MAX_RELISTS 16

typedef struct reader {
	char *name;
	bool seen;      /* its state was read at least once */
	bool present, in_use, exclusive;
	unsigned counter; /* pcsc-lite's card event counter (upper 16 bits of the state) */
	DWORD state;      /* the last dwEventState, handed back as dwCurrentState */
	uint8_t atr[MK_PCSC_MAX_ATR];
	size_t atr_len;
} reader;

typedef struct event {
	mk_pcsc_event_kind kind;
	char *reader;
	uint8_t atr[MK_PCSC_MAX_ATR];
	size_t atr_len;
} event;

typedef struct events {
	event *a;
	size_t n, cap;
} events;

struct mk_pcsc {
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	mk_pcsc_fn fn;
	void *userdata;
	bool stop;      /* guarded by lock */
	bool exited;    /* the thread is done; guarded by lock */
	bool have_ctx;  /* ctx may be cancelled; guarded by lock */
	bool connected; /* guarded by lock */
	SCARDCONTEXT ctx;
	reader readers[MK_PCSC_MAX_READERS]; /* guarded by lock; written by the thread only */
	size_t n_readers;
};

const char *mk_pcsc_event_name(mk_pcsc_event_kind k)
{
	switch (k) {
	case MK_PCSC_READER_ADDED:
		return "reader added";
	case MK_PCSC_READER_REMOVED:
		return "reader removed";
	case MK_PCSC_CARD_INSERTED:
		return "card inserted";
	case MK_PCSC_CARD_REMOVED:
		return "card removed";
	}
	return "?";
}

/* --- events, collected under the lock and delivered outside it ---------------------------- */

static void events_add(events *e, mk_pcsc_event_kind kind, const reader *r)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 8;
		event *a = realloc(e->a, cap * sizeof(*a));

		if (!a)
			return; /* an event lost to memory pressure; the next one rescans anyway */
		e->a = a;
		e->cap = cap;
	}
	e->a[e->n] = (event){ .kind = kind, .reader = strdup(r->name) };
	if (!e->a[e->n].reader)
		return;
	if (kind == MK_PCSC_CARD_INSERTED) {
		memcpy(e->a[e->n].atr, r->atr, r->atr_len);
		e->a[e->n].atr_len = r->atr_len;
	}
	e->n++;
}

static void events_free(events *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->a[i].reader);
	free(e->a);
	*e = (events){ 0 };
}

static void events_deliver(mk_pcsc *m, events *e)
{
	for (size_t i = 0; i < e->n; i++) {
		mk_pcsc_event ev = {
			.kind = e->a[i].kind,
			.reader = e->a[i].reader,
			.atr = e->a[i].kind == MK_PCSC_CARD_INSERTED ? e->a[i].atr : NULL,
			.atr_len = e->a[i].atr_len,
		};

		m->fn(&ev, m->userdata);
		free(e->a[i].reader);
	}
	free(e->a);
	*e = (events){ 0 };
}

/* --- the reader table (the thread writes it under the lock) -------------------------------- */

static void reader_clear(reader *r)
{
	free(r->name);
	*r = (reader){ 0 };
}

/* Under the lock: the reader is gone (or pcscd is). */
static void reader_drop_locked(mk_pcsc *m, size_t i, events *e)
{
	reader *r = &m->readers[i];

	if (r->seen && r->present)
		events_add(e, MK_PCSC_CARD_REMOVED, r);
	if (r->seen)
		events_add(e, MK_PCSC_READER_REMOVED, r);
	reader_clear(r);
	m->readers[i] = m->readers[--m->n_readers];
	m->readers[m->n_readers] = (reader){ 0 };
}

/* Under the lock: what one SCardGetStatusChange said about reader r. */
static void reader_update_locked(reader *r, const SCARD_READERSTATE *st, events *e)
{
	DWORD s = st->dwEventState;
	bool present = (s & SCARD_STATE_PRESENT) && !(s & SCARD_STATE_EMPTY);
	unsigned counter = (unsigned)((s >> 16) & 0xFFFFu);
	size_t atr_len = present ? st->cbAtr : 0;
	bool atr_changed;

	if (atr_len > MK_PCSC_MAX_ATR)
		atr_len = MK_PCSC_MAX_ATR;
	atr_changed = atr_len != r->atr_len || memcmp(st->rgbAtr, r->atr, atr_len) != 0;
	if (!r->seen) {
		r->seen = true;
		r->present = present;
		r->counter = counter;
		memcpy(r->atr, st->rgbAtr, atr_len);
		r->atr_len = atr_len;
		events_add(e, MK_PCSC_READER_ADDED, r);
		if (present)
			events_add(e, MK_PCSC_CARD_INSERTED, r);
	} else if (r->present && (!present || counter != r->counter || atr_changed)) {
		/* out, or out and in again (another card, or the same one re-inserted) */
		events_add(e, MK_PCSC_CARD_REMOVED, r);
		r->present = present;
		r->counter = counter;
		memcpy(r->atr, st->rgbAtr, atr_len);
		r->atr_len = atr_len;
		if (present)
			events_add(e, MK_PCSC_CARD_INSERTED, r);
	} else if (!r->present && present) {
		r->present = true;
		r->counter = counter;
		memcpy(r->atr, st->rgbAtr, atr_len);
		r->atr_len = atr_len;
		events_add(e, MK_PCSC_CARD_INSERTED, r);
	} else {
		r->counter = counter;
	}
	r->in_use = present && (s & SCARD_STATE_INUSE);
	r->exclusive = present && (s & SCARD_STATE_EXCLUSIVE);
	r->state = s & ~(DWORD)SCARD_STATE_CHANGED;
}

/*
 * The reader names pcscd lists, bounded: a multi-string of at most the readers and bytes we
 * accept, each name NUL-terminated inside the buffer. 0 and *ret (free()) / *ret_n, a
 * negative errno, or the SCARD error in *ret_rv.
 */
static int list_readers(SCARDCONTEXT ctx, char **ret, size_t *ret_n, LONG *ret_rv)
{
	const DWORD cap = MK_PCSC_MAX_READERS * MK_PCSC_MAX_NAME;
	char *buf = NULL;
	DWORD len = 0;
	size_t n = 0;
	LONG rv;

	*ret_rv = SCARD_S_SUCCESS;
	for (int tries = 0; tries < 4; tries++) {
		rv = SCardListReaders(ctx, NULL, NULL, &len);
		if (rv == SCARD_E_NO_READERS_AVAILABLE) {
			free(buf);
			*ret = NULL;
			*ret_n = 0;
			return 0;
		}
		if (rv != SCARD_S_SUCCESS) {
			free(buf);
			*ret_rv = rv;
			return -EIO;
		}
		if (len > cap)
			len = cap;
		free(buf);
		buf = calloc(len + 2, 1); /* two NULs past the end, whatever pcscd writes */
		if (!buf)
			return -ENOMEM;
		rv = SCardListReaders(ctx, NULL, buf, &len);
		if (rv != SCARD_E_INSUFFICIENT_BUFFER)
			break;
	}
	if (rv == SCARD_E_NO_READERS_AVAILABLE) {
		free(buf);
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (rv != SCARD_S_SUCCESS) {
		free(buf);
		*ret_rv = rv;
		return -EIO;
	}
	/* count the names that fit our bounds; cut the rest off */
	for (size_t off = 0; off < len && buf[off]; n++) {
		size_t l = strnlen(buf + off, len - off);

		if (off + l >= len || l >= MK_PCSC_MAX_NAME || n >= MK_PCSC_MAX_READERS) {
			buf[off] = '\0';
			break;
		}
		off += l + 1;
	}
	*ret = buf;
	*ret_n = n;
	return 0;
}

static bool stopping(mk_pcsc *m)
{
	bool s;

	pthread_mutex_lock(&m->lock);
	s = m->stop;
	pthread_mutex_unlock(&m->lock);
	return s;
}

/* Makes m->readers what pcscd lists now; new readers are read by the next status call. */
static int relist(mk_pcsc *m, SCARDCONTEXT ctx, LONG *ret_rv)
{
	_cleanup_free_ char *names = NULL;
	size_t n = 0;
	events e = { 0 };
	int r;

	r = list_readers(ctx, &names, &n, ret_rv);
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n_readers;) {
		bool listed = false;
		const char *p = names;

		for (size_t j = 0; j < n; j++, p += strlen(p) + 1)
			if (strcmp(p, m->readers[i].name) == 0) {
				listed = true;
				break;
			}
		if (listed)
			i++;
		else
			reader_drop_locked(m, i, &e);
	}
	for (const char *p = names; p && *p && m->n_readers < MK_PCSC_MAX_READERS;
	     p += strlen(p) + 1) {
		bool known = false;

		for (size_t i = 0; i < m->n_readers; i++)
			if (strcmp(p, m->readers[i].name) == 0) {
				known = true;
				break;
			}
		if (known)
			continue;
		m->readers[m->n_readers].name = strdup(p);
		if (!m->readers[m->n_readers].name)
			break;
		m->n_readers++;
	}
	pthread_mutex_unlock(&m->lock);
	events_deliver(m, &e);
	return 0;
}

/*
 * Serves one context until pcscd goes away or the monitor stops. Returns true when it saw
 * at least one status change (pcscd worked: start the backoff over).
 */
static bool watch(mk_pcsc *m, SCARDCONTEXT ctx)
{
	SCARD_READERSTATE st[1 + MK_PCSC_MAX_READERS];
	DWORD pnp_state = SCARD_STATE_UNAWARE;
	bool need_list = true, worked = false;
	unsigned relists = 0;

	for (;;) {
		size_t n;
		LONG rv = SCARD_S_SUCCESS;

		if (need_list) {
			if (++relists > MAX_RELISTS || relist(m, ctx, &rv) < 0)
				return worked;
			need_list = false;
			worked = true;
		}
		memset(st, 0, sizeof(st));
		st[0].szReader = PNP_READER;
		st[0].dwCurrentState = pnp_state;
		/* the names stay valid: only this thread changes the table */
		pthread_mutex_lock(&m->lock);
		n = m->n_readers;
		for (size_t i = 0; i < n; i++) {
			const reader *r = &m->readers[i];

			st[1 + i].szReader = r->name;
			st[1 + i].dwCurrentState = r->seen ? r->state : SCARD_STATE_UNAWARE;
		}
		pthread_mutex_unlock(&m->lock);
		if (stopping(m))
			return worked;

		rv = SCardGetStatusChange(ctx, INFINITE, st, (DWORD)(1 + n));
		if (stopping(m))
			return worked;
		if (rv == SCARD_E_TIMEOUT || rv == SCARD_E_CANCELLED)
			continue;
		if (rv == SCARD_E_UNKNOWN_READER) {
			need_list = true; /* a reader left between the list and the wait */
			continue;
		}
		if (rv != SCARD_S_SUCCESS)
			return worked; /* pcscd went away (NO_SERVICE, SERVICE_STOPPED, ...) */
		relists = 0;
		if (st[0].dwEventState & SCARD_STATE_CHANGED)
			need_list = true;
		pnp_state = st[0].dwEventState & ~(DWORD)SCARD_STATE_CHANGED;

		events e = { 0 };
		bool changed = need_list;

		pthread_mutex_lock(&m->lock);
		for (size_t i = 0; i < n && i < m->n_readers; i++) {
			DWORD s = st[1 + i].dwEventState;

			if (s & (SCARD_STATE_UNKNOWN | SCARD_STATE_IGNORE)) {
				need_list = changed = true; /* unplugged: the relist drops it */
				continue;
			}
			if ((s & SCARD_STATE_CHANGED) || !m->readers[i].seen) {
				reader_update_locked(&m->readers[i], &st[1 + i], &e);
				changed = true;
			}
		}
		pthread_mutex_unlock(&m->lock);
		events_deliver(m, &e);
		/* pcscd answered without a change: never spin on such answers */
		if (!changed)
			nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	}
}

/* Waits up to `seconds` or until stop; under the lock. */
static void backoff_locked(mk_pcsc *m, unsigned seconds)
{
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += seconds;
	while (!m->stop && pthread_cond_timedwait(&m->cond, &m->lock, &until) != ETIMEDOUT)
		;
}

static void *monitor(void *arg)
{
	mk_pcsc *m = arg;
	unsigned delay = 1;

	pthread_mutex_lock(&m->lock);
	while (!m->stop) {
		SCARDCONTEXT ctx;
		events e = { 0 };
		bool worked;
		LONG rv;

		pthread_mutex_unlock(&m->lock);
		rv = SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx);
		pthread_mutex_lock(&m->lock);
		if (rv != SCARD_S_SUCCESS) {
			/* no pcscd (yet): quietly, later */
			backoff_locked(m, delay);
			delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
			continue;
		}
		m->ctx = ctx;
		m->have_ctx = true;
		m->connected = true;
		if (m->stop) {
			m->have_ctx = false;
			pthread_mutex_unlock(&m->lock);
			SCardReleaseContext(ctx);
			pthread_mutex_lock(&m->lock);
			break;
		}
		pthread_mutex_unlock(&m->lock);
		worked = watch(m, ctx);
		pthread_mutex_lock(&m->lock);
		m->have_ctx = false;
		m->connected = false;
		/* pcscd is gone, or we stop: its readers are gone for us */
		while (m->n_readers > 0)
			reader_drop_locked(m, m->n_readers - 1, &e);
		pthread_mutex_unlock(&m->lock);
		SCardReleaseContext(ctx);
		if (!stopping(m))
			events_deliver(m, &e);
		else
			events_free(&e);
		pthread_mutex_lock(&m->lock);
		if (worked)
			delay = 1;
		if (!m->stop) {
			backoff_locked(m, delay);
			delay = delay * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : delay * 2;
		}
	}
	m->exited = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

int mk_pcsc_start(mk_pcsc_fn fn, void *userdata, mk_pcsc **ret)
{
	pthread_condattr_t ca;
	mk_pcsc *m;
	int r;

	if (!fn || !ret)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->fn = fn;
	m->userdata = userdata;
	pthread_mutex_init(&m->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = pthread_create(&m->tid, NULL, monitor, m);
	if (r != 0) {
		pthread_cond_destroy(&m->cond);
		pthread_mutex_destroy(&m->lock);
		free(m);
		return r == EAGAIN ? -EAGAIN : -r;
	}
	*ret = m;
	return 0;
}

mk_pcsc *mk_pcsc_stop(mk_pcsc *m)
{
	if (!m)
		return NULL;
	pthread_mutex_lock(&m->lock);
	m->stop = true;
	pthread_cond_broadcast(&m->cond);
	/*
	 * SCardCancel() only ends a wait that is under way: a cancel that lands between two
	 * waits is lost, so cancel again until the thread has seen the stop.
	 */
	while (!m->exited) {
		struct timespec until;

		if (m->have_ctx)
			SCardCancel(m->ctx);
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += 50 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&m->cond, &m->lock, &until);
	}
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->tid, NULL);
	for (size_t i = 0; i < m->n_readers; i++)
		reader_clear(&m->readers[i]);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}

void mk_pcsc_reader_array_free(mk_pcsc_reader *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		free(a[i].name);
	free(a);
}

int mk_pcsc_readers(mk_pcsc *m, mk_pcsc_reader **ret, size_t *ret_n)
{
	mk_pcsc_reader *a;
	size_t n = 0;

	if (!m || !ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	a = calloc(m->n_readers ? m->n_readers : 1, sizeof(*a));
	for (size_t i = 0; a && i < m->n_readers; i++) {
		const reader *r = &m->readers[i];

		if (!r->seen)
			continue;
		a[n].name = strdup(r->name);
		if (!a[n].name) {
			mk_pcsc_reader_array_free(a, n);
			a = NULL;
			break;
		}
		a[n].card_present = r->present;
		a[n].card_in_use = r->in_use;
		a[n].card_exclusive = r->exclusive;
		memcpy(a[n].atr, r->atr, r->atr_len);
		a[n].atr_len = r->atr_len;
		n++;
	}
	pthread_mutex_unlock(&m->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

bool mk_pcsc_connected(mk_pcsc *m)
{
	bool c;

	if (!m)
		return false;
	pthread_mutex_lock(&m->lock);
	c = m->connected;
	pthread_mutex_unlock(&m->lock);
	return c;
}
