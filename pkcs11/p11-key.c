/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Keys on tokens: algorithm names, reading key objects into mk_key_info, pairing public and
 * private objects by CKA_ID, key URIs, finding, generating and deleting key pairs.
 */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "pkcs11/p11-private.h"

/* --- algorithms -------------------------------------------------------------------------- */

static const struct {
	const char *name;
	mk_curve curve;
	bool sign;
} algs[_MK_ALG_MAX] = {
	[MK_ALG_NONE] = { "unsupported", MK_CURVE_NONE, false },
	[MK_ALG_ECDSA_P256] = { "ecdsa-p256", MK_CURVE_P256, true },
	[MK_ALG_ECDSA_P384] = { "ecdsa-p384", MK_CURVE_P384, true },
	[MK_ALG_ECDSA_P521] = { "ecdsa-p521", MK_CURVE_P521, true },
	[MK_ALG_ED25519] = { "ed25519", MK_CURVE_ED25519, true },
	[MK_ALG_DHKEM_P256] = { "dhkem-p256", MK_CURVE_P256, false },
	[MK_ALG_DHKEM_P384] = { "dhkem-p384", MK_CURVE_P384, false },
	[MK_ALG_DHKEM_P521] = { "dhkem-p521", MK_CURVE_P521, false },
	[MK_ALG_DHKEM_X25519] = { "dhkem-x25519", MK_CURVE_X25519, false },
};

static bool alg_valid(mk_key_alg a)
{
	return a > MK_ALG_NONE && a < _MK_ALG_MAX;
}

const char *mk_key_alg_name(mk_key_alg a)
{
	return alg_valid(a) ? algs[a].name : algs[MK_ALG_NONE].name;
}

mk_key_alg mk_key_alg_from_name(const char *name)
{
	if (!name)
		return MK_ALG_NONE;
	for (int a = MK_ALG_NONE + 1; a < _MK_ALG_MAX; a++)
		if (strcmp(algs[a].name, name) == 0)
			return (mk_key_alg)a;
	return MK_ALG_NONE;
}

mk_curve mk_key_alg_curve(mk_key_alg a)
{
	return alg_valid(a) ? algs[a].curve : MK_CURVE_NONE;
}

bool mk_key_alg_is_signature(mk_key_alg a)
{
	return alg_valid(a) && algs[a].sign;
}

static mk_key_alg alg_for(mk_curve c, bool sign)
{
	for (int a = MK_ALG_NONE + 1; a < _MK_ALG_MAX; a++)
		if (algs[a].curve == c && algs[a].sign == sign)
			return (mk_key_alg)a;
	return MK_ALG_NONE;
}

/* --- key info ---------------------------------------------------------------------------- */

void mk_key_info_clear(mk_key_info *k)
{
	if (!k)
		return;
	free(k->uri);
	free(k->token_uri);
	free(k->label);
	free(k->id);
	free(k->reason);
	free(k->public_key);
	free(k->cert_subject);
	free(k->cert_issuer);
	memset(k, 0, sizeof(*k));
}

void mk_key_info_array_free(mk_key_info *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		mk_key_info_clear(&a[i]);
	free(a);
}

/* --- attributes -------------------------------------------------------------------------- */

/* Reads a variable-length attribute (at most MK_P11_MAX_ATTR bytes) into a new buffer with a
 * trailing NUL. -ENOENT when the object does not have it; a session error is translated. */
static int attr_read(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
		     CK_ATTRIBUTE_TYPE type, uint8_t **ret, size_t *ret_len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	uint8_t *buf;
	CK_RV rv;

	rv = t->f->C_GetAttributeValue(s, h, &a, 1);
	if (mk_p11_rv_session_dead(rv))
		return mk_p11_error(rv, t, "read a key attribute");
	if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return -ENOENT;
	if (a.ulValueLen > MK_P11_MAX_ATTR)
		return mk_error(-EINVAL, "token \"%s\" returned a %lu-byte attribute; the limit is %u",
				t->label, (unsigned long)a.ulValueLen, MK_P11_MAX_ATTR);
	buf = calloc(1, a.ulValueLen + 1);
	if (!buf)
		return -ENOMEM;
	a.pValue = buf;
	rv = t->f->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
		free(buf);
		return mk_p11_rv_session_dead(rv) ? mk_p11_error(rv, t, "read a key attribute")
						  : -ENOENT;
	}
	*ret = buf;
	*ret_len = a.ulValueLen;
	return 0;
}

static int attr_ulong(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
		      CK_ATTRIBUTE_TYPE type, CK_ULONG *ret)
{
	CK_ULONG v;
	CK_ATTRIBUTE a = { type, &v, sizeof(v) };
	CK_RV rv = t->f->C_GetAttributeValue(s, h, &a, 1);

	if (mk_p11_rv_session_dead(rv))
		return mk_p11_error(rv, t, "read a key attribute");
	if (rv != CKR_OK || a.ulValueLen != sizeof(v))
		return -ENOENT;
	*ret = v;
	return 0;
}

/* A CK_BBOOL attribute; false when absent or unreadable. */
static bool attr_bool(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
		      CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE a = { type, &v, sizeof(v) };

	if (t->f->C_GetAttributeValue(s, h, &a, 1) != CKR_OK || a.ulValueLen != sizeof(v))
		return false;
	return v == CK_TRUE;
}

/*
 * Runs one object search. Finds at most cap objects into out (*ret_n); a token error is
 * translated.
 */
static int find_objects(const mk_token *t, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl,
			CK_ULONG n_tmpl, CK_OBJECT_HANDLE *out, size_t cap, size_t *ret_n)
{
	CK_ULONG got = 0;
	size_t n = 0;
	CK_RV rv;

	rv = t->f->C_FindObjectsInit(s, tmpl, n_tmpl);
	if (rv != CKR_OK)
		return mk_p11_error(rv, t, "search for keys");
	while (n < cap) {
		rv = t->f->C_FindObjects(s, out + n, cap - n, &got);
		if (rv != CKR_OK || got == 0)
			break;
		n += MK_MIN((size_t)got, cap - n);
	}
	t->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return mk_p11_error(rv, t, "search for keys");
	*ret_n = n;
	return 0;
}

