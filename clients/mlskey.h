/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmlskey: the C client library of the mlskey agent (mlskeyd, D-Bus name org.mlskey.Agent1).
 *
 * The agent keeps MLS (RFC 9420) signature and HPKE keys on PKCS#11 tokens; this library
 * asks it to sign and decrypt with them, lists tokens and keys, generates and deletes keys,
 * reads and stores a key's X.509 certificate chain (its MLS x509 credential), and offers the software counterparts a client needs (VerifyWithLabel, EncryptWithLabel).
 * Keys and tokens are named by RFC 7512 "pkcs11:" URIs, as the agent lists them.
 *
 * It adds the checks a client should not forget:
 *  - before a call, the cipher suite must fit the key (ECDSA P-256 for suite 2, ...), the
 *    label must be at most 255 bytes, a kem_output must have the suite's length;
 *  - after mlskey_sign_with_label(), the signature is verified (VerifyWithLabel) under the
 *    key's public key before it is returned. Public keys are fetched once per URI and cached
 *    in the handle.
 *
 * Errors: every function that returns int returns 0 on success or a negative errno:
 *
 *   -ENOKEY        org.mlskey.Error.NoSuchKey      no key has that URI
 *   -ENODEV        org.mlskey.Error.NoSuchToken    no token matches that URI
 *   -ENOMEDIUM     org.mlskey.Error.TokenAbsent    the token was removed
 *   -EOPNOTSUPP    org.mlskey.Error.Unsupported    algorithm or suite not supported (suites 4
 *                                                  and 6), or the suite does not fit the key
 *   -EINVAL        org.mlskey.Error.InvalidInput   malformed or oversized input, an unassigned
 *                                                  suite, KDF or AEAD id
 *   -EKEYREJECTED  org.mlskey.Error.PinIncorrect   the token refused the PIN
 *   -EKEYREVOKED   org.mlskey.Error.PinLocked      the PIN is locked
 *   -ECANCELED     org.mlskey.Error.Cancelled      the person cancelled the PIN dialog
 *   -EACCES        org.mlskey.Error.AccessDenied   not allowed (agent policy or bus policy)
 *   -EBADMSG       org.mlskey.Error.DecryptFailed  the ciphertext did not authenticate;
 *                  org.mlskey.Client.SignatureInvalid  (mlskey_verify_with_label) a signature
 *                                                  that does not verify
 *   -EIO           org.mlskey.Error.TokenError     the token failed
 *   -EBUSY         org.mlskey.Error.Busy           the agent is busy; retry later
 *   -EPROTO        org.mlskey.Client.SignatureInvalid  the agent returned a signature that
 *                                                  does not verify (never handed out), or
 *                  org.mlskey.Client.BadReply / a D-Bus error: the reply was not understood
 *   -ECONNREFUSED  no bus at that address, or no agent on it (and none could be started)
 *   -ECONNRESET    the connection to the bus was lost
 *   -ETIMEDOUT     the agent did not answer in time (mlskey_client_set_timeout)
 *   -ENOMEM        out of memory
 *
 * After a failure, mlskey_last_error() tells the D-Bus error name and a message in words.
 *
 * Threads: a handle (mlskey_client) holds one private D-Bus connection. Use one handle from
 * one thread at a time (it may move between threads); give each thread its own handle to
 * call in parallel. Functions without a handle may be called from any thread.
 *
 * Memory: outputs are never written on failure. Byte outputs (uint8_t **ret, size_t *ret_len)
 * are malloc()ed; free them with mlskey_free(), which wipes them first (a plaintext may be
 * as secret as a key). Structures have their own free functions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLSKEY_BUS_NAME "org.mlskey.Agent1"
#define MLSKEY_OBJECT_PATH "/org/mlskey/Agent1"
#define MLSKEY_INTERFACE "org.mlskey.Agent1"

/* MLS cipher suites (RFC 9420 §17.1) that mlskey supports. */
#define MLSKEY_SUITE_X25519_AES128GCM_ED25519 1
#define MLSKEY_SUITE_P256_AES128GCM_P256 2
#define MLSKEY_SUITE_X25519_CHACHA20POLY1305_ED25519 3
#define MLSKEY_SUITE_P521_AES256GCM_P521 5
#define MLSKEY_SUITE_P384_AES256GCM_P384 7

