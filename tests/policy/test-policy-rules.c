/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The policy's rules (issue 7) without a token or a bus: [policy] and [rule] read from real
 * INI files by mk_config_load, then mk_policy_decide() with callers and key infos as the
 * agent would pass them: file order, callers by executable, key patterns, operations, MLS
 * labels by default, HpkeOpen refused by default, the provenance and always-authenticate
 * gates, confirm modes, and the errors of a bad file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-config.h"
#include "agent/ops.h"
#include "agent/policy.h"
#include "common/error.h"
#include "tests/tap.h"

static char dir[] = "/tmp/mkt-policy-XXXXXX";

static int load(mk_config *c, const char *text)
{
	char path[256];
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/mlskeyd.conf", dir);
	f = fopen(path, "we");
	if (!f)
		mkt_bail("cannot write %s", path);
	fputs(text, f);
	fclose(f);
	mk_config_clear(c);
	if (mk_config_init(c) < 0)
		mkt_bail("out of memory");
	r = mk_config_load(c, path);
	unlink(path);
	return r;
}

static uint8_t id_a[] = { 0xaa, 0x01 }, id_b[] = { 0xbb, 0x02 };

/* A key as the token layer describes it (generated on the token unless told otherwise). */
static mk_key_info key(const char *token, const char *label, uint8_t *id, size_t id_len)
{
	static char turis[4][128];
	static int n;
	char *turi = turis[n++ % 4];

	snprintf(turi, 128, "pkcs11:model=SoftHSM%%20v2;manufacturer=SoftHSM%%20project;"
		 "serial=0123456789abcdef;token=%s", token);
	return (mk_key_info){ .uri = "pkcs11:token=x;object=y;type=private", .token_uri = turi,
			      .label = (char *)label, .id = id, .id_len = id_len,
			      .alg = MK_ALG_ECDSA_P256, .private_visible = true, .can_sign = true,
			      .local = true, .never_extractable = true, .always_sensitive = true };
}

static mk_caller caller(const char *exe)
{
	mk_caller c = { .uid = 1000, .pid = 4242 };

	snprintf(c.exe, sizeof(c.exe), "%s", exe);
	return c;
}

static mk_policy_decision d;

static int decide(const mk_config *cfg, const char *exe, unsigned op, const char *label,
		  const mk_key_info *k)
{
	mk_caller c = caller(exe);
	mk_policy_request q = { &c, op, label, k, NULL };

	memset(&d, 0, sizeof(d));
	mk_error_clear();
	return mk_policy_decide(&cfg->policy, &q, &d);
}

static bool says(const char *s)
{
	return strstr(mk_error_text(-EACCES), s) != NULL;
}

static void test_defaults(mk_config *c)
{
	mk_key_info k = key("alice", "alice", id_a, sizeof(id_a));

	mkt_ok(load(c, "") == 0 && c->policy.default_allow && c->policy.confirm == MK_CONFIRM_NEVER
	       && c->policy.require_never_extracted && c->policy.n_rules == 0,
	       "defaults: default allow, confirm never, require-never-extracted yes, no rules");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &k) == 0 && !d.rule &&
	       d.confirm == MK_CONFIRM_NEVER, "the default allows signing a LeafNodeTBS");
	const char *const sl[] = { "FramedContentTBS", "KeyPackageTBS", "GroupInfoTBS" };
	bool all = true;

	for (size_t i = 0; i < 3; i++)
		all &= decide(c, "/usr/bin/app", MK_POLICY_SIGN, sl[i], &k) == 0;
	mkt_ok(all, "  and the other sign labels RFC 9420 defines");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_DECRYPT, "Welcome", &k) == 0 &&
	       decide(c, "/usr/bin/app", MK_POLICY_DECRYPT, "UpdatePathNode", &k) == 0,
	       "  and decrypting a Welcome and an UpdatePathNode");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "Welcome", &k) == -EACCES &&
	       says("the default policy") && says("labels = Welcome"),
	       "a decrypt label to sign is refused by the default, saying what to add: %s",
	       mk_error_text(-EACCES));
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "x", &k) == -EACCES,
	       "  so is an arbitrary label (\"x\")");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_DECRYPT, "LeafNodeTBS", &k) == -EACCES,
	       "  and a sign label to decrypt");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_HPKE_OPEN, NULL, &k) == -EACCES &&
	       says("hpke-open"), "HpkeOpen is refused by the default: %s", mk_error_text(-EACCES));
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_GENERATE, NULL, NULL) == 0 &&
	       decide(c, "/usr/bin/app", MK_POLICY_DELETE, NULL, &k) == 0,
	       "generate and delete are allowed by the default");
}

