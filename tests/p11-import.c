/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test-only import of known-answer private keys into a SoftHSM2 token (C_CreateObject).
 *
 * The SoftHSM module is loaded through p11-kit as a *managed* module: p11-kit counts
 * C_Initialize/C_Finalize on the one real module, so this import can run while the token
 * layer under test has the same module loaded, and finalising here does not pull the
 * module from under it. Login state is per token, so logging in here is harmless when the
 * token layer is logged in already (CKR_USER_ALREADY_LOGGED_IN), and closing this session
 * does not log the token layer out while it keeps sessions of its own.
 */
#include <errno.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <stdbool.h>
#include <string.h>

#include "tests/fixture.h"
#include "tests/p11-import.h"
#include "tests/tap.h"

static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t oid_p521[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 };
static const uint8_t oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
static const uint8_t oid_x25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x6e };

typedef struct import_alg {
	CK_KEY_TYPE key_type;
	const uint8_t *oid;
	size_t oid_len;
	size_t priv_len, pub_len;
	bool sign;
} import_alg;

static bool alg_params(mk_key_alg alg, import_alg *ret)
{
	switch (alg) {
	case MK_ALG_ECDSA_P256:
	case MK_ALG_DHKEM_P256:
		*ret = (import_alg){ CKK_EC, oid_p256, sizeof(oid_p256), 32, 65,
				     alg == MK_ALG_ECDSA_P256 };
		return true;
	case MK_ALG_ECDSA_P384:
	case MK_ALG_DHKEM_P384:
		*ret = (import_alg){ CKK_EC, oid_p384, sizeof(oid_p384), 48, 97,
				     alg == MK_ALG_ECDSA_P384 };
		return true;
	case MK_ALG_ECDSA_P521:
	case MK_ALG_DHKEM_P521:
		*ret = (import_alg){ CKK_EC, oid_p521, sizeof(oid_p521), 66, 133,
				     alg == MK_ALG_ECDSA_P521 };
		return true;
	case MK_ALG_ED25519:
		*ret = (import_alg){ CKK_EC_EDWARDS, oid_ed25519, sizeof(oid_ed25519), 32, 32,
				     true };
		return true;
	case MK_ALG_DHKEM_X25519:
		/* SoftHSM 2.6.1 knows no CKK_EC_MONTGOMERY: X25519 is an "Edwards" key with the
		 * X25519 OID. */
		*ret = (import_alg){ CKK_EC_EDWARDS, oid_x25519, sizeof(oid_x25519), 32, 32,
				     false };
		return true;
	default:
		return false;
	}
}

/* Finds the slot whose token label (blank-padded to 32 bytes) equals label. */
static int find_slot(CK_FUNCTION_LIST *m, const char *label, CK_SLOT_ID *ret)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = ELEMENTSOF(slots);
	char want[32];
	size_t l = strlen(label);

	if (l > sizeof(want))
		return -EINVAL;
	memset(want, ' ', sizeof(want));
	memcpy(want, label, l);
	if (m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -EIO;
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;

		if (m->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (memcmp(ti.label, want, sizeof(want)) == 0) {
			*ret = slots[i];
			return 0;
		}
	}
	return -ENODEV;
}

/* DER OCTET STRING around a point (how SoftHSM itself stores CKA_EC_POINT). */
static size_t wrap_point(const uint8_t *pub, size_t n, uint8_t *out, size_t cap)
{
	size_t h = n < 128 ? 2 : 3;

	if (n > 255 || n + h > cap)
		return 0;
	out[0] = 0x04;
	if (n < 128) {
		out[1] = (uint8_t)n;
	} else {
		out[1] = 0x81;
		out[2] = (uint8_t)n;
	}
	memcpy(out + h, pub, n);
	return n + h;
}

