/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asks a person for a PIN through a pinentry program (GnuPG's Assuan protocol): starts the
 * program with a socket on its stdin/stdout, sends OPTION (display, ttyname, ttytype,
 * lc-ctype, lc-messages from the daemon's environment, as gpg-agent does), SETTITLE,
 * SETDESC, SETPROMPT, SETERROR, SETOK, SETCANCEL, then GETPIN, and percent-decodes the D
 * line straight into wiping memory. The PIN never passes through an ordinary buffer and is
 * never logged. The same dialog without a PIN: CONFIRM (a yes/no question) and MESSAGE (a
 * notice shown while a PIN is typed on the reader's keypad).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/secmem.h"

/* Longest PIN accepted from a pinentry (bytes after decoding). */
#define MK_PIN_MAX 256

typedef struct mk_pinentry_request {
	const char *program;     /* a path, or a name looked up in PATH */
	const char *title;       /* SETTITLE, or NULL */
	const char *description; /* SETDESC: may contain newlines; or NULL */
	const char *prompt;      /* SETPROMPT, or NULL */
	const char *error;       /* SETERROR (shown above the field), or NULL */
	const char *ok;          /* SETOK: the OK button's label, or NULL */
	const char *cancel;      /* SETCANCEL: the Cancel button's label, or NULL */
	unsigned timeout_s;      /* the whole exchange; 0 = no limit */
	int cancel_fd;           /* -1, or an fd that becomes readable to abort the dialog */
} mk_pinentry_request;

/*
 * Runs the dialog and returns the PIN in *ret_pin (mk_secret_free). Returns 0;
 * -ECANCELED when the person cancelled, entered nothing, the timeout passed or cancel_fd
 * fired; -EACCES when the program cannot be run or does not speak Assuan (message says
 * which); -ENOMEM. The program is always reaped before return (killed if need be).
 * Blocks: call it on a worker thread, never on the bus thread.
 */
int mk_pinentry_get_pin(const mk_pinentry_request *req, mk_secret **ret_pin);

/*
 * Asks a yes/no question (SETDESC = description, then CONFIRM). Returns 0 when the person
 * chose OK; -ECANCELED when they chose Cancel, closed the dialog, or on timeout or
 * cancel_fd; -EACCES when the program cannot be run. Blocks like mk_pinentry_get_pin().
 */
int mk_pinentry_confirm(const mk_pinentry_request *req);

typedef struct mk_pinentry_popup mk_pinentry_popup;

/*
 * Shows description as a notice (MESSAGE) and returns without waiting for the person: for
 * PIN pads, where the PIN is typed on the reader while C_Login blocks. Returns 0 and *ret
 * (close it with mk_pinentry_popup_close when the login returned), -EACCES when the program
 * cannot be run or does not speak Assuan, -ENOMEM.
 */
int mk_pinentry_popup_open(const mk_pinentry_request *req, mk_pinentry_popup **ret);

/* Closes the notice (ends and reaps the program). Accepts NULL; returns NULL. */
mk_pinentry_popup *mk_pinentry_popup_close(mk_pinentry_popup *p);

/*
 * Assuan percent-decoding of in[0..n) into out (capacity cap): "%XX" becomes the byte 0xXX,
 * other bytes are copied. Returns the decoded length, -EINVAL for a bad escape, -E2BIG when
 * out is too small (out may then hold a partial result: the caller wipes it).
 */
int mk_assuan_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/*
 * Assuan percent-encoding of the NUL-terminated s ('%', CR, LF and other control bytes
 * become %XX) into out (capacity cap, NUL-terminated). Stops early, at a character
 * boundary (never inside an escape or a UTF-8 sequence), when out is full. Returns the
 * encoded length.
 */
size_t mk_assuan_encode(const char *s, char *out, size_t cap);
