/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskeyd's settings: defaults, the INI file ($XDG_CONFIG_HOME/mlskey/mlskeyd.conf or
 * --config FILE, section [agent]) and the command line, which overrides the file.
 *
 *   [agent]
 *   pinentry = pinentry          program asked for PINs (Assuan GETPIN)
 *   pinentry-timeout = 120       seconds before an unanswered dialog counts as cancelled
 *   p11-kit = yes|no             load the modules p11-kit registers
 *   modules = PATH;PATH          PKCS#11 modules by path (';' or ',' separated)
 *   log-level = info             err, warning, notice, info, debug
 *   max-array-bytes = 4194304    per byte-array argument
 *   max-label-bytes = 255        label arguments (at most 255)
 *   workers = 4                  worker threads per token
 *   max-queue = 256              calls waiting per token before Busy
 *   worker-spin-us = 200         how long an idle worker stays awake for the next call
 *   pin-attempts = 3             PIN dialogs per call after wrong PINs, in all (1 .. 10)
 *   idle-logout = 900            seconds without an operation before C_Logout (0: never)
 *   allow-users = NAME|UID ...   system mode (--system) only: users who may call the agent
 *   allow-groups = NAME|GID ...  system mode only: members of these groups may call it
 *   audit-file = /abs/path       the audit trail also as hash-chained JSON lines (docs/AUDIT.md)
 *
 * allow-users and allow-groups take names or numbers, separated by spaces or commas; each
 * line adds to the list. Names are resolved when the file is read (an unknown one is an
 * error naming the line). In session mode they are refused: there only the session's own
 * user may call. The agent's own user may always call.
 *
 *   [token]
 *   uri = pkcs11:token=hsm1;serial=42  the tokens this entry is for (a token URI)
 *   pin-file = /etc/mlskey/hsm1.pin    headless login: the PIN from this file
 *
 * Each `uri =` in a [token] section starts an entry; the settings after it belong to it.
 * An entry applies to every token its URI matches (the first matching entry wins).
 * pin-file must be an absolute path. (The URI is a value, not part of the section name,
 * because inih cuts section names after 49 bytes.)
 *
 * Who may use which key (agent/policy.h). The defaults, written out:
 *
 *   [policy]
 *   default = allow                 allow | deny: calls no rule matches
 *   confirm = never                 never | first | always: for calls no rule matches
 *   require-never-extracted = yes   only keys the token says never left it
 *
 *   [rule]                          repeatable: each `name =` starts a rule
 *   name = mailbox
 *   caller = exe:/usr/bin/mailbox unit:mailbox.service app:org.example.Mail any
 *                                   any of these (required)
 *   key = any                       or a pkcs11: URI pattern: every attribute it names
 *                                   (token, serial, id, object, ...) must equal the key's
 *   operations = sign decrypt       sign decrypt hpke-open generate delete keypackage
 *                                   import-certificate
 *   labels = mls                    mls (the labels RFC 9420 defines for the operation:
 *                                   FramedContentTBS, LeafNodeTBS, KeyPackageTBS,
 *                                   GroupInfoTBS to sign; Welcome, UpdatePathNode to
 *                                   decrypt), any, and/or more labels, exactly
 *   confirm = never                 never | first | always
 *   allow-extracted = no            yes only when key names one key (token + id/object)
 *   action = allow                  allow | deny
 *
 * Rules are checked in file order; the first rule whose caller, operation, label and key
 * match decides. No match: [policy] default, but the default never allows HpkeOpen nor a
 * label the RFC does not define for the operation. A key with CKA_ALWAYS_AUTHENTICATE is
 * used only when the deciding allow rule names that one key. confirm = first asks once per
 * caller process, key, operation and label, until the next logout (Lock, session lock,
 * idle logout, removal).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "agent/policy.h"

typedef enum mk_bus_kind {
	MK_BUS_SESSION,
	MK_BUS_SYSTEM,
	MK_BUS_ADDRESS,
} mk_bus_kind;

