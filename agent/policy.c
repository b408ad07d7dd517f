/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ops.h"
#include "agent/policy.h"
#include "common/error.h"
#include "common/macros.h"

#define MAX_RULES 256
#define MAX_ITEMS 64 /* callers or labels of one rule */

static const char *const sign_labels[] = { "FramedContentTBS", "LeafNodeTBS", "KeyPackageTBS",
					   "GroupInfoTBS" };
static const char *const decrypt_labels[] = { "Welcome", "UpdatePathNode" };

static const struct {
	const char *name;
	unsigned op;
} op_names[] = {
	{ "sign", MK_POLICY_SIGN },         { "decrypt", MK_POLICY_DECRYPT },
	{ "hpke-open", MK_POLICY_HPKE_OPEN }, { "generate", MK_POLICY_GENERATE },
	{ "delete", MK_POLICY_DELETE },     { "keypackage", MK_POLICY_KEYPACKAGE },
	{ "import-certificate", MK_POLICY_CERTIFICATE },
};

void mk_policy_init(mk_policy *p)
{
	*p = (mk_policy){ .default_allow = true, .require_never_extracted = true };
}

static void rule_clear(mk_policy_rule *r)
{
	free(r->name);
	for (size_t i = 0; i < r->n_callers; i++)
		free(r->callers[i].value);
	free(r->callers);
	free(r->key);
	if (r->key_uri)
		p11_kit_uri_free(r->key_uri);
	for (size_t i = 0; i < r->n_labels; i++)
		free(r->labels[i]);
	free(r->labels);
}

void mk_policy_clear(mk_policy *p)
{
	for (size_t i = 0; i < p->n_rules; i++)
		rule_clear(&p->rules[i]);
	free(p->rules);
	mk_policy_init(p);
}

const char *mk_policy_op_name(unsigned op)
{
	for (size_t i = 0; i < ELEMENTSOF(op_names); i++)
		if (op_names[i].op == op)
			return op_names[i].name;
	return "?";
}

static int parse_confirm(const char *key, const char *v, mk_policy_confirm *ret)
{
	if (!strcmp(v, "never"))
		*ret = MK_CONFIRM_NEVER;
	else if (!strcmp(v, "first"))
		*ret = MK_CONFIRM_FIRST;
	else if (!strcmp(v, "always"))
		*ret = MK_CONFIRM_ALWAYS;
	else
		return mk_error(-EINVAL, "%s must be never, first or always, not \"%.100s\"", key,
				v);
	return 0;
}

static int parse_yes_no(const char *key, const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
		*ret = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
		*ret = false;
	else
		return mk_error(-EINVAL, "%s must be yes or no, not \"%.100s\"", key, v);
	return 0;
}

static int parse_action(const char *key, const char *v, bool *ret)
{
	if (!strcmp(v, "allow"))
		*ret = true;
	else if (!strcmp(v, "deny"))
		*ret = false;
	else
		return mk_error(-EINVAL, "%s must be allow or deny, not \"%.100s\"", key, v);
	return 0;
}

int mk_policy_set(mk_policy *p, const char *key, const char *value)
{
	if (!strcmp(key, "default"))
		return parse_action(key, value, &p->default_allow);
	if (!strcmp(key, "confirm"))
		return parse_confirm(key, value, &p->confirm);
	if (!strcmp(key, "require-never-extracted"))
		return parse_yes_no(key, value, &p->require_never_extracted);
	return mk_error(-EINVAL, "unknown setting \"%.64s\" in [policy] (known: default, confirm, "
			"require-never-extracted)", key);
}

/* Calls fn for each blank-separated word of value; stops at the first error. */
static int each_word(const char *value, int (*fn)(mk_policy_rule *r, const char *w),
		     mk_policy_rule *r)
{
	_cleanup_free_ char *copy = strdup(value);
	char *save = NULL;
	int n = 0, q;

	if (!copy)
		return -ENOMEM;
	for (char *w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		if (++n > MAX_ITEMS)
			return mk_error(-E2BIG, "more than %d words in one setting", MAX_ITEMS);
		q = fn(r, w);
		if (q < 0)
			return q;
	}
	if (n == 0)
		return mk_error(-EINVAL, "an empty value");
	return 0;
}

