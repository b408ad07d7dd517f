/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "agent/keypackage.h"
#include "agent/mls.h"
#include "agent/ossl.h"
#include "agent/suite.h"
#include "common/error.h"

static const char ref_label[] = "MLS 1.0 KeyPackage Reference";

/* --- encoding ---------------------------------------------------------------------------- */

/* Appends what sub holds to w as opaque<V> and frees sub; an error of either sticks in w. */
static void put_sub(mk_writer *w, mk_writer *sub)
{
	mk_bytes b = MK_BYTES_NULL;
	int r = mk_writer_finish(sub, &b);

	if (r < 0) {
		if (!w->error)
			w->error = r;
		return;
	}
	mk_write_opaque(w, b.data, b.len);
	mk_bytes_clear(&b);
}

static void put_u16s(mk_writer *w, const mk_kp_u16s *l)
{
	mk_writer sub;

	mk_writer_init(&sub, 2 * MK_KP_LIST_MAX);
	for (size_t i = 0; i < l->n; i++)
		mk_write_u16(&sub, l->v[i]);
	put_sub(w, &sub);
}

static void put_extensions(mk_writer *w, const mk_kp_extensions *e)
{
	mk_writer sub;

	mk_writer_init(&sub, MK_KP_MESSAGE_MAX);
	for (size_t i = 0; i < e->n; i++) {
		mk_write_u16(&sub, e->v[i].type);
		mk_write_opaque(&sub, e->v[i].data.p, e->v[i].data.n);
	}
	put_sub(w, &sub);
}

static void put_credential(mk_writer *w, const mk_kp_credential *c)
{
	mk_write_u16(w, c->type);
	if (c->type == MK_MLS_CREDENTIAL_BASIC) {
		mk_write_opaque(w, c->identity.p, c->identity.n);
	} else {
		mk_writer sub;

		mk_writer_init(&sub, MK_KP_MESSAGE_MAX);
		for (size_t i = 0; i < c->n_certs; i++)
			mk_write_opaque(&sub, c->certs[i].p, c->certs[i].n);
		put_sub(w, &sub);
	}
}

/* The LeafNode fields up to and including its extensions (LeafNodeTBS for key_package). */
static void put_leaf_content(mk_writer *w, const mk_kp_leaf *l)
{
	const mk_kp_capabilities *c = &l->capabilities;

	mk_write_opaque(w, l->encryption_key.p, l->encryption_key.n);
	mk_write_opaque(w, l->signature_key.p, l->signature_key.n);
	put_credential(w, &l->credential);
	put_u16s(w, &c->versions);
	put_u16s(w, &c->cipher_suites);
	put_u16s(w, &c->extensions);
	put_u16s(w, &c->proposals);
	put_u16s(w, &c->credentials);
	mk_write_u8(w, MK_MLS_LEAF_SOURCE_KEY_PACKAGE);
	mk_write_u64(w, l->not_before);
	mk_write_u64(w, l->not_after);
	put_extensions(w, &l->extensions);
}

static void put_kp_content(mk_writer *w, const mk_key_package *kp)
{
	mk_write_u16(w, kp->version);
	mk_write_u16(w, kp->cipher_suite);
	mk_write_opaque(w, kp->init_key.p, kp->init_key.n);
	put_leaf_content(w, &kp->leaf);
	mk_write_opaque(w, kp->leaf.signature.p, kp->leaf.signature.n);
	put_extensions(w, &kp->extensions);
}

static int check_leaf_shape(const mk_kp_leaf *l)
{
	const mk_kp_u16s *lists[] = { &l->capabilities.versions, &l->capabilities.cipher_suites,
				      &l->capabilities.extensions, &l->capabilities.proposals,
				      &l->capabilities.credentials };

	for (size_t i = 0; i < ELEMENTSOF(lists); i++)
		if (lists[i]->n > MK_KP_LIST_MAX)
			return mk_error(-EINVAL, "a capabilities list has more than %d entries",
					MK_KP_LIST_MAX);
	if (l->extensions.n > MK_KP_EXTENSIONS_MAX)
		return mk_error(-EINVAL, "more than %d leaf extensions", MK_KP_EXTENSIONS_MAX);
	if (l->credential.type != MK_MLS_CREDENTIAL_BASIC &&
	    l->credential.type != MK_MLS_CREDENTIAL_X509)
		return mk_error(-EINVAL, "credential type %u is neither basic (1) nor x509 (2)",
				l->credential.type);
	if (l->credential.n_certs > MK_KP_CERTS_MAX)
		return mk_error(-EINVAL, "more than %d certificates", MK_KP_CERTS_MAX);
	return 0;
}

