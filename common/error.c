/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

static _Thread_local char msg_buf[512];
static _Thread_local bool msg_set;

int mk_error(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg_buf, sizeof(msg_buf), fmt, ap);
	va_end(ap);
	msg_set = true;
	return r;
}

void mk_error_clear(void)
{
	msg_set = false;
	msg_buf[0] = '\0';
}

const char *mk_error_message(void)
{
	return msg_set ? msg_buf : NULL;
}

static const struct {
	int err;
	const char *name;
	const char *text;
} names[] = {
	{ ENOKEY, "NoSuchKey", "no such key; list keys with 'mlskey keys'" },
	{ ENODEV, "NoSuchToken", "no such token; list tokens with 'mlskey tokens'" },
	{ ENOMEDIUM, "TokenAbsent", "the token is not present; insert it and retry" },
	{ EOPNOTSUPP, "Unsupported", "not supported by mlskey or by the token" },
	{ EINVAL, "InvalidInput", "invalid input" },
	{ EKEYREJECTED, "PinIncorrect", "the PIN is incorrect" },
	{ EKEYREVOKED, "PinLocked", "the PIN is locked; unblock it with the PUK or ask your administrator" },
	{ ECANCELED, "Cancelled", "cancelled by the user" },
	{ EACCES, "AccessDenied", "access denied" },
	{ EPERM, "AccessDenied", "access denied" },
	{ EBADMSG, "DecryptFailed", "decryption failed: the ciphertext, label, context or key do not match" },
	{ EIO, "TokenError", "the token reported an error; retry, or reinsert the token" },
	{ ETIMEDOUT, "TokenError", "the token did not answer in time; reinsert it and retry" },
	{ EBUSY, "Busy", "too many operations at once; retry later" },
	{ ENOTCONN, "PinIncorrect", "the token needs a login" },
	{ ENOMEM, "NoMemory", "out of memory" },
};

const char *mk_error_name(int r)
{
	int e = r < 0 ? -r : r;

	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (names[i].err == e)
			return names[i].name;
	return "TokenError";
}

const char *mk_error_text(int r)
{
	int e = r < 0 ? -r : r;

	if (msg_set)
		return msg_buf;
	for (size_t i = 0; i < ELEMENTSOF(names); i++)
		if (names[i].err == e)
			return names[i].text;
	snprintf(msg_buf, sizeof(msg_buf), "internal error: %s", strerror(e));
	return msg_buf;
}