static void test_gates(mk_config *c)
{
	mk_key_info k = key("alice", "alice", id_a, sizeof(id_a));
	mk_key_info q = key("card", "Dienstausweis Signatur", id_b, sizeof(id_b));

	load(c, "");
	k.never_extractable = false;
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &k) == -EACCES &&
	       says("may have left its token"),
	       "a key that was once extractable is refused: %s", mk_error_text(-EACCES));
	mkt_ok(mk_policy_key_reason(&c->policy, &k) != NULL,
	       "  ListKeys' reason: %s", mk_policy_key_reason(&c->policy, &k));
	k.never_extractable = true;
	k.always_sensitive = false;
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &k) == -EACCES,
	       "  so is one that was not always sensitive");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_DELETE, NULL, &k) == 0,
	       "  but it may be deleted");
	load(c, "[policy]\nrequire-never-extracted = no\n");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &k) == 0 &&
	       !mk_policy_key_reason(&c->policy, &k),
	       "require-never-extracted = no lets it be used");
	load(c, "[rule]\nname = old\ncaller = any\nkey = pkcs11:token=alice;object=alice\n"
		"allow-extracted = yes\n");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &k) == 0 &&
	       d.rule && !strcmp(d.rule->name, "old") && !mk_policy_key_reason(&c->policy, &k),
	       "a rule naming the key with allow-extracted = yes lets it be used");
	mkt_ok(load(c, "[rule]\nname = loose\ncaller = any\nkey = any\nallow-extracted = yes\n")
	       == -EINVAL && strstr(mk_error_text(-EINVAL), "loose"),
	       "allow-extracted for key = any is refused at load: %s", mk_error_text(-EINVAL));
	mkt_ok(load(c, "[rule]\nname = loose\ncaller = any\nkey = pkcs11:object=alice\n"
		    "allow-extracted = yes\n") == -EINVAL,
	       "  and for a pattern without the token");

	q.always_authenticate = true;
	load(c, "[rule]\nname = everyone\ncaller = any\n");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &q) == -EACCES &&
	       says("qualified-signature") && says("everyone"),
	       "an always-authenticate key is refused under a rule with key = any: %s",
	       mk_error_text(-EACCES));
	mkt_ok(mk_policy_key_reason(&c->policy, &q) &&
	       strstr(mk_policy_key_reason(&c->policy, &q), "every use"),
	       "  ListKeys' reason: %s", mk_policy_key_reason(&c->policy, &q));
	load(c, "");
	mkt_ok(decide(c, "/usr/bin/app", MK_POLICY_SIGN, "LeafNodeTBS", &q) == -EACCES &&
	       says("the default policy"), "  and by the default policy");
	load(c, "[rule]\nname = qes\ncaller = exe:/usr/bin/signer\n"
		"key = pkcs11:token=card;object=Dienstausweis%20Signatur\nconfirm = always\n");
	mkt_ok(decide(c, "/usr/bin/signer", MK_POLICY_SIGN, "LeafNodeTBS", &q) == 0 &&
	       d.confirm == MK_CONFIRM_ALWAYS, "a rule naming that one key allows it (confirm always)");
	mkt_ok(!mk_policy_key_reason(&c->policy, &q), "  and ListKeys calls it usable");
	mkt_ok(decide(c, "/usr/bin/other", MK_POLICY_SIGN, "LeafNodeTBS", &q) == -EACCES,
	       "  for that program only");
	load(c, "[rule]\nname = qes\ncaller = exe:/usr/bin/signer\nkey = pkcs11:token=card\n");
	mkt_ok(decide(c, "/usr/bin/signer", MK_POLICY_SIGN, "LeafNodeTBS", &q) == -EACCES,
	       "a rule naming the token only does not allow it");
}

