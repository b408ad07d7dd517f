/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The token layer: PKCS#11 modules (through p11-kit), their tokens, and the EC key pairs on
 * them that MLS can use. Private keys never leave a token: this layer signs and derives
 * on the token and hands back only signatures and ECDH results.
 *
 * Thread safety: every function may be called from several threads at once. Each operation
 * borrows a session from its token's pool (opened once, reused) and returns it afterwards;
 * modules are initialised with CKF_OS_LOCKING_OK.
 *
 * Errors: 0 or a negative errno as in common/error.h, with an mk_error() message that names
 * the token and says what to do. CK_RV codes are translated only in this directory.
 *
 * Tokens and keys are named by RFC 7512 pkcs11: URIs, built and parsed with p11-kit's
 * P11KitUri. A token URI carries token, manufacturer, model and serial; a key URI adds
 * id (CKA_ID), object (CKA_LABEL) and type=private. Both are stable across restarts and
 * re-insertion because they contain nothing but what the token stores.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bytes.h"
#include "common/curve.h"
#include "common/macros.h"
#include "common/secmem.h"

typedef struct mk_p11 mk_p11; /* loaded modules and their tokens */
typedef struct mk_key mk_key; /* a reference to a usable key pair; refcounted */

/* --- algorithms -------------------------------------------------------------------------- */

typedef enum mk_key_alg {
	MK_ALG_NONE = 0, /* present on the token, but not usable by mlskey */
	MK_ALG_ECDSA_P256,
	MK_ALG_ECDSA_P384,
	MK_ALG_ECDSA_P521,
	MK_ALG_ED25519,
	MK_ALG_DHKEM_P256,
	MK_ALG_DHKEM_P384,
	MK_ALG_DHKEM_P521,
	MK_ALG_DHKEM_X25519,
	_MK_ALG_MAX,
} mk_key_alg;

/* "ecdsa-p256", ..., "ed25519", "dhkem-p256", ..., "dhkem-x25519"; "unsupported" for NONE. */
const char *mk_key_alg_name(mk_key_alg a);
/* The inverse of mk_key_alg_name(); MK_ALG_NONE for an unknown name. */
mk_key_alg mk_key_alg_from_name(const char *name);
mk_curve mk_key_alg_curve(mk_key_alg a);
/* true for the four signature algorithms, false for the HPKE (derive) ones and NONE. */
bool mk_key_alg_is_signature(mk_key_alg a);

/* --- modules ----------------------------------------------------------------------------- */

typedef struct mk_p11_options {
	bool use_p11_kit;                /* load the modules p11-kit registers */
	const char *const *module_paths; /* NULL-terminated list of modules to load by path */
	unsigned max_sessions;           /* per token; 0 means the default (8) */
} mk_p11_options;

/*
 * Loads and initialises the modules (p11-kit's registered ones and/or the given paths, as
 * one list; a module loaded both ways is used once) and scans their slots. A module that
 * fails to load is skipped if others load; -ENOENT with a message if none does.
 * Returns 0 and *ret (free with mk_p11_free), or a negative errno.
 */
int mk_p11_open(const mk_p11_options *opts, mk_p11 **ret);