static int create_pair(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, const import_alg *a,
		       const char *label, const uint8_t *id, size_t id_len, const uint8_t *priv,
		       size_t priv_len, const uint8_t *point, size_t point_len)
{
	CK_OBJECT_CLASS pub_class = CKO_PUBLIC_KEY, priv_class = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = a->key_type;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_BBOOL sign = a->sign ? CK_TRUE : CK_FALSE, derive = a->sign ? CK_FALSE : CK_TRUE;
	CK_ATTRIBUTE pub_t[] = {
		{ CKA_CLASS, &pub_class, sizeof(pub_class) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &no, sizeof(no) },
		{ CKA_VERIFY, &sign, sizeof(sign) },
		{ CKA_DERIVE, &derive, sizeof(derive) },
		{ CKA_ENCRYPT, &no, sizeof(no) },
		{ CKA_WRAP, &no, sizeof(no) },
		{ CKA_EC_PARAMS, (void *)a->oid, a->oid_len },
		{ CKA_EC_POINT, (void *)point, point_len },
		{ CKA_ID, (void *)id, id_len },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE priv_t[] = {
		{ CKA_CLASS, &priv_class, sizeof(priv_class) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_SIGN, &sign, sizeof(sign) },
		{ CKA_DERIVE, &derive, sizeof(derive) },
		{ CKA_DECRYPT, &no, sizeof(no) },
		{ CKA_UNWRAP, &no, sizeof(no) },
		{ CKA_EC_PARAMS, (void *)a->oid, a->oid_len },
		{ CKA_VALUE, (void *)priv, priv_len },
		{ CKA_ID, (void *)id, id_len },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE hpub = CK_INVALID_HANDLE, hpriv = CK_INVALID_HANDLE;
	CK_RV rv;

	rv = m->C_CreateObject(s, pub_t, ELEMENTSOF(pub_t), &hpub);
	if (rv != CKR_OK) {
		mkt_diag("import: C_CreateObject(public key \"%s\") failed: CK_RV 0x%lx", label,
			 (unsigned long)rv);
		return -EIO;
	}
	rv = m->C_CreateObject(s, priv_t, ELEMENTSOF(priv_t), &hpriv);
	if (rv != CKR_OK) {
		mkt_diag("import: C_CreateObject(private key \"%s\") failed: CK_RV 0x%lx", label,
			 (unsigned long)rv);
		m->C_DestroyObject(s, hpub);
		return -EIO;
	}
	return 0;
}

/* Loads SoftHSM through p11-kit, opens a R/W session on the token labelled token_label and
 * logs in with MKT_USER_PIN. On success the caller ends with close_token(). */
static int open_token(const char *token_label, CK_FUNCTION_LIST **ret_m, CK_SESSION_HANDLE *ret_s)
{
	CK_FUNCTION_LIST *m;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_SLOT_ID slot;
	CK_RV rv;
	int r;

	if (!mkt_softhsm_module()) {
		mkt_diag("import: SoftHSM2 module not installed");
		return -ENOENT;
	}
	m = p11_kit_module_load(mkt_softhsm_module(), 0);
	if (!m) {
		mkt_diag("import: cannot load %s: %s", mkt_softhsm_module(), p11_kit_message());
		return -ENOENT;
	}
	rv = p11_kit_module_initialize(m);
	if (rv != CKR_OK) {
		mkt_diag("import: cannot initialise SoftHSM: CK_RV 0x%lx", (unsigned long)rv);
		p11_kit_module_release(m);
		return -EIO;
	}
	r = find_slot(m, token_label, &slot);
	if (r < 0) {
		mkt_diag("import: no SoftHSM token labelled \"%s\"", token_label);
		goto fail;
	}
	rv = m->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK) {
		mkt_diag("import: C_OpenSession failed: CK_RV 0x%lx", (unsigned long)rv);
		r = -EIO;
		goto fail;
	}
	rv = m->C_Login(s, CKU_USER, (CK_UTF8CHAR *)MKT_USER_PIN, strlen(MKT_USER_PIN));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		mkt_diag("import: C_Login on \"%s\" failed: CK_RV 0x%lx", token_label,
			 (unsigned long)rv);
		r = rv == CKR_PIN_INCORRECT ? -EKEYREJECTED : -EIO;
		goto fail;
	}
	*ret_m = m;
	*ret_s = s;
	return 0;
fail:
	if (s != CK_INVALID_HANDLE)
		m->C_CloseSession(s);
	p11_kit_module_finalize(m);
	p11_kit_module_release(m);
	return r;
}