/* --- errors ------------------------------------------------------------------------------ */

typedef struct mlskey_error {
	int code;            /* the negative errno of the failure; 0 after a success */
	const char *name;    /* a D-Bus error name, e.g. "org.mlskey.Error.NoSuchKey"; "" after
	                        a success */
	const char *message; /* what happened and what to do, in words; "" after a success */
} mlskey_error;

/*
 * The calling thread's last error: every mlskey_* function that returns int sets it (and
 * resets it to code 0 on success). Never NULL. The structure and its strings are owned by
 * the library and stay valid until this thread's next call of an mlskey_* function.
 */
const mlskey_error *mlskey_last_error(void);

/* --- the client handle ------------------------------------------------------------------- */

typedef struct mlskey_client mlskey_client;

/*
 * Connects to the agent's bus with a private connection of its own. address: NULL or
 * "session" for the session bus (DBUS_SESSION_BUS_ADDRESS), "system" for the system bus, or
 * a D-Bus address such as "unix:path=/run/user/1000/bus". Does not call the agent yet: the
 * first method call finds it (or has the bus activate it). Returns 0 and *ret (free with
 * mlskey_client_free), -ECONNREFUSED when the bus cannot be reached, -EINVAL for a malformed
 * address, -ENOMEM.
 */
int mlskey_client_new(const char *address, mlskey_client **ret);

/* Closes the connection and frees the handle and its cache. Accepts NULL; returns NULL. */
mlskey_client *mlskey_client_free(mlskey_client *c);

/*
 * How long a call waits for the agent's reply, in milliseconds; -1 waits forever. The
 * default is 300000 (5 minutes), because a call may wait for a person to type a PIN.
 * Returns 0, or -EINVAL for a value below -1.
 */
int mlskey_client_set_timeout(mlskey_client *c, int timeout_ms);

/* Checks that libmlskey makes around calls; all are on by default. */
#define MLSKEY_CHECK_INPUT 0x1u     /* suite/key fit, label and kem_output lengths, ids */
#define MLSKEY_CHECK_SIGNATURE 0x2u /* verify every signature before returning it */
#define MLSKEY_CHECK_ALL (MLSKEY_CHECK_INPUT | MLSKEY_CHECK_SIGNATURE)

/*
 * Sets which checks the handle makes (MLSKEY_CHECK_* bits). Turn them off only to test or
 * measure the agent itself: without MLSKEY_CHECK_SIGNATURE a faulty token's signature
 * reaches the caller unchecked. Returns 0, or -EINVAL for unknown bits.
 */
int mlskey_client_set_checks(mlskey_client *c, unsigned checks);

/*
 * Pings the agent (org.freedesktop.DBus.Peer.Ping on its name): the cheapest round trip,
 * used as the floor in benchmarks. Returns 0, or -ECONNREFUSED when no agent answers.
 */
int mlskey_ping(mlskey_client *c);

/*
 * The agent's Version property (e.g. "0.1.0") into *ret (free()). Returns 0 or an errno.
 */
int mlskey_agent_version(mlskey_client *c, char **ret);

/* --- tokens and keys --------------------------------------------------------------------- */

typedef struct mlskey_token {
	char *uri; /* pkcs11:model=...;manufacturer=...;serial=...;token=... */
	char *label;
	char *manufacturer;
	char *model;
	char *serial;
	char *module;             /* the PKCS#11 module's description (or path) */
	bool present;             /* the token is in its slot */
	bool logged_in;           /* the agent is logged in on it */
	bool login_required;      /* operations need the user PIN */
	bool pin_count_low;       /* a wrong PIN was entered since the last good one */
	bool pin_final_try;       /* one more wrong PIN locks it */
	bool pin_locked;
	bool protected_auth_path; /* PIN pad: the PIN is typed on the reader */
	bool write_protected;     /* keys cannot be generated or deleted */
} mlskey_token;

/*
 * Lists every token the agent sees (ListTokens). Sets *ret to an array of *ret_n tokens
 * (free with mlskey_tokens_free; *ret may be NULL when *ret_n is 0).
 */
int mlskey_list_tokens(mlskey_client *c, mlskey_token **ret, size_t *ret_n);
void mlskey_tokens_free(mlskey_token *tokens, size_t n);

