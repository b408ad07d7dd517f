/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's operations on tokens, as the D-Bus methods need them, run on worker threads.
 * Arguments are already checked (agent/check.h). This module owns the loaded modules, the
 * cache of found keys (one object search per key URI, then none per call), and the login
 * (agent/login.c): when the token wants its PIN, it asks through the pinentry program (one
 * dialog per token at a time, shared by every call waiting for it), or reads the token's
 * pin-file, logs in once per PIN, and runs the operation once more. Keys that want the PIN
 * for every use get a dialog of their own per operation. It logs out when the token was
 * not used for idle-logout seconds, on Lock, when the session locks or the machine
 * suspends (mk_agent_request_lock), and when a token is removed (mk_agent_token_gone).
 *
 * Sign, decrypt, HpkeOpen, generate and delete ask the policy first (agent/policy.h, the
 * [policy] and [rule]s of the configuration) with the caller and the key's full info, and
 * the confirmation it wants through the pinentry: a refusal is -EACCES with a message that
 * names the rule. A key hidden until login is judged after the login (a caller no rule
 * could allow is refused before it).
 *
 * Every function returns 0 or a negative errno of common/error.h with an mk_error()
 * message for the calling thread that says what to do.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/agent-config.h"
#include "common/bytes.h"
#include "pkcs11/p11.h"

typedef struct mk_agent mk_agent;

/*
 * Who asked, as the bus daemon vouches for it (GetConnectionCredentials) and the kernel
 * tells from there; shown in PIN and confirmation dialogs, matched by policy rules
 * (agent/policy.h), written to the audit trail.
 */
typedef struct mk_caller {
	uid_t uid;
	pid_t pid;      /* 0 when unknown */
	unsigned long long start_time; /* /proc/PID/stat starttime: with pid, one process; 0 = unknown */
	char exe[256];  /* the executable (/proc/PID/exe), "" when unknown */
	char unit[256]; /* its systemd unit (from /proc/PID/cgroup), e.g. "mailbox.service"; "" */
	char app_id[256]; /* its Flatpak app id ([Application] name of /.flatpak-info); "" */
	long long t_call_ns; /* when the call arrived (mk_agent_clock_ns); 0 = unknown */
	/*
	 * MK_POLICY_* operations (agent/policy.h) the policy allowed already for this call as a
	 * whole: CreateKeyPackage is decided once, as "keypackage" with its signature key, and
	 * the key generation, signatures and clean-up it does inside are not asked again. 0
	 * for every call from the bus.
	 */
	unsigned granted;
} mk_caller;

/* CLOCK_MONOTONIC in nanoseconds: the clock of mk_caller.t_call_ns. */
long long mk_agent_clock_ns(void);

/* Called (from any thread) when the set or state of tokens changed. */
typedef void (*mk_agent_notify_fn)(void *userdata);

/*
 * Loads the modules cfg names (p11-kit's and/or by path) and prepares the agent. cfg is
 * borrowed and must outlive the agent. Returns 0 and *ret, or -ENOENT (no module loaded),
 * -ENOMEM, ... with a message.
 */
int mk_agent_new(const mk_config *cfg, mk_agent **ret);

/* Sets the function called when tokens change (TokensChanged). */
void mk_agent_set_notify(mk_agent *a, mk_agent_notify_fn fn, void *userdata);

/* Sets the function called (on a worker) when the agent itself changed the keys: a
 * single-use key was used up and deleted (KeysChanged). */
void mk_agent_set_keys_notify(mk_agent *a, mk_agent_notify_fn fn, void *userdata);

/*
 * Why the policy (agent/policy.h) refuses key k whoever asks, in words (static), or NULL
 * when some caller may use it: for ListKeys' usable and reason.
 */
const char *mk_agent_key_reason(mk_agent *a, const mk_key_info *k);

/*
 * Asks the policy whether caller c may do op (MK_POLICY_*, no MLS label) with the key
 * key_uri names, with the key's info: k when the caller has it already (no token call),
 * else found as operations find it (which may log in first, on tokens that hide their
 * private keys). Asks for a confirmation when the deciding rule wants one. 0 or
 * -EACCES with a message naming the rule; the errors of finding the key.
 */
int mk_agent_authorize(mk_agent *a, const mk_caller *c, unsigned op, const char *key_uri,
		       const mk_key_info *k, const char *verb);

/* Aborts PIN dialogs now and later (shutdown): they end with -ECANCELED. Thread-safe. */
void mk_agent_abort_dialogs(mk_agent *a);

/* Frees the key cache and finalises the modules. No operation may be running. NULL ok. */
mk_agent *mk_agent_free(mk_agent *a);

/* ListTokens: a fresh snapshot (mk_token_info_array_free). Emits notify on a change. */
int mk_agent_list_tokens(mk_agent *a, mk_token_info **ret, size_t *ret_n);

/* ListKeys: keys on every present token (mk_key_info_array_free). Never asks a PIN. */
int mk_agent_list_keys(mk_agent *a, mk_key_info **ret, size_t *ret_n);

