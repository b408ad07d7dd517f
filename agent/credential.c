/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * GetCredential and ImportCertificates (agent/ops.h): the X.509 certificate chain of a
 * signature key as the token holds it, which MLS carries as an x509 credential (RFC 9420
 * §5.3), and storing such a chain on the key's token.
 *
 * The key is found from the token's listing (its public object), so that reading a
 * credential needs no PIN; only a key whose objects all hide until login costs one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/check.h"
#include "agent/ops-private.h"
#include "agent/policy.h"
#include "common/error.h"

void mk_bytes_array_free(mk_bytes *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		mk_bytes_clear(&a[i]);
	free(a);
}

/*
 * The key uri names, as listed: without a login when the token shows it, else after one
 * (the PIN dialog says `what`). The key must be a usable signature key.
 */
static int key_find(mk_agent *a, const mk_caller *c, const char *uri, const char *what,
		    mk_key_info *ret)
{
	mk_key_info k = { 0 };
	int r;

	r = mk_agent_key_info(a, c, uri, what, &k);
	if (r < 0)
		return r;
	if (!mk_key_alg_is_signature(k.alg)) {
		r = mk_error(-EOPNOTSUPP, "key \"%s\" is a%s %s key; an MLS credential belongs to a "
			     "signature key (ecdsa-p256/p384/p521, ed25519)",
			     k.label ? k.label : "", k.alg == MK_ALG_NONE ? "n" : "",
			     k.alg == MK_ALG_NONE ? "unsupported" : mk_key_alg_name(k.alg));
		mk_key_info_clear(&k);
		return r;
	}
	*ret = k;
	return 0;
}

static void format_time(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm))
		strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
	else
		snprintf(buf, n, "%lld (seconds since 1970)", (long long)t);
}

/* The leaf's dates against the clock: -EOPNOTSUPP with the dates when outside. */
static int check_dates(const mk_key_info *k, const mk_bytes *leaf)
{
	char from[64], to[64], now_s[64];
	int64_t now = (int64_t)time(NULL);
	mk_x509_info i;
	const char *state;
	int r;

	r = mk_x509_describe(leaf->data, leaf->len, &i);
	if (r < 0)
		return r;
	if (now >= i.not_before && now <= i.not_after) {
		mk_x509_info_clear(&i);
		return 0;
	}
	state = now < i.not_before ? "is not valid yet" : "has expired";
	format_time(i.not_before, from, sizeof(from));
	format_time(i.not_after, to, sizeof(to));
	format_time(now, now_s, sizeof(now_s));
	r = mk_error(-EOPNOTSUPP, "the certificate of key \"%s\" (\"%.200s\") %s: it is valid from "
		     "%s until %s, and now is %s; import a current certificate, or ask with "
		     "allow_expired", k->label ? k->label : "", i.subject, state, from, to, now_s);
	mk_x509_info_clear(&i);
	return r;
}

static const char *token_label(mk_agent *a, const char *token_uri, mk_token_info *t)
{
	if (mk_agent_token_get(a, token_uri, t) == 0 && t->label && t->label[0])
		return t->label;
	return "(no label)";
}

int mk_agent_credential(mk_agent *a, const mk_caller *c, const char *key_uri,
			bool allow_invalid_dates, mk_bytes **ret_certs, size_t *ret_n)
{
	mk_key_info k = { 0 };
	mk_bytes *certs = NULL;
	size_t n = 0;
	int r;

	r = key_find(a, c, key_uri, "read the certificate of a key", &k);
	if (r < 0)
		return r;
	/* public objects only: no gate, so reading does not keep a login from its idle logout */
	r = mk_p11_key_certificates(a->p11, &k, &certs, &n);
	if (r == -ENOKEY) {
		mk_token_info t = { 0 };

		r = mk_error(-ENOKEY, "no certificate for key \"%s\" on token \"%s\": no X.509 "
			     "certificate there carries its public key; import the certificate "
			     "your administration issued for it, with its CA certificates "
			     "('mlskey cert import KEY FILE...')", k.label ? k.label : "",
			     token_label(a, k.token_uri, &t));
		mk_token_info_clear(&t);
	}
	if (r == 0 && !allow_invalid_dates)
		r = check_dates(&k, &certs[0]);
	mk_key_info_clear(&k);
	if (r < 0) {
		mk_bytes_array_free(certs, n);
		return r;
	}
	*ret_certs = certs;
	*ret_n = n;
	return 0;
}

int mk_agent_import_certificates(mk_agent *a, const mk_caller *c, const char *key_uri,
				 const mk_bytes *certs, size_t n)
{
	mk_key_info k = { 0 };
	char what[200];
	gate *g;
	int r;

	/* refused before any dialog: a chain that cannot be stored asks for no PIN */
	r = mk_x509_chain_check(certs, n);
	if (r < 0)
		return r;
	mk_agent_describe(what, sizeof(what), "store certificates", key_uri);
	r = key_find(a, c, key_uri, what, &k);
	if (r < 0)
		return r;
	r = mk_agent_authorize(a, c, MK_POLICY_CERTIFICATE, key_uri, &k, what);
	if (r < 0) {
		mk_key_info_clear(&k);
		return r;
	}
	g = mk_gate_get(a, k.token_uri);
	mk_gate_enter(a, g);
	r = mk_p11_import_certificates(a->p11, &k, certs, n);
	if (r == -ENOTCONN) {
		r = mk_login(a, c, k.token_uri, what,
			     c->t_call_ns ? c->t_call_ns : mk_agent_clock_ns());
		if (r == 0)
			r = mk_p11_import_certificates(a->p11, &k, certs, n);
	}
	mk_gate_leave(a, g);
	mk_key_info_clear(&k);
	return r;
}
