/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's token watcher: cards and tokens that come and go, and calls whose token
 * hangs or goes away.
 *
 *  - A PC/SC monitor (pkcs11/pcsc.h) reports readers and cards at once; a card pulled out
 *    marks the tokens in its reader absent before anything else happens.
 *  - A poller runs the cheap slot check (mk_p11_check_slots) every poll interval, for tokens
 *    without PC/SC: USB tokens with their own module, SoftHSM, HSMs.
 *  - On a change it rescans (mk_agent_list_tokens: the agent's key cache and its own
 *    TokensChanged), tells the agent which tokens went (mk_agent_token_gone: their PIN
 *    dialogs end, the agent logs out of them), and reports TokensChanged / KeysChanged.
 *  - A watchdog answers for a call whose token did not answer within the timeout (TokenError)
 *    or was removed while the call was in it (TokenAbsent), while its worker is still stuck in
 *    the module; the worker's late result is dropped. Until a stuck call returns, new calls
 *    on that token fail at once instead of joining it.
 *
 * The watcher finds the token layer through mk_p11_set_hook(): create it before the agent.
 *
 * Settings come from mlskeyd.conf ([agent] token-timeout, slot-poll-ms, pcsc; see
 * agent/agent-config.h).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "agent/agent-config.h"
#include "agent/ops.h"
#include "pkcs11/p11.h"

typedef struct mk_tokens mk_tokens;
typedef struct mk_tokens_call mk_tokens_call;

typedef struct mk_tokens_settings {
	unsigned timeout_ms; /* 0: calls wait for their token however long it takes */
	unsigned poll_ms;    /* 0: no slot polling (PC/SC events only) */
	bool pcsc;
} mk_tokens_settings;


/* The watcher's settings from the agent's configuration. */
void mk_tokens_settings_from_config(const mk_config *c, mk_tokens_settings *ret);

#define MK_TOKENS_CHANGED 1u /* a token or card came or went */
#define MK_KEYS_CHANGED 2u   /* ... and with it the keys one can list */

/* Any thread: what changed (MK_TOKENS_*); must not block. */
typedef void (*mk_tokens_notify_fn)(unsigned what, void *userdata);

/*
 * On the watchdog thread: answer the call `job` with error r now (the message is the
 * thread's mk_error_message()). The job still belongs to its worker, which is kept from
 * freeing it until this returns.
 */
typedef void (*mk_tokens_answer_fn)(void *job, int r, void *userdata);

/*
 * Creates the watcher (no thread yet) and hooks it into the token layer, so that the next
 * mk_p11_open() is watched. Returns 0 and *ret, or -ENOMEM.
 */
int mk_tokens_new(const mk_tokens_settings *s, mk_tokens **ret);

/*
 * Starts the monitor, the poller and the watchdog for agent a (which must have been made
 * after mk_tokens_new). Returns 0 or a negative errno.
 */
int mk_tokens_start(mk_tokens *t, mk_agent *a, mk_tokens_notify_fn notify,
		    mk_tokens_answer_fn answer, void *userdata);

/* Stops the threads, unhooks, frees. Every call must have ended. NULL ok; returns NULL. */
mk_tokens *mk_tokens_free(mk_tokens *t);

/* Every slot of the watched token layer (mk_p11_list_slots). -ENODEV before it exists. */
int mk_tokens_list_slots(mk_tokens *t, mk_slot_info **ret, size_t *ret_n);

/* --- calls ------------------------------------------------------------------------------- */

/*
 * Registers a call before it is queued on `queue` (its token's worker queue). -ETIMEDOUT
 * with a message when that token has a call that did not answer (answer the caller now),
 * -ENOMEM. On 0 the call must end with mk_tokens_call_drop() (never queued) or with
 * mk_tokens_call_begin() and mk_tokens_call_end() on its worker.
 */
int mk_tokens_call_new(mk_tokens *t, void *job, const char *queue, mk_tokens_call **ret);

/* The call was not queued after all: forget it. true when the watchdog answered it meanwhile
 * (do not answer it again). */
bool mk_tokens_call_drop(mk_tokens_call *c);

/*
 * Worker, before the work: watches this thread's token work for the call. false when the
 * watchdog has answered the call already (skip the work, still call mk_tokens_call_end).
 */
bool mk_tokens_call_begin(mk_tokens_call *c);

/*
 * Worker, after the work: true when the worker answers the call, false when the watchdog did
 * (drop the reply). Frees c.
 */
bool mk_tokens_call_end(mk_tokens_call *c);
