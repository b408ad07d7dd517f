/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Starts the real mlskeyd (from the build tree) for a test: on the private bus of
 * mkt_dbus_setup(), with only the SoftHSM module of mkt_softhsm_setup() (--no-p11-kit
 * --module PATH) and the test pinentry (tests/pinentry-test, answering the PIN in
 * MKT_PINENTRY_PIN, default MKT_USER_PIN). The daemon is killed when the test ends.
 */
#pragma once

#include <sys/types.h>

/*
 * Starts mlskeyd with the given extra arguments (NULL-terminated, may be NULL) and waits
 * until it owns org.mlskey.Agent1 on the private bus (bails out after 10 s). Sets up the
 * bus and SoftHSM store first if the test has not. Returns the daemon's pid.
 */
pid_t mkt_agent_start(const char *const *extra_args);

/*
 * A [rule] for tests that are not about the policy (issue 7): any caller may use any key
 * with any label, HpkeOpen included. (The default policy allows only the MLS labels and no
 * HpkeOpen; tests/policy/ tests the policy itself.)
 */
#define MKT_RULE_OPEN                                                                          \
	"[rule]\nname = tests-open\ncaller = any\n"                                             \
	"operations = sign decrypt hpke-open generate delete\nlabels = any\n"

/* Stops the daemon started by mkt_agent_start (SIGTERM, wait). Returns its exit status. */
int mkt_agent_stop(pid_t pid);

/* Path of a program in the build tree, e.g. mkt_build_path("clients/mlskey"). Static buffer. */
const char *mkt_build_path(const char *rel);

/*
 * The test pinentry (tests/pinentry-test) sources $MKT_PINENTRY_CONTROL at each start and
 * appends what it was asked to $MKT_PINENTRY_LOG. mkt_pinentry_control() writes that shell
 * file in the fixture directory and exports the variable (call it before mkt_agent_start so
 * the agent inherits it; rewrite it between dialogs).
 */
void mkt_pinentry_control(const char *shell);

/* Exports $MKT_PINENTRY_LOG (a file in the fixture directory) and returns its path. */
const char *mkt_pinentry_log_path(void);

/* How many GETPIN exchanges the test pinentry has answered so far. */
int mkt_pinentry_getpins(void);