static int finish(mk_writer *w, mk_bytes *ret)
{
	int r = mk_writer_finish(w, ret);

	if (r == -E2BIG)
		return mk_error(r, "the KeyPackage is larger than %d bytes", MK_KP_MESSAGE_MAX);
	return r;
}

int mk_kp_leaf_tbs(const mk_kp_leaf *leaf, mk_bytes *ret)
{
	mk_writer w;
	int r;

	r = check_leaf_shape(leaf);
	if (r < 0)
		return r;
	mk_writer_init(&w, MK_KP_MESSAGE_MAX);
	put_leaf_content(&w, leaf);
	/* leaf_node_source key_package: struct{} -- no group_id, no leaf_index */
	return finish(&w, ret);
}

/* What the encoders need of a KeyPackage: a well-shaped leaf, its extensions in bounds. */
static int check_kp_shape(const mk_key_package *kp)
{
	int r = check_leaf_shape(&kp->leaf);

	if (r < 0)
		return r;
	if (kp->extensions.n > MK_KP_EXTENSIONS_MAX)
		return mk_error(-EINVAL, "more than %d KeyPackage extensions",
				MK_KP_EXTENSIONS_MAX);
	return 0;
}

int mk_kp_tbs(const mk_key_package *kp, mk_bytes *ret)
{
	mk_writer w;
	int r;

	r = check_kp_shape(kp);
	if (r < 0)
		return r;
	mk_writer_init(&w, MK_KP_MESSAGE_MAX);
	put_kp_content(&w, kp);
	return finish(&w, ret);
}

int mk_kp_encode(const mk_key_package *kp, mk_bytes *ret)
{
	mk_writer w;
	int r;

	r = check_kp_shape(kp);
	if (r < 0)
		return r;
	mk_writer_init(&w, MK_KP_MESSAGE_MAX);
	put_kp_content(&w, kp);
	mk_write_opaque(&w, kp->signature.p, kp->signature.n);
	return finish(&w, ret);
}

int mk_kp_encode_message(const mk_key_package *kp, mk_bytes *ret)
{
	_cleanup_bytes_ mk_bytes inner = MK_BYTES_NULL;
	mk_writer w;
	int r;

	r = mk_kp_encode(kp, &inner);
	if (r < 0)
		return r;
	mk_writer_init(&w, MK_KP_MESSAGE_MAX);
	mk_write_u16(&w, MK_MLS_VERSION_MLS10);
	mk_write_u16(&w, MK_MLS_WIRE_FORMAT_KEY_PACKAGE);
	mk_write_bytes(&w, inner.data, inner.len);
	return finish(&w, ret);
}

/* --- decoding ---------------------------------------------------------------------------- */

static int bad(const char *what)
{
	return mk_error(-EBADMSG, "malformed KeyPackage: %s", what);
}

static int get_span(mk_reader *r, size_t max, mk_kp_span *ret, const char *what)
{
	if (mk_read_opaque(r, max, &ret->p, &ret->n) < 0)
		return bad(what);
	return 0;
}

static int get_u16s(mk_reader *r, mk_kp_u16s *ret, const char *what)
{
	mk_kp_span s;
	mk_reader sub;

	if (get_span(r, 2 * MK_KP_LIST_MAX, &s, what) < 0)
		return -EBADMSG;
	if (s.n % 2)
		return bad(what);
	mk_reader_init(&sub, s.p, s.n);
	ret->n = 0;
	while (!mk_reader_empty(&sub))
		(void)mk_read_u16(&sub, &ret->v[ret->n++]);
	return 0;
}

static int get_extensions(mk_reader *r, mk_kp_extensions *ret, const char *what)
{
	mk_kp_span s;
	mk_reader sub;

	if (get_span(r, MK_KP_MESSAGE_MAX, &s, what) < 0)
		return -EBADMSG;
	mk_reader_init(&sub, s.p, s.n);
	ret->n = 0;
	while (!mk_reader_empty(&sub)) {
		mk_kp_extension *e;

		if (ret->n >= MK_KP_EXTENSIONS_MAX)
			return bad(what);
		e = &ret->v[ret->n];
		if (mk_read_u16(&sub, &e->type) < 0 ||
		    get_span(&sub, MK_KP_EXT_DATA_MAX, &e->data, what) < 0)
			return bad(what);
		/* §7.2 / §13: an extension type appears at most once in a list */
		for (size_t i = 0; i < ret->n; i++)
			if (ret->v[i].type == e->type)
				return mk_error(-EBADMSG,
						"malformed KeyPackage: extension type "
						"0x%04x twice in %s",
						e->type, what);
		ret->n++;
	}
	return 0;
}