/* --- URIs -------------------------------------------------------------------------------- */

static int key_uri_format(const mk_token *t, const uint8_t *id, size_t id_len, const char *label,
			  char **ret)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE a_cls = { CKA_CLASS, &cls, sizeof(cls) };
	CK_ATTRIBUTE a_id = { CKA_ID, (void *)id, id_len };
	CK_ATTRIBUTE a_label = { CKA_LABEL, (void *)label, strlen(label) };
	P11KitUri *u = p11_kit_uri_new();
	CK_TOKEN_INFO *ti;
	char *s = NULL;
	int r = P11_KIT_URI_OK;

	if (!u)
		return -ENOMEM;
	ti = p11_kit_uri_get_token_info(u);
	memcpy(ti->label, t->ti.label, sizeof(ti->label));
	memcpy(ti->manufacturerID, t->ti.manufacturerID, sizeof(ti->manufacturerID));
	memcpy(ti->model, t->ti.model, sizeof(ti->model));
	memcpy(ti->serialNumber, t->ti.serialNumber, sizeof(ti->serialNumber));
	if (id_len)
		r = p11_kit_uri_set_attribute(u, &a_id);
	if (r == P11_KIT_URI_OK && label[0])
		r = p11_kit_uri_set_attribute(u, &a_label);
	if (r == P11_KIT_URI_OK)
		r = p11_kit_uri_set_attribute(u, &a_cls);
	if (r == P11_KIT_URI_OK)
		r = p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s);
	p11_kit_uri_free(u);
	if (r != P11_KIT_URI_OK)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* What a key URI names: CKA_ID and/or CKA_LABEL (borrowed from u). */
typedef struct key_query {
	const CK_ATTRIBUTE *id, *label;
} key_query;

static int key_query_from_uri(P11KitUri *u, const char *uri, key_query *ret)
{
	CK_ATTRIBUTE *cls = p11_kit_uri_get_attribute(u, CKA_CLASS);
	key_query q = {
		.id = p11_kit_uri_get_attribute(u, CKA_ID),
		.label = p11_kit_uri_get_attribute(u, CKA_LABEL),
	};

	if (cls && (cls->ulValueLen != sizeof(CK_OBJECT_CLASS) ||
		    (*(CK_OBJECT_CLASS *)cls->pValue != CKO_PRIVATE_KEY &&
		     *(CK_OBJECT_CLASS *)cls->pValue != CKO_PUBLIC_KEY)))
		return mk_error(-EINVAL, "\"%.200s\" names an object that is not a key; use type=private",
				uri);
	if (!q.id && !q.label)
		return mk_error(-EINVAL, "\"%.200s\" names no key; a key URI needs id= or object=",
				uri);
	if ((q.id && q.id->ulValueLen > MK_P11_MAX_ATTR) ||
	    (q.label && q.label->ulValueLen > MK_P11_MAX_ATTR))
		return mk_error(-EINVAL, "the key URI is too long");
	*ret = q;
	return 0;
}

/* Builds the search template for class cls and q into tmpl[3]; returns the count. */
static CK_ULONG key_template(CK_OBJECT_CLASS *cls, const key_query *q, CK_ATTRIBUTE tmpl[3])
{
	CK_ULONG n = 0;

	tmpl[n++] = (CK_ATTRIBUTE){ CKA_CLASS, cls, sizeof(*cls) };
	if (q->id)
		tmpl[n++] = *q->id;
	if (q->label)
		tmpl[n++] = *q->label;
	return n;
}

/* --- classifying a key ------------------------------------------------------------------- */

static const char *key_type_name(CK_KEY_TYPE kt)
{
	switch (kt) {
	case CKK_RSA:
		return "RSA";
	case CKK_DSA:
		return "DSA";
	case CKK_DH:
		return "DH";
	case CKK_EC:
		return "EC";
	case CKK_EC_EDWARDS:
		return "EC Edwards";
	case CKK_EC_MONTGOMERY:
		return "EC Montgomery";
	default:
		return NULL;
	}
}

/* The name of the curve in CKA_EC_PARAMS (for a reason text), into buf. */
static const char *curve_name(const uint8_t *params, size_t n, char *buf, size_t cap)
{
	const unsigned char *p = params;
	ASN1_OBJECT *obj;
	int nid;

	if (!params || n == 0)
		return "(no CKA_EC_PARAMS)";
	if (params[0] != 0x06)
		return params[0] == 0x30 ? "(explicit curve parameters)" : "(unknown parameters)";
	obj = d2i_ASN1_OBJECT(NULL, &p, (long)n);
	if (!obj)
		return "(malformed OID)";
	nid = OBJ_obj2nid(obj);
	if (nid != NID_undef)
		snprintf(buf, cap, "%s", OBJ_nid2sn(nid));
	else if (OBJ_obj2txt(buf, (int)cap, obj, 1) <= 0)
		snprintf(buf, cap, "(unknown OID)");
	ASN1_OBJECT_free(obj);
	return buf;
}

static bool key_type_fits(CK_KEY_TYPE kt, mk_curve c)
{
	switch (c) {
	case MK_CURVE_P256:
	case MK_CURVE_P384:
	case MK_CURVE_P521:
		return kt == CKK_EC;
	case MK_CURVE_ED25519:
		return kt == CKK_EC_EDWARDS;
	case MK_CURVE_X25519:
		return kt == CKK_EC_EDWARDS || kt == CKK_EC_MONTGOMERY;
	default:
		return false;
	}
}

