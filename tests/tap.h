/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A tiny TAP producer for meson's `protocol : 'tap'`. Each check prints one `ok`/`not ok`
 * line; a test that lacks a tool calls mkt_skip_all() with the reason, which meson reports
 * as SKIP (never as a pass).
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mkt_n, mkt_failed;

/*
 * Prints a formatted text whose lines after the first start with "# ": a description that
 * quotes a program's output (several lines) stays one TAP line plus comments, instead of
 * lines meson reports as "Unknown TAP output".
 */
__attribute__((format(printf, 1, 0))) static inline void mkt_vprint_lines(const char *fmt,
									    va_list ap)
{
	char *s = NULL;
	size_t n;

	if (vasprintf(&s, fmt, ap) < 0) {
		printf("(no memory for the description)");
		return;
	}
	n = strlen(s);
	while (n > 0 && s[n - 1] == '\n')
		s[--n] = '\0';
	for (const char *p = s; *p; p++) {
		if (*p == '\n')
			printf("\n# ");
		else
			putchar(*p);
	}
	free(s);
}

__attribute__((format(printf, 2, 0))) static inline void mkt_vok(bool cond, const char *fmt,
									va_list ap)
{
	mkt_n++;
	if (!cond)
		mkt_failed++;
	printf("%s %d - ", cond ? "ok" : "not ok", mkt_n);
	mkt_vprint_lines(fmt, ap);
	printf("\n");
	fflush(stdout);
}

/* One check. Returns cond so that a caller can stop early: if (!mkt_ok(...)) goto out; */
__attribute__((format(printf, 2, 3))) static inline bool mkt_ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mkt_vok(cond, fmt, ap);
	va_end(ap);
	return cond;
}

/* A check on an int r that must be 0 (or >= 0); prints r and its errno name on failure. */
#define mkt_ok_r(r, ...)                                                                           \
	({                                                                                         \
		int _r = (r);                                                                      \
		if (_r < 0)                                                                        \
			printf("# r=%d (%s)\n", _r, strerror(-_r));                                \
		mkt_ok(_r >= 0, __VA_ARGS__);                                                      \
	})

/* A check that r equals the negative errno `want`. */
#define mkt_ok_err(r, want, ...)                                                                   \
	({                                                                                         \
		int _r = (r), _w = (want);                                                         \
		if (_r != _w)                                                                      \
			printf("# got r=%d (%s), want %d (%s)\n", _r, strerror(_r < 0 ? -_r : _r), \
			       _w, strerror(-_w));                                                 \
		mkt_ok(_r == _w, __VA_ARGS__);                                                     \
	})

__attribute__((format(printf, 1, 2))) static inline void mkt_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	mkt_vprint_lines(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* Skips the whole test file with a reason (TAP "1..0 # SKIP"). Exits 0; meson shows SKIP. */
__attribute__((format(printf, 1, 2), noreturn)) static inline void mkt_skip_all(const char *fmt,
										   ...)
{
	va_list ap;

	printf("1..0 # SKIP ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(0);
}

/* Aborts the file on a broken precondition (the test cannot go on). */
__attribute__((format(printf, 1, 2), noreturn)) static inline void mkt_bail(const char *fmt, ...)
{
	va_list ap;

	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

/* Prints the plan and returns the exit status for main(). */
static inline int mkt_done(void)
{
	printf("1..%d\n", mkt_n);
	if (mkt_n == 0) {
		printf("# no test ran\n");
		return 1;
	}
	return mkt_failed ? 1 : 0;
}