static int get_credential(mk_reader *r, mk_kp_credential *ret)
{
	if (mk_read_u16(r, &ret->type) < 0)
		return bad("credential type");
	if (ret->type == MK_MLS_CREDENTIAL_BASIC)
		return get_span(r, MK_KP_IDENTITY_MAX, &ret->identity, "basic identity");
	if (ret->type == MK_MLS_CREDENTIAL_X509) {
		mk_kp_span s;
		mk_reader sub;

		if (get_span(r, MK_KP_CERTS_MAX * (MK_KP_CERT_MAX + 4), &s, "certificates") < 0)
			return -EBADMSG;
		mk_reader_init(&sub, s.p, s.n);
		ret->n_certs = 0;
		while (!mk_reader_empty(&sub)) {
			if (ret->n_certs >= MK_KP_CERTS_MAX)
				return bad("too many certificates");
			if (get_span(&sub, MK_KP_CERT_MAX, &ret->certs[ret->n_certs++],
				     "cert_data") < 0)
				return -EBADMSG;
		}
		if (ret->n_certs == 0)
			return bad("x509 credential without a certificate");
		return 0;
	}
	/* the select has no arm for other types: their length is unknown */
	return mk_error(-EBADMSG,
			"malformed KeyPackage: credential type %u is neither basic nor "
			"x509",
			ret->type);
}

static int get_leaf(mk_reader *r, mk_kp_leaf *l)
{
	mk_kp_capabilities *c = &l->capabilities;
	uint8_t source;
	int q;

	if ((q = get_span(r, MK_KP_KEY_MAX, &l->encryption_key, "encryption_key")) < 0 ||
	    (q = get_span(r, MK_KP_KEY_MAX, &l->signature_key, "signature_key")) < 0 ||
	    (q = get_credential(r, &l->credential)) < 0 ||
	    (q = get_u16s(r, &c->versions, "capabilities.versions")) < 0 ||
	    (q = get_u16s(r, &c->cipher_suites, "capabilities.cipher_suites")) < 0 ||
	    (q = get_u16s(r, &c->extensions, "capabilities.extensions")) < 0 ||
	    (q = get_u16s(r, &c->proposals, "capabilities.proposals")) < 0 ||
	    (q = get_u16s(r, &c->credentials, "capabilities.credentials")) < 0)
		return q;
	if (mk_read_u8(r, &source) < 0)
		return bad("leaf_node_source");
	/* §10.1: the leaf of a KeyPackage has source key_package */
	if (source != MK_MLS_LEAF_SOURCE_KEY_PACKAGE)
		return mk_error(-EBADMSG,
				"malformed KeyPackage: leaf_node_source %u, not "
				"key_package (1)",
				source);
	if (mk_read_u64(r, &l->not_before) < 0 || mk_read_u64(r, &l->not_after) < 0)
		return bad("lifetime");
	if ((q = get_extensions(r, &l->extensions, "leaf extensions")) < 0)
		return q;
	return get_span(r, MK_KP_SIG_MAX, &l->signature, "leaf signature");
}

static int get_kp(mk_reader *r, mk_key_package *kp)
{
	int q;

	if (mk_read_u16(r, &kp->version) < 0 || mk_read_u16(r, &kp->cipher_suite) < 0)
		return bad("version and cipher_suite");
	if (kp->version != MK_MLS_VERSION_MLS10)
		return mk_error(-EBADMSG, "KeyPackage of protocol version %u, not mls10 (1)",
				kp->version);
	if (!mk_suite_get(kp->cipher_suite))
		return mk_error(-EBADMSG,
				"KeyPackage of cipher suite %u, which mlskey does not "
				"support (1, 2, 3, 5, 7)",
				kp->cipher_suite);
	if ((q = get_span(r, MK_KP_KEY_MAX, &kp->init_key, "init_key")) < 0 ||
	    (q = get_leaf(r, &kp->leaf)) < 0 ||
	    (q = get_extensions(r, &kp->extensions, "KeyPackage extensions")) < 0)
		return q;
	return get_span(r, MK_KP_SIG_MAX, &kp->signature, "KeyPackage signature");
}