static int add_caller(mk_policy_rule *r, const char *w)
{
	static const struct {
		const char *prefix;
		mk_policy_caller_kind kind;
	} kinds[] = { { "exe:", MK_CALLER_EXE }, { "unit:", MK_CALLER_UNIT },
		      { "app:", MK_CALLER_APP } };
	mk_policy_caller c = { MK_CALLER_ANY, NULL }, *grown;

	if (strcmp(w, "any") != 0) {
		size_t i;

		for (i = 0; i < ELEMENTSOF(kinds); i++)
			if (!strncmp(w, kinds[i].prefix, strlen(kinds[i].prefix)))
				break;
		if (i == ELEMENTSOF(kinds) || !w[strlen(kinds[i].prefix)])
			return mk_error(-EINVAL, "caller \"%.100s\" is not exe:PATH, unit:NAME, "
					"app:ID or any", w);
		c.kind = kinds[i].kind;
		if (c.kind == MK_CALLER_EXE && w[4] != '/')
			return mk_error(-EINVAL, "caller \"%.100s\": exe: needs an absolute path", w);
		c.value = strdup(w + strlen(kinds[i].prefix));
		if (!c.value)
			return -ENOMEM;
	}
	grown = realloc(r->callers, (r->n_callers + 1) * sizeof(*grown));
	if (!grown) {
		free(c.value);
		return -ENOMEM;
	}
	r->callers = grown;
	r->callers[r->n_callers++] = c;
	return 0;
}

static int add_op(mk_policy_rule *r, const char *w)
{
	for (size_t i = 0; i < ELEMENTSOF(op_names); i++)
		if (!strcmp(w, op_names[i].name)) {
			r->ops |= op_names[i].op;
			return 0;
		}
	return mk_error(-EINVAL, "operation \"%.64s\" is unknown (known: sign, decrypt, "
			"hpke-open, generate, delete, keypackage, import-certificate)", w);
}

static int add_label(mk_policy_rule *r, const char *w)
{
	char **grown, *s;

	if (!strcmp(w, "any")) {
		r->labels_any = true;
		return 0;
	}
	if (!strcmp(w, "mls")) {
		r->labels_mls = true;
		return 0;
	}
	s = strdup(w);
	if (!s)
		return -ENOMEM;
	grown = realloc(r->labels, (r->n_labels + 1) * sizeof(*grown));
	if (!grown) {
		free(s);
		return -ENOMEM;
	}
	r->labels = grown;
	r->labels[r->n_labels++] = s;
	return 0;
}

static int set_key(mk_policy_rule *r, const char *value)
{
	P11KitUri *u;
	CK_TOKEN_INFO *t;
	bool token, object;

	if (r->key)
		return mk_error(-EINVAL, "key is given twice");
	if (!strcmp(value, "any"))
		return 0;
	u = p11_kit_uri_new();
	if (!u)
		return -ENOMEM;
	if (strncmp(value, "pkcs11:", 7) != 0 ||
	    p11_kit_uri_parse(value, P11_KIT_URI_FOR_ANY, u) != P11_KIT_URI_OK) {
		p11_kit_uri_free(u);
		return mk_error(-EINVAL, "key must be any or a pkcs11: URI pattern, not \"%.200s\"",
				value);
	}
	r->key = strdup(value);
	if (!r->key) {
		p11_kit_uri_free(u);
		return -ENOMEM;
	}
	r->key_uri = u;
	t = p11_kit_uri_get_token_info(u);
	token = t->label[0] || t->serialNumber[0];
	object = p11_kit_uri_get_attribute(u, CKA_ID) || p11_kit_uri_get_attribute(u, CKA_LABEL);
	r->key_exact = token && object;
	return 0;
}