typedef struct mlskey_key {
	char *uri;       /* pkcs11:...;id=...;object=...;type=private */
	char *label;
	uint8_t *id;     /* CKA_ID */
	size_t id_len;
	char *token;     /* the token's URI */
	char *purpose;   /* "signature" or "hpke" ("" when unknown) */
	char *algorithm; /* "ecdsa-p256", ..., "ed25519", "dhkem-p256", ..., "dhkem-x25519" */
	uint16_t *cipher_suites; /* the MLS suites the key serves */
	size_t n_cipher_suites;
	uint8_t *public_key; /* MLS encoding: 04||X||Y, or 32 raw bytes; NULL if unknown */
	size_t public_key_len;
	bool usable;  /* mlskey can use the key; if not, reason says why */
	char *reason; /* "" when usable */
	bool local, never_extractable, always_sensitive, always_authenticate, has_certificate;
	bool single_use; /* deleted after its first Welcome; in the padding: the size is as in 0.1 */
	/* when has_certificate: that certificate's subject and issuer (RFC 2253), "" else */
	char *certificate_subject, *certificate_issuer;
	int64_t certificate_not_before, certificate_not_after; /* seconds since 1970; 0 else */
} mlskey_key;

/*
 * Lists every key pair on every token (ListKeys), including those mlskey cannot use (usable
 * false, with a reason). Sets *ret / *ret_n (free with mlskey_keys_free). Refreshes the
 * handle's public key cache.
 */
int mlskey_list_keys(mlskey_client *c, mlskey_key **ret, size_t *ret_n);
void mlskey_keys_free(mlskey_key *keys, size_t n);

/*
 * Generates a key pair on the token that token_uri names (GenerateKey). algorithm:
 * "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519" (purpose "signature") or "dhkem-p256",
 * "dhkem-p384", "dhkem-p521", "dhkem-x25519" (purpose "hpke"). purpose may be NULL: it
 * follows from the algorithm. label: the key's CKA_LABEL (may be NULL or ""). May ask for
 * the token's PIN. Sets *ret_uri (free()) to the new key's URI. -EINVAL for an unknown
 * algorithm or one of another purpose, -ENODEV when no token matches, -EOPNOTSUPP when the
 * token cannot make such keys.
 */
int mlskey_generate_key(mlskey_client *c, const char *token_uri, const char *purpose,
			const char *algorithm, const char *label, char **ret_uri);

/* mlskey_generate_key_flags flags. */
#define MLSKEY_GENERATE_SINGLE_USE 0x1u /* GenerateKey option single_use: hpke keys only */

/*
 * mlskey_generate_key with MLSKEY_GENERATE_* flags (0: the same call). A single-use key is
 * an HPKE init key for one Welcome: the agent marks it on the token and deletes it after
 * its first successful DecryptWithLabel("Welcome"). Unknown flags are -EINVAL.
 */
int mlskey_generate_key_flags(mlskey_client *c, const char *token_uri, const char *purpose,
			      const char *algorithm, const char *label, unsigned flags,
			      char **ret_uri);

/* Deletes both halves of the key pair that key_uri names (DeleteKey). May ask for the PIN. */
int mlskey_delete_key(mlskey_client *c, const char *key_uri);

/*
 * The public key of key_uri in its MLS encoding (GetPublicKey, cached per URI in the
 * handle). Sets *ret (mlskey_free) and *ret_len.
 */
int mlskey_get_public_key(mlskey_client *c, const char *key_uri, uint8_t **ret, size_t *ret_len);

/*
 * Logs the agent out of the token that token_uri names (Lock), or out of every token when
 * token_uri is NULL or "". The next operation asks for the PIN again.
 */
int mlskey_lock(mlskey_client *c, const char *token_uri);

/* --- credentials (X.509 certificates on the token) --------------------------------------- */

#define MLSKEY_CREDENTIAL_X509 2 /* RFC 9420 CredentialType x509 */

/* GetCredential flags. */
#define MLSKEY_CREDENTIAL_ALLOW_EXPIRED (1u << 0) /* also a leaf outside its validity dates */