int mk_kp_decode(const uint8_t *p, size_t n, mk_key_package *ret)
{
	mk_key_package *kp;
	mk_reader r;
	int q;

	if (n > MK_KP_MESSAGE_MAX)
		return mk_error(-EBADMSG, "KeyPackage of %zu bytes, more than %d", n,
				MK_KP_MESSAGE_MAX);
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		return -ENOMEM;
	mk_reader_init(&r, p, n);
	q = get_kp(&r, kp);
	if (q == 0 && !mk_reader_empty(&r))
		q = mk_error(-EBADMSG, "%zu bytes after the KeyPackage", r.left);
	if (q == 0)
		*ret = *kp;
	free(kp);
	return q;
}

int mk_kp_read_message(mk_reader *r, mk_key_package *ret, mk_kp_span *ret_kp)
{
	mk_reader t = *r;
	mk_key_package *kp;
	uint16_t version, wire;
	const uint8_t *start;
	int q;

	if (mk_read_u16(&t, &version) < 0 || mk_read_u16(&t, &wire) < 0)
		return bad("MLSMessage header");
	if (version != MK_MLS_VERSION_MLS10)
		return mk_error(-EBADMSG, "MLSMessage of protocol version %u, not mls10 (1)",
				version);
	if (wire != MK_MLS_WIRE_FORMAT_KEY_PACKAGE)
		return mk_error(-EBADMSG, "MLSMessage of wire format %u, not mls_key_package (5)",
				wire);
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		return -ENOMEM;
	start = t.p;
	q = get_kp(&t, kp);
	if (q == 0) {
		*ret = *kp;
		if (ret_kp)
			*ret_kp = (mk_kp_span){ start, (size_t)(t.p - start) };
		*r = t;
	}
	free(kp);
	return q;
}

int mk_kp_decode_message(const uint8_t *p, size_t n, mk_key_package *ret, mk_kp_span *ret_kp)
{
	mk_key_package *kp;
	mk_kp_span span;
	mk_reader r;
	int q;

	if (n > MK_KP_MESSAGE_MAX + 4)
		return mk_error(-EBADMSG, "MLSMessage of %zu bytes, more than %d", n,
				MK_KP_MESSAGE_MAX);
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		return -ENOMEM;
	mk_reader_init(&r, p, n);
	q = mk_kp_read_message(&r, kp, &span);
	if (q == 0 && !mk_reader_empty(&r))
		q = mk_error(-EBADMSG, "%zu bytes after the MLSMessage", r.left);
	if (q == 0) {
		*ret = *kp;
		if (ret_kp)
			*ret_kp = span;
	}
	free(kp);
	return q;
}

/* --- KeyPackageRef ----------------------------------------------------------------------- */

int mk_kp_ref(uint16_t suite, const uint8_t *kp_bytes, size_t n, mk_bytes *ret)
{
	const mk_suite *s = mk_suite_get(suite);
	uint8_t h1[4], h2[4], out[EVP_MAX_MD_SIZE];
	size_t n1, n2;
	unsigned outl = 0;
	EVP_MD_CTX *c;
	const EVP_MD *md;
	bool ok;

	if (!s)
		return mk_error(-EOPNOTSUPP, "cipher suite %u is not supported", suite);
	md = mk_ossl_md(s->md_name);
	n1 = mk_varint_encode(sizeof(ref_label) - 1, h1);
	n2 = mk_varint_encode(n, h2);
	if (!md || n2 == 0)
		return mk_error(-EINVAL, "cannot hash a KeyPackage of %zu bytes", n);
	c = EVP_MD_CTX_new();
	/* RefHashInput { opaque label<V>; opaque value<V>; } */
	ok = c && EVP_DigestInit_ex2(c, md, NULL) == 1 && EVP_DigestUpdate(c, h1, n1) == 1 &&
	     EVP_DigestUpdate(c, ref_label, sizeof(ref_label) - 1) == 1 &&
	     EVP_DigestUpdate(c, h2, n2) == 1 &&
	     (n == 0 || EVP_DigestUpdate(c, kp_bytes, n) == 1) &&
	     EVP_DigestFinal_ex(c, out, &outl) == 1;
	EVP_MD_CTX_free(c);
	if (!ok)
		return mk_error(-ENOMEM, "OpenSSL could not hash the KeyPackage");
	return mk_bytes_dup(out, outl, ret);
}