int mk_policy_set_rule(mk_policy *p, const char *key, const char *value)
{
	mk_policy_rule *r, *grown;

	if (!strcmp(key, "name")) {
		if (p->n_rules >= MAX_RULES)
			return mk_error(-E2BIG, "more than %d [rule] entries", MAX_RULES);
		if (!value[0])
			return mk_error(-EINVAL, "a rule needs a name");
		grown = realloc(p->rules, (p->n_rules + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		p->rules = grown;
		r = &p->rules[p->n_rules];
		*r = (mk_policy_rule){ .ops = MK_POLICY_SIGN | MK_POLICY_DECRYPT,
				       .labels_mls = true, .allow = true };
		r->name = strdup(value);
		if (!r->name)
			return -ENOMEM;
		p->n_rules++;
		return 0;
	}
	if (!p->n_rules)
		return mk_error(-EINVAL, "%.64s before name: each entry of a [rule] section starts "
				"with name = ...", key);
	r = &p->rules[p->n_rules - 1];
	if (!strcmp(key, "caller"))
		return each_word(value, add_caller, r);
	if (!strcmp(key, "key"))
		return set_key(r, value);
	if (!strcmp(key, "operations")) {
		r->ops = 0;
		return each_word(value, add_op, r);
	}
	if (!strcmp(key, "labels")) {
		r->labels_mls = false;
		return each_word(value, add_label, r);
	}
	if (!strcmp(key, "confirm"))
		return parse_confirm(key, value, &r->confirm);
	if (!strcmp(key, "allow-extracted"))
		return parse_yes_no(key, value, &r->allow_extracted);
	if (!strcmp(key, "action"))
		return parse_action(key, value, &r->allow);
	return mk_error(-EINVAL, "unknown setting \"%.64s\" in a [rule] section (known: name, "
			"caller, key, operations, labels, confirm, allow-extracted, action)", key);
}

int mk_policy_check(const mk_policy *p)
{
	for (size_t i = 0; i < p->n_rules; i++) {
		const mk_policy_rule *r = &p->rules[i];

		if (!r->n_callers)
			return mk_error(-EINVAL, "rule \"%s\" has no caller = ...; name exe:PATH, "
					"unit:NAME, app:ID or any", r->name);
		if (r->allow_extracted && !r->key_exact)
			return mk_error(-EINVAL, "rule \"%s\" says allow-extracted = yes "
					"but its key does not name one key; give key = "
					"pkcs11:token=...;object=... (or id=...)", r->name);
	}
	return 0;
}

/* --- deciding ---------------------------------------------------------------------------- */

static bool in_list(const char *const *l, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i], s))
			return true;
	return false;
}

/* Is label one RFC 9420 defines for op? (Operations without labels: yes.) */
static bool mls_label(unsigned op, const char *label)
{
	if (!label)
		return true;
	if (op == MK_POLICY_SIGN)
		return in_list(sign_labels, ELEMENTSOF(sign_labels), label);
	if (op == MK_POLICY_DECRYPT)
		return in_list(decrypt_labels, ELEMENTSOF(decrypt_labels), label);
	return false;
}

static bool caller_matches(const mk_policy_rule *r, const mk_caller *c)
{
	for (size_t i = 0; i < r->n_callers; i++) {
		const mk_policy_caller *x = &r->callers[i];

		switch (x->kind) {
		case MK_CALLER_ANY:
			return true;
		case MK_CALLER_EXE:
			if (c->exe[0] && !strcmp(c->exe, x->value))
				return true;
			break;
		case MK_CALLER_UNIT:
			if (c->unit[0] && !strcmp(c->unit, x->value))
				return true;
			break;
		case MK_CALLER_APP:
			if (c->app_id[0] && !strcmp(c->app_id, x->value))
				return true;
			break;
		}
	}
	return false;
}

static bool label_matches(const mk_policy_rule *r, unsigned op, const char *label)
{
	if (!label || r->labels_any)
		return true;
	if (r->labels_mls && mls_label(op, label))
		return true;
	return in_list((const char *const *)r->labels, r->n_labels, label);
}

/*
 * The token info of a token URI, parsed once per thread for the last URI seen (calls come
 * in runs on one token's workers): a key pattern costs a string compare per call, not a
 * parse. NULL when the URI does not parse or there is no memory.
 */
