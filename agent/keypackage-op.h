/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateKeyPackage: a complete, signed MLS KeyPackage (RFC 9420 §10) whose private keys all
 * live on the token, built from the public mk_agent_* operations (agent/ops.h). The signature
 * key's token gets two fresh HPKE keys of the suite's KEM: the init key (single-use unless
 * the KeyPackage is a last-resort one) and the leaf's encryption key; both signatures
 * (LeafNodeTBS, KeyPackageTBS) are made there with SignWithLabel. A mailbox client can
 * publish the result without ever holding a private key.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/keypackage.h"
#include "agent/ops.h"

#define MK_KP_DEFAULT_LIFETIME_DAYS 90
/*
 * A default not_before lies this far in the past (seconds), so that a receiver whose clock
 * runs behind ours still accepts a KeyPackage published at once (OpenMLS does the same).
 */
#define MK_KP_CLOCK_MARGIN 3600
#define MK_KP_MAX_LIFETIME_DAYS 3650
#define MK_KP_OPTION_EXTENSIONS_MAX 16 /* per list (extensions, leaf_extensions) */

/* What a client may choose; everything borrowed for the call. */
typedef struct mk_kp_options {
	const uint8_t *identity; /* basic credential's identity; NULL: none */
	size_t identity_len;
	uint64_t not_before; /* seconds since the epoch; 0: now - MK_KP_CLOCK_MARGIN */
	uint64_t not_after;  /* 0: not_before + lifetime_days */
	/* 0: MK_KP_DEFAULT_LIFETIME_DAYS; not together with not_after */
	uint32_t lifetime_days;
	const mk_kp_extension *extensions; /* KeyPackage extensions */
	size_t n_extensions;
	const mk_kp_extension *leaf_extensions; /* LeafNode extensions */
	size_t n_leaf_extensions;
	bool last_resort; /* add the last_resort extension; the init key is not single-use */
} mk_kp_options;

/*
 * Checks options before any work (the bus thread): identity 1..MK_KP_IDENTITY_MAX bytes,
 * lifetime_days 1..MK_KP_MAX_LIFETIME_DAYS and not together with not_after, not_before <
 * not_after, at most MK_KP_OPTION_EXTENSIONS_MAX extensions per list, each with a non-zero
 * type, at most MK_KP_EXT_DATA_MAX bytes, no type twice (last_resort counts when set).
 * 0 or -EINVAL with a message.
 */
int mk_kp_options_check(const mk_kp_options *o);

typedef struct mk_kp_created {
	mk_bytes message;   /* MLSMessage(KeyPackage) */
	char *init_key_uri; /* the HPKE init key on the token */
	char *leaf_key_uri; /* the leaf's HPKE encryption key on the token */
	mk_bytes ref;	    /* KeyPackageRef */
} mk_kp_created;

/* Frees what c holds and zeroes it. */
void mk_kp_created_clear(mk_kp_created *c);

/*
 * Creates a KeyPackage for suite (already checked with mk_check_suite) signed by the
 * signature key sig_key_uri, as described above. The credential is x509 (the chain from
 * mk_agent_credential) when the token holds a certificate for the key, else basic with
 * o->identity (-EINVAL when there is none). Capabilities: versions [mls10], cipher_suites
 * [suite] (a KeyPackage serves one suite, and the agent cannot know which other suites the
 * client's MLS stack implements), extensions: every non-default type used, proposals [],
 * credentials [basic] or [basic, x509]. Lifetime: o's, default now .. now + 90 days.
 * -EOPNOTSUPP when the key does not serve the suite, checked before any key is generated;
 * keys generated before a later failure are deleted again. Sets *ret on success.
 */
int mk_agent_create_key_package(mk_agent *a, const mk_caller *c, const char *sig_key_uri,
				uint16_t suite, const mk_kp_options *o, mk_kp_created *ret);