/* --- a receiver's checks ----------------------------------------------------------------- */

static bool has(const mk_kp_u16s *l, uint16_t v)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] == v)
			return true;
	return false;
}

/* The MLS encoding length of a public key of a KEM or signature algorithm. */
static size_t pub_len(mk_key_alg a)
{
	switch (a) {
	case MK_ALG_ECDSA_P256:
	case MK_ALG_DHKEM_P256:
		return 65;
	case MK_ALG_ECDSA_P384:
	case MK_ALG_DHKEM_P384:
		return 97;
	case MK_ALG_ECDSA_P521:
	case MK_ALG_DHKEM_P521:
		return 133;
	case MK_ALG_ED25519:
	case MK_ALG_DHKEM_X25519:
		return 32;
	default:
		return 0;
	}
}

static int check_exts_listed(const mk_kp_extensions *e, const mk_kp_u16s *caps, const char *where)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->v[i].type > MK_MLS_EXTENSION_DEFAULT_MAX && !has(caps, e->v[i].type))
			return mk_error(-EBADMSG,
					"KeyPackage: %s extension 0x%04x is not in the "
					"leaf's capabilities",
					where, e->v[i].type);
	return 0;
}

int mk_kp_check(const mk_key_package *kp, uint64_t now)
{
	const mk_suite *s = mk_suite_get(kp->cipher_suite);
	const mk_kp_leaf *l = &kp->leaf;
	_cleanup_bytes_ mk_bytes tbs = MK_BYTES_NULL;
	int r;

	if (kp->version != MK_MLS_VERSION_MLS10)
		return mk_error(-EBADMSG, "KeyPackage: version %u is not mls10", kp->version);
	if (!s)
		return mk_error(-EOPNOTSUPP, "KeyPackage: cipher suite %u is not supported",
				kp->cipher_suite);
	if (kp->init_key.n != pub_len(s->kem_alg) || l->encryption_key.n != pub_len(s->kem_alg))
		return mk_error(-EBADMSG,
				"KeyPackage: an HPKE key has the wrong length for suite %u", s->id);
	if (l->signature_key.n != pub_len(s->sig_alg))
		return mk_error(-EBADMSG,
				"KeyPackage: the signature key has the wrong length for "
				"suite %u",
				s->id);
	if (memcmp(kp->init_key.p, l->encryption_key.p, kp->init_key.n) == 0)
		return mk_error(-EBADMSG, "KeyPackage: init_key equals the leaf's encryption_key");
	if (l->not_before > now || now > l->not_after)
		return mk_error(-EBADMSG, "KeyPackage: valid from %llu to %llu, not at %llu",
				(unsigned long long)l->not_before, (unsigned long long)l->not_after,
				(unsigned long long)now);
	if (!has(&l->capabilities.versions, MK_MLS_VERSION_MLS10))
		return mk_error(-EBADMSG, "KeyPackage: capabilities do not list mls10");
	if (!has(&l->capabilities.cipher_suites, kp->cipher_suite))
		return mk_error(-EBADMSG, "KeyPackage: capabilities do not list its suite %u",
				kp->cipher_suite);
	if (!has(&l->capabilities.credentials, l->credential.type))
		return mk_error(-EBADMSG,
				"KeyPackage: capabilities do not list its credential "
				"type %u",
				l->credential.type);
	r = check_exts_listed(&l->extensions, &l->capabilities.extensions, "leaf");
	if (r == 0)
		r = check_exts_listed(&kp->extensions, &l->capabilities.extensions, "KeyPackage");
	if (r < 0)
		return r;

	r = mk_kp_leaf_tbs(l, &tbs);
	if (r < 0)
		return r;
	r = mk_mls_verify_with_label(kp->cipher_suite, l->signature_key.p, l->signature_key.n,
				     "LeafNodeTBS", tbs.data, tbs.len, l->signature.p,
				     l->signature.n);
	if (r < 0)
		return mk_error(-EBADMSG, "KeyPackage: the LeafNode signature does not verify");
	mk_bytes_clear(&tbs);
	r = mk_kp_tbs(kp, &tbs);
	if (r < 0)
		return r;
	r = mk_mls_verify_with_label(kp->cipher_suite, l->signature_key.p, l->signature_key.n,
				     "KeyPackageTBS", tbs.data, tbs.len, kp->signature.p,
				     kp->signature.n);
	if (r < 0)
		return mk_error(-EBADMSG, "KeyPackage: its signature does not verify");
	return 0;
}
