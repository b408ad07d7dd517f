/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Signing and ECDH on the token. The hot path: borrow a pooled session, use the cached
 * private key handle, one C_SignInit + C_Sign (or C_DeriveKey + C_GetAttributeValue +
 * C_DestroyObject), return the session. No session is opened, no login done and no object
 * searched per call; the only allocation is the result.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#include "common/error.h"
#include "pkcs11/p11-private.h"

/* Enough for any raw signature we accept (P-521: 132 bytes) with room for a token that pads. */
#define SIG_BUF 512
/* A token that insists on a bigger buffer than this is not giving us an MLS signature. */
#define SIG_MAX_FINISH 65536

/* --- ECDSA encoding ---------------------------------------------------------------------- */

/* DER INTEGER of a big-endian unsigned value; returns the bytes written (at most n + 3). */
static size_t der_integer(const uint8_t *v, size_t n, uint8_t *out)
{
	size_t pad, i = 0;

	while (n > 1 && v[0] == 0) {
		v++;
		n--;
	}
	pad = (v[0] & 0x80) ? 1 : 0;
	out[i++] = 0x02;
	out[i++] = (uint8_t)(n + pad);
	if (pad)
		out[i++] = 0x00;
	memcpy(out + i, v, n);
	return i + n;
}

int mk_p11_ecdsa_raw_to_der(const uint8_t *rs, size_t n, uint8_t *out, size_t cap,
			    size_t *ret_len)
{
	uint8_t body[2 * (66 + 3)];
	size_t half = n / 2, len = 0, hdr;

	/* Each half is at most 66 bytes, so an INTEGER is at most 69 and the body 138. */
	if (!rs || !out || !ret_len || n == 0 || n % 2 != 0 || half > 66)
		return -EINVAL;
	len += der_integer(rs, half, body + len);
	len += der_integer(rs + half, half, body + len);
	hdr = len < 128 ? 2 : 3;
	if (cap < hdr + len)
		return -EINVAL;
	out[0] = 0x30;
	if (len < 128) {
		out[1] = (uint8_t)len;
	} else {
		out[1] = 0x81;
		out[2] = (uint8_t)len;
	}
	memcpy(out + hdr, body, len);
	*ret_len = hdr + len;
	return 0;
}

/* --- hashing ----------------------------------------------------------------------------- */

static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static EVP_MD *md_sha256, *md_sha384, *md_sha512;

/* Fetch once: an implicit fetch per EVP_Digest costs a provider lookup on every signature. */
static void md_init(void)
{
	md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	md_sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
	md_sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
}

static const EVP_MD *curve_md(mk_curve c)
{
	pthread_once(&md_once, md_init);
	switch (c) {
	case MK_CURVE_P256:
		return md_sha256;
	case MK_CURVE_P384:
		return md_sha384;
	case MK_CURVE_P521:
		return md_sha512;
	default:
		return NULL;
	}
}

/* --- common checks ----------------------------------------------------------------------- */

static int key_check_alg(const mk_key *k, bool sign)
{
	const mk_key_info *i = &k->info;

	if (i->alg == MK_ALG_NONE)
		return mk_error(-EOPNOTSUPP, "key \"%s\" cannot be used by mlskey: %s", i->label,
				i->reason ? i->reason : "unsupported key");
	if (sign && !mk_key_alg_is_signature(i->alg))
		return mk_error(-EOPNOTSUPP, "key \"%s\" is a %s key for HPKE; it cannot sign",
				i->label, mk_key_alg_name(i->alg));
	if (!sign && mk_key_alg_is_signature(i->alg))
		return mk_error(-EOPNOTSUPP, "key \"%s\" is a %s signature key; it cannot derive",
				i->label, mk_key_alg_name(i->alg));
	return 0;
}