/* GenerateKey flags. */
#define MK_GENERATE_SINGLE_USE (1u << 0) /* an HPKE init key: deleted after its first Welcome */

/*
 * GenerateKey on the token token_uri names, with MK_GENERATE_* flags; *ret_uri is the new
 * key's URI (free()). A single-use key is marked on the token itself (it survives restarts
 * and other hosts) and is deleted from the token after its first successful
 * DecryptWithLabel("Welcome").
 */
int mk_agent_generate(mk_agent *a, const mk_caller *c, const char *token_uri, mk_key_alg alg,
		      const char *label, unsigned flags, char **ret_uri);

/* DeleteKey: destroys the pair and forgets cached keys. */
int mk_agent_delete(mk_agent *a, const mk_caller *c, const char *key_uri);

/*
 * What ListKeys shows of the key uri names (public key, algorithm, token URI, flags, the
 * certificate), into *ret (mk_key_info_clear): without a PIN when the token shows the key
 * before login, else after a login whose dialog says `what`. -ENOKEY when no key matches,
 * -EINVAL when several do; the login's errors.
 */
int mk_agent_key_info(mk_agent *a, const mk_caller *c, const char *uri, const char *what,
		      mk_key_info *ret);

/* GetPublicKey: the MLS encoding; from the public object when it can, without a PIN. */
int mk_agent_public_key(mk_agent *a, const mk_caller *c, const char *key_uri, mk_bytes *ret);

/* SignWithLabel; *ret_sig as mk_mls_sign_with_label() makes it. */
int mk_agent_sign(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t suite,
		  const char *label, const uint8_t *content, size_t content_len,
		  mk_bytes *ret_sig);

/* DecryptWithLabel; kem_output was validated for the suite's KEM. */
int mk_agent_decrypt(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t suite,
		     const char *label, const uint8_t *context, size_t context_len,
		     const uint8_t *kem_output, size_t kem_output_len, const uint8_t *ct,
		     size_t ct_len, mk_bytes *ret_pt);

/* HpkeOpen with the key's KEM; enc is validated against the key's curve here. */
int mk_agent_hpke_open(mk_agent *a, const mk_caller *c, const char *key_uri, uint16_t kdf,
		       uint16_t aead, const uint8_t *info, size_t info_len, const uint8_t *aad,
		       size_t aad_len, const uint8_t *enc, size_t enc_len, const uint8_t *ct,
		       size_t ct_len, mk_bytes *ret_pt);

/*
 * GetCredential: the X.509 certificate chain of a signature key as the token holds it, leaf
 * first (the leaf's public key equals the key's; matched by public key, not by CKA_ID),
 * each DER, into *ret_certs and *ret_n >= 1 (free with mk_bytes_array_free). -ENOKEY with the reason when the token has no certificate for the key;
 * -EOPNOTSUPP for a key that is not a signature key, and for a leaf that is expired or not
 * yet valid unless allow_invalid_dates (the message names the dates).
 */
int mk_agent_credential(mk_agent *a, const mk_caller *c, const char *key_uri,
			bool allow_invalid_dates, mk_bytes **ret_certs, size_t *ret_n);

/*
 * ImportCertificates: stores the chain certs[0..n) (DER, leaf first) on the token of the
 * signature key key_uri, as mk_p11_import_certificates() checks and stores it (the leaf must
 * carry the key's public key, each next certificate must have issued the one before;
 * -EINVAL otherwise, and nothing is stored). Asks for the token's PIN when it wants a login
 * (as GenerateKey does); a chain that is refused asks for none. certs is only read.
 */
int mk_agent_import_certificates(mk_agent *a, const mk_caller *c, const char *key_uri,
				 const mk_bytes *certs, size_t n);

/* Clears n byte strings of a (mk_bytes_clear) and frees a. NULL ok. */
void mk_bytes_array_free(mk_bytes *a, size_t n);

/* Lock: logs out of the token ("" = every token) and forgets cached keys. */
int mk_agent_lock(mk_agent *a, const char *token_uri);

/*
 * Logs out of every token soon, on the agent's own thread: for the session being locked
 * (logind's Lock, a screensaver's ActiveChanged) and suspend (PrepareForSleep). why says
 * which, for the log. Never blocks; any thread.
 */
void mk_agent_request_lock(mk_agent *a, const char *why);

/*
 * The card-removal hook (for the PC/SC monitor): the token token_uri names (a token URI as
 * ListTokens gives it, or any pkcs11: URI that matches it) was removed; NULL or "" when it
 * is not known which. A PIN dialog open for it ends (its call gets TokenAbsent), and the
 * agent thread rescans the slots, logs out of every token that is gone (C_Logout) and
 * forgets its keys, so that the card asks for its PIN again when it comes back. Never
 * blocks; any thread.
 */
void mk_agent_token_gone(mk_agent *a, const char *token_uri);
