/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PC/SC monitor (pkcs11/pcsc.h) with a real pcscd, the vpcd reader driver and the vicc
 * card: quiet while there is no pcscd, readers reported once it runs, the card in and out as
 * vicc starts and stops, readers gone when pcscd stops and back when it returns, and never a
 * hold on the card (another program takes it exclusively meanwhile).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <winscard.h>

#include "pkcs11/pcsc.h"
#include "tests/fixture.h"
#include "tests/pcsc/pcsc-fixture.h"
#include "tests/tap.h"

#define MAX_EVENTS 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct {
	mk_pcsc_event_kind kind;
	char reader[MK_PCSC_MAX_NAME];
	size_t atr_len;
} events[MAX_EVENTS];
static size_t n_events;

static void on_event(const mk_pcsc_event *ev, void *userdata)
{
	(void)userdata;
	pthread_mutex_lock(&lock);
	if (n_events < MAX_EVENTS) {
		events[n_events].kind = ev->kind;
		snprintf(events[n_events].reader, sizeof(events[n_events].reader), "%s", ev->reader);
		events[n_events].atr_len = ev->atr_len;
		n_events++;
	}
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits until an event of that kind for that reader arrives at index >= from; its index. */
static long wait_event(size_t from, mk_pcsc_event_kind kind, const char *reader, double secs)
{
	double until = now() + secs;
	long found = -1;

	pthread_mutex_lock(&lock);
	for (;;) {
		for (size_t i = from; i < n_events && found < 0; i++)
			if (events[i].kind == kind && strcmp(events[i].reader, reader) == 0)
				found = (long)i;
		if (found >= 0 || now() >= until)
			break;
		pthread_mutex_unlock(&lock);
		usleep(20000);
		pthread_mutex_lock(&lock);
	}
	pthread_mutex_unlock(&lock);
	return found;
}

static size_t count(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = n_events;
	pthread_mutex_unlock(&lock);
	return n;
}

static const mk_pcsc_reader *find_reader(const mk_pcsc_reader *a, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i].name, name) == 0)
			return &a[i];
	return NULL;
}

/* Another PC/SC client takes the card exclusively: possible only if nobody holds it. */
static bool take_exclusively(void)
{
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
	DWORD proto;
	LONG rv;

	if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx) != SCARD_S_SUCCESS)
		return false;
	rv = SCardConnect(ctx, MKT_VPCD_READER, SCARD_SHARE_EXCLUSIVE,
			  SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto);
	if (rv == SCARD_S_SUCCESS)
		SCardDisconnect(h, SCARD_LEAVE_CARD);
	else
		mkt_diag("SCardConnect(EXCLUSIVE): %s", pcsc_stringify_error(rv));
	SCardReleaseContext(ctx);
	return rv == SCARD_S_SUCCESS;
}

int main(void)
{
	mk_pcsc_reader *rd = NULL;
	mk_pcsc *m = NULL;
	size_t n = 0, mark;
	const mk_pcsc_reader *r;
	long i;
	double t;

	/* the parts first, so that a missing one skips before anything runs */
	mkt_vicc_check();
	mkt_pcscd_start();
	mkt_pcscd_stop(); /* its socket stays: clients find nobody behind it */

	mkt_ok(mk_pcsc_start(on_event, NULL, &m) == 0, "the monitor starts without a pcscd");
	sleep(1);
	mkt_ok(count() == 0 && !mk_pcsc_connected(m), "no pcscd: no events, not connected");
	mkt_ok(mk_pcsc_readers(m, &rd, &n) == 0 && n == 0, "and no readers");
	mk_pcsc_reader_array_free(rd, n);

	mkt_pcscd_start();
	t = now();
	i = wait_event(0, MK_PCSC_READER_ADDED, MKT_VPCD_READER, 15);
	mkt_ok(i >= 0, "pcscd started: the monitor finds it on a retry (%.1f s) and reports "
	       "\"%s\"", now() - t, MKT_VPCD_READER);
	mkt_ok(wait_event(0, MK_PCSC_READER_ADDED, "Virtual PCD 00 01", 5) >= 0,
	       "and the second vpcd reader");
	mkt_ok(mk_pcsc_connected(m), "connected");
	mkt_ok(wait_event(0, MK_PCSC_CARD_INSERTED, MKT_VPCD_READER, 0) < 0,
	       "no card reported while the reader is empty");

	mark = count();
	mkt_vicc_insert();
	i = wait_event(mark, MK_PCSC_CARD_INSERTED, MKT_VPCD_READER, 5);
	mkt_ok(i >= 0, "vicc started: card inserted in %s", MKT_VPCD_READER);
	if (i >= 0)
		mkt_ok(events[i].atr_len > 0 && events[i].atr_len <= MK_PCSC_MAX_ATR,
		       "with its ATR (%zu bytes)", events[i].atr_len);
	mkt_ok(mk_pcsc_readers(m, &rd, &n) == 0, "reader snapshot");
	r = find_reader(rd, n, MKT_VPCD_READER);
	mkt_ok(r && r->card_present && r->atr_len > 0, "the snapshot shows the card");
	mkt_ok(r && !r->card_exclusive && !r->card_in_use, "the monitor does not hold the card");
	mk_pcsc_reader_array_free(rd, n);
	mkt_ok(take_exclusively(), "another program can take the card exclusively meanwhile");

	mark = count();
	mkt_vicc_remove();
	mkt_ok(wait_event(mark, MK_PCSC_CARD_REMOVED, MKT_VPCD_READER, 5) >= 0,
	       "vicc stopped: card removed");
	mkt_ok(wait_event(mark, MK_PCSC_READER_REMOVED, MKT_VPCD_READER, 0) < 0,
	       "the reader stays");

	mark = count();
	mkt_vicc_insert();
	mkt_ok(wait_event(mark, MK_PCSC_CARD_INSERTED, MKT_VPCD_READER, 5) >= 0,
	       "a card again: inserted");

	mark = count();
	mkt_pcscd_stop();
	mkt_ok(wait_event(mark, MK_PCSC_CARD_REMOVED, MKT_VPCD_READER, 5) >= 0 &&
		       wait_event(mark, MK_PCSC_READER_REMOVED, MKT_VPCD_READER, 5) >= 0,
	       "pcscd stopped: the card and the readers are reported gone");
	mkt_ok(!mk_pcsc_connected(m), "not connected");
	mkt_vicc_remove(); /* vicc lost its reader with pcscd */

	mark = count();
	mkt_pcscd_start();
	t = now();
	mkt_ok(wait_event(mark, MK_PCSC_READER_ADDED, MKT_VPCD_READER, 15) >= 0,
	       "pcscd back: readers reported again (%.1f s)", now() - t);

	t = now();
	m = mk_pcsc_stop(m);
	mkt_ok(now() - t < 2.0, "the monitor stops at once while it waits on pcscd (%.2f s)",
	       now() - t);
	mkt_pcscd_stop();
	return mkt_done();
}