static void close_token(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s)
{
	m->C_CloseSession(s);
	p11_kit_module_finalize(m);
	p11_kit_module_release(m);
}

int mkt_import_key(const char *token_label, mk_key_alg alg, const char *label, const uint8_t *id,
		   size_t id_len, const uint8_t *priv, size_t priv_len, const uint8_t *pub,
		   size_t pub_len)
{
	CK_FUNCTION_LIST *m;
	CK_SESSION_HANDLE s;
	uint8_t point[140];
	size_t point_len;
	import_alg a;
	int r;

	if (!token_label || !label || !id || !id_len || !priv || !pub) {
		mkt_diag("import: missing argument");
		return -EINVAL;
	}
	if (!alg_params(alg, &a)) {
		mkt_diag("import: algorithm %d cannot be imported", (int)alg);
		return -EOPNOTSUPP;
	}
	if (priv_len != a.priv_len || pub_len != a.pub_len) {
		mkt_diag("import: key \"%s\": private key %zu bytes (want %zu), public %zu (want %zu)",
			 label, priv_len, a.priv_len, pub_len, a.pub_len);
		return -EINVAL;
	}
	point_len = wrap_point(pub, pub_len, point, sizeof(point));
	if (!point_len)
		return -EINVAL;
	r = open_token(token_label, &m, &s);
	if (r < 0)
		return r;
	r = create_pair(m, s, &a, label, id, id_len, priv, priv_len, point, point_len);
	close_token(m, s);
	return r;
}

int mkt_import_cert(const char *token_label, const char *label, const uint8_t *id, size_t id_len,
		    const uint8_t *der, size_t der_len)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_BBOOL yes = CK_TRUE;
	const unsigned char *p = der;
	unsigned char *subject = NULL;
	CK_FUNCTION_LIST *m;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h;
	X509 *x = NULL;
	int subject_len = -1;
	CK_RV rv;
	int r;

	if (!token_label || !label || !id || !id_len || !der || !der_len) {
		mkt_diag("import: missing argument");
		return -EINVAL;
	}
	/* SoftHSM wants CKA_SUBJECT with an X.509 certificate. */
	x = d2i_X509(NULL, &p, (long)der_len);
	if (x)
		subject_len = i2d_X509_NAME(X509_get_subject_name(x), &subject);
	X509_free(x);
	if (subject_len <= 0) {
		mkt_diag("import: certificate \"%s\" does not parse", label);
		return -EINVAL;
	}
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_ID, (void *)id, id_len },
		{ CKA_SUBJECT, subject, (CK_ULONG)subject_len },
		{ CKA_VALUE, (void *)der, der_len },
	};
	r = open_token(token_label, &m, &s);
	if (r >= 0) {
		rv = m->C_CreateObject(s, tmpl, ELEMENTSOF(tmpl), &h);
		if (rv != CKR_OK) {
			mkt_diag("import: certificate \"%s\": C_CreateObject failed: CK_RV 0x%lx",
				 label, (unsigned long)rv);
			r = -EIO;
		}
		close_token(m, s);
	}
	OPENSSL_free(subject);
	return r;
}

int mkt_count_certs(const char *token_label)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE h[256];
	CK_ULONG got = 0;
	CK_FUNCTION_LIST *m;
	CK_SESSION_HANDLE s;
	int r, n = 0;

	r = open_token(token_label, &m, &s);
	if (r < 0)
		return r;
	if (m->C_FindObjectsInit(s, tmpl, ELEMENTSOF(tmpl)) != CKR_OK) {
		close_token(m, s);
		return -EIO;
	}
	while (m->C_FindObjects(s, h, ELEMENTSOF(h), &got) == CKR_OK && got > 0)
		n += (int)got;
	m->C_FindObjectsFinal(s);
	close_token(m, s);
	return n;
}