/* Codes after which one more try (new session, or the key looked up again) may succeed. */
static bool rv_retry_session(CK_RV rv)
{
	return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

static bool rv_retry_handle(CK_RV rv)
{
	return rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID;
}

/* --- signing ----------------------------------------------------------------------------- */

/*
 * Ends a C_Sign that answered CKR_BUFFER_TOO_SMALL (the operation is still active and would
 * block the session) by letting it write into a buffer of the size it asked for. Returns
 * false when it could not, and the session must be dropped.
 */
static bool sign_finish(mk_token *t, CK_SESSION_HANDLE s, const uint8_t *data, size_t n,
			CK_ULONG want)
{
	uint8_t *buf;
	CK_RV rv;

	if (want == 0 || want > SIG_MAX_FINISH)
		return false;
	buf = malloc(want);
	if (!buf)
		return false;
	rv = t->f->C_Sign(s, (CK_BYTE *)data, n, buf, &want);
	free(buf);
	return rv == CKR_OK;
}

/* --- context-specific login -------------------------------------------------------------- */

static __thread mk_p11_auth_fn auth_fn;
static __thread void *auth_userdata;

void mk_p11_set_thread_auth(mk_p11_auth_fn fn, void *userdata)
{
	auth_fn = fn;
	auth_userdata = userdata;
}

/* Does the private object h want a login for every use? Read once per handle, not per call. */
static bool key_always_auth(mk_key *k, const mk_session *s, CK_OBJECT_HANDLE h)
{
	CK_BBOOL v = CK_FALSE;
	CK_ATTRIBUTE a = { CKA_ALWAYS_AUTHENTICATE, &v, sizeof(v) };
	bool known, yes;

	if (k->info.always_authenticate)
		return true;
	pthread_mutex_lock(&k->lock);
	known = k->auth_known && k->auth_handle == h && k->auth_gen == s->gen;
	yes = k->always_auth;
	pthread_mutex_unlock(&k->lock);
	if (known)
		return yes;
	yes = k->tok->f->C_GetAttributeValue(s->h, h, &a, 1) == CKR_OK && v == CK_TRUE;
	pthread_mutex_lock(&k->lock);
	k->auth_known = true;
	k->auth_handle = h;
	k->auth_gen = s->gen;
	k->always_auth = yes;
	pthread_mutex_unlock(&k->lock);
	return yes;
}

/* After C_SignInit: one C_Login(CKU_CONTEXT_SPECIFIC) per PIN the thread's function hands
 * over, for as long as it hands one over. */
static int context_login(mk_key *k, CK_SESSION_HANDLE s)
{
	mk_token *t = k->tok;
	int last = 0;

	if (!auth_fn)
		return mk_error(-EACCES, "key \"%s\" on token \"%s\" wants the PIN for every use, "
				"and nothing here can ask for it", k->info.label, t->label);
	for (unsigned attempt = 1;; attempt++) {
		mk_secret *pin = NULL;
		CK_RV rv;
		int r;

		r = auth_fn(auth_userdata, &k->info, attempt, last, &pin);
		if (r < 0) {
			mk_secret_free(pin);
			return r;
		}
		if (pin && pin->len > MK_P11_MAX_PIN) {
			mk_secret_free(pin);
			return mk_error(-EINVAL, "the PIN is longer than %u bytes", MK_P11_MAX_PIN);
		}
		rv = t->f->C_Login(s, CKU_CONTEXT_SPECIFIC, pin ? (CK_UTF8CHAR *)pin->data : NULL,
				   pin ? pin->len : 0);
		mk_secret_free(pin);
		if (rv == CKR_OK)
			return 0;
		last = mk_p11_error(rv, t, "log in for one use of the key");
		if (last != -EKEYREJECTED)
			return last;
	}
}

/*
 * Ends a signature operation that was initialised but will not be finished (its context
 * login failed): any C_Sign that does not answer CKR_BUFFER_TOO_SMALL ends it, and a token
 * that signs anyway only wastes the signature. false: the session must be dropped.
 */
static bool sign_abort(mk_token *t, CK_SESSION_HANDLE s, const uint8_t *data, size_t n)
{
	uint8_t buf[SIG_BUF];
	CK_ULONG len = sizeof(buf);
	CK_RV rv = t->f->C_Sign(s, (CK_BYTE *)data, n, buf, &len);

	if (rv == CKR_BUFFER_TOO_SMALL)
		return sign_finish(t, s, data, n, len);
	return !mk_p11_rv_session_dead(rv);
}

/* C_SignInit + C_Sign over data with k's private key; expects exactly want bytes in out. */
static int key_sign_raw(mk_key *k, CK_MECHANISM_TYPE mech_type, const uint8_t *data, size_t n,
			uint8_t *out, size_t want, const char *what)
{
	static const uint8_t empty[1];
	CK_MECHANISM mech = { mech_type, NULL, 0 };
	mk_token *t = k->tok;
	bool refind = false;
	CK_RV rv = CKR_OK;

	if (!data)
		data = empty;
	for (int attempt = 0; attempt < 2; attempt++) {
		CK_OBJECT_HANDLE h;
		CK_ULONG len = SIG_BUF;
		bool drop = false;
		mk_session s;
		int r;

		r = mk_token_borrow(t, &s);
		if (r < 0)
			return r;
		r = mk_key_handle(k, &s, refind, &h);
		if (r < 0) {
			mk_token_return(t, &s, r == -ENOMEDIUM);
			return r;
		}
		rv = t->f->C_SignInit(s.h, &mech, h);
		if (rv == CKR_OK && key_always_auth(k, &s, h)) {
			r = context_login(k, s.h);
			if (r < 0) {
				mk_token_return(t, &s, !sign_abort(t, s.h, data, n));
				return r;
			}
		}
		if (rv == CKR_OK) {
			rv = t->f->C_Sign(s.h, (CK_BYTE *)data, n, out, &len);
			if (rv == CKR_BUFFER_TOO_SMALL)
				drop = !sign_finish(t, s.h, data, n, len);
		}
		mk_token_return(t, &s, drop || mk_p11_rv_session_dead(rv));
		if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && len != want))
			return mk_error(-EIO, "token \"%s\" returned a %lu-byte signature where %zu "
					"bytes were due; it does not sign as PKCS#11 says",
					t->label, (unsigned long)len, want);
		if (rv == CKR_OK)
			return 0;
		refind = rv_retry_handle(rv);
		if (!refind && !rv_retry_session(rv))
			break;
	}
	return mk_p11_error(rv, t, what);
}

