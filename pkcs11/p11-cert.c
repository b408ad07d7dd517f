/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * X.509 certificates on tokens (issue 8): the certificate of a key, found by its public key,
 * and the chain above it that the token holds; storing a chain. The chain logic itself,
 * which needs no token, is in x509.c.
 */
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "pkcs11/p11-private.h"
#include "pkcs11/x509-private.h"

/* --- reading a token's certificates ------------------------------------------------------ */

typedef struct p11_cert {
	CK_OBJECT_HANDLE h;
	X509 *x;
	mk_bytes der;
	mk_bytes id;  /* CKA_ID, may be empty */
	mk_bytes key; /* MLS encoding of its public key; empty for other key types */
} p11_cert;

struct mk_p11_certs {
	p11_cert *a;
	size_t n;
};

mk_p11_certs *mk_p11_certs_free(mk_p11_certs *c)
{
	if (!c)
		return NULL;
	for (size_t i = 0; i < c->n; i++) {
		X509_free(c->a[i].x);
		mk_bytes_clear(&c->a[i].der);
		mk_bytes_clear(&c->a[i].id);
		mk_bytes_clear(&c->a[i].key);
	}
	free(c->a);
	free(c);
	return NULL;
}

/* One attribute of at most cap bytes into *ret; -ENOENT when absent or larger. */
static int attr_get(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
		    CK_ATTRIBUTE_TYPE type, size_t cap, mk_bytes *ret)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	mk_bytes b = MK_BYTES_NULL;
	CK_RV rv;
	int r;

	rv = t->f->C_GetAttributeValue(s, h, &a, 1);
	if (mk_p11_rv_session_dead(rv))
		return mk_p11_error(rv, t, "read a certificate");
	if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > cap)
		return -ENOENT;
	r = mk_bytes_alloc(a.ulValueLen, &b);
	if (r < 0)
		return r;
	a.pValue = b.data;
	rv = t->f->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK || a.ulValueLen > b.len) {
		mk_bytes_clear(&b);
		return mk_p11_rv_session_dead(rv) ? mk_p11_error(rv, t, "read a certificate")
						  : -ENOENT;
	}
	b.len = a.ulValueLen;
	*ret = b;
	return 0;
}

/* The handles of every X.509 certificate object (at most MK_P11_MAX_OBJECTS). */
static int cert_handles(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE **ret,
			size_t *ret_n)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
	};
	CK_OBJECT_HANDLE *h;
	CK_ULONG got = 0;
	size_t n = 0;
	CK_RV rv;

	h = calloc(MK_P11_MAX_OBJECTS, sizeof(*h));
	if (!h)
		return -ENOMEM;
	rv = t->f->C_FindObjectsInit(s, tmpl, ELEMENTSOF(tmpl));
	if (rv != CKR_OK) {
		free(h);
		return mk_p11_error(rv, t, "search for certificates");
	}
	while (n < MK_P11_MAX_OBJECTS) {
		rv = t->f->C_FindObjects(s, h + n, MK_P11_MAX_OBJECTS - n, &got);
		if (rv != CKR_OK || got == 0)
			break;
		n += MK_MIN((size_t)got, MK_P11_MAX_OBJECTS - n);
	}
	t->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK) {
		free(h);
		return mk_p11_error(rv, t, "search for certificates");
	}
	*ret = h;
	*ret_n = n;
	return 0;
}

int mk_p11_certs_read(const mk_token *t, CK_SESSION_HANDLE s, mk_p11_certs **ret)
{
	_cleanup_free_ CK_OBJECT_HANDLE *h = NULL;
	mk_p11_certs *c;
	size_t n = 0;
	int r;

	r = cert_handles(t, s, &h, &n);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->a = calloc(n ? n : 1, sizeof(*c->a)))) {
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		p11_cert *pc = &c->a[c->n];

		r = attr_get(t, s, h[i], CKA_VALUE, MK_X509_MAX_DER, &pc->der);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			break;
		pc->x = mk_x509_parse(pc->der.data, pc->der.len);
		if (!pc->x) {
			mk_bytes_clear(&pc->der);
			continue;
		}
		pc->h = h[i];
		c->n++;
		r = attr_get(t, s, h[i], CKA_ID, MK_P11_MAX_ATTR, &pc->id);
		if (r < 0 && r != -ENOENT)
			break;
		(void)mk_x509_key(pc->x, &pc->key);
		r = 0;
	}
	if (r < 0) {
		mk_p11_certs_free(c);
		return r;
	}
	mk_error_clear();
	*ret = c;
	return 0;
}

