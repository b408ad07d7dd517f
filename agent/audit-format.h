/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The audit file's record format (docs/AUDIT.md), shared by the writer (agent/audit.c) and
 * the verifier (`mlskey audit verify`, clients/audit-verify.c). Constants only: either side
 * can be rewritten with other tools from the document alone.
 *
 * A file is lines of JSON objects, each ending in "\n". Every object's last two members are
 * "prev" and "hash":
 *   prev  hex SHA-256 of the previous line's bytes (without its "\n"); 64 zeros on line 1
 *   hash  hex SHA-256 of this line's bytes before MK_AUDIT_HASH_SEP (the ,"hash":" part)
 * so that the line reads  <object without its closing brace>,"hash":"<64 hex>"}
 */
#pragma once

#define MK_AUDIT_HASH_SEP ",\"hash\":\""
#define MK_AUDIT_HEX_LEN 64
#define MK_AUDIT_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* Records longer than this are not written (a record is at most a few KiB). */
#define MK_AUDIT_MAX_LINE (1024 * 1024)

/* The "event" of a record. */
#define MK_AUDIT_EVENT_START "start" /* the agent started: version, pid */
#define MK_AUDIT_EVENT_CALL "call"   /* one D-Bus method call, allowed or refused */
#define MK_AUDIT_EVENT_STOP "stop"   /* the agent stopped cleanly: pid */
