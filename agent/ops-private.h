/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the agent: what agent/ops.c (operations, key cache) and agent/login.c (the PIN
 * flow: dialogs, pin-files, logouts) share. Nothing else includes this.
 *
 * Locking: mk_agent.lock guards the key cache, the token state, the gate list and every
 * gate's fields below it, and the agent thread's requests; it is only held for short
 * bookkeeping, never across a token call or a dialog. A gate's `dialog` mutex is held for
 * one login (dialogs and C_Login) on that token; the order is dialog before lock.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "agent/ops.h"
#include "agent/pinentry.h"

/* Found keys kept per URI string; past this many the cache starts over. */
#define KEY_CACHE_MAX 1024

/* Everything the agent knows about the login of one token (never freed before the agent). */
typedef struct gate {
	struct gate *next;
	char *uri;               /* the token's own URI (mk_token_info.uri) */
	pthread_mutex_t dialog;  /* one login (dialogs + C_Login) at a time on this token */
	int cancel_fd;           /* eventfd: ends a dialog on this token (removal, shutdown) */
	/* under mk_agent.lock: */
	bool logged_in;          /* the agent logged in and has not logged out since */
	unsigned busy;           /* operations running on the token now */
	long long last_use_ms;   /* CLOCK_MONOTONIC: when the last operation ended */
	int outcome;             /* how the last login ended: 0 or an error to share */
	long long outcome_ns;    /* ... and when (mk_agent_clock_ns) */
	char *outcome_msg;       /* ... and its message */
	bool gone;               /* removed: a dialog that ends now ends with TokenAbsent */
	bool removed;            /* reported removed: the agent thread logs out of it */
	bool disabled;           /* its pin-file was refused: no login until the file changes */
	struct stat disabled_st; /* the file as it was when it was refused */
} gate;

typedef struct cached_key {
	char *uri; /* as the client spelled it */
	mk_key *key;
	gate *gate; /* of the key's token; NULL when there was no memory for one */
} cached_key;

struct mk_agent {
	const mk_config *cfg;
	mk_p11 *p11;
	pthread_mutex_t lock;
	cached_key *cache;
	size_t n_cache;
	gate *gates;
	char *token_state; /* what ListTokens saw last, to notice changes */
	mk_agent_notify_fn notify;
	void *notify_ud;
	bool aborting; /* dialogs end at once: the agent stops */
	/* the agent's thread (login.c): idle logouts and requested ones */
	pthread_t thread;
	bool thread_started;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;
	bool lock_pending;   /* a request to log out of every token ... */
	char lock_why[128];  /* ... and why */
	bool rescan;       /* a token was removed: find which, and log out of it */
	/* the policy (ops.c), under lock: */
	struct confirmed *confirmed; /* confirm = first: what was allowed, until a logout */
	size_t n_confirmed;
	char **consumed;   /* single-use keys used up (their URIs), so no handle outlives them */
	size_t n_consumed;
	pthread_mutex_t once; /* one Welcome decryption with a single-use key at a time */
	mk_agent_notify_fn keys_notify; /* a single-use key was used up: KeysChanged */
	void *keys_notify_ud;
};

/* A confirmation given (confirm = first): for this process, key, operation and label. */
typedef struct confirmed {
	pid_t pid;
	unsigned long long start_time;
	char *exe;
	char *key;       /* the key's URI (mk_key_info.uri), or the token's for GenerateKey */
	char *token_uri; /* to forget it at the token's logout */
	unsigned op;
	char *label;     /* NULL for operations without one */
} confirmed;

/* One operation of a client, for the context-specific login of its key (login.c). */
typedef struct mk_call {
	mk_agent *a;
	const mk_caller *c;
	const char *verb, *uri; /* what is done, with which key: for the dialog */
	mk_pinentry_popup *popup; /* a PIN-pad notice of this call's context login */
	struct stat file_st;      /* the pin-file as read for the last context login */
} mk_call;

/* --- ops.c ------------------------------------------------------------------------------- */

/* Forgets every found key (after a logout, a removal, DeleteKey). */
void mk_agent_cache_clear(mk_agent *a);

/* Rescans slots and emits TokensChanged when the tokens differ from the last look. */
void mk_agent_refresh_tokens(mk_agent *a);

/* The info of the token of uri (a token or key URI), rescanning once for a new token. */
int mk_agent_token_get(mk_agent *a, const char *uri, mk_token_info *ret);

/* Forgets the confirmations (confirm = first) given for token_uri's keys (NULL: all). */
void mk_agent_confirmations_forget(mk_agent *a, const char *token_uri);

/* "VERB with key \"LABEL\"" (or "VERB with a key") into buf, for dialogs and logs. */
void mk_agent_describe(char *buf, size_t n, const char *verb, const char *uri);

/* --- login.c ----------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in milliseconds. */
long long mk_now_ms(void);

/* Starts the agent's thread (idle logouts, requested logouts). 0 or a negative errno. */
int mk_login_start(mk_agent *a);

/* Stops and joins the thread, then frees the gates. Safe when it never started. */
void mk_login_free(mk_agent *a);

/* The gate of the token token_uri (created on first use); NULL only without memory. */
gate *mk_gate_get(mk_agent *a, const char *token_uri);

/* An operation on g's token starts / ends (for the idle timeout). g may be NULL. */
void mk_gate_enter(mk_agent *a, gate *g);
void mk_gate_leave(mk_agent *a, gate *g);

/*
 * Logs in to the token of uri (a key or token URI) for the call c that arrived at t_call_ns,
 * to do `what`: one login per token at a time, through the pin-file if the token has one,
 * else by asking the person (up to pin-attempts PINs, each used for exactly one C_Login).
 * A call that was waiting while the last dialog for the token ended with an error gets
 * that error without a dialog of its own. Returns 0 or an errno with a message.
 */
int mk_login(mk_agent *a, const mk_caller *c, const char *uri, const char *what,
	     long long t_call_ns);

/* The mk_p11_auth_fn of a call (userdata: its mk_call): context-specific logins. */
int mk_login_context_pin(void *userdata, const mk_key_info *key, unsigned attempt,
			 int last_error, mk_secret **ret_pin);

/*
 * Asks the person a yes/no question (OK "Allow", Cancel "Deny") through the pinentry, one
 * dialog at a time on g's token (under its dialog mutex). When already (may be NULL) says
 * true once the mutex is held, no dialog is shown; allowed (may be NULL) is called, still
 * under the mutex, when the person allowed it, so that calls waiting for the same question
 * find the answer. 0 = allowed; -ECANCELED (Deny, closed, timeout), -ENOMEDIUM (the token
 * was removed meanwhile), -EACCES (no pinentry).
 */
int mk_login_confirm(mk_agent *a, gate *g, const char *title, const char *desc,
		     bool (*already)(void *userdata), void (*allowed)(void *userdata),
		     void *userdata);

/* The agent logged out of token_uri (NULL: of every token): its idle timer stops. */
void mk_login_forget(mk_agent *a, const char *token_uri);
