/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the token layer: modules, tokens with their session pools, key references, and
 * the one CK_RV translation. Nothing outside pkcs11/ (and its tests) includes this.
 *
 * Locking: mk_p11.lock guards the module and token arrays (refresh appends to them);
 * mk_token.lock guards a token's presence, slot, generation and session pool. The order is
 * always mk_p11.lock before mk_token.lock. No lock is held across a blocking token call
 * except C_OpenSession/C_CloseSession bookkeeping where noted.
 */
#pragma once

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>
#include <pthread.h>

#include "pkcs11/p11.h"

/* PKCS#11 3.0 names that p11-kit's 2.40 header lacks. */
#ifndef CKK_EC_MONTGOMERY
#define CKK_EC_MONTGOMERY 0x41UL
#endif
#ifndef CKM_EC_MONTGOMERY_KEY_PAIR_GEN
#define CKM_EC_MONTGOMERY_KEY_PAIR_GEN 0x1056UL
#endif
#ifndef CKR_CURVE_NOT_SUPPORTED
#define CKR_CURVE_NOT_SUPPORTED 0x140UL
#endif

/* Caps on what a token may hand us (checked before anything is allocated). */
#define MK_P11_MAX_ATTR 4096u     /* any variable-length attribute we read */
#define MK_P11_MAX_OBJECTS 4096u  /* key objects per token and class */
#define MK_P11_MAX_SLOTS 1024u
#define MK_P11_MAX_PIN 256u
#define MK_P11_MAX_LABEL 255u
#define MK_P11_DEFAULT_SESSIONS 8u

/* Who is inside a module, its slot-event state (p11.c; see module_enter()). */
typedef struct mk_module_state mk_module_state;

typedef struct mk_module {
	CK_FUNCTION_LIST *f;
	char *name; /* library description, trimmed */
	char *path; /* resolved file name, or NULL */
	CK_INFO info;
	bool registered; /* from p11-kit's list (released with it) */
	bool skip;       /* loaded but not scanned (p11-kit trust-policy modules) */
	bool needs_reinit; /* sees tokens made by other processes only after C_Initialize */
	mk_module_state *st; /* allocated once the module is in the list */
} mk_module;

typedef struct mk_token {
	unsigned n_ref; /* atomic */
	CK_FUNCTION_LIST *f;
	const mk_module *mod; /* valid while !closed */
	unsigned scan;        /* last refresh that saw it; guarded by mk_p11.lock */
	CK_TOKEN_INFO ti;     /* identity as first read: label, manufacturer, model, serial */
	char *label, *manufacturer, *model, *serial, *uri;
	char *module_name;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	CK_SLOT_ID slot;
	bool present;
	bool closed; /* the mk_p11 was freed: no more calls into the module */
	bool rw;     /* sessions are read-write */
	bool ecdh_wrapped; /* atomic: the token wants ECDH peer points DER-wrapped */
	unsigned gen; /* bumped at every removal and re-insertion */
	CK_SESSION_HANDLE *idle;
	size_t n_idle, n_open, max;

	/* Slot events and watched calls (issue 6); guarded by lock. */
	unsigned stuck;             /* calls given up on for not answering, still in the module */
	long long stuck_since_ms;   /* CLOCK_MONOTONIC, when the first of them began */
	char *slot_desc;            /* its slot's description: the PC/SC reader for OpenSC */
	bool hw_slot;               /* CKF_HW_SLOT: C_GetTokenInfo may reach a card */
	bool rebind;                /* module re-initialised: match by identity in any slot */
	mk_key_info *keys;          /* the keys last listed, shown unusable while it is away */
	size_t n_keys;
	bool keys_known;
} mk_token;

struct mk_p11 {
	pthread_mutex_t lock;
	CK_FUNCTION_LIST **registered; /* p11-kit's NULL-terminated list, or NULL */
	mk_module *modules; /* only appended to in mk_p11_open, before any token points here */
	size_t n_modules;
	mk_token **tokens;
	size_t n_tokens;
	unsigned max_sessions;
	unsigned scan; /* refresh counter */
	char **pcsc_readers; /* the PC/SC readers watched now (mk_p11_pcsc_update) */
	bool *pcsc_cards;    /* ... and whether a card is in each */
	size_t n_pcsc_readers;
};

/* A borrowed session: the handle and the token generation it was opened under. */
typedef struct mk_session {
	CK_SESSION_HANDLE h;
	unsigned gen;
} mk_session;