/* Sets k->alg, or MK_ALG_NONE with k->reason (allocated), and *ret_curve. 0 or -ENOMEM. */
static int classify(CK_KEY_TYPE kt, bool have_kt, const uint8_t *params, size_t params_len,
		    mk_key_info *k, mk_curve *ret_curve)
{
	char name[96], reason[256];
	mk_curve c = MK_CURVE_NONE;
	const char *tn = key_type_name(kt);

	reason[0] = '\0';
	if (!have_kt) {
		snprintf(reason, sizeof(reason), "the token does not say what type of key this is");
	} else if (kt != CKK_EC && kt != CKK_EC_EDWARDS && kt != CKK_EC_MONTGOMERY) {
		if (tn)
			snprintf(reason, sizeof(reason), "%s key: mlskey uses only the elliptic-curve "
				 "keys of MLS (P-256, P-384, P-521, Ed25519, X25519)", tn);
		else
			snprintf(reason, sizeof(reason), "key type 0x%lx: mlskey uses only the "
				 "elliptic-curve keys of MLS", (unsigned long)kt);
	} else {
		c = mk_curve_from_ec_params(params, params_len);
		if (c == MK_CURVE_NONE)
			snprintf(reason, sizeof(reason), "%s key on curve %s; mlskey supports only the "
				 "MLS curves P-256, P-384, P-521, Ed25519 and X25519", tn,
				 curve_name(params, params_len, name, sizeof(name)));
		else if (!key_type_fits(kt, c))
			snprintf(reason, sizeof(reason), "%s key with the %s curve is inconsistent",
				 tn, mk_curve_get(c)->name);
		else if (k->can_sign && k->can_derive)
			snprintf(reason, sizeof(reason), "%s key can both sign and derive; mlskey uses "
				 "a key for exactly one purpose", mk_curve_get(c)->name);
		else if (!k->can_sign && !k->can_derive && k->private_visible)
			snprintf(reason, sizeof(reason), "%s key can neither sign nor derive",
				 mk_curve_get(c)->name);
		else if (!k->can_sign && !k->can_derive)
			snprintf(reason, sizeof(reason), "%s key: its purpose shows only after login",
				 mk_curve_get(c)->name);
		else if (c == MK_CURVE_ED25519 && k->can_derive)
			snprintf(reason, sizeof(reason), "an Ed25519 key cannot derive");
		else if (c == MK_CURVE_X25519 && k->can_sign)
			snprintf(reason, sizeof(reason), "an X25519 key cannot sign");
	}
	*ret_curve = c;
	if (reason[0]) {
		k->alg = MK_ALG_NONE;
		k->reason = strdup(reason);
		return k->reason ? 0 : -ENOMEM;
	}
	k->alg = alg_for(c, k->can_sign);
	return 0;
}

/*
 * Reads a key pair from its private object (priv, or CK_INVALID_HANDLE when hidden) and/or
 * its public object (pub) into *ret, *ret_curve, *ret_kt.
 */
/* --- single-use markers ------------------------------------------------------------------ */

#define MARKER_APP "mlskey"
#define MARKER_LABEL "single-use"

/* The template of the single-use marker of the key with CKA_ID id (5 entries). */
static CK_ULONG marker_template(CK_OBJECT_CLASS *cls, const uint8_t *id, size_t id_len,
				CK_ATTRIBUTE tmpl[5])
{
	*cls = CKO_DATA;
	tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, cls, sizeof(*cls) };
	tmpl[1] = (CK_ATTRIBUTE){ CKA_APPLICATION, (void *)MARKER_APP, strlen(MARKER_APP) };
	tmpl[2] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)MARKER_LABEL, strlen(MARKER_LABEL) };
	tmpl[3] = (CK_ATTRIBUTE){ CKA_VALUE, (void *)id, id_len };
	tmpl[4] = (CK_ATTRIBUTE){ CKA_TOKEN, NULL, 0 }; /* filled in by the creator */
	return 4;
}

/* The markers of the key with CKA_ID id (at most cap) into out, *ret_n. */
static int markers_find(const mk_token *t, CK_SESSION_HANDLE s, const uint8_t *id,
			size_t id_len, CK_OBJECT_HANDLE *out, size_t cap, size_t *ret_n)
{
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE tmpl[5];

	if (!id_len) {
		*ret_n = 0;
		return 0;
	}
	return find_objects(t, s, tmpl, marker_template(&cls, id, id_len, tmpl), out, cap, ret_n);
}