/* How good a leaf pc is: valid now beats the key's CKA_ID, which beats neither. */
static int leaf_rank(const p11_cert *pc, const uint8_t *id, size_t id_len)
{
	bool valid = X509_cmp_current_time(X509_get0_notBefore(pc->x)) < 0 &&
		     X509_cmp_current_time(X509_get0_notAfter(pc->x)) > 0;
	bool id_match = id_len && pc->id.len == id_len && memcmp(pc->id.data, id, id_len) == 0;

	return (valid ? 2 : 0) + (id_match ? 1 : 0);
}

/*
 * The certificate carrying public key pub, NULL if none. Of several (a renewed card keeps its
 * old certificate), the one valid now, then the one with the key's CKA_ID, then the one
 * that ends last.
 */
static const p11_cert *certs_leaf(const mk_p11_certs *c, const uint8_t *pub, size_t pub_len,
				  const uint8_t *id, size_t id_len)
{
	const p11_cert *best = NULL;
	int best_rank = -1;

	for (size_t i = 0; pub && pub_len && i < c->n; i++) {
		const p11_cert *pc = &c->a[i];
		int rank;

		if (pc->key.len != pub_len || memcmp(pc->key.data, pub, pub_len) != 0)
			continue;
		rank = leaf_rank(pc, id, id_len);
		if (rank > best_rank ||
		    (rank == best_rank && ASN1_TIME_compare(X509_get0_notAfter(pc->x),
							    X509_get0_notAfter(best->x)) > 0)) {
			best = pc;
			best_rank = rank;
		}
	}
	return best;
}

int mk_p11_certs_describe_key(const mk_p11_certs *c, mk_key_info *k)
{
	const p11_cert *leaf = certs_leaf(c, k->public_key, k->public_key_len, k->id, k->id_len);
	mk_x509_info i;
	int r;

	k->has_certificate = leaf != NULL;
	if (!leaf)
		return 0;
	r = mk_x509_describe_parsed(leaf->x, &i);
	if (r < 0)
		return r;
	free(k->cert_subject);
	free(k->cert_issuer);
	k->cert_subject = i.subject;
	k->cert_issuer = i.issuer;
	k->cert_not_before = i.not_before;
	k->cert_not_after = i.not_after;
	return 0;
}

static const char *key_name(const mk_key_info *k)
{
	return k->label && k->label[0] ? k->label : "(no label)";
}