typedef struct mlskey_credential {
	uint16_t credential_type; /* MLSKEY_CREDENTIAL_X509 */
	size_t n_certificates;    /* >= 1 */
	uint8_t **certificates;   /* DER, leaf first: the MLS cert_data list */
	size_t *certificate_lens;
} mlskey_credential;

/*
 * The MLS credential of a signature key (GetCredential): the X.509 chain its token holds,
 * leaf first (the leaf carries the key's public key). flags: MLSKEY_CREDENTIAL_*. Sets *ret
 * (free with mlskey_credential_free). -ENOKEY when the token holds no certificate for the
 * key (or no such key), -EOPNOTSUPP for an hpke key or a leaf outside its validity (unless
 * MLSKEY_CREDENTIAL_ALLOW_EXPIRED; the message names the dates), -EINVAL for unknown flags.
 */
int mlskey_get_credential(mlskey_client *c, const char *key_uri, unsigned flags,
			  mlskey_credential **ret);
void mlskey_credential_free(mlskey_credential *cred); /* NULL ok */

/*
 * Stores an X.509 chain on the token of a signature key (ImportCertificates): certs[i] of
 * lens[i] bytes, DER, leaf first (the certificate issued for the key), then each issuer in
 * turn; 1 to 10 certificates. -EINVAL when the leaf is for another key, the chain is out of
 * order or a certificate does not parse (nothing is stored then). May ask for the PIN.
 */
int mlskey_import_certificates(mlskey_client *c, const char *key_uri,
			       const uint8_t *const *certs, const size_t *lens, size_t n);

/* --- MLS operations through the agent ---------------------------------------------------- */

/*
 * SignWithLabel (RFC 9420 §5.1.2): signs V("MLS 1.0 " + label) || V(content) with the
 * signature key key_uri for cipher suite `suite`. Checks first that the suite fits the key
 * (-EOPNOTSUPP) and the label is at most 255 bytes (-EINVAL); afterwards verifies the
 * signature under the key's public key (-EPROTO if it does not verify: it is not returned).
 * Sets *ret_sig (mlskey_free): DER ECDSA signature, or 64 raw bytes for Ed25519.
 */
int mlskey_sign_with_label(mlskey_client *c, const char *key_uri, uint16_t suite,
			   const char *label, const uint8_t *content, size_t content_len,
			   uint8_t **ret_sig, size_t *ret_sig_len);

/*
 * DecryptWithLabel (RFC 9420 §5.1.3): HPKE OpenBase with the key key_uri and info =
 * V("MLS 1.0 " + label) || V(context), aad "". Checks first that the suite fits the key and
 * that kem_output has the suite's length. -EBADMSG when the ciphertext does not authenticate
 * (wrong key, label, context or suite, or tampering). Sets *ret_pt (mlskey_free).
 */
int mlskey_decrypt_with_label(mlskey_client *c, const char *key_uri, uint16_t suite,
			      const char *label, const uint8_t *context, size_t context_len,
			      const uint8_t *kem_output, size_t kem_output_len, const uint8_t *ct,
			      size_t ct_len, uint8_t **ret_pt, size_t *ret_pt_len);

/*
 * General single-shot HPKE OpenBase (RFC 9180 §6.1) with the HPKE key key_uri; the KEM
 * follows the key, kdf and aead are RFC 9180 ids (1 = HKDF-SHA256 / AES-128-GCM, ...).
 * Sets *ret_pt (mlskey_free). -EBADMSG when the ciphertext does not authenticate.
 */
int mlskey_hpke_open(mlskey_client *c, const char *key_uri, uint16_t kdf, uint16_t aead,
		     const uint8_t *info, size_t info_len, const uint8_t *aad, size_t aad_len,
		     const uint8_t *enc, size_t enc_len, const uint8_t *ct, size_t ct_len,
		     uint8_t **ret_pt, size_t *ret_pt_len);

/* --- KeyPackages -------------------------------------------------------------------------- */

/* One MLS extension (RFC 9420 §7.2 Extension): a type and its extension_data. */
typedef struct mlskey_extension {
	uint16_t type;
	const uint8_t *data; /* may be NULL when data_len is 0 */
	size_t data_len;
} mlskey_extension;

