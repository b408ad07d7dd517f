/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checks of every argument a client sends, made on arrival and before any work: each
 * returns 0 or -EINVAL / -EOPNOTSUPP with an mk_error() message that says what is wrong and
 * what is accepted. No token is touched; these run on the bus thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent-config.h"
#include "agent/suite.h"
#include "pkcs11/p11.h"

/* Longest URI accepted (bytes). */
#define MK_URI_MAX 4096

/* A byte-array argument named what: at most cfg->max_array_bytes. */
int mk_check_array(const mk_config *cfg, const char *what, size_t n);

/* A label: at most cfg->max_label_bytes (<= 255), valid UTF-8, no NUL (len = strlen). */
int mk_check_label(const mk_config *cfg, const char *what, const char *label);

/* True when s[0..n) is valid UTF-8 (shortest forms, no surrogates, no NUL). */
bool mk_utf8_valid(const char *s, size_t n);

/*
 * A key URI: a pkcs11: URI (RFC 7512) of at most MK_URI_MAX bytes that names an object
 * (id= or object=) and no other object type than private or public. With ret_token, also
 * sets *ret_token (free()) to the URI's token part, as mk_uri_token_part() would, from the
 * same single parse.
 */
int mk_check_key_uri(const char *uri, char **ret_token);

/* A token URI: a pkcs11: URI naming no object. "" is accepted when allow_empty. */
int mk_check_token_uri(const char *uri, bool allow_empty);

/*
 * An MLS cipher suite: 1, 2, 3, 5, 7 give *ret; 4 and 6 (X448/Ed448) are -EOPNOTSUPP;
 * anything else (0, unassigned ids) is -EINVAL.
 */
int mk_check_suite(uint16_t id, const mk_suite **ret);

/* HPKE KDF and AEAD ids for HpkeOpen: 1-3 each; aead 0xFFFF is -EOPNOTSUPP; else -EINVAL. */
int mk_check_hpke_ids(uint16_t kdf, uint16_t aead);

/*
 * GenerateKey's purpose ("signature" | "hpke") and algorithm name, which must belong to the
 * purpose. Sets *ret to the algorithm.
 */
int mk_check_algorithm(const char *purpose, const char *algorithm, mk_key_alg *ret);

/* A public key (kem_output / enc) for the KEM of kem_alg: length and point validation. */
int mk_check_point(mk_key_alg kem_alg, const uint8_t *p, size_t n);

/*
 * The MLS cipher suites a key of algorithm a serves, in ascending order, into out (at most
 * cap). Returns how many (0 for MK_ALG_NONE).
 */
size_t mk_key_alg_suites(mk_key_alg a, uint16_t *out, size_t cap);

/*
 * The token part of a key or token URI as a token URI (token, manufacturer, model, serial
 * only) into *ret (free()). Used to name a token's worker queue and to log in. -EINVAL for
 * a malformed URI, -ENOMEM.
 */
int mk_uri_token_part(const char *uri, char **ret);

/* The object= (CKA_LABEL) of a key URI into *ret (free()); "" when it has none. */
int mk_uri_object_label(const char *uri, char **ret);