struct mk_key {
	unsigned n_ref; /* atomic */
	mk_token *tok;
	mk_key_info info;
	mk_curve curve;
	CK_KEY_TYPE key_type;
	pthread_mutex_t lock; /* guards handle and handle_gen */
	CK_OBJECT_HANDLE handle;
	unsigned handle_gen;
	bool handle_valid;
	/* CKA_ALWAYS_AUTHENTICATE of the private object, read once per handle (p11-ops.c) */
	CK_OBJECT_HANDLE auth_handle;
	unsigned auth_gen;
	bool auth_known, always_auth;
};

/* --- p11.c ------------------------------------------------------------------------------- */

/*
 * Translates a CK_RV into the project's errno vocabulary (0 for CKR_OK) and records an
 * mk_error() message that names the token (t may be NULL) and what to do. `what` says
 * what was being done, e.g. "sign with key \"x\"". The only place CK_RV is translated.
 */
int mk_p11_error(CK_RV rv, const mk_token *t, const char *what);

/* true for the codes that mean the session (not just the call) is gone. */
bool mk_p11_rv_session_dead(CK_RV rv);

mk_token *mk_token_ref(mk_token *t);
void mk_token_unref(mk_token *t);

/*
 * Borrows a session from t's pool, opening one if none is idle and fewer than max are
 * open, else waits for one. -ENOMEDIUM when the token is absent, -ENODEV after
 * mk_p11_free, or the translated C_OpenSession error.
 */
int mk_token_borrow(mk_token *t, mk_session *ret);

/*
 * Returns a borrowed session to the pool. discard: the session is unusable (close it);
 * a session from an older generation is closed too.
 */
void mk_token_return(mk_token *t, mk_session *s, bool discard);

/* Is the user logged in on t (session state of a pooled session)? */
bool mk_token_logged_in(mk_token *t, CK_SESSION_HANDLE s);

/*
 * Resolves uri (a token or key URI) to every known token it matches, present or not, as new
 * references in *ret (free with mk_token_array_unref). -EINVAL for a malformed URI or one
 * with attributes we do not know. When ret_uri is not NULL it receives the parsed URI
 * (p11_kit_uri_free).
 */
int mk_p11_match_tokens(mk_p11 *p, const char *uri, mk_token ***ret, size_t *ret_n,
			P11KitUri **ret_uri);
void mk_token_array_unref(mk_token **a, size_t n);

/*
 * The one token uri names: a unique present match, else the unique match. -ENODEV if
 * none, -EINVAL when several present tokens match (with a message listing how to narrow
 * it), -ENOMEDIUM when the only match is absent.
 */
int mk_p11_resolve_token(mk_p11 *p, const char *uri, mk_token **ret);

/* Copies a blank-padded PKCS#11 string field into a new NUL-terminated, trimmed string. */
char *mk_p11_strdup_field(const unsigned char *field, size_t n);

/* Milliseconds on CLOCK_MONOTONIC (never 0). */
long long mk_p11_now_ms(void);

/* --- p11-key.c --------------------------------------------------------------------------- */

/* Remembers a token's listed keys (copies) to show while it is absent or not answering. */
void mk_token_remember_keys(mk_token *t, const mk_key_info *a, size_t n);

/* The private key object of k for the session s (re-found when the token generation moved
 * on, or when refind is set). 0 and *ret, -ENOKEY, -ENOTCONN, or a translated error. */
int mk_key_handle(mk_key *k, const mk_session *s, bool refind, CK_OBJECT_HANDLE *ret);

/* --- p11-cert.c -------------------------------------------------------------------------- */

/* A token's X.509 certificates, parsed once for a listing (opaque). */
typedef struct mk_p11_certs mk_p11_certs;

/*
 * Reads and parses every CKC_X_509 certificate object on t with session s (certificates that
 * do not parse are left out). 0 and *ret (mk_p11_certs_free), or a translated token error.
 */
int mk_p11_certs_read(const mk_token *t, CK_SESSION_HANDLE s, mk_p11_certs **ret);
mk_p11_certs *mk_p11_certs_free(mk_p11_certs *c); /* NULL ok; returns NULL */

/*
 * Sets k->has_certificate, and k->cert_subject, cert_issuer, cert_not_before and
 * cert_not_after from the certificate that carries k's public key (the leaf that
 * mk_p11_key_certificates would return). 0 or -ENOMEM.
 */
int mk_p11_certs_describe_key(const mk_p11_certs *c, mk_key_info *k);

/* --- p11-ops.c --------------------------------------------------------------------------- */

/*
 * Converts a raw r||s ECDSA signature (n bytes, even, at most 2*66) into DER
 * SEQUENCE { INTEGER r, INTEGER s } in out (cap bytes; 141 always suffice).
 * Returns 0 and *ret_len, or -EINVAL. Exposed for the unit test.
 */
int mk_p11_ecdsa_raw_to_der(const uint8_t *rs, size_t n, uint8_t *out, size_t cap,
			    size_t *ret_len);
