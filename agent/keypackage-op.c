/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/keypackage-op.h"
#include "agent/policy.h"
#include "agent/suite.h"
#include "common/error.h"

#define DAY 86400ULL

static int check_ext_list(const mk_kp_extension *e, size_t n, bool last_resort, const char *what)
{
	if (n > MK_KP_OPTION_EXTENSIONS_MAX)
		return mk_error(-EINVAL, "%s: %zu extensions, at most %d", what, n,
				MK_KP_OPTION_EXTENSIONS_MAX);
	for (size_t i = 0; i < n; i++) {
		if (e[i].type == 0)
			return mk_error(-EINVAL, "%s: extension type 0 is reserved", what);
		if (e[i].data.n > MK_KP_EXT_DATA_MAX)
			return mk_error(-EINVAL, "%s: extension 0x%04x has %zu bytes, at most %d",
					what, e[i].type, e[i].data.n, MK_KP_EXT_DATA_MAX);
		if (last_resort && e[i].type == MK_MLS_EXTENSION_LAST_RESORT)
			return mk_error(-EINVAL,
					"%s: last_resort (0x000a) is added by the "
					"last_resort option; do not pass it as well",
					what);
		for (size_t j = 0; j < i; j++)
			if (e[j].type == e[i].type)
				return mk_error(-EINVAL, "%s: extension type 0x%04x twice", what,
						e[i].type);
	}
	return 0;
}

int mk_kp_options_check(const mk_kp_options *o)
{
	int r;

	if (o->identity && (o->identity_len == 0 || o->identity_len > MK_KP_IDENTITY_MAX))
		return mk_error(-EINVAL, "the identity has %zu bytes; give 1 to %d",
				o->identity_len, MK_KP_IDENTITY_MAX);
	if (o->lifetime_days && o->not_after)
		return mk_error(-EINVAL, "give either lifetime_days or not_after, not both");
	if (o->lifetime_days > MK_KP_MAX_LIFETIME_DAYS)
		return mk_error(-EINVAL, "lifetime_days %u is over %d", o->lifetime_days,
				MK_KP_MAX_LIFETIME_DAYS);
	if (o->not_after && o->not_before && o->not_before >= o->not_after)
		return mk_error(-EINVAL, "not_before must be before not_after");
	if (o->not_before > UINT64_MAX - MK_KP_MAX_LIFETIME_DAYS * DAY)
		return mk_error(-EINVAL, "not_before is too far in the future");
	r = check_ext_list(o->extensions, o->n_extensions, o->last_resort, "extensions");
	if (r == 0)
		r = check_ext_list(o->leaf_extensions, o->n_leaf_extensions, false,
				   "leaf_extensions");
	return r;
}

void mk_kp_created_clear(mk_kp_created *c)
{
	mk_bytes_clear(&c->message);
	mk_bytes_clear(&c->ref);
	free(c->init_key_uri);
	free(c->leaf_key_uri);
	*c = (mk_kp_created){ 0 };
}

static void add_type(mk_kp_u16s *l, uint16_t t)
{
	if (t <= MK_MLS_EXTENSION_DEFAULT_MAX)
		return;
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] == t)
			return;
	if (l->n < MK_KP_LIST_MAX)
		l->v[l->n++] = t;
}

/* Everything that is built up and torn down with one KeyPackage. */
typedef struct build {
	mk_key_package kp;
	mk_bytes sig_pub, init_pub, leaf_pub, leaf_sig, kp_sig, tbs;
	mk_bytes *certs;
	size_t n_certs;
	char *token;
	char *init_uri, *leaf_uri;
} build;

static void build_clear(build *b)
{
	mk_bytes_clear(&b->sig_pub);
	mk_bytes_clear(&b->init_pub);
	mk_bytes_clear(&b->leaf_pub);
	mk_bytes_clear(&b->leaf_sig);
	mk_bytes_clear(&b->kp_sig);
	mk_bytes_clear(&b->tbs);
	mk_bytes_array_free(b->certs, b->n_certs);
	free(b->token);
	free(b->init_uri);
	free(b->leaf_uri);
}

static mk_kp_span span(const mk_bytes *b)
{
	return (mk_kp_span){ b->data, b->len };
}