static CK_RV marker_create(const mk_token *t, CK_SESSION_HANDLE s, const uint8_t *id,
			   size_t id_len)
{
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS cls;
	CK_ATTRIBUTE tmpl[7];
	CK_OBJECT_HANDLE h;
	CK_ULONG n = marker_template(&cls, id, id_len, tmpl);

	tmpl[n++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
	tmpl[n++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &yes, sizeof(yes) };
	tmpl[n++] = (CK_ATTRIBUTE){ CKA_MODIFIABLE, &no, sizeof(no) };
	return t->f->C_CreateObject(s, tmpl, n, &h);
}

static int key_info_read(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
			 CK_OBJECT_HANDLE pub, mk_key_info *ret, mk_curve *ret_curve,
			 CK_KEY_TYPE *ret_kt)
{
	CK_OBJECT_HANDLE main_h = priv != CK_INVALID_HANDLE ? priv : pub;
	mk_key_info k = { .private_visible = priv != CK_INVALID_HANDLE };
	uint8_t *params = NULL, *point = NULL, *label = NULL;
	size_t params_len = 0, point_len = 0, label_len = 0;
	const uint8_t *pt;
	size_t pt_len;
	CK_KEY_TYPE kt = 0;
	bool have_kt;
	mk_curve c;
	int r;

	have_kt = attr_ulong(t, s, main_h, CKA_KEY_TYPE, &kt) == 0;
	r = attr_read(t, s, main_h, CKA_ID, &k.id, &k.id_len);
	if (r == -ENOENT)
		r = (k.id = calloc(1, 1)) ? 0 : -ENOMEM;
	if (r < 0)
		goto out;
	r = attr_read(t, s, main_h, CKA_LABEL, &label, &label_len);
	if (r == -ENOENT)
		r = (label = calloc(1, 1)) ? 0 : -ENOMEM;
	if (r < 0)
		goto out;
	k.label = (char *)label;
	label = NULL;
	k.label[strnlen(k.label, label_len)] = '\0'; /* a label with a NUL inside ends there */

	/* Curve and point from the public object, else from the private one (PKCS#11 3.0
	 * tokens may carry CKA_EC_POINT there too). Missing attributes stay NULL. */
	for (int i = 0; i < 2; i++) {
		CK_OBJECT_HANDLE h = i == 0 ? pub : priv;

		if (h == CK_INVALID_HANDLE)
			continue;
		r = params ? 0 : attr_read(t, s, h, CKA_EC_PARAMS, &params, &params_len);
		if (r < 0 && r != -ENOENT)
			goto out;
		r = point ? 0 : attr_read(t, s, h, CKA_EC_POINT, &point, &point_len);
		if (r < 0 && r != -ENOENT)
			goto out;
	}

	if (priv != CK_INVALID_HANDLE) {
		k.can_sign = attr_bool(t, s, priv, CKA_SIGN);
		k.can_derive = attr_bool(t, s, priv, CKA_DERIVE);
		k.local = attr_bool(t, s, priv, CKA_LOCAL);
		k.never_extractable = attr_bool(t, s, priv, CKA_NEVER_EXTRACTABLE);
		k.always_sensitive = attr_bool(t, s, priv, CKA_ALWAYS_SENSITIVE);
		k.always_authenticate = attr_bool(t, s, priv, CKA_ALWAYS_AUTHENTICATE);
		k.sensitive = attr_bool(t, s, priv, CKA_SENSITIVE);
		k.extractable = attr_bool(t, s, priv, CKA_EXTRACTABLE);
		if (k.can_derive) {
			CK_OBJECT_HANDLE m;
			size_t n_m = 0;

			/* a failed search leaves the key as it is: no marker seen */
			k.single_use = markers_find(t, s, k.id, k.id_len, &m, 1, &n_m) == 0 &&
				       n_m > 0;
			mk_error_clear();
		}
	} else {
		k.can_sign = attr_bool(t, s, pub, CKA_VERIFY);
		k.can_derive = attr_bool(t, s, pub, CKA_DERIVE);
	}

	r = classify(kt, have_kt, params, params_len, &k, &c);
	if (r < 0)
		goto out;
	if (c != MK_CURVE_NONE && point) {
		if (mk_curve_unwrap_ec_point(c, point, point_len, &pt, &pt_len) == 0) {
			k.public_key = malloc(pt_len);
			if (!k.public_key) {
				r = -ENOMEM;
				goto out;
			}
			memcpy(k.public_key, pt, pt_len);
			k.public_key_len = pt_len;
		} else if (k.alg != MK_ALG_NONE) {
			k.alg = MK_ALG_NONE;
			k.reason = strdup("its public key (CKA_EC_POINT) is malformed");
			if (!k.reason) {
				r = -ENOMEM;
				goto out;
			}
		}
		mk_error_clear();
	}
	k.token_uri = strdup(t->uri);
	if (!k.token_uri) {
		r = -ENOMEM;
		goto out;
	}
	r = key_uri_format(t, k.id, k.id_len, k.label, &k.uri);
	if (r < 0)
		goto out;
	*ret = k;
	*ret_curve = c;
	*ret_kt = kt;
	k = (mk_key_info){ 0 };
out:
	mk_key_info_clear(&k);
	free(params);
	free(point);
	free(label);
	return r;
}

/* --- listing ----------------------------------------------------------------------------- */

typedef struct obj {
	CK_OBJECT_HANDLE h;
	uint8_t *id;
	size_t id_len;
	bool used;
} obj;

static void objs_free(obj *a, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++)
		free(a[i].id);
	free(a);
}

static int objs_find(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, obj **ret,
		     size_t *ret_n)
{
	CK_ATTRIBUTE tmpl = { CKA_CLASS, &cls, sizeof(cls) };
	CK_OBJECT_HANDLE *h;
	obj *a;
	size_t n = 0;
	int r;

	h = calloc(MK_P11_MAX_OBJECTS, sizeof(*h));
	if (!h)
		return -ENOMEM;
	r = find_objects(t, s, &tmpl, 1, h, MK_P11_MAX_OBJECTS, &n);
	if (r < 0) {
		free(h);
		return r;
	}
	a = calloc(n ? n : 1, sizeof(*a));
	if (!a) {
		free(h);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		a[i].h = h[i];
		r = attr_read(t, s, h[i], CKA_ID, &a[i].id, &a[i].id_len);
		if (r == -ENOENT)
			r = 0;
		if (r < 0) {
			free(h);
			objs_free(a, n);
			return r;
		}
	}
	free(h);
	*ret = a;
	*ret_n = n;
	return 0;
}

static int keys_append(mk_key_info **a, size_t *n, const mk_key_info *k)
{
	mk_key_info *b = realloc(*a, (*n + 1) * sizeof(*b));

	if (!b)
		return -ENOMEM;
	b[(*n)++] = *k;
	*a = b;
	return 0;
}

/* Pairs the private objects with public objects of the same CKA_ID; unpaired public
 * objects are keys whose private half is hidden until login. */
