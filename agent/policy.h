/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who may use which key (issue 7): the [policy] and [rule] sections of mlskeyd.conf (the
 * format is in agent/agent-config.h), compiled once at load, and one pure decision function
 * that the agent calls on every operation with the caller and the key's full info, and that
 * unit tests call directly. Nothing here touches a token, a dialog or a lock: the caller
 * (agent/ops.c) asks for confirmations and remembers them.
 *
 * The gates that no ordinary rule lifts: a key the token does not vouch for as never having
 * left it (CKA_NEVER_EXTRACTABLE and CKA_ALWAYS_SENSITIVE) is refused unless
 * require-never-extracted = no, or the deciding rule names that one key and says
 * allow-extracted = yes; a key with CKA_ALWAYS_AUTHENTICATE (a qualified-signature key) is
 * refused unless the deciding allow rule names that one key.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "pkcs11/p11.h"

typedef struct mk_caller mk_caller;

/* Operations, as rules name them (bit flags). */
#define MK_POLICY_SIGN (1u << 0)       /* SignWithLabel */
#define MK_POLICY_DECRYPT (1u << 1)    /* DecryptWithLabel */
#define MK_POLICY_HPKE_OPEN (1u << 2)  /* HpkeOpen: no MLS label, refused unless a rule allows */
#define MK_POLICY_GENERATE (1u << 3)   /* GenerateKey */
#define MK_POLICY_DELETE (1u << 4)     /* DeleteKey */
#define MK_POLICY_KEYPACKAGE (1u << 5) /* CreateKeyPackage (its key generation and signatures) */
#define MK_POLICY_CERTIFICATE (1u << 6) /* ImportCertificates */
#define MK_POLICY_ALL_OPS 0x7fu

typedef enum mk_policy_confirm {
	MK_CONFIRM_NEVER,
	MK_CONFIRM_FIRST,  /* once per caller process, key, operation and label until a logout */
	MK_CONFIRM_ALWAYS, /* every call */
} mk_policy_confirm;

/* One way a rule names its callers. */
typedef enum mk_policy_caller_kind {
	MK_CALLER_ANY,
	MK_CALLER_EXE,  /* exe:/usr/bin/mailbox: mk_caller.exe, exactly */
	MK_CALLER_UNIT, /* unit:mailbox.service: mk_caller.unit */
	MK_CALLER_APP,  /* app:org.example.Mail: mk_caller.app_id */
} mk_policy_caller_kind;

typedef struct mk_policy_caller {
	mk_policy_caller_kind kind;
	char *value; /* NULL for MK_CALLER_ANY */
} mk_policy_caller;

typedef struct mk_policy_rule {
	char *name;
	mk_policy_caller *callers; /* any of these; none given = the rule is incomplete */
	size_t n_callers;
	char *key;                /* the pattern as written; NULL = any */
	void *key_uri;            /* its parsed form (P11KitUri *), NULL = any */
	bool key_exact;           /* the pattern names one key: token (label or serial) + id/object */
	unsigned ops;             /* MK_POLICY_* */
	bool labels_any;
	bool labels_mls;          /* the labels RFC 9420 defines for the operation */
	char **labels;            /* more labels, exactly */
	size_t n_labels;
	mk_policy_confirm confirm;
	bool allow_extracted;
	bool allow;               /* action */
} mk_policy_rule;

typedef struct mk_policy {
	bool default_allow;             /* [policy] default (allow) */
	mk_policy_confirm confirm;      /* [policy] confirm (never) */
	bool require_never_extracted;   /* [policy] require-never-extracted (yes) */
	mk_policy_rule *rules;          /* in file order */
	size_t n_rules;
} mk_policy;

/* The defaults: default allow, confirm never, require-never-extracted yes, no rules. */
void mk_policy_init(mk_policy *p);

/* Frees the rules; p is left as after mk_policy_init(). */
void mk_policy_clear(mk_policy *p);

/*
 * One setting of the [policy] section ("default", "confirm", "require-never-extracted").
 * 0, or -EINVAL with a message naming the setting and the accepted values.
 */
int mk_policy_set(mk_policy *p, const char *key, const char *value);

/*
 * One setting of a [rule] section: "name" starts a new rule;
 * the others (caller, key, operations, labels, confirm, allow-extracted, action) belong to
 * the last rule started. 0, -EINVAL with a message, -E2BIG past 256 rules, -ENOMEM.
 */
int mk_policy_set_rule(mk_policy *p, const char *key, const char *value);

/*
 * Checks the whole policy after loading: every rule has a caller, an allow-extracted rule
 * names one exact key. 0 or -EINVAL with a message naming the rule.
 */
int mk_policy_check(const mk_policy *p);

/* A request for a decision. */
typedef struct mk_policy_request {
	const mk_caller *caller;
	unsigned op;              /* one MK_POLICY_* */
	const char *label;        /* the MLS label; NULL for operations without one */
	const mk_key_info *key;   /* the key with its token flags; NULL when not known (yet) */
	const char *token_uri;    /* GenerateKey: the token's URI; else NULL */
} mk_policy_request;

typedef struct mk_policy_decision {
	const mk_policy_rule *rule; /* the deciding rule, NULL: the default policy */
	mk_policy_confirm confirm;  /* what to ask before going on */
	bool tentative;             /* key NULL: a rule with a key pattern may still refuse */
} mk_policy_decision;

/*
 * Decides q: rules in file order, the first whose caller, operation, label and key match
 * decides; else the default (which never allows HpkeOpen, nor a label RFC 9420 does not
 * define for the operation). Then the provenance and always-authenticate gates (only with
 * a key). Returns 0 and *ret (allowed, maybe after a confirmation), or -EACCES with an
 * mk_error() message naming the rule (or "the default policy") and what to change.
 * With q->key NULL, a rule with a key pattern is passed over when it refuses and taken as
 * a tentative allow when it allows: decide again once the key is known. No allocation on
 * the way to an allow, except when the calling thread meets another token URI than last
 * time and a rule names a token. Thread-safe: p is only read.
 */
int mk_policy_decide(const mk_policy *p, const mk_policy_request *q,
		     mk_policy_decision *ret);

/*
 * The policy's view of a key for ListKeys, independent of the caller: NULL when the key
 * may be used (by some caller), else why not, in words (static string). Keys the token
 * layer already refuses (alg NONE, reason set) keep their own reason.
 */
const char *mk_policy_key_reason(const mk_policy *p, const mk_key_info *k);

/* The MLS label in words for dialogs ("sign an MLS KeyPackage"), or NULL for others. */
const char *mk_policy_label_words(unsigned op, const char *label);

/* "sign", "decrypt", "hpke-open", ... */
const char *mk_policy_op_name(unsigned op);