/* The credential, lifetime, capabilities and extensions: all that needs no new key. */
static int prepare(mk_agent *a, const mk_caller *c, const char *uri, const mk_suite *s,
		   const mk_kp_options *o, build *b)
{
	mk_kp_leaf *l = &b->kp.leaf;
	mk_kp_capabilities *caps = &l->capabilities;
	uint64_t now = (uint64_t)time(NULL);
	mk_key_info k = { 0 };
	mk_key_alg alg;
	int r;

	/* public key, algorithm and token in one look at the token's list */
	r = mk_agent_key_info(a, c, uri, "create an MLS KeyPackage", &k);
	if (r == 0 && (!k.public_key || !k.public_key_len || !k.token_uri))
		r = mk_error(-EOPNOTSUPP, "the token does not show this key's public key");
	if (r == 0)
		r = mk_bytes_dup(k.public_key, k.public_key_len, &b->sig_pub);
	if (r == 0 && !(b->token = strdup(k.token_uri)))
		r = -ENOMEM;
	alg = k.alg;
	mk_key_info_clear(&k);
	if (r < 0)
		return r;
	if (alg != s->sig_alg)
		return mk_error(-EOPNOTSUPP, "the key is %s; cipher suite %u (%s) needs an %s key",
				mk_key_alg_is_signature(alg) ? mk_key_alg_name(alg)
							     : "not a signature key",
				s->id, s->name, mk_key_alg_name(s->sig_alg));

	r = mk_agent_credential(a, c, uri, false, &b->certs, &b->n_certs);
	if (r == 0) {
		if (b->n_certs > MK_KP_CERTS_MAX)
			return mk_error(-EINVAL,
					"the key's certificate chain has %zu certificates; "
					"a KeyPackage carries at most %d",
					b->n_certs, MK_KP_CERTS_MAX);
		l->credential.type = MK_MLS_CREDENTIAL_X509;
		for (size_t i = 0; i < b->n_certs; i++)
			l->credential.certs[i] = span(&b->certs[i]);
		l->credential.n_certs = b->n_certs;
	} else if (r == -ENOKEY) {
		if (!o->identity)
			return mk_error(-EINVAL,
					"the token holds no certificate for this key; give "
					"an identity for a basic credential");
		l->credential.type = MK_MLS_CREDENTIAL_BASIC;
		l->credential.identity = (mk_kp_span){ o->identity, o->identity_len };
	} else {
		return r;
	}

	l->not_before = o->not_before ? o->not_before : now - MK_KP_CLOCK_MARGIN;
	l->not_after = o->not_after
			       ? o->not_after
			       : l->not_before + (o->lifetime_days ? o->lifetime_days
								   : MK_KP_DEFAULT_LIFETIME_DAYS) *
							 DAY;
	if (l->not_after <= now || l->not_after <= l->not_before)
		return mk_error(-EINVAL,
				"the KeyPackage would never be valid: not_after %llu is "
				"not after now and not_before",
				(unsigned long long)l->not_after);

	caps->versions = (mk_kp_u16s){ { MK_MLS_VERSION_MLS10 }, 1 };
	caps->cipher_suites = (mk_kp_u16s){ { s->id }, 1 };
	caps->credentials = (mk_kp_u16s){ { MK_MLS_CREDENTIAL_BASIC }, 1 };
	if (l->credential.type == MK_MLS_CREDENTIAL_X509)
		caps->credentials.v[caps->credentials.n++] = MK_MLS_CREDENTIAL_X509;
	for (size_t i = 0; i < o->n_leaf_extensions; i++) {
		l->extensions.v[l->extensions.n++] = o->leaf_extensions[i];
		add_type(&caps->extensions, o->leaf_extensions[i].type);
	}
	for (size_t i = 0; i < o->n_extensions; i++) {
		b->kp.extensions.v[b->kp.extensions.n++] = o->extensions[i];
		add_type(&caps->extensions, o->extensions[i].type);
	}
	if (o->last_resort) {
		b->kp.extensions.v[b->kp.extensions.n++] =
			(mk_kp_extension){ MK_MLS_EXTENSION_LAST_RESORT, { NULL, 0 } };
		add_type(&caps->extensions, MK_MLS_EXTENSION_LAST_RESORT);
	}
	b->kp.version = MK_MLS_VERSION_MLS10;
	b->kp.cipher_suite = s->id;
	return 0;
}

