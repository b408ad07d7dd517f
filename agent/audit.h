/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The audit trail (issue 7): one record per operation, allowed or refused, with who called
 * (agent/caller.h), what was asked (method, key or token URI, MLS label, SHA-256 of the
 * input) and how it ended. Each record goes to syslog (agent/log.h: the journal, or stderr
 * without a syslog socket) as one line, whatever log-level says; and, with audit-file=, to an
 * append-only file of JSON lines, each chained to the one before by SHA-256 (the format is
 * in docs/AUDIT.md; `mlskey audit verify FILE` checks it).
 *
 * Never pass a PIN, a plaintext or another secret: the input is only ever hashed, and
 * only the hash is written.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/audit-format.h"
#include "agent/ops.h"

typedef struct mk_audit mk_audit;

/* One operation, as the D-Bus layer saw it. Every pointer is borrowed for the call only. */
typedef struct mk_audit_event {
	const mk_caller *caller; /* NULL when the bus could not say who called */
	const char *method;      /* the D-Bus method, e.g. "SignWithLabel" */
	const char *uri;         /* the key or token URI; NULL when none (or not looked at) */
	const char *label;       /* the MLS label; NULL when the method has none */
	const uint8_t *input;    /* the bytes whose SHA-256 is recorded (docs/AUDIT.md) */
	size_t input_len;
	bool has_input;          /* false: no hash (no byte input, or refused before reading it) */
	const char *error_name;  /* NULL: it succeeded; else the D-Bus error name */
	const char *error_text;  /* the error's message (NULL: none) */
	bool read_only;          /* a listing or public key: syslog at LOG_INFO, not LOG_NOTICE */
} mk_audit_event;

/*
 * Opens the audit trail. With path (absolute) it opens or creates that file (mode 0600,
 * O_APPEND), takes an exclusive lock on it (two agents must not interleave their chains),
 * continues seq and the hash chain from its last line (a last line that does not parse is
 * logged as a warning and chained from by the hash of its bytes) and writes a "start" record
 * (agent version, pid). Without path, records go to syslog only. Returns 0 and *ret, or
 * -errno with an mk_error() message that names the file.
 */
int mk_audit_open(const char *path, mk_audit **ret);

/*
 * Records one operation: a syslog line and, with a file, one JSON line. Any thread; file
 * records are written one at a time under a mutex. A write error is logged (at most every
 * 10 s, with the number of records lost) and never stops the call. a may be NULL (syslog
 * only).
 */
void mk_audit_log(mk_audit *a, const mk_audit_event *e);

/* Writes a "stop" record (with a file), closes it and frees a. NULL ok. Returns NULL. */
mk_audit *mk_audit_close(mk_audit *a);

/*
 * The lower-case hex SHA-256 of n bytes at p into hex (65 bytes with the NUL). Returns 0, or
 * -ENOMEM when OpenSSL failed.
 */
int mk_audit_sha256_hex(const void *p, size_t n, char hex[65]);