static int sign_ecdsa_digest(mk_key *k, const uint8_t *digest, size_t n, mk_bytes *ret_sig)
{
	const mk_curve_info *ci = mk_curve_get(k->curve);
	uint8_t raw[SIG_BUF], der[160];
	size_t der_len;
	int r;

	r = key_sign_raw(k, CKM_ECDSA, digest, n, raw, 2 * ci->field_len, "sign with ECDSA");
	if (r < 0)
		return r;
	r = mk_p11_ecdsa_raw_to_der(raw, 2 * ci->field_len, der, sizeof(der), &der_len);
	if (r < 0)
		return mk_error(-EIO, "cannot encode the signature of token \"%s\"", k->tok->label);
	return mk_bytes_dup(der, der_len, ret_sig);
}

int mk_key_sign(mk_key *k, const uint8_t *msg, size_t n, mk_bytes *ret_sig)
{
	uint8_t digest[EVP_MAX_MD_SIZE], raw[SIG_BUF];
	unsigned int md_len = 0;
	const EVP_MD *md;
	int r;

	if (!k || !ret_sig || (!msg && n > 0))
		return mk_error(-EINVAL, "missing argument to sign");
	r = key_check_alg(k, true);
	if (r < 0)
		return r;
	if (k->info.alg == MK_ALG_ED25519) {
		/* Pure EdDSA over the whole message: no parameter, no pre-hash. */
		r = key_sign_raw(k, CKM_EDDSA, msg, n, raw, 64, "sign with Ed25519");
		return r < 0 ? r : mk_bytes_dup(raw, 64, ret_sig);
	}
	md = curve_md(k->curve);
	if (!md || EVP_Digest(msg ? msg : digest, n, digest, &md_len, md, NULL) != 1)
		return mk_error(-ENOMEM, "cannot hash the message to sign");
	return sign_ecdsa_digest(k, digest, md_len, ret_sig);
}

int mk_key_sign_digest(mk_key *k, const uint8_t *digest, size_t n, mk_bytes *ret_sig)
{
	const mk_curve_info *ci;
	int r;

	if (!k || !ret_sig || !digest)
		return mk_error(-EINVAL, "missing argument to sign a digest");
	r = key_check_alg(k, true);
	if (r < 0)
		return r;
	if (k->info.alg == MK_ALG_ED25519)
		return mk_error(-EOPNOTSUPP, "key \"%s\" is an Ed25519 key; Ed25519 signs the whole "
				"message, not a digest", k->info.label);
	ci = mk_curve_get(k->curve);
	if (n != ci->md_len)
		return mk_error(-EINVAL, "a %s digest for %s has %zu bytes, got %zu", ci->md_name,
				ci->name, ci->md_len, n);
	return sign_ecdsa_digest(k, digest, n, ret_sig);
}

/* --- ECDH -------------------------------------------------------------------------------- */