static void test_rules(mk_config *c)
{
	mk_key_info a = key("alice", "alice", id_a, sizeof(id_a));
	mk_key_info b = key("bob", "bob", id_b, sizeof(id_b));

	mkt_ok(load(c, "[policy]\ndefault = deny\nconfirm = first\n"
		       "[rule]\nname = no-gdbus\ncaller = exe:/usr/bin/gdbus\naction = deny\n"
		       "[rule]\nname = mailbox\ncaller = exe:/usr/bin/mailbox unit:mailbox.service\n"
		       "key = pkcs11:token=alice\noperations = sign decrypt hpke-open\n"
		       "labels = mls custom-label\nconfirm = first\n"
		       "[rule]\nname = busctl\ncaller = exe:/usr/bin/busctl\nkey = any\n"
		       "labels = any\n") == 0 && c->policy.n_rules == 3,
	       "three rules load (%s)", mk_error_text(-EINVAL));
	mkt_ok(!c->policy.default_allow && c->policy.confirm == MK_CONFIRM_FIRST,
	       "  [policy] default = deny, confirm = first");
	mkt_ok(decide(c, "/usr/bin/gdbus", MK_POLICY_SIGN, "LeafNodeTBS", &a) == -EACCES &&
	       says("no-gdbus"), "a deny rule refuses, naming itself: %s", mk_error_text(-EACCES));
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_SIGN, "KeyPackageTBS", &a) == 0 && d.rule &&
	       !strcmp(d.rule->name, "mailbox") && d.confirm == MK_CONFIRM_FIRST,
	       "an allow rule by executable and token decides, with its confirm");
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_SIGN, "custom-label", &a) == 0,
	       "  a label it lists is allowed");
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_SIGN, "other", &a) == -EACCES &&
	       says("the default policy"), "  one it does not list falls to the default");
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_HPKE_OPEN, NULL, &a) == 0,
	       "  HpkeOpen is allowed where the rule lists hpke-open");
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_SIGN, "LeafNodeTBS", &b) == -EACCES,
	       "  a key on another token does not match: default deny");
	mkt_ok(decide(c, "/usr/bin/mailbox", MK_POLICY_DELETE, NULL, &a) == -EACCES,
	       "  nor an operation it does not list");
	mkt_ok(decide(c, "/usr/bin/mailbox-evil", MK_POLICY_SIGN, "LeafNodeTBS", &a) == -EACCES,
	       "an executable is matched exactly, not as a prefix");
	mkt_ok(decide(c, "/usr/bin/busctl", MK_POLICY_SIGN, "anything", &b) == 0,
	       "labels = any allows every label");
	mkt_ok(decide(c, "/usr/bin/busctl", MK_POLICY_HPKE_OPEN, NULL, &b) == -EACCES,
	       "  but not HpkeOpen, which it does not list");
	{
		mk_caller u = caller("/usr/libexec/mb");
		mk_policy_request q = { &u, MK_POLICY_SIGN, "LeafNodeTBS", &a, NULL };

		snprintf(u.unit, sizeof(u.unit), "mailbox.service");
		mkt_ok(mk_policy_decide(&c->policy, &q, &d) == 0 && d.rule &&
		       !strcmp(d.rule->name, "mailbox"), "a caller matched by its systemd unit");
	}

	/* file order: the first matching rule decides */
	load(c, "[rule]\nname = first\ncaller = any\nkey = pkcs11:token=alice;id=%aa%01\n"
		"action = deny\n[rule]\nname = second\ncaller = any\n");
	mkt_ok(decide(c, "/usr/bin/x", MK_POLICY_SIGN, "LeafNodeTBS", &a) == -EACCES &&
	       says("\"first\""), "the first matching rule decides (deny by id)");
	mkt_ok(decide(c, "/usr/bin/x", MK_POLICY_SIGN, "LeafNodeTBS", &b) == 0 && d.rule &&
	       !strcmp(d.rule->name, "second"), "  another key falls through to the next rule");
	mkt_ok(decide(c, "/usr/bin/x", MK_POLICY_SIGN, "LeafNodeTBS", NULL) == 0 && d.tentative,
	       "  before the key is known, a deny rule with a key pattern leaves it tentative");
	load(c, "[policy]\ndefault = deny\n[rule]\nname = only-a\ncaller = any\n"
		"key = pkcs11:token=alice\n");
	mkt_ok(decide(c, "/usr/bin/x", MK_POLICY_SIGN, "LeafNodeTBS", NULL) == 0 && d.tentative,
	       "  an allow rule with a key pattern is a tentative allow");
	load(c, "[policy]\ndefault = deny\n[rule]\nname = only-sign\ncaller = any\n"
		"operations = sign\n");
	mkt_ok(decide(c, "/usr/bin/x", MK_POLICY_DECRYPT, "Welcome", NULL) == -EACCES,
	       "  and a certain refusal is one before the key is known (no PIN asked)");
}

static void test_bad_files(mk_config *c)
{
	static const struct {
		const char *text, *says;
	} bad[] = {
		{ "[policy]\ndefault = maybe\n", "allow or deny" },
		{ "[policy]\nconfirm = sometimes\n", "never, first or always" },
		{ "[policy]\nfoo = 1\n", "unknown setting" },
		{ "[rule]\ncaller = any\n", "starts with name" },
		{ "[rule]\nname = r\n", "no caller" },
		{ "[rule]\nname = r\ncaller = someone\n", "exe:PATH" },
		{ "[rule]\nname = r\ncaller = exe:relative\n", "absolute" },
		{ "[rule]\nname = r\ncaller = any\noperations = sing\n", "unknown" },
		{ "[rule]\nname = r\ncaller = any\nkey = token=x\n", "pkcs11:" },
		{ "[rule]\nname = r\ncaller = any\naction = perhaps\n", "allow or deny" },
		{ "[rule]\nname = r\ncaller = any\ncolour = red\n", "unknown setting" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = load(c, bad[i].text);

		mkt_ok(r == -EINVAL && strstr(mk_error_text(r), bad[i].says) &&
		       strstr(mk_error_text(r), "mlskeyd.conf"),
		       "a bad file is refused with file and reason: %s", mk_error_text(r));
	}
}

int main(void)
{
	mk_config c;

	if (!mkdtemp(dir))
		mkt_bail("mkdtemp");
	if (mk_config_init(&c) < 0)
		mkt_bail("out of memory");
	test_defaults(&c);
	test_gates(&c);
	test_rules(&c);
	test_bad_files(&c);
	mk_config_clear(&c);
	rmdir(dir);
	return mkt_done();
}
