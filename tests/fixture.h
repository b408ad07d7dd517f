/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test fixtures made of real parts. Each fixture lives in a private temporary directory
 * that a reaper process removes when the test process ends, however it ends (exit, abort,
 * a crash, SIGKILL): the reaper waits on a pipe that only closes when the test is gone.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define MKT_SO_PIN "12345678"
#define MKT_USER_PIN "123456"

/* The SoftHSM2 module path, or NULL (and the caller skips) when SoftHSM is not installed. */
const char *mkt_softhsm_module(void);

/*
 * Creates a private SoftHSM2 store in a fresh temp directory, points SOFTHSM2_CONF at it
 * (so both p11-kit's registered softhsm2 module and a module loaded by path see it) and
 * arranges its removal. Call once, before any module is loaded. Skips the whole test (TAP
 * SKIP with the reason) when softhsm2-util or the module is missing. Returns the directory.
 */
const char *mkt_softhsm_setup(void);

/*
 * Initialises a new token with the given label in the next free slot, SO PIN MKT_SO_PIN
 * and user PIN MKT_USER_PIN (softhsm2-util --init-token --free). Bails out on failure.
 */
void mkt_softhsm_add_token(const char *label);

/* Deletes the token with that label (softhsm2-util --delete-token). Bails out on failure. */
void mkt_softhsm_delete_token(const char *label);

/*
 * Starts a private dbus-daemon (session configuration, listening on a unix socket in a temp
 * directory) and returns its address; the daemon is killed and the directory removed when
 * the test process ends. Skips the test when dbus-daemon is missing.
 */
const char *mkt_dbus_setup(void);

/* Writes text to a new file `name` in the fixture's temp directory (bails out on failure)
 * and returns its path, valid until the test ends (at most 16 files per test). */
const char *mkt_write_file(const char *name, const char *text);

/* The fixture's temp directory (created on first use). */
const char *mkt_tmpdir(void);

/* The path of the shared vectors directory (../shared/vectors, from MKT_VECTORS_DIR). */
const char *mkt_vectors_dir(void);
