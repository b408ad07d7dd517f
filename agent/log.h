/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's log: syslog (ident "mlskeyd", facility daemon) and, in the foreground, stderr.
 * Only the daemon logs (library layers record mk_error() messages instead). Never pass a
 * secret, a PIN or a plaintext to these functions, nor the length of one.
 */
#pragma once

#include <stdbool.h>
#include <syslog.h>

#include "common/macros.h"

/*
 * Opens the log. Messages above max_level (a syslog priority: LOG_ERR ... LOG_DEBUG) are
 * dropped. With to_stderr, each message is also written to stderr. Thread-safe afterwards.
 */
void mk_log_open(bool to_stderr, int max_level);

/* Logs one message (printf format, no trailing newline needed) at a syslog priority. */
void mk_log(int prio, const char *fmt, ...) _printf_(2, 3);

/*
 * Logs one audit line (agent/audit.h) at prio whatever the log level, in full however long
 * (mk_log cuts at 1 KiB). The line must not end in a newline.
 */
void mk_log_audit(int prio, const char *line);

/* True when a message at prio would be logged (to skip building expensive messages). */
bool mk_log_enabled(int prio);

/* The syslog priority for "err", "warning", "notice", "info", "debug"; -EINVAL otherwise. */
int mk_log_level_from_name(const char *name);