/* The leaf and its chain from c, as DER copies. */
static int certs_chain(const mk_token *t, const mk_p11_certs *c, const mk_key_info *key,
		       mk_bytes **ret, size_t *ret_n)
{
	const p11_cert *leaf = certs_leaf(c, key->public_key, key->public_key_len, key->id,
					  key->id_len);
	size_t idx[MK_X509_CHAIN_MAX], n = 0;
	X509 **pool;
	mk_bytes *out;
	int r = 0;

	if (!leaf)
		return mk_error(-ENOKEY, "token \"%s\" holds no certificate for the public key of "
				"key \"%s\"; import the key's certificate and its CA certificates",
				t->label, key_name(key));
	pool = calloc(c->n ? c->n : 1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++)
		pool[i] = c->a[i].x;
	mk_x509_chain_build_parsed(leaf->x, pool, c->n, idx, &n);
	free(pool);
	out = calloc(n + 1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	r = mk_bytes_dup(leaf->der.data, leaf->der.len, &out[0]);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = mk_bytes_dup(c->a[idx[i]].der.data, c->a[idx[i]].der.len, &out[i + 1]);
	if (r < 0) {
		for (size_t i = 0; i <= n; i++)
			mk_bytes_clear(&out[i]);
		free(out);
		return r;
	}
	*ret = out;
	*ret_n = n + 1;
	return 0;
}

int mk_p11_key_certificates(mk_p11 *p, const mk_key_info *key, mk_bytes **ret, size_t *ret_n)
{
	mk_p11_certs *c = NULL;
	mk_token *t = NULL;
	mk_session s;
	int r;

	if (!p || !key || !key->token_uri || !ret || !ret_n)
		return mk_error(-EINVAL, "missing argument to read a key's certificates");
	if (!key->public_key || !key->public_key_len)
		return mk_error(-ENOKEY, "the public key of key \"%s\" is unknown, so no certificate "
				"can be matched to it", key_name(key));
	r = mk_p11_resolve_token(p, key->token_uri, &t);
	if (r < 0)
		return r;
	r = mk_token_borrow(t, &s);
	if (r < 0) {
		mk_token_unref(t);
		return r;
	}
	r = mk_p11_certs_read(t, s.h, &c);
	mk_token_return(t, &s, r == -ENOMEDIUM);
	if (r == 0)
		r = certs_chain(t, c, key, ret, ret_n);
	mk_p11_certs_free(c);
	mk_token_unref(t);
	return r;
}

/* --- storing a chain --------------------------------------------------------------------- */

/* DER of a name or an integer, into *ret (OPENSSL_free). -ENOMEM. */
static int der_name(const X509_NAME *name, mk_bytes *ret)
{
	unsigned char *p = NULL;
	int n = i2d_X509_NAME(name, &p);
	int r;

	if (n <= 0)
		return -ENOMEM;
	r = mk_bytes_dup(p, (size_t)n, ret);
	OPENSSL_free(p);
	return r;
}

static int der_serial(X509 *x, mk_bytes *ret)
{
	unsigned char *p = NULL;
	int n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &p);
	int r;

	if (n <= 0)
		return -ENOMEM;
	r = mk_bytes_dup(p, (size_t)n, ret);
	OPENSSL_free(p);
	return r;
}

/* A CA certificate's label: its subject's CN, else its whole subject; at most 255 bytes. */
static char *ca_label(X509 *x)
{
	X509_NAME *name = X509_get_subject_name(x);
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	unsigned char *utf8 = NULL;
	char *s = NULL;
	size_t len;

	if (i >= 0 &&
	    ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))) > 0)
		s = strdup((char *)utf8);
	OPENSSL_free(utf8);
	if (s && !s[0]) {
		free(s);
		s = NULL;
	}
	if (!s)
		s = mk_x509_name(name);
	if (!s)
		return NULL;
	/* cut at a character boundary */
	len = strlen(s);
	if (len > MK_P11_MAX_LABEL) {
		len = MK_P11_MAX_LABEL;
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
		s[len] = '\0';
	}
	return s;
}

static int cert_create(const mk_token *t, CK_SESSION_HANDLE s, X509 *x, const mk_bytes *der,
		       const uint8_t *id, size_t id_len, const char *label, CK_OBJECT_HANDLE *ret)
{
	_cleanup_bytes_ mk_bytes subject = MK_BYTES_NULL, issuer = MK_BYTES_NULL,
				 serial = MK_BYTES_NULL;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	int r;

	if ((r = der_name(X509_get_subject_name(x), &subject)) < 0 ||
	    (r = der_name(X509_get_issuer_name(x), &issuer)) < 0 ||
	    (r = der_serial(x, &serial)) < 0)
		return r;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)id, id_len },
		{ CKA_SUBJECT, subject.data, subject.len },
		{ CKA_ISSUER, issuer.data, issuer.len },
		{ CKA_SERIAL_NUMBER, serial.data, serial.len },
		{ CKA_VALUE, der->data, der->len },
	};
	return mk_p11_error(t->f->C_CreateObject(s, tmpl, ELEMENTSOF(tmpl), ret), t,
			    "store a certificate");
}

static bool certs_have_der(const mk_p11_certs *c, const mk_bytes *der)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->a[i].der.len == der->len && memcmp(c->a[i].der.data, der->data, der->len) == 0)
			return true;
	return false;
}

