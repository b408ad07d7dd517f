/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MLS KeyPackages (RFC 9420 §10) as bytes: the encoder and a strict decoder for KeyPackage,
 * its LeafNode (§7.2, leaf_node_source key_package only), Credential (§5.3: basic and x509),
 * Capabilities, Lifetime and Extension lists, the to-be-signed forms LeafNodeTBS and
 * KeyPackageTBS, the MLSMessage framing (§6: version mls10, wire_format mls_key_package) and
 * KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", KeyPackage) (§5.2).
 *
 * Pure software: no token, no bus. Decoded structures borrow every byte string from the
 * input buffer (mk_kp_span), so they are valid as long as that buffer; lists have fixed caps
 * (MK_KP_*_MAX) and a decoder refuses anything over them, so decoding never allocates.
 *
 * The decoder is strict: minimal varints only, every length within what is left and within
 * its cap, no trailing bytes, version mls10, a supported cipher suite, credential types basic
 * or x509, leaf_node_source key_package, no duplicate extension types. mk_kp_check() adds
 * what a receiver checks before using a KeyPackage (§10.1, §7.3).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bytes.h"
#include "common/tls.h"

#define MK_MLS_VERSION_MLS10 1		 /* ProtocolVersion mls10 (§6) */
#define MK_MLS_WIRE_FORMAT_KEY_PACKAGE 5 /* WireFormat mls_key_package (§6) */
#define MK_MLS_CREDENTIAL_BASIC 1	 /* CredentialType basic (§17.5) */
#define MK_MLS_CREDENTIAL_X509 2	 /* CredentialType x509 */
#define MK_MLS_LEAF_SOURCE_KEY_PACKAGE 1 /* LeafNodeSource key_package (§7.2) */
/* ExtensionType last_resort (MLS Extension Types registry, draft-ietf-mls-extensions):
 * a KeyPackage extension with empty extension_data. */
#define MK_MLS_EXTENSION_LAST_RESORT 0x000a
/* ExtensionTypes 1-5 (application_id ... external_senders) are "default" (§7.2, §17.3):
 * a LeafNode need not list them in its capabilities. */
#define MK_MLS_EXTENSION_DEFAULT_MAX 5

#define MK_KP_LIST_MAX 32	 /* entries of each Capabilities list */
#define MK_KP_EXTENSIONS_MAX 32	 /* extensions of a LeafNode, and of a KeyPackage */
#define MK_KP_CERTS_MAX 8	 /* certificates of an x509 credential */
#define MK_KP_CERT_MAX 16384	 /* bytes of one certificate */
#define MK_KP_IDENTITY_MAX 1024	 /* bytes of a basic credential's identity */
#define MK_KP_EXT_DATA_MAX 16384 /* bytes of one extension's data */
#define MK_KP_KEY_MAX 256	 /* bytes of a public key (P-521: 133) */
#define MK_KP_SIG_MAX 256	 /* bytes of a signature (P-521 DER: <= 139) */
#define MK_KP_MESSAGE_MAX 262144 /* bytes of one encoded MLSMessage(KeyPackage) */

/* A borrowed byte string. */
typedef struct mk_kp_span {
	const uint8_t *p;
	size_t n;
} mk_kp_span;

typedef struct mk_kp_extension {
	uint16_t type;
	mk_kp_span data;
} mk_kp_extension;

typedef struct mk_kp_extensions {
	mk_kp_extension v[MK_KP_EXTENSIONS_MAX];
	size_t n;
} mk_kp_extensions;

typedef struct mk_kp_u16s {
	uint16_t v[MK_KP_LIST_MAX];
	size_t n;
} mk_kp_u16s;

typedef struct mk_kp_credential {
	uint16_t type;			   /* MK_MLS_CREDENTIAL_BASIC or _X509 */
	mk_kp_span identity;		   /* basic */
	mk_kp_span certs[MK_KP_CERTS_MAX]; /* x509: cert_data, leaf first */
	size_t n_certs;
} mk_kp_credential;

typedef struct mk_kp_capabilities {
	mk_kp_u16s versions, cipher_suites, extensions, proposals, credentials;
} mk_kp_capabilities;

