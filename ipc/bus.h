/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The D-Bus face of mlskeyd: org.mlskey.Agent1 on /org/mlskey/Agent1 (docs/API.md).
 * One thread (the caller of mk_bus_run) owns the connection and runs a poll() loop over
 * libdbus's watches and timeouts, an eventfd (wake-ups) and a signalfd: it checks each call
 * (signature, bounds, caller) and queues the token work on workers, which build the reply
 * and send it (libdbus is thread-safe; replies it cannot write at once wake the bus
 * thread). The bus thread never waits on a token or a PIN dialog.
 */
#pragma once

#include <signal.h>

#include "agent/agent-config.h"
#include "agent/ops.h"

#define MK_BUS_NAME "org.mlskey.Agent1"
#define MK_BUS_PATH "/org/mlskey/Agent1"
#define MK_BUS_INTERFACE "org.mlskey.Agent1"
#define MK_BUS_ERROR_PREFIX "org.mlskey.Error."

typedef struct mk_bus mk_bus;

/* Makes libdbus thread-safe; call once before any thread starts. 0 or -ENOMEM. */
int mk_bus_global_init(void);

/* Frees libdbus's global state at exit (keeps leak checkers quiet). */
void mk_bus_global_done(void);

/*
 * Connects to the bus cfg names (session, system, or an address) and checks that nobody
 * owns org.mlskey.Agent1 yet. Returns 0 and *ret; -EEXIST when another agent owns the name;
 * -ECONNREFUSED when the bus cannot be reached; each with a message.
 */
int mk_bus_connect(const mk_config *cfg, mk_bus **ret);

/*
 * Exports the object, claims the name (-EEXIST if someone was quicker) and serves calls
 * with agent until one of the signals in stop (blocked by the caller in every thread)
 * arrives, or the bus goes away (-ECONNRESET). Then it releases the name, ends PIN dialogs,
 * lets running operations finish, answers every queued call and returns 0.
 */
int mk_bus_run(mk_bus *b, mk_agent *agent, const sigset_t *stop);

/* Closes the connection. Accepts NULL; returns NULL. */
mk_bus *mk_bus_free(mk_bus *b);

/*
 * The org.mlskey.Error.* name for a negative errno ("org.freedesktop.DBus.Error.NoMemory"
 * for -ENOMEM). Static string.
 */
const char *mk_bus_error_name(int r);