static const CK_TOKEN_INFO *token_info_of(const char *token_uri)
{
	static __thread char last[1024];
	static __thread CK_TOKEN_INFO info;
	static __thread bool valid;
	P11KitUri *t;
	bool ok;

	if (valid && !strcmp(last, token_uri))
		return &info;
	if (strlen(token_uri) >= sizeof(last))
		return NULL; /* no token URI mlskey makes is that long */
	t = p11_kit_uri_new();
	if (!t)
		return NULL;
	ok = p11_kit_uri_parse(token_uri, P11_KIT_URI_FOR_TOKEN, t) == P11_KIT_URI_OK;
	if (ok) {
		info = *p11_kit_uri_get_token_info(t);
		snprintf(last, sizeof(last), "%s", token_uri);
	}
	valid = ok;
	p11_kit_uri_free(t);
	return ok ? &info : NULL;
}

/* Does the token part of the pattern u match the token that token_uri names? */
static bool token_matches(P11KitUri *u, const char *token_uri)
{
	const CK_TOKEN_INFO *info;

	const CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);

	/* p11-kit leaves the fields a URI does not name zero */
	if (!ti->label[0] && !ti->serialNumber[0] && !ti->manufacturerID[0] && !ti->model[0])
		return true;
	if (!token_uri)
		return false;
	info = token_info_of(token_uri);
	return info && p11_kit_uri_match_token_info(u, info);
}

static bool attr_is(P11KitUri *u, CK_ATTRIBUTE_TYPE type, const void *v, size_t n)
{
	CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(u, type);

	return !a || (a->ulValueLen == n && (n == 0 || memcmp(a->pValue, v, n) == 0));
}

/* 1 match, 0 no match, -1 unknown (no key yet). */
static int key_matches(const mk_policy_rule *r, const mk_policy_request *q)
{
	const mk_key_info *k = q->key;
	P11KitUri *u = r->key_uri;

	if (!u)
		return 1;
	if (q->op == MK_POLICY_GENERATE)
		return !p11_kit_uri_get_attribute(u, CKA_ID) &&
		       !p11_kit_uri_get_attribute(u, CKA_LABEL) && token_matches(u, q->token_uri);
	if (!k)
		return -1;
	if (!attr_is(u, CKA_ID, k->id, k->id ? k->id_len : 0) ||
	    !attr_is(u, CKA_LABEL, k->label ? k->label : "", k->label ? strlen(k->label) : 0))
		return 0;
	return token_matches(u, k->token_uri);
}

static const char *key_name(const mk_key_info *k)
{
	return k && k->label && k->label[0] ? k->label : "(no label)";
}

/* The gates that only a rule naming the key lifts. */
static int gates(const mk_policy *p, const mk_policy_request *q, const mk_policy_rule *r)
{
	const mk_key_info *k = q->key;
	const char *who = r ? r->name : NULL;

	/* storing a certificate for a key is no use of the key */
	if (!k || q->op == MK_POLICY_GENERATE || q->op == MK_POLICY_DELETE ||
	    q->op == MK_POLICY_CERTIFICATE)
		return 0;
	if (k->always_authenticate && !(r && r->key_exact))
		return mk_error(-EACCES, "key \"%s\" wants its PIN for every use (a "
				"qualified-signature key); %s%s%s does not name this one key: "
				"add a [rule] with key = pkcs11:token=...;object=%s for the "
				"programs that may use it", key_name(k),
				who ? "rule \"" : "the default policy", who ? who : "",
				who ? "\"" : "", key_name(k));
	if (p->require_never_extracted && !(k->never_extractable && k->always_sensitive) &&
	    !(r && r->allow_extracted))
		return mk_error(-EACCES, "key \"%s\" may have left its token (the token does not "
				"say it was never extractable and always sensitive); mlskey uses "
				"it only with require-never-extracted = no in [policy], or a [rule] "
				"naming this one key with allow-extracted = yes", key_name(k));
	return 0;
}