static int token_list_keys(mk_token *t, mk_key_info **a, size_t *n)
{
	obj *privs = NULL, *pubs = NULL;
	size_t n_priv = 0, n_pub = 0;
	mk_p11_certs *certs = NULL;
	mk_session s;
	mk_curve c;
	CK_KEY_TYPE kt;
	int r;

	r = mk_token_borrow(t, &s);
	if (r < 0)
		return r;
	r = objs_find(t, s.h, CKO_PRIVATE_KEY, &privs, &n_priv);
	if (r >= 0)
		r = objs_find(t, s.h, CKO_PUBLIC_KEY, &pubs, &n_pub);
	if (r >= 0)
		r = mk_p11_certs_read(t, s.h, &certs);
	for (size_t i = 0; r >= 0 && i < n_priv; i++) {
		CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE;
		mk_key_info k;

		for (size_t j = 0; j < n_pub && privs[i].id_len; j++)
			if (!pubs[j].used && pubs[j].id_len == privs[i].id_len &&
			    memcmp(pubs[j].id, privs[i].id, privs[i].id_len) == 0) {
				pubs[j].used = true;
				pub = pubs[j].h;
				break;
			}
		r = key_info_read(t, s.h, privs[i].h, pub, &k, &c, &kt);
		if (r >= 0 && (r = mk_p11_certs_describe_key(certs, &k)) < 0)
			mk_key_info_clear(&k);
		if (r >= 0 && (r = keys_append(a, n, &k)) < 0)
			mk_key_info_clear(&k);
	}
	for (size_t j = 0; r >= 0 && j < n_pub; j++) {
		mk_key_info k;

		if (pubs[j].used)
			continue;
		r = key_info_read(t, s.h, CK_INVALID_HANDLE, pubs[j].h, &k, &c, &kt);
		if (r >= 0 && (r = mk_p11_certs_describe_key(certs, &k)) < 0)
			mk_key_info_clear(&k);
		if (r >= 0 && (r = keys_append(a, n, &k)) < 0)
			mk_key_info_clear(&k);
	}
	mk_token_return(t, &s, r == -ENOMEDIUM);
	mk_p11_certs_free(certs);
	objs_free(privs, n_priv);
	objs_free(pubs, n_pub);
	return r;
}

/* --- keys of tokens that are away -------------------------------------------------------- */

static void *memdup_n(const void *p, size_t n)
{
	void *q = malloc(n ? n : 1);

	if (q && n)
		memcpy(q, p, n);
	return q;
}

