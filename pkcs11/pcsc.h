/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PC/SC-lite reader and card events. A monitor thread waits in SCardGetStatusChange() on
 * every reader and on "\\?PnP?\Notification", and reports readers that are plugged in or
 * pulled out and cards that are inserted or removed. It reads reader states only: it never
 * connects to a card (no SCardConnect), so it never holds one, shared or exclusive, and never
 * opens a transaction; the browser, OpenSC's tools and others keep the card to themselves.
 *
 * When pcscd cannot be reached (not installed, not running, stopped later) the monitor
 * says nothing and tries again after 1, 2, 4, ... up to 60 seconds; when it comes back,
 * its readers are reported as plugged in.
 *
 * Names and ATRs come from pcscd and are bounded here: at most MK_PCSC_MAX_READERS readers
 * of at most MK_PCSC_MAX_NAME bytes, ATRs of at most 33 bytes.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

#define MK_PCSC_MAX_READERS 64
#define MK_PCSC_MAX_NAME 256
#define MK_PCSC_MAX_ATR 33

typedef struct mk_pcsc mk_pcsc;

typedef enum mk_pcsc_event_kind {
	MK_PCSC_READER_ADDED,
	MK_PCSC_READER_REMOVED,
	MK_PCSC_CARD_INSERTED,
	MK_PCSC_CARD_REMOVED,
} mk_pcsc_event_kind;

typedef struct mk_pcsc_event {
	mk_pcsc_event_kind kind;
	const char *reader;  /* the PC/SC reader name; valid during the call */
	const uint8_t *atr;  /* CARD_INSERTED: the card's ATR (atr_len bytes), else NULL */
	size_t atr_len;
} mk_pcsc_event;

/* Called on the monitor thread, one call per event; must return quickly. */
typedef void (*mk_pcsc_fn)(const mk_pcsc_event *ev, void *userdata);

/* "reader added", "reader removed", "card inserted", "card removed". */
const char *mk_pcsc_event_name(mk_pcsc_event_kind k);

/*
 * Starts the monitor thread; fn receives the events (a card already in a reader when the
 * reader is first seen counts as inserted). Returns 0 and *ret (stop with mk_pcsc_stop),
 * -ENOMEM, or -EAGAIN when no thread can be started. pcscd need not be running.
 */
int mk_pcsc_start(mk_pcsc_fn fn, void *userdata, mk_pcsc **ret);

/* Stops the thread (SCardCancel, join) and frees m. No call of fn follows. NULL ok. */
mk_pcsc *mk_pcsc_stop(mk_pcsc *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(mk_pcsc *, mk_pcsc_stop)

typedef struct mk_pcsc_reader {
	char *name;
	bool card_present;
	bool card_in_use;  /* SCARD_STATE_INUSE: some program has the card open */
	bool card_exclusive; /* SCARD_STATE_EXCLUSIVE: some program holds it exclusively */
	uint8_t atr[MK_PCSC_MAX_ATR];
	size_t atr_len;
} mk_pcsc_reader;

/*
 * The readers as the monitor last saw them (a snapshot; *ret_n may be 0). Sets *ret (free
 * with mk_pcsc_reader_array_free) and *ret_n. Returns 0 or -ENOMEM.
 */
int mk_pcsc_readers(mk_pcsc *m, mk_pcsc_reader **ret, size_t *ret_n);
void mk_pcsc_reader_array_free(mk_pcsc_reader *a, size_t n);

/* Whether the monitor is talking to pcscd right now. */
bool mk_pcsc_connected(mk_pcsc *m);