#define MK_CONFIG_MAX_MODULES 32
#define MK_CONFIG_DEFAULT_MAX_ARRAY (4u * 1024 * 1024)
#define MK_CONFIG_MAX_WORKERS 64
#define MK_CONFIG_MAX_TOKENS 64
#define MK_CONFIG_MAX_PIN_ATTEMPTS 10
#define MK_CONFIG_MAX_ALLOW 1024 /* entries of allow-users, of allow-groups */

/* An entry of a [token] section. */
typedef struct mk_config_token {
	char *uri;      /* a token URI (pkcs11:, no object), as written */
	char *pin_file; /* absolute path, or NULL */
} mk_config_token;

typedef struct mk_config {
	mk_bus_kind bus;
	char *address;          /* MK_BUS_ADDRESS */
	bool system_mode;       /* --system: a service for other users (also on a --address bus) */
	char *pinentry;         /* never NULL after mk_config_init */
	unsigned pinentry_timeout; /* seconds, >= 1 */
	bool use_p11_kit;
	char *modules[MK_CONFIG_MAX_MODULES + 1]; /* NULL-terminated */
	size_t n_modules;
	int log_level;          /* syslog priority */
	bool foreground;
	size_t max_array_bytes; /* 1 .. 64 MiB */
	size_t max_label_bytes; /* 0 .. 255 */
	unsigned workers;       /* 1 .. MK_CONFIG_MAX_WORKERS */
	unsigned max_queue;     /* 1 .. 65536 */
	unsigned worker_spin_us; /* 0 .. 10000 */
	unsigned token_timeout_s; /* 0 .. 3600, 0: no limit */
	unsigned slot_poll_ms;  /* 0, or 50 .. 3600000 */
	bool pcsc;
	unsigned pin_attempts;  /* 1 .. MK_CONFIG_MAX_PIN_ATTEMPTS */
	unsigned idle_logout;   /* seconds, 0 = never; at most a week */
	mk_config_token *tokens; /* in file order */
	size_t n_tokens;
	uid_t *allow_users;     /* system mode: who else may call */
	size_t n_allow_users;
	gid_t *allow_groups;    /* system mode: members of these may call */
	size_t n_allow_groups;
	char *audit_file;       /* absolute path, or NULL */
	mk_policy policy;       /* [policy] and [rule] (agent/policy.h) */
} mk_config;

/* Fills c with the defaults. Returns 0 or -ENOMEM. Free with mk_config_clear(). */
int mk_config_init(mk_config *c);

/* Frees what c owns and leaves it zeroed. */
void mk_config_clear(mk_config *c);

/*
 * Sets one setting by its INI name ("pinentry", "max-queue", ...). "modules" replaces the
 * list with the separated paths in value; "allow-users" and "allow-groups" add to theirs
 * (and are -EINVAL unless c->system_mode is set first). Returns 0, or -EINVAL with an mk_error() message
 * naming the setting and the accepted values, or -ENOMEM.
 */
int mk_config_set(mk_config *c, const char *key, const char *value);

/*
 * Sets one setting of the [token] entry for uri (as written; it must be a token URI):
 * "uri" (value ignored: only makes sure the entry exists) or "pin-file" (an absolute path).
 * The entry is created on its first setting. Returns 0, -EINVAL with a message, -E2BIG past
 * MK_CONFIG_MAX_TOKENS entries, -ENOMEM.
 */
int mk_config_set_token(mk_config *c, const char *uri, const char *key, const char *value);

/* Appends one module path (--module). 0, -E2BIG past MK_CONFIG_MAX_MODULES, -ENOMEM. */
int mk_config_add_module(mk_config *c, const char *path);

/* Drops every module path (the first --module on the command line replaces the file's). */
void mk_config_clear_modules(mk_config *c);

/*
 * Reads an INI file into c. A missing file is -ENOENT (the caller decides whether that is
 * fine); a syntax error, an unknown section or setting, or a bad value is -EINVAL with an
 * mk_error() message "FILE:LINE: ...". On failure c may be partly updated.
 */
int mk_config_load(mk_config *c, const char *path);

/*
 * The default config path, $XDG_CONFIG_HOME/mlskey/mlskeyd.conf or
 * $HOME/.config/mlskey/mlskeyd.conf, into *ret (free()). -ENOENT when neither is set.
 */
int mk_config_default_path(char **ret);
