/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The policy's rule parser and decision (agent/policy.c) on untrusted configuration text:
 * each line "[policy] key = value" / "key = value" (a [rule] setting) is fed to
 * mk_policy_set / mk_policy_set_rule as the INI loader would, then mk_policy_check, then
 * decisions for a few callers, keys, operations and labels. Every call returns 0 or a
 * negative errno with a message; a decision is 0 or -EACCES; a decision that allows an
 * always-authenticate key names one exact key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ops.h"
#include "agent/policy.h"
#include "common/error.h"
#include "tests/fuzz/fuzz.h"

static void feed_line(mk_policy *p, char *line)
{
	bool policy = false;
	char *eq, *k, *v, *end;
	int r;

	if (!strncmp(line, "[policy]", 8)) {
		policy = true;
		line += 8;
	}
	eq = strchr(line, '=');
	if (!eq)
		return;
	*eq = '\0';
	k = line;
	v = eq + 1;
	while (*k == ' ')
		k++;
	for (end = k + strlen(k); end > k && end[-1] == ' ';)
		*--end = '\0';
	while (*v == ' ')
		v++;
	r = policy ? mk_policy_set(p, k, v) : mk_policy_set_rule(p, k, v);
	FUZZ_ASSERT(r == 0 || (r < 0 && mk_error_text(r)[0]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t id[] = { 0xaa, 0x01 };
	static const unsigned ops[] = { MK_POLICY_SIGN, MK_POLICY_DECRYPT, MK_POLICY_HPKE_OPEN,
					MK_POLICY_GENERATE, MK_POLICY_DELETE };
	static const char *const labels[] = { "LeafNodeTBS", "Welcome", "x", NULL };
	char *text, *save = NULL;
	mk_policy p;
	mk_key_info k = {
		.uri = "pkcs11:token=office;id=%aa%01;object=alice;type=private",
		.token_uri = "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;"
			     "serial=0123456789abcdef;token=office",
		.label = "alice", .id = id, .id_len = sizeof(id), .alg = MK_ALG_ECDSA_P256,
		.private_visible = true, .never_extractable = true, .always_sensitive = true,
	};
	mk_caller c = { .pid = 1 };

	if (size > 16384)
		return 0;
	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	mk_policy_init(&p);
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		feed_line(&p, l);
	(void)mk_policy_check(&p);
	strcpy(c.exe, "/usr/bin/mailbox");
	for (int aa = 0; aa < 2; aa++) {
		k.always_authenticate = aa;
		k.never_extractable = !aa;
		(void)mk_policy_key_reason(&p, &k);
		for (size_t o = 0; o < sizeof(ops) / sizeof(ops[0]); o++)
			for (size_t l = 0; l < sizeof(labels) / sizeof(labels[0]); l++)
				for (int known = 0; known < 2; known++) {
					mk_policy_request q = { &c, ops[o], labels[l],
								known ? &k : NULL,
								k.token_uri };
					mk_policy_decision d;
					int r = mk_policy_decide(&p, &q, &d);

					FUZZ_ASSERT(r == 0 || r == -EACCES);
					FUZZ_ASSERT(!(r == 0 && known && aa &&
						      ops[o] != MK_POLICY_DELETE &&
						      ops[o] != MK_POLICY_GENERATE) ||
						    (d.rule && d.rule->key_exact));
				}
	}
	mk_policy_clear(&p);
	free(text);
	return 0;
}