/* Codes with which a token may refuse the raw point and want it DER-wrapped. */
static bool rv_point_refused(CK_RV rv)
{
	switch (rv) {
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_ARGUMENTS_BAD:
	case CKR_DATA_INVALID:
	case CKR_DATA_LEN_RANGE:
	case CKR_DOMAIN_PARAMS_INVALID:
	case CKR_FUNCTION_FAILED:
	case CKR_GENERAL_ERROR:
	case CKR_TEMPLATE_INCONSISTENT:
		return true;
	default:
		return false;
	}
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;

	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* One C_DeriveKey; on success reads the value into *ret and destroys the object. */
static CK_RV derive_once(mk_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE base,
			 const uint8_t *point, size_t point_len, mk_secret *out)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG value_len = out->len;
	CK_ECDH1_DERIVE_PARAMS params = {
		.kdf = CKD_NULL,
		.ulSharedDataLen = 0,
		.pSharedData = NULL,
		.ulPublicDataLen = point_len,
		.pPublicData = (CK_BYTE *)point,
	};
	CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &params, sizeof(params) };
	/* SoftHSM defaults to non-extractable and cuts from the front if VALUE_LEN is short:
	 * say everything. */
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_VALUE_LEN, &value_len, sizeof(value_len) },
	};
	CK_ATTRIBUTE a_value = { CKA_VALUE, out->data, out->len };
	CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
	CK_RV rv;

	rv = t->f->C_DeriveKey(s, &mech, base, tmpl, ELEMENTSOF(tmpl), &obj);
	if (rv != CKR_OK)
		return rv;
	rv = t->f->C_GetAttributeValue(s, obj, &a_value, 1);
	t->f->C_DestroyObject(s, obj);
	if (rv == CKR_OK && a_value.ulValueLen != out->len)
		rv = CKR_GENERAL_ERROR;
	return rv;
}

int mk_key_derive(mk_key *k, const uint8_t *peer, size_t n, mk_secret **ret)
{
	const mk_curve_info *ci;
	uint8_t wrapped[3 + 133];
	size_t wrapped_len = 0;
	mk_secret *out = NULL;
	mk_token *t;
	bool refind = false;
	CK_RV rv = CKR_OK;
	int r;

	if (!k || !ret || !peer)
		return mk_error(-EINVAL, "missing argument to derive");
	r = key_check_alg(k, false);
	if (r < 0)
		return r;
	ci = mk_curve_get(k->curve);
	r = mk_curve_validate_point(k->curve, peer, n);
	if (r < 0)
		return r;
	t = k->tok;
	if (k->curve != MK_CURVE_X25519) {
		size_t h = n < 128 ? 2 : 3;

		wrapped[0] = 0x04;
		wrapped[1] = n < 128 ? (uint8_t)n : 0x81;
		wrapped[2] = (uint8_t)n;
		memcpy(wrapped + h, peer, n);
		wrapped_len = h + n;
	}
	r = mk_secret_new(ci->dh_len, &out);
	if (r < 0)
		return r;

	for (int attempt = 0; attempt < 2; attempt++) {
		bool wrap = __atomic_load_n(&t->ecdh_wrapped, __ATOMIC_RELAXED) && wrapped_len;
		CK_OBJECT_HANDLE h;
		mk_session s;

		r = mk_token_borrow(t, &s);
		if (r < 0)
			goto fail;
		r = mk_key_handle(k, &s, refind, &h);
		if (r < 0) {
			mk_token_return(t, &s, r == -ENOMEDIUM);
			goto fail;
		}
		rv = derive_once(t, s.h, h, wrap ? wrapped : peer, wrap ? wrapped_len : n, out);
		/* Some tokens want the NIST point as a DER OCTET STRING: try that once, and
		 * remember it for this token. */
		if (!wrap && wrapped_len && rv_point_refused(rv)) {
			rv = derive_once(t, s.h, h, wrapped, wrapped_len, out);
			if (rv == CKR_OK)
				__atomic_store_n(&t->ecdh_wrapped, true, __ATOMIC_RELAXED);
		}
		mk_token_return(t, &s, mk_p11_rv_session_dead(rv));
		if (rv == CKR_OK)
			break;
		refind = rv_retry_handle(rv);
		if (!refind && !rv_retry_session(rv))
			break;
	}
	if (rv != CKR_OK) {
		r = mk_p11_error(rv, t, "derive a shared secret");
		goto fail;
	}
	if (all_zero(out->data, out->len)) {
		r = mk_error(-EINVAL, "the peer's %s public key gives an all-zero shared secret; "
			     "refusing it", ci->name);
		goto fail;
	}
	*ret = out;
	return 0;
fail:
	mk_secret_free(out);
	return r;
}