/* The leaf must carry the key's public key; both named in the message when not. */
static int leaf_check(X509 *leaf, const mk_key_info *key)
{
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL;
	_cleanup_free_ char *subject = NULL, *want = NULL, *got = NULL;

	if (!key->public_key || !key->public_key_len)
		return mk_error(-ENOKEY, "the public key of key \"%s\" is unknown, so its "
				"certificate cannot be checked", key_name(key));
	if (mk_x509_key(leaf, &pub) == 0 && pub.len == key->public_key_len &&
	    memcmp(pub.data, key->public_key, pub.len) == 0)
		return 0;
	subject = mk_x509_name(X509_get_subject_name(leaf));
	want = mk_hex_encode(key->public_key, MK_MIN(key->public_key_len, (size_t)16));
	got = pub.len ? mk_hex_encode(pub.data, MK_MIN(pub.len, (size_t)16)) : strdup("-");
	return mk_error(-EINVAL, "the first certificate (\"%.200s\", public key %s...) is not for "
			"key \"%s\" (public key %s...); give the certificate issued for this key "
			"first", subject ? subject : "?", got ? got : "?", key_name(key),
			want ? want : "?");
}

static int token_import(const mk_token *t, CK_SESSION_HANDLE s, const mk_key_info *key,
			X509 *const *xs, const mk_bytes *certs, size_t n)
{
	CK_OBJECT_HANDLE made[MK_X509_CHAIN_MAX];
	mk_p11_certs *have = NULL;
	size_t n_made = 0;
	int r;

	if (!mk_token_logged_in((mk_token *)t, s) && (t->ti.flags & CKF_LOGIN_REQUIRED))
		return mk_error(-ENOTCONN, "token \"%s\" needs a login to store certificates; log "
				"in with its PIN and retry", t->label);
	r = mk_p11_certs_read(t, s, &have);
	if (r < 0)
		return r;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		_cleanup_free_ char *label = NULL;
		uint8_t md[EVP_MAX_MD_SIZE];
		unsigned md_len = 0;
		const uint8_t *id = key->id;
		size_t id_len = key->id_len;

		if (certs_have_der(have, &certs[i]))
			continue;
		if (i == 0) {
			label = strdup(key->label ? key->label : "");
		} else {
			label = ca_label(xs[i]);
			if (X509_pubkey_digest(xs[i], EVP_sha1(), md, &md_len) != 1) {
				r = mk_error(-EINVAL, "certificate %zu has a public key that cannot "
					     "be hashed", i + 1);
				break;
			}
			id = md;
			id_len = md_len;
		}
		if (!label) {
			r = -ENOMEM;
			break;
		}
		r = cert_create(t, s, xs[i], &certs[i], id, id_len, label, &made[n_made]);
		if (r == 0)
			n_made++;
	}
	/* all or nothing: what this call stored goes again */
	if (r < 0)
		for (size_t i = 0; i < n_made; i++)
			t->f->C_DestroyObject(s, made[i]);
	mk_p11_certs_free(have);
	return r;
}

int mk_p11_import_certificates(mk_p11 *p, const mk_key_info *key, const mk_bytes *certs,
			       size_t n)
{
	X509 *xs[MK_X509_CHAIN_MAX];
	mk_token *t = NULL;
	mk_session s;
	int r;

	if (!p || !key || !key->token_uri || (!certs && n))
		return mk_error(-EINVAL, "missing argument to store certificates");
	r = mk_x509_chain_parse(certs, n, xs);
	if (r < 0)
		return r;
	r = leaf_check(xs[0], key);
	if (r == 0)
		r = mk_x509_chain_order_check(xs, n);
	if (r == 0)
		r = mk_p11_resolve_token(p, key->token_uri, &t);
	if (r == 0) {
		r = mk_token_borrow(t, &s);
		if (r == 0) {
			r = token_import(t, s.h, key, xs, certs, n);
			mk_token_return(t, &s, r == -ENOMEDIUM);
		}
		mk_token_unref(t);
	}
	for (size_t i = 0; i < n; i++)
		X509_free(xs[i]);
	return r;
}