static int key_info_copy(const mk_key_info *k, mk_key_info *ret)
{
	mk_key_info c = *k;

	c.uri = c.token_uri = c.label = c.reason = NULL;
	c.id = c.public_key = NULL;
	c.cert_subject = c.cert_issuer = NULL;
	if ((k->cert_subject && !(c.cert_subject = strdup(k->cert_subject))) ||
	    (k->cert_issuer && !(c.cert_issuer = strdup(k->cert_issuer))) ||
	    (k->uri && !(c.uri = strdup(k->uri))) ||
	    (k->token_uri && !(c.token_uri = strdup(k->token_uri))) ||
	    (k->label && !(c.label = strdup(k->label))) ||
	    (k->reason && !(c.reason = strdup(k->reason))) ||
	    (k->id && !(c.id = memdup_n(k->id, k->id_len))) ||
	    (k->public_key && !(c.public_key = memdup_n(k->public_key, k->public_key_len)))) {
		mk_key_info_clear(&c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

void mk_token_remember_keys(mk_token *t, const mk_key_info *a, size_t n)
{
	mk_key_info *copy = calloc(n ? n : 1, sizeof(*copy));

	if (!copy)
		return; /* nothing remembered costs only the listing while it is away */
	for (size_t i = 0; i < n; i++)
		if (key_info_copy(&a[i], &copy[i]) < 0) {
			mk_key_info_array_free(copy, i);
			return;
		}
	pthread_mutex_lock(&t->lock);
	mk_key_info_array_free(t->keys, t->n_keys);
	t->keys = copy;
	t->n_keys = n;
	t->keys_known = true;
	pthread_mutex_unlock(&t->lock);
}

/*
 * Appends the keys last listed on t, each unusable with the reason (why, -ENOMEDIUM or
 * -ETIMEDOUT): a removed card's keys stay in the list, marked, until it comes back.
 */
static int keys_append_remembered(mk_token *t, int why, mk_key_info **a, size_t *n)
{
	int r = 0;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; r >= 0 && i < t->n_keys; i++) {
		mk_key_info k;

		r = key_info_copy(&t->keys[i], &k);
		if (r < 0)
			break;
		if (!k.reason) {
			if (why == -ETIMEDOUT)
				r = asprintf(&k.reason, "token \"%s\" does not answer; remove and "
					     "reinsert it to use this key", t->label);
			else
				r = asprintf(&k.reason, "token \"%s\" is not present; insert it to "
					     "use this key", t->label);
			if (r < 0) {
				k.reason = NULL;
				mk_key_info_clear(&k);
				r = -ENOMEM;
				break;
			}
		}
		r = keys_append(a, n, &k);
		if (r < 0)
			mk_key_info_clear(&k);
	}
	pthread_mutex_unlock(&t->lock);
	return r < 0 ? r : 0;
}

int mk_p11_list_keys(mk_p11 *p, const char *token_uri, mk_key_info **ret, size_t *ret_n)
{
	mk_token **toks = NULL;
	mk_key_info *a = NULL;
	size_t n_toks = 0, n = 0;
	int r;

	if (!p || !ret || !ret_n)
		return mk_error(-EINVAL, "missing argument to list keys");
	r = mk_p11_match_tokens(p, token_uri ? token_uri : "pkcs11:", &toks, &n_toks, NULL);
	if (r < 0)
		return r;
	if (token_uri && n_toks == 0) {
		mk_token_array_unref(toks, n_toks);
		return mk_error(-ENODEV, "no token matches \"%.200s\"; list the tokens and check the "
				"URI", token_uri);
	}
	for (size_t i = 0; i < n_toks; i++) {
		size_t before = n;

		r = token_list_keys(toks[i], &a, &n);
		if (r == 0) {
			mk_token_remember_keys(toks[i], a + before, n - before);
			continue;
		}
		if (r == -ENOMEDIUM || r == -ENODEV || r == -ETIMEDOUT) {
			/* away or not answering: what it had, marked unusable */
			while (n > before)
				mk_key_info_clear(&a[--n]);
			r = r == -ENODEV ? 0 : keys_append_remembered(toks[i], r, &a, &n);
			if (r < 0)
				break;
			continue;
		}
		if (r < 0)
			break;
	}
	mk_token_array_unref(toks, n_toks);
	if (r < 0) {
		mk_key_info_array_free(a, n);
		return r;
	}
	mk_error_clear();
	*ret = a ? a : calloc(1, sizeof(*a));
	if (!*ret)
		return -ENOMEM;
	*ret_n = n;
	return 0;
}

/* How telling a per-token failure is when a URI matches several tokens: a login that would
 * reveal the key beats "no such key", which beats an absent token. 0: stop at once. */
static int err_rank(int r)
{
	switch (r) {
	case -ENOTCONN:
		return 4;
	case -ENOKEY:
		return 3;
	case -ENOMEDIUM:
		return 2;
	case -ENODEV:
		return 1;
	default:
		return 0;
	}
}

/* --- key references ---------------------------------------------------------------------- */

mk_key *mk_key_ref(mk_key *k)
{
	if (k)
		__atomic_add_fetch(&k->n_ref, 1, __ATOMIC_RELAXED);
	return k;
}

mk_key *mk_key_unref(mk_key *k)
{
	if (!k || __atomic_sub_fetch(&k->n_ref, 1, __ATOMIC_ACQ_REL) > 0)
		return NULL;
	mk_token_unref(k->tok);
	mk_key_info_clear(&k->info);
	pthread_mutex_destroy(&k->lock);
	free(k);
	return NULL;
}

const mk_key_info *mk_key_get_info(const mk_key *k)
{
	return k ? &k->info : NULL;
}

/* Looks up the private object of the pair q names. 0 and *ret, or -ENOKEY / -EINVAL
 * (several match) / a translated error. */
static int find_private(const mk_token *t, CK_SESSION_HANDLE s, const key_query *q,
			CK_OBJECT_HANDLE *ret)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[3];
	CK_OBJECT_HANDLE h[2];
	size_t n = 0;
	int r;

	r = find_objects(t, s, tmpl, key_template(&cls, q, tmpl), h, 2, &n);
	if (r < 0)
		return r;
	if (n > 1)
		return mk_error(-EINVAL, "several keys on token \"%s\" match; name the key by its id",
				t->label);
	if (n == 0)
		return -ENOKEY;
	*ret = h[0];
	return 0;
}

static int find_public(const mk_token *t, CK_SESSION_HANDLE s, const key_query *q,
		       CK_OBJECT_HANDLE *ret)
{
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[3];
	CK_OBJECT_HANDLE h;
	size_t n = 0;
	int r;

	r = find_objects(t, s, tmpl, key_template(&cls, q, tmpl), &h, 1, &n);
	if (r < 0)
		return r;
	if (n == 0)
		return -ENOKEY;
	*ret = h;
	return 0;
}

int mk_key_handle(mk_key *k, const mk_session *s, bool refind, CK_OBJECT_HANDLE *ret)
{
	CK_ATTRIBUTE a_id = { CKA_ID, k->info.id, k->info.id_len };
	CK_ATTRIBUTE a_label = { CKA_LABEL, k->info.label, strlen(k->info.label) };
	key_query q = { .id = &a_id, .label = k->info.label[0] ? &a_label : NULL };
	CK_OBJECT_HANDLE h;
	int r;

	pthread_mutex_lock(&k->lock);
	if (!refind && k->handle_valid && k->handle_gen == s->gen) {
		*ret = k->handle;
		pthread_mutex_unlock(&k->lock);
		return 0;
	}
	k->handle_valid = false;
	pthread_mutex_unlock(&k->lock);

	r = find_private(k->tok, s->h, &q, &h);
	if (r == -ENOKEY && !mk_token_logged_in(k->tok, s->h))
		return mk_error(-ENOTCONN, "token \"%s\" needs a login to use key \"%s\"; log in "
				"with its PIN and retry", k->tok->label, k->info.label);
	if (r == -ENOKEY)
		return mk_error(-ENOKEY, "key \"%s\" is no longer on token \"%s\"; list the keys and "
				"pick another", k->info.label, k->tok->label);
	if (r < 0)
		return r;
	pthread_mutex_lock(&k->lock);
	k->handle = h;
	k->handle_gen = s->gen;
	k->handle_valid = true;
	pthread_mutex_unlock(&k->lock);
	*ret = h;
	return 0;
}

/* Finds the pair on one token. 0 and *ret; -ENOKEY; -ENOTCONN when only a login would tell. */
static int token_find_key(mk_token *t, const key_query *q, mk_key **ret)
{
	CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pub = CK_INVALID_HANDLE;
	uint8_t *id = NULL;
	size_t id_len = 0;
	mk_session s;
	mk_key *k;
	int r;

	r = mk_token_borrow(t, &s);
	if (r < 0)
		return r;
	r = find_private(t, s.h, q, &priv);
	if (r == -ENOKEY) {
		bool pub_found = find_public(t, s.h, q, &pub) == 0;

		r = -ENOKEY;
		if (!mk_token_logged_in(t, s.h) && (pub_found || (t->ti.flags & CKF_LOGIN_REQUIRED)))
			r = mk_error(-ENOTCONN, "token \"%s\" needs a login before its private keys "
				     "can be found; log in with its PIN and retry", t->label);
		goto out;
	}
	if (r < 0)
		goto out;
	k = calloc(1, sizeof(*k));
	if (!k) {
		r = -ENOMEM;
		goto out;
	}
	/* The public half shares the private key's CKA_ID (its label may differ). */
	r = attr_read(t, s.h, priv, CKA_ID, &id, &id_len);
	if (r == 0 && id_len > 0) {
		CK_ATTRIBUTE a_id = { CKA_ID, id, id_len };
		key_query pq = { .id = &a_id };

		if (find_public(t, s.h, &pq, &pub) < 0)
			pub = CK_INVALID_HANDLE;
	}
	free(id);
	if (r < 0 && r != -ENOENT) {
		free(k);
		goto out;
	}
	r = key_info_read(t, s.h, priv, pub, &k->info, &k->curve, &k->key_type);
	if (r < 0) {
		free(k);
		goto out;
	}
	k->n_ref = 1;
	k->tok = mk_token_ref(t);
	pthread_mutex_init(&k->lock, NULL);
	k->handle = priv;
	k->handle_gen = s.gen;
	k->handle_valid = true;
	*ret = k;
	r = 0;
out:
	mk_token_return(t, &s, r == -ENOMEDIUM);
	return r;
}

int mk_p11_find_key(mk_p11 *p, const char *uri, mk_key **ret)
{
	mk_token **toks = NULL;
	P11KitUri *u = NULL;
	size_t n = 0;
	key_query q;
	int r, best = -ENODEV;

	if (!ret)
		return mk_error(-EINVAL, "missing argument to find a key");
	r = mk_p11_match_tokens(p, uri, &toks, &n, &u);
	if (r < 0)
		return r;
	r = key_query_from_uri(u, uri, &q);
	if (r < 0)
		goto out;
	if (n == 0) {
		r = mk_error(-ENODEV, "no token matches \"%.200s\"; list the tokens and check the URI",
			     uri);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		r = token_find_key(toks[i], &q, ret);
		if (r == 0 || err_rank(r) == 0)
			goto out;
		if (err_rank(r) > err_rank(best))
			best = r;
	}
	if (best == -ENOKEY)
		r = mk_error(-ENOKEY, "no key matches \"%.200s\"; list the keys and check the URI",
			     uri);
	else if (best == -ENOTCONN)
		r = mk_error(-ENOTCONN, "the key \"%.200s\" is hidden until login; log in to its "
			     "token and retry", uri);
	else
		r = best;
out:
	mk_token_array_unref(toks, n);
	p11_kit_uri_free(u);
	return r;
}

/* --- generating and deleting ------------------------------------------------------------- */

static bool token_has_mechanism(mk_token *t, CK_MECHANISM_TYPE mech)
{
	CK_MECHANISM_TYPE list[512];
	CK_ULONG n = ELEMENTSOF(list);
	CK_SLOT_ID slot;

	pthread_mutex_lock(&t->lock);
	slot = t->slot;
	pthread_mutex_unlock(&t->lock);
	if (t->f->C_GetMechanismList(slot, list, &n) != CKR_OK)
		return false;
	for (CK_ULONG i = 0; i < n; i++)
		if (list[i] == mech)
			return true;
	return false;
}

static bool provenance_ok(const mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv)
{
	return attr_bool(t, s, priv, CKA_LOCAL) && attr_bool(t, s, priv, CKA_NEVER_EXTRACTABLE) &&
	       attr_bool(t, s, priv, CKA_ALWAYS_SENSITIVE);
}

/* The number of trailing template entries that only say FALSE to other uses; dropped on a
 * retry for tokens that refuse them. */
#define GEN_OPTIONAL_PUB 2
#define GEN_OPTIONAL_PRIV 2

static CK_RV generate_pair(mk_token *t, CK_SESSION_HANDLE s, mk_key_alg alg, bool montgomery,
			   const uint8_t id[16], const char *label, CK_OBJECT_HANDLE *ret_pub,
			   CK_OBJECT_HANDLE *ret_priv)
{
	const mk_curve_info *ci = mk_curve_get(mk_key_alg_curve(alg));
	bool sign = mk_key_alg_is_signature(alg);
	CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = ci->id == MK_CURVE_ED25519 ? CKK_EC_EDWARDS :
			 ci->id == MK_CURVE_X25519 ? (montgomery ? CKK_EC_MONTGOMERY : CKK_EC_EDWARDS) :
			 CKK_EC;
	CK_MECHANISM mech = {
		kt == CKK_EC ? CKM_EC_KEY_PAIR_GEN :
		kt == CKK_EC_MONTGOMERY ? CKM_EC_MONTGOMERY_KEY_PAIR_GEN : CKM_EC_EDWARDS_KEY_PAIR_GEN,
		NULL, 0
	};
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BBOOL b_sign = sign ? CK_TRUE : CK_FALSE, b_derive = sign ? CK_FALSE : CK_TRUE;
	CK_ULONG label_len = strlen(label);
	CK_ATTRIBUTE pub_t[] = {
		{ CKA_CLASS, &pub_cls, sizeof(pub_cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_EC_PARAMS, (void *)ci->oid, ci->oid_len },
		{ CKA_ID, (void *)id, 16 },
		{ CKA_LABEL, (void *)label, label_len },
		{ CKA_VERIFY, &b_sign, sizeof(b_sign) },
		{ CKA_DERIVE, &b_derive, sizeof(b_derive) },
		/* optional */
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
	};
	CK_ATTRIBUTE priv_t[] = {
		{ CKA_CLASS, &priv_cls, sizeof(priv_cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ID, (void *)id, 16 },
		{ CKA_LABEL, (void *)label, label_len },
		{ CKA_SIGN, &b_sign, sizeof(b_sign) },
		{ CKA_DERIVE, &b_derive, sizeof(b_derive) },
		/* optional */
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
	};
	CK_RV rv;

	rv = t->f->C_GenerateKeyPair(s, &mech, pub_t, ELEMENTSOF(pub_t), priv_t,
				     ELEMENTSOF(priv_t), ret_pub, ret_priv);
	if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
	    rv == CKR_TEMPLATE_INCONSISTENT)
		rv = t->f->C_GenerateKeyPair(s, &mech, pub_t, ELEMENTSOF(pub_t) - GEN_OPTIONAL_PUB,
					     priv_t, ELEMENTSOF(priv_t) - GEN_OPTIONAL_PRIV,
					     ret_pub, ret_priv);
	return rv;
}

int mk_p11_generate_key(mk_p11 *p, const char *token_uri, mk_key_alg alg, const char *label,
			char **ret_uri)
{
	return mk_p11_generate_key_flags(p, token_uri, alg, label, 0, ret_uri);
}

int mk_p11_generate_key_flags(mk_p11 *p, const char *token_uri, mk_key_alg alg,
			      const char *label, unsigned flags, char **ret_uri)
{
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	mk_token *t = NULL;
	uint8_t id[16];
	char what[300];
	bool montgomery = false;
	mk_session s;
	char *uri = NULL;
	CK_RV rv;
	int r;

	if (!p || !ret_uri)
		return mk_error(-EINVAL, "missing argument to generate a key");
	if (!alg_valid(alg))
		return mk_error(-EOPNOTSUPP, "cannot generate a key of algorithm %d; use one of "
				"ecdsa-p256/p384/p521, ed25519, dhkem-p256/p384/p521, dhkem-x25519",
				(int)alg);
	if (!label)
		label = "";
	if (strlen(label) > MK_P11_MAX_LABEL)
		return mk_error(-EINVAL, "the key label is longer than %u bytes", MK_P11_MAX_LABEL);
	if (RAND_bytes(id, sizeof(id)) != 1)
		return mk_error(-EIO, "no randomness for a key id");
	r = mk_p11_resolve_token(p, token_uri, &t);
	if (r < 0)
		return r;
	snprintf(what, sizeof(what), "generate a %s key \"%s\"", mk_key_alg_name(alg), label);
	r = mk_token_borrow(t, &s);
	if (r < 0)
		goto out_tok;
	/* asked with a session borrowed: the module is not re-initialised meanwhile */
	if (alg == MK_ALG_DHKEM_X25519)
		montgomery = token_has_mechanism(t, CKM_EC_MONTGOMERY_KEY_PAIR_GEN);
	rv = generate_pair(t, s.h, alg, montgomery, id, label, &pub, &priv);
	if (rv != CKR_OK) {
		r = mk_p11_error(rv, t, what);
		goto out;
	}
	if (!provenance_ok(t, s.h, priv)) {
		r = mk_error(-EIO, "token \"%s\" did not mark the new key as generated on the token "
			     "and never extractable; the key was deleted", t->label);
		goto out_destroy;
	}
	if (flags & MK_P11_GENERATE_SINGLE_USE) {
		rv = marker_create(t, s.h, id, sizeof(id));
		if (rv != CKR_OK) {
			r = mk_p11_error(rv, t, "mark the new key as single-use (it was deleted)");
			goto out_destroy;
		}
	}
	r = key_uri_format(t, id, sizeof(id), label, &uri);
	if (r < 0)
		goto out_destroy;
	*ret_uri = uri;
	r = 0;
	goto out;
out_destroy:
	t->f->C_DestroyObject(s.h, priv);
	t->f->C_DestroyObject(s.h, pub);
out:
	mk_token_return(t, &s, r == -ENOMEDIUM);
out_tok:
	mk_token_unref(t);
	return r;
}

static int token_delete_key(mk_token *t, const key_query *q)
{
	CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE, pubs[8];
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE tmpl[3], a_id = { CKA_ID, NULL, 0 };
	key_query pq = *q;
	uint8_t *id = NULL;
	size_t n_pub = 0, id_len = 0;
	mk_session s;
	CK_RV rv;
	int r;

	r = mk_token_borrow(t, &s);
	if (r < 0)
		return r;
	r = find_private(t, s.h, q, &priv);
	if (r == -ENOKEY && !mk_token_logged_in(t, s.h) && (t->ti.flags & CKF_LOGIN_REQUIRED)) {
		r = mk_error(-ENOTCONN, "token \"%s\" needs a login to delete a key; log in with its "
			     "PIN and retry", t->label);
		goto out;
	}
	if (r < 0 && r != -ENOKEY)
		goto out;
	/* The public half by the private key's CKA_ID when the URI gave none. */
	if (r == 0 && !q->id && attr_read(t, s.h, priv, CKA_ID, &id, &id_len) == 0) {
		a_id = (CK_ATTRIBUTE){ CKA_ID, id, id_len };
		pq = (key_query){ .id = &a_id };
	}
	r = find_objects(t, s.h, tmpl, key_template(&cls, &pq, tmpl), pubs, ELEMENTSOF(pubs),
			 &n_pub);
	if (r < 0)
		goto out;
	if (priv == CK_INVALID_HANDLE && n_pub == 0) {
		r = -ENOKEY;
		goto out;
	}
	rv = CKR_OK;
	if (priv != CK_INVALID_HANDLE)
		rv = t->f->C_DestroyObject(s.h, priv);
	for (size_t i = 0; rv == CKR_OK && i < n_pub; i++)
		rv = t->f->C_DestroyObject(s.h, pubs[i]);
	/* the key's single-use marker goes with it (by the CKA_ID of the pair) */
	if (rv == CKR_OK && pq.id && pq.id->ulValueLen) {
		CK_OBJECT_HANDLE marks[4];
		size_t n_marks = 0;

		if (markers_find(t, s.h, pq.id->pValue, pq.id->ulValueLen, marks,
				 ELEMENTSOF(marks), &n_marks) == 0)
			for (size_t i = 0; rv == CKR_OK && i < n_marks; i++)
				rv = t->f->C_DestroyObject(s.h, marks[i]);
		mk_error_clear();
	}
	r = mk_p11_error(rv, t, "delete a key");
out:
	free(id);
	mk_token_return(t, &s, r == -ENOMEDIUM);
	return r;
}

int mk_p11_delete_key(mk_p11 *p, const char *uri)
{
	mk_token **toks = NULL;
	P11KitUri *u = NULL;
	size_t n = 0;
	key_query q;
	int r, best = -ENODEV;

	r = mk_p11_match_tokens(p, uri, &toks, &n, &u);
	if (r < 0)
		return r;
	r = key_query_from_uri(u, uri, &q);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		r = token_delete_key(toks[i], &q);
		if (r == 0 || err_rank(r) == 0)
			goto out;
		if (err_rank(r) > err_rank(best))
			best = r;
	}
	if (best == -ENOKEY)
		r = mk_error(-ENOKEY, "no key matches \"%.200s\"; list the keys and check the URI",
			     uri);
	else if (best == -ENODEV)
		r = mk_error(-ENODEV, "no token matches \"%.200s\"; list the tokens and check the URI",
			     uri);
	else
		r = best;
out:
	mk_token_array_unref(toks, n);
	p11_kit_uri_free(u);
	return r;
}