/* What a KeyPackage may carry; a zeroed structure (or NULL) asks for every default. */
typedef struct mlskey_key_package_options {
	const char *identity;     /* the basic credential's identity (UTF-8); NULL: none. Needed
	                             unless the token holds a certificate for the key */
	uint64_t not_before;      /* Lifetime in seconds since the epoch; 0: an hour ago */
	uint64_t not_after;       /* 0: not_before + lifetime_days */
	uint32_t lifetime_days;   /* 0: 90 days; not together with not_after */
	const mlskey_extension *extensions;      /* KeyPackage extensions (at most 16) */
	size_t n_extensions;
	const mlskey_extension *leaf_extensions; /* LeafNode extensions (at most 16) */
	size_t n_leaf_extensions;
	bool last_resort;         /* add last_resort (0x000a); the init key stays after a Welcome */
} mlskey_key_package_options;

/* A KeyPackage the agent made (free its members with mlskey_key_package_clear). */
typedef struct mlskey_key_package {
	uint8_t *key_package;     /* MLSMessage(KeyPackage), ready to publish */
	size_t key_package_len;
	char *init_key;           /* URI of the HPKE init key on the token (for the Welcome) */
	char *leaf_key;           /* URI of the leaf's HPKE encryption key on the token */
	uint8_t *ref;             /* KeyPackageRef (the suite's hash length) */
	size_t ref_len;
} mlskey_key_package;

/*
 * CreateKeyPackage: a complete, signed MLS KeyPackage (RFC 9420 §10) for cipher suite
 * `suite`, signed by the signature key signature_key_uri, with a fresh HPKE init key and
 * leaf encryption key generated on the same token: no private key ever leaves it. The
 * credential is x509 when the token holds a certificate for the key, else basic with
 * options->identity. With MLSKEY_CHECK_INPUT the suite must fit the key (-EOPNOTSUPP); with
 * MLSKEY_CHECK_SIGNATURE the KeyPackage is parsed and checked as a receiver would (both
 * signatures, lifetime, capabilities) before it is returned (-EPROTO if it fails). -EINVAL
 * for bad options or a missing identity. May ask for the token's PIN. Sets *ret.
 */
int mlskey_create_key_package(mlskey_client *c, const char *signature_key_uri, uint16_t suite,
			      const mlskey_key_package_options *options, mlskey_key_package *ret);

/* Frees the members of kp and zeroes it. Accepts NULL. */
void mlskey_key_package_clear(mlskey_key_package *kp);

/* --- software operations (no agent, no token) -------------------------------------------- */

/*
 * VerifyWithLabel in software: 0 when sig is a valid signature of V("MLS 1.0 " + label) ||
 * V(content) under public_key (MLS encoding) for the suite; -EBADMSG when it is not; -EINVAL
 * for a public key that is malformed or not the suite's; -EOPNOTSUPP for an unknown suite.
 */
int mlskey_verify_with_label(uint16_t suite, const uint8_t *public_key, size_t public_key_len,
			     const char *label, const uint8_t *content, size_t content_len,
			     const uint8_t *sig, size_t sig_len);

/*
 * EncryptWithLabel in software: HPKE SealBase to public_key (MLS encoding, validated) with a
 * fresh ephemeral key, info = V("MLS 1.0 " + label) || V(context), aad "". Sets
 * *ret_kem_output / *ret_kem_output_len and *ret_ct / *ret_ct_len (both mlskey_free).
 */
int mlskey_encrypt_with_label(uint16_t suite, const uint8_t *public_key, size_t public_key_len,
			      const char *label, const uint8_t *context, size_t context_len,
			      const uint8_t *pt, size_t pt_len, uint8_t **ret_kem_output,
			      size_t *ret_kem_output_len, uint8_t **ret_ct, size_t *ret_ct_len);

/* --- small helpers ----------------------------------------------------------------------- */

/* Wipes len bytes at p and frees p (a byte output of this library). Accepts NULL. */
void mlskey_free(void *p, size_t len);

/*
 * The key algorithm a suite uses for purpose "signature" or "hpke" ("ecdsa-p256", ...), or
 * NULL for an unknown suite or purpose. Static string.
 */
const char *mlskey_suite_algorithm(uint16_t suite, const char *purpose);

/* The library's version, e.g. "0.1.0". Static string. */
const char *mlskey_version(void);

#ifdef __cplusplus
}
#endif
