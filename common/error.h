/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The project's one error vocabulary: functions return 0 (or a count) on success and a
 * negative errno on failure. Foreign codes (CK_RV, SCARD_*, OpenSSL, D-Bus) are translated
 * once, at the edge, into these. Each errno that reaches a client has a stable name:
 *
 *   -ENOKEY       NoSuchKey       no key with that URI (or it was deleted)
 *   -ENODEV       NoSuchToken     no token matches that URI
 *   -ENOMEDIUM    TokenAbsent     the token was removed / its slot is empty
 *   -EOPNOTSUPP   Unsupported     algorithm, suite or mechanism not supported
 *   -EINVAL       InvalidInput    malformed or out-of-bounds input
 *   -EKEYREJECTED PinIncorrect    the token refused the PIN
 *   -EKEYREVOKED  PinLocked       the PIN is locked on the token
 *   -ECANCELED    Cancelled       the person cancelled the dialog
 *   -EACCES       AccessDenied    the caller or operation is not allowed
 *   -EBADMSG      DecryptFailed   authentication of a ciphertext failed
 *   -EIO          TokenError      the token failed in another way
 *   -EBUSY        Busy            too many calls at once, try again
 *   -ENOTCONN     (internal)      the token needs a login before this operation
 *   -ETIMEDOUT    TokenError      the token did not answer in time
 *
 * Library code does not log. To say *what* happened in words a person can act on, a
 * function records a message for the current thread with mk_error() as it returns; the
 * caller that finally reports the error reads it with mk_error_message().
 */
#pragma once

#include <errno.h>
#include <stdbool.h>

#include "common/macros.h"

/*
 * Records a message (printf format) for the calling thread and returns r (a negative
 * errno), so that a failure reads `return mk_error(-EIO, "token \"%s\" failed", label);`.
 * The message replaces any earlier one. The message must never contain a secret.
 */
int mk_error(int r, const char *fmt, ...) _printf_(2, 3);

/* Clears the calling thread's message. */
void mk_error_clear(void);

/*
 * The calling thread's last message, or NULL when none was recorded since the last
 * mk_error_clear(). Valid until the thread's next mk_error()/mk_error_clear().
 */
const char *mk_error_message(void);

/*
 * The stable error name for r ("NoSuchKey", ..., "TokenError"), for any negative errno.
 * Unknown codes map to "TokenError"; -ENOMEM to "NoMemory". Static string.
 */
const char *mk_error_name(int r);

/*
 * A message to show for r: the thread's recorded message if any, else a generic sentence
 * for r. Static or thread-local string, valid until the thread's next mk_error*() call.
 */
const char *mk_error_text(int r);