static int refuse(const mk_policy_rule *r, const mk_policy_request *q)
{
	const mk_caller *c = q->caller;
	const char *exe = c && c->exe[0] ? c->exe : "an unknown program";

	if (r)
		return mk_error(-EACCES, "rule \"%s\" of the configuration does not allow %s to "
				"%s%s%s%s; change that rule or add an allow rule before it",
				r->name, exe, mk_policy_op_name(q->op),
				q->label ? " with label \"" : "", q->label ? q->label : "",
				q->label ? "\"" : "");
	if (q->op == MK_POLICY_HPKE_OPEN)
		return mk_error(-EACCES, "the default policy refuses HpkeOpen (it bypasses the MLS "
				"labels); add a [rule] with operations = hpke-open for %s", exe);
	if (!mls_label(q->op, q->label))
		return mk_error(-EACCES, "the default policy refuses label \"%s\" for %s (not a "
				"label RFC 9420 defines for it); add a [rule] with labels = %s "
				"for %s", q->label, mk_policy_op_name(q->op), q->label, exe);
	return mk_error(-EACCES, "the default policy does not allow %s to %s with this key; add "
			"a [rule] with caller = exe:%s (or set default = allow in [policy])", exe,
			mk_policy_op_name(q->op), c && c->exe[0] ? c->exe : "PATH");
}

int mk_policy_decide(const mk_policy *p, const mk_policy_request *q, mk_policy_decision *ret)
{
	bool tentative = false;
	int r;

	for (size_t i = 0; i < p->n_rules; i++) {
		const mk_policy_rule *rule = &p->rules[i];
		int km;

		if (!(rule->ops & q->op) || !caller_matches(rule, q->caller) ||
		    !label_matches(rule, q->op, q->label))
			continue;
		km = key_matches(rule, q);
		if (km == 0)
			continue;
		if (km < 0) {
			/* it may or may not be the key's rule: decide again once the key is known */
			tentative = true;
			if (!rule->allow)
				continue;
		} else if (!rule->allow) {
			return refuse(rule, q);
		}
		r = gates(p, q, rule);
		if (r < 0)
			return r;
		*ret = (mk_policy_decision){ .rule = rule, .confirm = rule->confirm,
					     .tentative = tentative };
		return 0;
	}
	if (!p->default_allow || q->op == MK_POLICY_HPKE_OPEN || !mls_label(q->op, q->label))
		return refuse(NULL, q);
	r = gates(p, q, NULL);
	if (r < 0)
		return r;
	*ret = (mk_policy_decision){ .confirm = p->confirm, .tentative = tentative };
	return 0;
}

/* Does an allow rule name exactly this key (and lift the provenance gate, when asked)? */
static bool named_by_rule(const mk_policy *p, const mk_key_info *k, bool extracted)
{
	mk_policy_request q = { .op = MK_POLICY_SIGN, .key = k };

	for (size_t i = 0; i < p->n_rules; i++) {
		const mk_policy_rule *r = &p->rules[i];

		if (r->allow && r->key_exact && (!extracted || r->allow_extracted) &&
		    key_matches(r, &q) == 1)
			return true;
	}
	return false;
}

const char *mk_policy_key_reason(const mk_policy *p, const mk_key_info *k)
{
	if (k->alg == MK_ALG_NONE || k->reason)
		return k->reason;
	if (!k->private_visible)
		return NULL; /* its flags are only known after login */
	if (k->always_authenticate && !named_by_rule(p, k, false))
		return "it wants its PIN for every use (a qualified-signature key): mlskey uses it "
		       "only for the programs of a [rule] that names this one key";
	if (p->require_never_extracted && !(k->never_extractable && k->always_sensitive) &&
	    !named_by_rule(p, k, true))
		return "the token does not say it never left the token (CKA_NEVER_EXTRACTABLE and "
		       "CKA_ALWAYS_SENSITIVE): mlskey refuses it unless a [rule] names this one "
		       "key with allow-extracted = yes";
	return NULL;
}

const char *mk_policy_label_words(unsigned op, const char *label)
{
	static const struct {
		const char *label, *words;
	} words[] = {
		{ "KeyPackageTBS", "sign an MLS KeyPackage" },
		{ "LeafNodeTBS", "sign an MLS leaf node" },
		{ "FramedContentTBS", "sign an MLS message" },
		{ "GroupInfoTBS", "sign an MLS GroupInfo" },
		{ "Welcome", "decrypt an MLS Welcome" },
		{ "UpdatePathNode", "decrypt an MLS path secret" },
	};

	if (!label || !mls_label(op, label))
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(words); i++)
		if (!strcmp(words[i].label, label))
			return words[i].words;
	return NULL;
}
