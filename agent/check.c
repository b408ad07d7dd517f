/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <p11-kit/uri.h>
#include <stdlib.h>
#include <string.h>

#include "agent/check.h"
#include "common/curve.h"
#include "common/error.h"

int mk_check_array(const mk_config *cfg, const char *what, size_t n)
{
	if (n > cfg->max_array_bytes)
		return mk_error(-EINVAL, "%s is %zu bytes, over the limit of %zu (max-array-bytes)",
				what, n, cfg->max_array_bytes);
	return 0;
}

bool mk_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i];
		size_t len;
		unsigned cp;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

int mk_check_label(const mk_config *cfg, const char *what, const char *label)
{
	size_t n = strlen(label);
	size_t max = MK_MIN(cfg->max_label_bytes, (size_t)255);

	if (n > max)
		return mk_error(-EINVAL, "%s is %zu bytes long; at most %zu are allowed", what, n,
				max);
	if (!mk_utf8_valid(label, n))
		return mk_error(-EINVAL, "%s is not valid UTF-8", what);
	return 0;
}

static void uri_freep(P11KitUri **u)
{
	if (*u)
		p11_kit_uri_free(*u);
}

static int parse_uri(const char *what, const char *uri, P11KitUri **ret)
{
	P11KitUri *u;
	size_t n = strlen(uri);
	int r;

	if (n == 0)
		return mk_error(-EINVAL, "the %s URI is empty; give a pkcs11: URI as listed by "
					 "'mlskey %s'",
				what, strcmp(what, "key") ? "tokens" : "keys");
	if (n > MK_URI_MAX)
		return mk_error(-EINVAL, "the %s URI is %zu bytes long; at most %d are allowed",
				what, n, MK_URI_MAX);
	if (strncmp(uri, "pkcs11:", 7) != 0)
		return mk_error(-EINVAL, "the %s URI must start with \"pkcs11:\" (RFC 7512)", what);
	u = p11_kit_uri_new();
	if (!u)
		return -ENOMEM;
	r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
	if (r != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return mk_error(-EINVAL, "the %s URI is not a valid pkcs11: URI: %s", what,
				p11_kit_uri_message(r));
	}
	*ret = u;
	return 0;
}

static bool has_attr(P11KitUri *u, CK_ATTRIBUTE_TYPE t)
{
	return p11_kit_uri_get_attribute(u, t) != NULL;
}

