/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Shared by the mlskey command's source files: options, data in and out, exit codes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "clients/mlskey.h"
#include "common/bytes.h"
#include "common/macros.h"

/* Exit codes, as `mlskey --help` documents them. */
enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,     /* bad usage or input; InvalidInput, Unsupported */
	EXIT_NOTFOUND = 2,  /* NoSuchKey, NoSuchToken, TokenAbsent */
	EXIT_PIN = 3,       /* PinIncorrect, PinLocked, Cancelled */
	EXIT_DENIED = 4,    /* AccessDenied */
	EXIT_BADDATA = 5,   /* DecryptFailed, a signature that does not verify */
	EXIT_TOKEN = 6,     /* TokenError, Busy, anything else */
	EXIT_NOAGENT = 7,   /* no bus, no agent, connection lost, timeout */
};

/* Options every subcommand accepts too (after the subcommand's name). */
typedef struct cli_global {
	const char *address; /* NULL: the session bus */
	bool json;
	const char *cmd; /* the subcommand's name, for messages */
	bool stdin_used; /* an option read standard input already */
} cli_global;

/* The exit code for a negative errno of libmlskey. */
int cli_exit_code(int r);

/*
 * Prints "mlskey CMD: WHAT: message (name)" for the last libmlskey error of this thread and
 * returns the exit code for r.
 */
int cli_fail(const cli_global *g, int r, const char *what);

/* Prints "mlskey CMD: message" to stderr and returns EXIT_USAGE. */
int cli_usage_error(const cli_global *g, const char *fmt, ...) _printf_(2, 3);

/*
 * Reads a DATA argument: hex digits, @FILE (the file's bytes) or - (standard input's bytes,
 * once per call). 0, or EXIT_USAGE after printing why (option names the flag).
 */
int cli_read_data(cli_global *g, const char *option, const char *arg, mk_bytes *ret);

/*
 * Writes bytes: to `out` (a path, or - for stdout) raw, or as one line of hex on stdout when
 * out is NULL. 0 or EXIT_USAGE after printing why.
 */
int cli_write_data(const cli_global *g, const char *out, const uint8_t *p, size_t n);

/* Parses a uint16 (decimal or 0x hex) for option; 0 or EXIT_USAGE after printing why. */
int cli_parse_u16(const cli_global *g, const char *option, const char *arg, uint16_t *ret);

/* Writes s as a JSON string (with quotes) to f. */
void cli_json_string(FILE *f, const char *s);

/* Prints a help text to stdout and returns EXIT_OK. */
int cli_help(const char *text);

/* The long options every subcommand takes; its own option ids start at OPT_FIRST_OWN. */
enum { OPT_ADDRESS = 0x100, OPT_JSON, OPT_FIRST_OWN = 0x110 };
#define COMMON_LONG_OPTIONS                                                                        \
	{ "address", required_argument, NULL, OPT_ADDRESS },                                       \
		{ "json", no_argument, NULL, OPT_JSON }, { "help", no_argument, NULL, 'h' }

/* What cli_common_option made of an option. */
enum { CLI_OPT_OWN = -1, CLI_OPT_DONE = -2, CLI_OPT_HELP = -3 };

/*
 * The options every subcommand shares, for the option c its getopt_long loop got:
 * --address and --json go into g (CLI_OPT_DONE), -h/--help is CLI_OPT_HELP, a missing
 * value (':') or an unknown option ('?') is EXIT_USAGE after printing why (pointing to
 * `mlskey CMD --help`); anything else is CLI_OPT_OWN, for the subcommand's own switch.
 */
int cli_common_option(cli_global *g, int c, char **argv);

/* `mlskey audit verify FILE` (clients/audit-verify.c): exit 0 intact, 1 broken, 2 usage/IO. */
int cli_audit(cli_global *g, int argc, char **argv);
extern const char cli_audit_help[];

/* `mlskey bench`. */
int cli_bench(cli_global *g, int argc, char **argv);
extern const char cli_bench_help[];

/* `mlskey keypackage` (clients/cli-keypackage.c). */
int cli_keypackage(cli_global *g, int argc, char **argv);
extern const char cli_keypackage_help[];
/* `mlskey cert` (import, show): a key's X.509 chain, its MLS credential (cli-cert.c). */
int cli_cert(cli_global *g, int argc, char **argv);
extern const char cli_cert_help[];