/* Logs out, closes sessions, finalises the modules. Accepts NULL; returns NULL. */
mk_p11 *mk_p11_free(mk_p11 *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(mk_p11 *, mk_p11_free)

/*
 * Rescans slots and tokens. Tokens that vanished are marked absent: their sessions are
 * dropped and operations on their keys fail with -ENOMEDIUM. Left alone: a module with a call
 * given up as not answering (mk_p11_watch_give_up), and a smartcard module watched by PC/SC
 * that had no PC/SC event since its last scan (mk_p11_pcsc_update). Returns 0 or an errno.
 */
int mk_p11_refresh(mk_p11 *p);

/* --- tokens ------------------------------------------------------------------------------ */

typedef struct mk_token_info {
	char *uri;          /* pkcs11:model=...;manufacturer=...;serial=...;token=... */
	char *label;        /* trailing blanks removed, as every string here */
	char *manufacturer;
	char *model;
	char *serial;
	char *module;       /* the module's library description, or its path */
	bool present;
	bool logged_in;
	bool login_required;      /* CKF_LOGIN_REQUIRED */
	bool pin_count_low;       /* CKF_USER_PIN_COUNT_LOW */
	bool pin_final_try;       /* CKF_USER_PIN_FINAL_TRY */
	bool pin_locked;          /* CKF_USER_PIN_LOCKED */
	bool protected_auth_path; /* CKF_PROTECTED_AUTHENTICATION_PATH: PIN pad */
	bool write_protected;     /* CKF_WRITE_PROTECTED */
} mk_token_info;

/*
 * A snapshot of every token in every loaded module, in module and slot order. Flags are
 * read afresh (C_GetTokenInfo). Sets *ret (free with mk_token_info_array_free) and *ret_n.
 */
int mk_p11_list_tokens(mk_p11 *p, mk_token_info **ret, size_t *ret_n);
void mk_token_info_array_free(mk_token_info *a, size_t n);

/* The info of the one token that uri matches. -ENODEV if none, -EINVAL if uri is no URI. */
int mk_p11_get_token(mk_p11 *p, const char *uri, mk_token_info *ret);
void mk_token_info_clear(mk_token_info *t);

/*
 * Logs the user in on the token that token_uri names (pin_len bytes, not NUL-terminated;
 * pin may be NULL with pin_len 0 on a PIN-pad reader). Tries exactly once: never retries.
 * Returns 0 (also when already logged in), -EKEYREJECTED (wrong PIN), -EKEYREVOKED
 * (locked), -ENODEV, -ENOMEDIUM, -EIO.
 */
int mk_p11_login(mk_p11 *p, const char *token_uri, const uint8_t *pin, size_t pin_len);

/* Logs out of the token (NULL: every token). Returns 0 or -ENODEV. */
int mk_p11_logout(mk_p11 *p, const char *token_uri);

/* --- keys -------------------------------------------------------------------------------- */

typedef struct mk_key_info {
	char *uri;            /* pkcs11:...;id=...;object=...;type=private */
	char *token_uri;
	char *label;          /* CKA_LABEL, may be "" */
	uint8_t *id;          /* CKA_ID */
	size_t id_len;
	mk_key_alg alg;       /* MK_ALG_NONE: not usable, see reason */
	char *reason;         /* why the key cannot be used by mlskey, or NULL */
	uint8_t *public_key;  /* MLS encoding (04||X||Y, or raw 32 bytes); NULL if unknown */
	size_t public_key_len;
	bool private_visible; /* the private object was seen (else: log in to read it) */
	bool can_sign, can_derive;
	bool local, never_extractable, always_sensitive, always_authenticate;
	bool has_certificate; /* an X.509 certificate on the token carries this public key */
	bool sensitive, extractable;
	/* of that certificate (the one mk_p11_key_certificates() returns first), else NULL/0 */
	char *cert_subject;   /* RFC 2253 string (OpenSSL's XN_FLAG_RFC2253), ASCII */
	char *cert_issuer;
	int64_t cert_not_before, cert_not_after; /* seconds since the epoch */
	bool single_use;      /* an mlskey single-use marker names it (MK_P11_GENERATE_SINGLE_USE);
				 the marker is private: only seen once logged in */
} mk_key_info;

/*
 * Every key pair on one token (token_uri) or on all (NULL). A pair is found from its public
 * key object (readable without login) and/or its private key object (often only after
 * login), matched by CKA_ID. Keys of other types (RSA, brainpool, ...) are listed with
 * alg MK_ALG_NONE and a reason. Sets *ret (free with mk_key_info_array_free), *ret_n.
 */
int mk_p11_list_keys(mk_p11 *p, const char *token_uri, mk_key_info **ret, size_t *ret_n);
void mk_key_info_array_free(mk_key_info *a, size_t n);
void mk_key_info_clear(mk_key_info *k);

/*
 * Finds the key pair that uri names and returns a reference to it (mk_key_unref). The
 * private object handle is looked up once and cached in the reference; later operations
 * do no object search. Returns -ENOKEY if no such key, -ENODEV / -ENOMEDIUM for its token,
 * -ENOTCONN if the private key is hidden until login, -EINVAL for a malformed uri.
 */
int mk_p11_find_key(mk_p11 *p, const char *uri, mk_key **ret);

mk_key *mk_key_ref(mk_key *k);
mk_key *mk_key_unref(mk_key *k); /* accepts NULL, returns NULL */
DEFINE_TRIVIAL_CLEANUP_FUNC(mk_key *, mk_key_unref)

/* Borrowed view of the key's info; valid as long as the reference. */
const mk_key_info *mk_key_get_info(const mk_key *k);

/*
 * Generates a key pair of algorithm alg on the token that token_uri names, with the given
 * label and a fresh random 16-byte CKA_ID. Private key: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE
 * TRUE, CKA_EXTRACTABLE FALSE, and exactly one of CKA_SIGN / CKA_DERIVE. X25519 tries
 * CKM_EC_MONTGOMERY_KEY_PAIR_GEN and falls back to SoftHSM's CKK_EC_EDWARDS form.
 * Sets *ret_uri (free()) to the new key's URI. Needs a login: -ENOTCONN otherwise.
 */
int mk_p11_generate_key(mk_p11 *p, const char *token_uri, mk_key_alg alg, const char *label,
			char **ret_uri);

/* mk_p11_generate_key_flags flags. */
#define MK_P11_GENERATE_SINGLE_USE (1u << 0)

/*
 * mk_p11_generate_key with flags. MK_P11_GENERATE_SINGLE_USE also creates, in the same
 * session, the key's single-use marker: a CKO_DATA object (CKA_TOKEN, CKA_PRIVATE,
 * CKA_MODIFIABLE FALSE, CKA_APPLICATION "mlskey", CKA_LABEL "single-use", CKA_VALUE = the
 * key's CKA_ID) that mk_key_info.single_use reflects; when the marker cannot be made, the
 * pair is destroyed and the error returned.
 */
int mk_p11_generate_key_flags(mk_p11 *p, const char *token_uri, mk_key_alg alg,
			      const char *label, unsigned flags, char **ret_uri);

/* Destroys both objects of the key pair that uri names, and its single-use marker. -ENOKEY
 * if none. */
int mk_p11_delete_key(mk_p11 *p, const char *uri);

/* --- certificates (p11-cert.c) ---------------------------------------------------------- */

/* Longest certificate chain read from or stored on a token; largest certificate (DER). */
#define MK_X509_CHAIN_MAX 10
#define MK_X509_MAX_DER 16384u

/*
 * The X.509 certificate on key's token whose public key equals key->public_key (matched by
 * the key itself, never by CKA_ID alone; of several, the one valid now, then the one with
 * the key's CKA_ID, then the one that ends last),
 * and the chain above it that the token holds, as mk_x509_chain_build() orders it: leaf
 * first, each DER, into *ret (free each with mk_bytes_clear, then the array) and *ret_n >= 1.
 * key is borrowed (token_uri and public_key are used). Needs no login. -ENOKEY when no
 * certificate carries the key's public key, -ENODEV / -ENOMEDIUM for its token.
 */
int mk_p11_key_certificates(mk_p11 *p, const mk_key_info *key, mk_bytes **ret, size_t *ret_n);

/*
 * Stores certs[0..n) (DER, leaf first) on key's token as CKO_CERTIFICATE/CKC_X_509 token
 * objects, readable without login (CKA_PRIVATE false), with CKA_SUBJECT, CKA_ISSUER,
 * CKA_SERIAL_NUMBER and CKA_VALUE from the DER. The leaf gets the key's CKA_ID and label;
 * a CA certificate gets the SHA-1 of its public key as CKA_ID and its subject's CN as label.
 * Everything is checked before anything is written: n in 1..MK_X509_CHAIN_MAX, each DER
 * parses whole, the leaf's public key is key->public_key, each next certificate issued the
 * one before (mk_x509_chain_check); -EINVAL with a message otherwise. A certificate whose
 * DER the token already holds is skipped. When a write fails, what this call wrote is
 * destroyed again. certs is only read. -ENOTCONN when the token wants a login first.
 */
int mk_p11_import_certificates(mk_p11 *p, const mk_key_info *key, const mk_bytes *certs,
			       size_t n);

/* What a certificate says, for listings and messages (mk_x509_describe). */
typedef struct mk_x509_info {
	char *subject; /* RFC 2253 (XN_FLAG_RFC2253), ASCII */
	char *issuer;
	int64_t not_before, not_after; /* seconds since the epoch (UTC) */
	bool self_signed;              /* its own key verifies it and it names itself as issuer */
} mk_x509_info;

/*
 * Whether der[0..n) is one whole DER X.509 certificate of at most MK_X509_MAX_DER bytes:
 * parsing only, no signature is checked (cheap enough for the bus thread). 0 or -EINVAL.
 */
int mk_x509_check(const uint8_t *der, size_t n);

/* Parses one DER certificate (all n bytes, nothing after it). 0 and *ret, or -EINVAL. */
int mk_x509_describe(const uint8_t *der, size_t n, mk_x509_info *ret);
void mk_x509_info_clear(mk_x509_info *i);

/*
 * The MLS encoding of a certificate's public key (04||X||Y for EC, raw 32 bytes for Ed25519
 * and X25519) into *ret. -EINVAL for a certificate that does not parse or another key type.
 */
int mk_x509_public_key(const uint8_t *der, size_t n, mk_bytes *ret);

/*
 * Orders a chain without any token: starting from leaf, appends from pool[0..n_pool) the
 * certificate that issued the last one (its subject is that one's issuer, X509_check_issued,
 * and its key verifies that one's signature, X509_verify), until a self-signed certificate,
 * no issuer in the pool, or MK_X509_CHAIN_MAX certificates in all; no pool entry is used
 * twice. Pool entries that do not parse are ignored. Sets ret_idx[0..*ret_n) to the pool
 * indexes after the leaf (ret_idx has room for MK_X509_CHAIN_MAX - 1). -EINVAL when the
 * leaf does not parse.
 */
int mk_x509_chain_build(const mk_bytes *leaf, const mk_bytes *pool, size_t n_pool,
			size_t *ret_idx, size_t *ret_n);

/*
 * Checks a chain as given (leaf first): 1..MK_X509_CHAIN_MAX certificates, each DER parses
 * whole (at most MK_X509_MAX_DER bytes), each next one issued the one before as in
 * mk_x509_chain_build(). 0 or -EINVAL with a message naming the certificate at fault.
 */
int mk_x509_chain_check(const mk_bytes *certs, size_t n);

/* --- operations -------------------------------------------------------------------------- */

/*
 * Signs msg with a signature key. ECDSA: hashes msg with the curve's hash (SHA-256/384/512)
 * in software, signs the digest with CKM_ECDSA, returns DER SEQUENCE{r,s}. Ed25519:
 * CKM_EDDSA over the whole message, returns raw R||S (64 bytes).
 * Returns -EOPNOTSUPP for a key that cannot sign, -ENOTCONN when a login is needed,
 * -ENOMEDIUM when the token is gone. A key with CKA_ALWAYS_AUTHENTICATE gets its
 * context-specific login through the thread's mk_p11_set_thread_auth() function.
 */
int mk_key_sign(mk_key *k, const uint8_t *msg, size_t n, mk_bytes *ret_sig);

/*
 * ECDSA only: signs a digest that the caller computed with the curve's hash (n must be the
 * hash length), returns DER. -EOPNOTSUPP for Ed25519 keys, -EINVAL for a wrong length.
 */
int mk_key_sign_digest(mk_key *k, const uint8_t *digest, size_t n, mk_bytes *ret_sig);

/* --- context-specific login (CKA_ALWAYS_AUTHENTICATE) ----------------------------------- */

/*
 * Asks for the PIN of one context-specific login: a key with CKA_ALWAYS_AUTHENTICATE wants
 * the user's PIN again for every signature, after C_SignInit and before C_Sign. key is the
 * key's info (borrowed for the call); attempt counts from 1 within one signature;
 * last_error is 0 on the first attempt, else the error of the previous one (-EKEYREJECTED
 * with its message). Returns 0 and *ret_pin (the token layer hands it to exactly one
 * C_Login(CKU_CONTEXT_SPECIFIC) and frees it at once), 0 with *ret_pin NULL for a login on
 * the reader's PIN pad, or a negative errno with a message, which ends the operation with
 * that error (and no further C_Login). The function decides how often to ask: the token
 * layer never retries a PIN by itself.
 */
typedef int (*mk_p11_auth_fn)(void *userdata, const mk_key_info *key, unsigned attempt,
			      int last_error, mk_secret **ret_pin);

/*
 * Sets the function that answers context-specific logins for the signatures made on the
 * calling thread (NULL: none; a key that wants one then fails with -EACCES). Per thread,
 * because the dialog names whoever asked for that signature: set it before the operation,
 * clear it after. Only signatures use it; C_DeriveKey has no place for such a login.
 */
void mk_p11_set_thread_auth(mk_p11_auth_fn fn, void *userdata);

/*
 * ECDH on the token with a derive key: validates peer (mk_curve_validate_point), runs
 * CKM_ECDH1_DERIVE (kdf CKD_NULL), reads the Ndh-byte result once, destroys the derived
 * object at once, and returns the bytes in wiping memory (*ret, mk_secret_free). An
 * all-zero X25519 result is refused with -EINVAL.
 */
int mk_key_derive(mk_key *k, const uint8_t *peer, size_t n, mk_secret **ret);

/* --- slots and slot events --------------------------------------------------------------- */

typedef struct mk_slot_info {
	char *uri;          /* pkcs11:library-description=...;slot-description=...;slot-id=N */
	char *description;  /* CK_SLOT_INFO, trimmed: the reader's name for smartcard modules */
	char *manufacturer;
	char *module;       /* the module's library description, or its path */
	unsigned long id;
	bool hardware;      /* CKF_HW_SLOT */
	bool removable;     /* CKF_REMOVABLE_DEVICE */
	bool token_present; /* CKF_TOKEN_PRESENT: a card or token is in it */
	char *token_uri;    /* the token mlskey uses in it, or NULL */
	const char *state;  /* static: "empty", "token", "unrecognized" (the module cannot read the
			       card), "uninitialized" (a token without CKF_TOKEN_INITIALIZED),
			       "unknown" (a card just came, not looked at yet), "error" */
} mk_slot_info;

/*
 * Every slot of every loaded module, in module and slot order, as the modules see them now
 * (C_GetSlotList(CK_FALSE), C_GetSlotInfo; C_GetTokenInfo for a card mlskey has no token
 * for). Sets *ret (free with mk_slot_info_array_free) and *ret_n. 0 or a negative errno.
 */
int mk_p11_list_slots(mk_p11 *p, mk_slot_info **ret, size_t *ret_n);
void mk_slot_info_array_free(mk_slot_info *a, size_t n);

/*
 * The cheap look for slot events that a poller runs every few seconds, module by module:
 * C_WaitForSlotEvent(CKF_DONT_BLOCK) where the module supports it, and C_GetSlotList(CK_TRUE)
 * compared with the last look; for software slots (no CKF_HW_SLOT, so no card to touch)
 * also C_GetTokenInfo. It never reaches a card in a reader when nothing changed. Modules that
 * see tokens made by other processes only after C_Initialize (SoftHSM) are re-initialised
 * and rescanned here instead, but only while no call is in flight on them and none of their
 * tokens is logged in (a re-initialisation would log it out). Modules with a call that did
 * not answer are left alone. Sets *ret_changed when the tokens changed or a refresh
 * (mk_p11_refresh) is due. Returns 0 or -ENOMEM.
 */
int mk_p11_check_slots(mk_p11 *p, bool *ret_changed);

/*
 * A reader reported its card removed (PC/SC): the present tokens in slots that this reader
 * backs (slot description = reader name, as OpenSC makes them) are marked absent at once:
 * their sessions are dropped, so is the login, and calls in flight on them see their token
 * gone (mk_p11_watch_get). The next refresh brings back whatever card is in it now, as a
 * new generation that needs a new login. Returns the number of tokens marked, or -EINVAL.
 */
int mk_p11_reader_removed(mk_p11 *p, const char *reader);

/*
 * The PC/SC readers that the agent's monitor watches now (none: no monitor, or pcscd is
 * away) and whether a card is in each (cards[i]), given after every reader or card event. A module whose hardware slots are all
 * among these readers (OpenSC and other smartcard modules) is from then on scanned only
 * after such an event: mk_p11_refresh() skips it otherwise and mk_p11_check_slots() never
 * polls it, because such a module tries to read a card it cannot read again at every
 * C_GetSlotList (OpenSC: seconds of APDUs), and PC/SC reports every change anyway. Reads
 * the modules' slot descriptions when the set of readers changed. A scan asks such a module
 * about a slot whose reader has a card even when C_GetSlotList does not list it yet
 * (OpenSC lists a card it cannot read only once C_GetSlotInfo looked at it). 0 or -ENOMEM.
 */
int mk_p11_pcsc_update(mk_p11 *p, const char *const *readers, const bool *cards, size_t n);

/*
 * The URIs of the tokens the layer holds present now, from its own table: no module call.
 * Sets *ret (an array of *ret_n strings; free each and the array) and *ret_n. 0 or -ENOMEM.
 */
int mk_p11_present_tokens(mk_p11 *p, char ***ret, size_t *ret_n);

/*
 * One process-wide hook, for the agent's token watcher: fn(p, true, userdata) once a
 * mk_p11_open() succeeded (before it returns), fn(p, false, userdata) when mk_p11_free()
 * starts (p is still whole; stop using it before returning). fn NULL removes the hook.
 */
typedef void (*mk_p11_hook_fn)(mk_p11 *p, bool opened, void *userdata);
void mk_p11_set_hook(mk_p11_hook_fn fn, void *userdata);

/* --- watched calls ----------------------------------------------------------------------- */

/*
 * A thread that attaches a watch has its token work recorded in it: each stretch from
 * borrowing a session of a token to returning it (the token call proper), with when it
 * began and on which token. Another thread reads that to answer for a call whose token
 * does not answer in time, or was removed meanwhile, while the first thread is still stuck
 * in the module.
 */
typedef struct mk_p11_watch mk_p11_watch;

/* 0 and *ret (mk_p11_watch_free), or -ENOMEM. */
int mk_p11_watch_new(mk_p11_watch **ret);
/* Frees w; it must not be attached to a thread any more. NULL ok; returns NULL. */
mk_p11_watch *mk_p11_watch_free(mk_p11_watch *w);

/* Records the calling thread's token work in w from now on (NULL: stop recording). */
void mk_p11_watch_attach(mk_p11_watch *w);

typedef struct mk_p11_watch_state {
	long long since_ms; /* CLOCK_MONOTONIC ms when the stretch under way began; 0: none */
	unsigned long long seq; /* which stretch (for mk_p11_watch_give_up) */
	bool gone;          /* its token was removed (or re-inserted) since it began */
	char token[72];     /* the token's label, for messages */
	char serial[24];
} mk_p11_watch_state;

/* What w's thread is doing on a token right now. Thread-safe. */
void mk_p11_watch_get(mk_p11_watch *w, mk_p11_watch_state *ret);

/*
 * The caller of stretch seq has been answered without waiting for it. stuck: the token did
 * not answer in time; until this stretch returns, every new call on that token fails at once
 * with -ETIMEDOUT instead of joining it. Returns false when that stretch already ended.
 */
bool mk_p11_watch_give_up(mk_p11_watch *w, unsigned long long seq, bool stuck);