static int format_token_part(P11KitUri *u, char **ret)
{
	_cleanup_(uri_freep) P11KitUri *t = p11_kit_uri_new();
	char *s = NULL;

	if (!t)
		return -ENOMEM;
	memcpy(p11_kit_uri_get_token_info(t), p11_kit_uri_get_token_info(u),
	       sizeof(CK_TOKEN_INFO));
	if (p11_kit_uri_format(t, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
		return -ENOMEM;
	*ret = s;
	return 0;
}

int mk_check_key_uri(const char *uri, char **ret_token)
{
	_cleanup_(uri_freep) P11KitUri *u = NULL;
	CK_ATTRIBUTE *cls;
	int r;

	r = parse_uri("key", uri, &u);
	if (r < 0)
		return r;
	if (!has_attr(u, CKA_ID) && !has_attr(u, CKA_LABEL))
		return mk_error(-EINVAL, "the key URI names no key (it needs id= or object=)");
	cls = p11_kit_uri_get_attribute(u, CKA_CLASS);
	if (cls && cls->ulValueLen == sizeof(CK_OBJECT_CLASS)) {
		CK_OBJECT_CLASS c;

		memcpy(&c, cls->pValue, sizeof(c));
		if (c != CKO_PRIVATE_KEY && c != CKO_PUBLIC_KEY)
			return mk_error(-EINVAL,
					"the key URI names an object of another type than a key "
					"(use type=private)");
	}
	return ret_token ? format_token_part(u, ret_token) : 0;
}

int mk_check_token_uri(const char *uri, bool allow_empty)
{
	_cleanup_(uri_freep) P11KitUri *u = NULL;
	int r;

	if (!uri[0] && allow_empty)
		return 0;
	r = parse_uri("token", uri, &u);
	if (r < 0)
		return r;
	if (has_attr(u, CKA_ID) || has_attr(u, CKA_LABEL) || has_attr(u, CKA_CLASS))
		return mk_error(-EINVAL, "a token URI was expected, but this one names an object "
					 "(id=, object= or type=)");
	return 0;
}

int mk_check_suite(uint16_t id, const mk_suite **ret)
{
	const mk_suite *s;

	if (id == 4 || id == 6)
		return mk_error(-EOPNOTSUPP,
				"cipher suite %u (X448/Ed448) is not supported by mlskey; use 1, 2, "
				"3, 5 or 7",
				id);
	s = mk_suite_get(id);
	if (!s)
		return mk_error(-EINVAL,
				"cipher suite %u is not an MLS cipher suite mlskey knows; use 1, 2, "
				"3, 5 or 7",
				id);
	*ret = s;
	return 0;
}

int mk_check_hpke_ids(uint16_t kdf, uint16_t aead)
{
	if (kdf < 1 || kdf > 3)
		return mk_error(-EINVAL, "HPKE KDF id %u is unknown; use 1 (HKDF-SHA256), "
					 "2 (HKDF-SHA384) or 3 (HKDF-SHA512)",
				kdf);
	if (aead == 0xffff)
		return mk_error(-EOPNOTSUPP, "HPKE AEAD 0xFFFF (export-only) cannot open a "
					     "ciphertext; use 1, 2 or 3");
	if (aead < 1 || aead > 3)
		return mk_error(-EINVAL, "HPKE AEAD id %u is unknown; use 1 (AES-128-GCM), "
					 "2 (AES-256-GCM) or 3 (ChaCha20Poly1305)",
				aead);
	return 0;
}

int mk_check_algorithm(const char *purpose, const char *algorithm, mk_key_alg *ret)
{
	bool sig;
	mk_key_alg a;

	if (!strcmp(purpose, "signature"))
		sig = true;
	else if (!strcmp(purpose, "hpke"))
		sig = false;
	else
		return mk_error(-EINVAL, "purpose \"%.64s\" is unknown; use \"signature\" or "
					 "\"hpke\"",
				purpose);
	a = mk_key_alg_from_name(algorithm);
	if (a == MK_ALG_NONE)
		return mk_error(-EINVAL,
				"algorithm \"%.64s\" is unknown; use ecdsa-p256, ecdsa-p384, "
				"ecdsa-p521, ed25519 (signature) or dhkem-p256, dhkem-p384, "
				"dhkem-p521, dhkem-x25519 (hpke)",
				algorithm);
	if (mk_key_alg_is_signature(a) != sig)
		return mk_error(-EINVAL, "algorithm %s is not for purpose %s; use %s", algorithm,
				purpose,
				sig ? "ecdsa-p256, ecdsa-p384, ecdsa-p521 or ed25519"
				    : "dhkem-p256, dhkem-p384, dhkem-p521 or dhkem-x25519");
	*ret = a;
	return 0;
}

int mk_check_point(mk_key_alg kem_alg, const uint8_t *p, size_t n)
{
	mk_curve c = mk_key_alg_curve(kem_alg);
	const mk_curve_info *ci = mk_curve_get(c);
	int r;

	if (!ci || mk_key_alg_is_signature(kem_alg))
		return mk_error(-EOPNOTSUPP, "the key is not an HPKE key");
	if (n != ci->pub_len)
		return mk_error(-EINVAL, "the KEM output is %zu bytes; a %s public key is %zu", n,
				ci->name, ci->pub_len);
	r = mk_curve_validate_point(c, p, n);
	if (r < 0)
		return mk_error(-EINVAL, "the KEM output is not a valid %s public key: %s",
				ci->name, mk_error_text(r));
	return 0;
}

size_t mk_key_alg_suites(mk_key_alg a, uint16_t *out, size_t cap)
{
	size_t n = 0;

	if (a == MK_ALG_NONE)
		return 0;
	for (uint16_t id = 1; id < 64 && n < cap; id++) {
		const mk_suite *s = mk_suite_get(id);

		if (s && (s->sig_alg == a || s->kem_alg == a))
			out[n++] = id;
	}
	return n;
}

int mk_uri_token_part(const char *uri, char **ret)
{
	_cleanup_(uri_freep) P11KitUri *u = NULL;
	int r;

	r = parse_uri("token", uri, &u);
	if (r < 0)
		return r;
	return format_token_part(u, ret);
}

int mk_uri_object_label(const char *uri, char **ret)
{
	_cleanup_(uri_freep) P11KitUri *u = NULL;
	CK_ATTRIBUTE *a;
	char *s;
	int r;

	r = parse_uri("key", uri, &u);
	if (r < 0)
		return r;
	a = p11_kit_uri_get_attribute(u, CKA_LABEL);
	s = a ? strndup(a->pValue ? (const char *)a->pValue : "", a->ulValueLen) : strdup("");
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}