/* A LeafNode whose leaf_node_source is key_package (the only source a KeyPackage has). */
typedef struct mk_kp_leaf {
	mk_kp_span encryption_key; /* HPKEPublicKey */
	mk_kp_span signature_key;  /* SignaturePublicKey */
	mk_kp_credential credential;
	mk_kp_capabilities capabilities;
	uint64_t not_before, not_after; /* Lifetime, seconds since the epoch */
	mk_kp_extensions extensions;
	mk_kp_span signature; /* SignWithLabel(., "LeafNodeTBS", LeafNodeTBS) */
} mk_kp_leaf;

typedef struct mk_key_package {
	uint16_t version; /* MK_MLS_VERSION_MLS10 */
	uint16_t cipher_suite;
	mk_kp_span init_key; /* HPKEPublicKey */
	mk_kp_leaf leaf;
	mk_kp_extensions extensions;
	mk_kp_span signature; /* SignWithLabel(., "KeyPackageTBS", KeyPackageTBS) */
} mk_key_package;

/*
 * LeafNodeTBS of kp->leaf (source key_package: no group_id, no leaf_index) into *ret
 * (mk_bytes_clear). -E2BIG / -ENOMEM / -EINVAL (a list over its cap) with a message.
 */
int mk_kp_leaf_tbs(const mk_kp_leaf *leaf, mk_bytes *ret);

/* KeyPackageTBS of kp (kp->leaf with its signature) into *ret. Errors as mk_kp_leaf_tbs. */
int mk_kp_tbs(const mk_key_package *kp, mk_bytes *ret);

/* The KeyPackage itself (what KeyPackageRef hashes) into *ret. */
int mk_kp_encode(const mk_key_package *kp, mk_bytes *ret);

/* MLSMessage { mls10, mls_key_package, KeyPackage } into *ret. */
int mk_kp_encode_message(const mk_key_package *kp, mk_bytes *ret);

/*
 * Decodes exactly one KeyPackage from p[0..n) into *ret (borrowing from p). -EBADMSG with a
 * message naming the field for anything malformed, truncated, over a cap, trailing, or of
 * an unknown version, suite, credential type or leaf source; *ret untouched then.
 */
int mk_kp_decode(const uint8_t *p, size_t n, mk_key_package *ret);

/*
 * Reads one MLSMessage(KeyPackage) from r (several may follow each other: each is
 * self-delimiting) into *ret, borrowing from r's input; *ret_kp (may be NULL) is set to the
 * span of the inner KeyPackage (for mk_kp_ref). -EBADMSG as mk_kp_decode, also for another
 * version or wire format; *r is not advanced then.
 */
int mk_kp_read_message(mk_reader *r, mk_key_package *ret, mk_kp_span *ret_kp);

/* mk_kp_read_message for a buffer that must hold exactly one MLSMessage. */
int mk_kp_decode_message(const uint8_t *p, size_t n, mk_key_package *ret, mk_kp_span *ret_kp);

/*
 * KeyPackageRef = RefHash("MLS 1.0 KeyPackage Reference", kp_bytes) with the suite's hash:
 * Hash(V(label) || V(kp_bytes)) into *ret (md_len bytes). -EOPNOTSUPP for an unknown suite.
 */
int mk_kp_ref(uint16_t suite, const uint8_t *kp_bytes, size_t n, mk_bytes *ret);

/*
 * What a receiver checks of a decoded KeyPackage at time `now` (seconds since the epoch):
 * version mls10 and a supported suite; public keys of the suite's lengths; init_key !=
 * encryption_key; now within the lifetime; the capabilities list mls10, the suite, the
 * credential's type and every non-default extension type of the leaf and the KeyPackage;
 * both signatures verify (VerifyWithLabel in software, "LeafNodeTBS" then "KeyPackageTBS")
 * under leaf.signature_key. 0, or -EBADMSG (-EOPNOTSUPP for an unknown suite) with a
 * message naming the check that failed.
 */
int mk_kp_check(const mk_key_package *kp, uint64_t now);
