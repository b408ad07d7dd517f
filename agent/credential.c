/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * GetCredential (agent/ops.h): the certificate chain of a signature key, as the token holds
 * it. Placeholder until the certificate work of issue 8 lands: no key has a credential yet.
 */
#include <errno.h>
#include <stdlib.h>

#include "agent/ops.h"
#include "common/error.h"

void mk_bytes_array_free(mk_bytes *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		mk_bytes_clear(&a[i]);
	free(a);
}

int mk_agent_credential(mk_agent *a, const mk_caller *c, const char *key_uri,
			bool allow_invalid_dates, mk_bytes **ret_certs, size_t *ret_n)
{
	(void)a;
	(void)c;
	(void)key_uri;
	(void)allow_invalid_dates;
	*ret_certs = NULL;
	*ret_n = 0;
	return mk_error(-ENOKEY, "certificates are not read from tokens yet");
}