/* The two HPKE keys on the token, and their public keys. */
static int make_keys(mk_agent *a, const mk_caller *c, const mk_suite *s, const mk_kp_options *o,
		     build *b)
{
	uint8_t rnd[8];
	char tag[17], label[32];
	int r;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return mk_error(-EIO, "no random bytes for the key labels");
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(tag + 2 * i, 3, "%02x", rnd[i]);
	snprintf(label, sizeof(label), "mls-init-%s", tag);
	r = mk_agent_generate(a, c, b->token, s->kem_alg, label,
			      o->last_resort ? 0 : MK_GENERATE_SINGLE_USE, &b->init_uri);
	if (r < 0)
		return r;
	snprintf(label, sizeof(label), "mls-leaf-%s", tag);
	r = mk_agent_generate(a, c, b->token, s->kem_alg, label, 0, &b->leaf_uri);
	if (r < 0)
		return r;
	r = mk_agent_public_key(a, c, b->init_uri, &b->init_pub);
	if (r == 0)
		r = mk_agent_public_key(a, c, b->leaf_uri, &b->leaf_pub);
	if (r < 0)
		return r;
	b->kp.init_key = span(&b->init_pub);
	b->kp.leaf.encryption_key = span(&b->leaf_pub);
	b->kp.leaf.signature_key = span(&b->sig_pub);
	return 0;
}

/* Both signatures on the token, the encoding, a receiver's check of it, and the ref. */
static int sign_and_encode(mk_agent *a, const mk_caller *c, const char *uri, const mk_suite *s,
			   build *b, mk_kp_created *out)
{
	mk_key_package back;
	mk_kp_span inner;
	int r;

	r = mk_kp_leaf_tbs(&b->kp.leaf, &b->tbs);
	if (r == 0)
		r = mk_agent_sign(a, c, uri, s->id, "LeafNodeTBS", b->tbs.data, b->tbs.len,
				  &b->leaf_sig);
	if (r < 0)
		return r;
	b->kp.leaf.signature = span(&b->leaf_sig);
	mk_bytes_clear(&b->tbs);
	r = mk_kp_tbs(&b->kp, &b->tbs);
	if (r == 0)
		r = mk_agent_sign(a, c, uri, s->id, "KeyPackageTBS", b->tbs.data, b->tbs.len,
				  &b->kp_sig);
	if (r < 0)
		return r;
	b->kp.signature = span(&b->kp_sig);
	r = mk_kp_encode_message(&b->kp, &out->message);
	if (r < 0)
		return r;
	/* what a receiver will check, checked here first: a faulty token is caught now */
	r = mk_kp_decode_message(out->message.data, out->message.len, &back, &inner);
	if (r == 0)
		r = mk_kp_check(&back, (uint64_t)time(NULL) < b->kp.leaf.not_before
					       ? b->kp.leaf.not_before
					       : (uint64_t)time(NULL));
	if (r < 0)
		return mk_error(-EIO,
				"the KeyPackage made with the token does not pass a "
				"receiver's checks: %s",
				mk_error_message() ? mk_error_message() : "?");
	return mk_kp_ref(s->id, inner.p, inner.n, &out->ref);
}

/* Deletes a key made for a KeyPackage that failed, keeping the failure's message. */
static void undo_key(mk_agent *a, const mk_caller *c, const char *uri)
{
	char msg[512];
	const char *m = mk_error_message();

	if (!uri)
		return;
	snprintf(msg, sizeof(msg), "%s", m ? m : "");
	(void)mk_agent_delete(a, c, uri);
	mk_error_clear();
	if (msg[0])
		(void)mk_error(-EIO, "%s", msg);
}

int mk_agent_create_key_package(mk_agent *a, const mk_caller *c, const char *sig_key_uri,
				uint16_t suite, const mk_kp_options *o, mk_kp_created *ret)
{
	const mk_suite *s = mk_suite_get(suite);
	mk_caller inner = *c;
	mk_kp_created out = { 0 };
	build *b;
	int r;

	if (!s)
		return mk_error(-EOPNOTSUPP, "cipher suite %u is not supported", suite);
	r = mk_kp_options_check(o);
	if (r < 0)
		return r;
	/* decided once, with the signature key; the steps inside are not asked again */
	r = mk_agent_authorize(a, c, MK_POLICY_KEYPACKAGE, sig_key_uri, NULL,
			       "create an MLS KeyPackage");
	if (r < 0)
		return r;
	inner.granted |= MK_POLICY_GENERATE | MK_POLICY_SIGN | MK_POLICY_DELETE;
	c = &inner;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	r = prepare(a, c, sig_key_uri, s, o, b);
	if (r == 0)
		r = make_keys(a, c, s, o, b);
	if (r == 0)
		r = sign_and_encode(a, c, sig_key_uri, s, b, &out);
	if (r < 0) {
		/* nothing half-made stays on the token */
		undo_key(a, c, b->init_uri);
		undo_key(a, c, b->leaf_uri);
		mk_kp_created_clear(&out);
	} else {
		out.init_key_uri = TAKE_PTR(b->init_uri);
		out.leaf_key_uri = TAKE_PTR(b->leaf_uri);
		*ret = out;
	}
	build_clear(b);
	free(b);
	return r;
}
