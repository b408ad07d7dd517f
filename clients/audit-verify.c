/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskey audit verify FILE: checks the hash chain of an audit file (docs/AUDIT.md) without
 * the agent: every line a JSON object with the expected members, seq up by one, prev the
 * SHA-256 of the line before, hash the SHA-256 of the line's own bytes before ,"hash". It
 * names the first record that breaks the chain. Written from the document, with json-c and
 * OpenSSL; it shares only the format's constants (agent/audit-format.h) with the writer.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/audit-format.h"
#include "clients/cli.h"

/* Exit codes of `mlskey audit verify` (its own: an audit tool's, not the agent's). */
enum { AUDIT_INTACT = 0, AUDIT_BROKEN = 1, AUDIT_USAGE = 2 };

const char cli_audit_help[] =
	"NAME\n"
	"    mlskey audit - check the agent's audit file\n"
	"\n"
	"SYNOPSIS\n"
	"    mlskey audit verify FILE\n"
	"\n"
	"DESCRIPTION\n"
	"    mlskeyd writes one JSON line per operation to the file of its audit-file= setting,\n"
	"    each chained to the line before by SHA-256 (docs/AUDIT.md). 'verify' checks that\n"
	"    every line is a record with the expected members, that seq goes up by one, that\n"
	"    each record's prev is the SHA-256 of the line before it, and that each record's\n"
	"    hash is the SHA-256 of its own line up to ,\"hash\". It needs no agent and no bus.\n"
	"    An intact file prints\n"
	"        FILE: N records, chain intact (seq A..B)\n"
	"    A broken one names the first record that does not fit, e.g.\n"
	"        record 7 (line 7): prev does not match the hash of line 6 - a line was\n"
	"        edited, removed or reordered\n"
	"    The chain shows edits, removals and reorderings inside the file; removing whole\n"
	"    records at its end is seen only against a copy or the syslog lines of the same\n"
	"    records (each agent start writes a \"start\" record, each clean stop a \"stop\").\n"
	"\n"
	"OPTIONS\n"
	"    -h, --help       this help\n"
	"\n"
	"EXIT STATUS\n"
	"    0  the chain is intact\n"
	"    1  a record is broken (the message names the first)\n"
	"    2  bad usage, or the file cannot be read\n"
	"\n"
	"EXAMPLES\n"
	"    mlskey audit verify /var/log/mlskey/audit.jsonl\n";

static bool is_hex64(const char *s)
{
	if (strlen(s) != MK_AUDIT_HEX_LEN)
		return false;
	for (size_t i = 0; i < MK_AUDIT_HEX_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void sha256_hex(const char *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	if (!EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) || len != 32) {
		hex[0] = '\0';
		return;
	}
	for (size_t i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* The state carried from one line to the next. */
typedef struct chain {
	unsigned long long line;  /* of the current line, from 1 */
	unsigned long long records;
	long long first_seq, last_seq;
	char prev_hash[65];       /* SHA-256 of the previous line's bytes */
	char where[64];           /* "record 7 (line 7)" or "line 7" */
} chain;

/*
 * Checks one line (n bytes, without its "\n"). Returns NULL when it fits the chain, else
 * why not (static or in buf).
 */
static const char *check_line(chain *c, const char *line, size_t n, char *buf, size_t cap)
{
	struct json_tokener *tok;
	json_object *o, *v;
	const char *sep, *s, *prev, *hash, *event, *why = NULL;
	char own[65];
	long long seq;

	snprintf(c->where, sizeof(c->where), "line %llu", c->line);
	if (n == 0)
		return "an empty line";
	if (memchr(line, '\0', n))
		return "a NUL byte in the line";
	tok = json_tokener_new();
	if (!tok)
		return "out of memory";
	o = json_tokener_parse_ex(tok, line, (int)n);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != n) {
		json_tokener_free(tok);
		json_object_put(o);
		return "not a JSON object (a torn or edited line)";
	}
	json_tokener_free(tok);
	if (!json_object_is_type(o, json_type_object)) {
		why = "not a JSON object";
		goto out;
	}
	if (!json_object_object_get_ex(o, "seq", &v) || !json_object_is_type(v, json_type_int) ||
	    (seq = json_object_get_int64(v)) <= 0) {
		why = "no seq (a positive integer)";
		goto out;
	}
	snprintf(c->where, sizeof(c->where), "record %lld (line %llu)", seq, c->line);
	prev = get_str(o, "prev");
	hash = get_str(o, "hash");
	event = get_str(o, "event");
	if (!get_str(o, "time") || !event) {
		why = "time or event is missing";
		goto out;
	}
	if (!prev || !is_hex64(prev) || !hash || !is_hex64(hash)) {
		why = "prev or hash is missing or not 64 hex digits";
		goto out;
	}
	if (strcmp(event, MK_AUDIT_EVENT_CALL) == 0 &&
	    (!get_str(o, "method") || !get_str(o, "result") ||
	     !json_object_object_get_ex(o, "uid", &v))) {
		why = "a call record without method, uid or result";
		goto out;
	}
	/* hash is the last member: the line ends in ,"hash":"<64 hex>"} */
	for (sep = NULL, s = line; (s = memmem(s, n - (size_t)(s - line), MK_AUDIT_HASH_SEP,
					       sizeof(MK_AUDIT_HASH_SEP) - 1));
	     s++)
		sep = s;
	if (!sep || (size_t)(line + n - sep) != sizeof(MK_AUDIT_HASH_SEP) - 1 + MK_AUDIT_HEX_LEN + 2 ||
	    memcmp(line + n - 2, "\"}", 2) != 0) {
		why = "hash is not the record's last member";
		goto out;
	}
	sha256_hex(line, (size_t)(sep - line), own);
	if (strcmp(own, hash) != 0) {
		why = "its hash does not match its content - the line was edited";
		goto out;
	}
	if (c->records == 0) {
		if (seq != 1 || strcmp(prev, MK_AUDIT_ZERO_HASH) != 0) {
			snprintf(buf, cap, "the file does not start its chain (seq %lld, prev not "
				 "zero) - records were removed at its top", seq);
			why = buf;
			goto out;
		}
	} else {
		if (strcmp(prev, c->prev_hash) != 0) {
			snprintf(buf, cap, "prev does not match the hash of line %llu - a line was "
				 "edited, removed or reordered", c->line - 1);
			why = buf;
			goto out;
		}
		if (seq != c->last_seq + 1) {
			snprintf(buf, cap, "seq %lld follows seq %lld", seq, c->last_seq);
			why = buf;
			goto out;
		}
	}
	if (c->records == 0)
		c->first_seq = seq;
	c->last_seq = seq;
	c->records++;
out:
	json_object_put(o);
	return why;
}

/*
 * The next line of f into buf (capacity cap) without its "\n": its length, or -1 at the end
 * of the file. *ret_torn: it ended without "\n"; *ret_long: it goes on past cap (the rest
 * is not read: the file is broken there anyway). A line is never read past cap, so a file
 * of garbage cannot make the verifier take all memory.
 */
static ssize_t read_line(FILE *f, char *buf, size_t cap, bool *ret_torn, bool *ret_long)
{
	size_t n = 0;
	int ch;

	*ret_torn = *ret_long = false;
	while ((ch = getc_unlocked(f)) != EOF && ch != '\n') {
		if (n == cap) {
			*ret_long = true;
			return (ssize_t)n;
		}
		buf[n++] = (char)ch;
	}
	if (ch == EOF && n == 0)
		return -1;
	*ret_torn = ch == EOF;
	return (ssize_t)n;
}

static int verify(const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
	_cleanup_free_ char *line = malloc(MK_AUDIT_MAX_LINE);
	ssize_t n;
	chain c = { 0 };
	char buf[256];
	bool torn, too_long;

	if (!f) {
		fprintf(stderr, "mlskey audit verify: cannot read %s: %s\n", path, strerror(errno));
		return AUDIT_USAGE;
	}
	if (!line) {
		fprintf(stderr, "mlskey audit verify: out of memory\n");
		if (f != stdin)
			fclose(f);
		return AUDIT_USAGE;
	}
	while ((n = read_line(f, line, MK_AUDIT_MAX_LINE, &torn, &too_long)) >= 0) {
		const char *why;

		c.line++;
		if (too_long) {
			snprintf(c.where, sizeof(c.where), "line %llu", c.line);
			snprintf(buf, sizeof(buf), "longer than a record can be (over %d bytes)",
				 MK_AUDIT_MAX_LINE);
			why = buf;
		} else {
			why = check_line(&c, line, (size_t)n, buf, sizeof(buf));
		}
		if (!why && torn)
			why = "the last line does not end in a newline (a torn write)";
		if (why) {
			printf("%s: %s: %s\n", path, c.where, why);
			if (f != stdin)
				fclose(f);
			return AUDIT_BROKEN;
		}
		sha256_hex(line, (size_t)n, c.prev_hash);
	}
	if (ferror(f)) {
		fprintf(stderr, "mlskey audit verify: cannot read %s: %s\n", path, strerror(errno));
		if (f != stdin)
			fclose(f);
		return AUDIT_USAGE;
	}
	if (f != stdin)
		fclose(f);
	if (c.records == 0)
		printf("%s: 0 records\n", path);
	else
		printf("%s: %llu records, chain intact (seq %lld..%lld)\n", path, c.records,
		       c.first_seq, c.last_seq);
	return AUDIT_INTACT;
}

int cli_audit(cli_global *g, int argc, char **argv)
{
	(void)g;
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
		return cli_help(cli_audit_help);
	if (argc < 2 || strcmp(argv[1], "verify") != 0) {
		fprintf(stderr, "mlskey audit: %s (see mlskey audit --help)\n",
			argc < 2 ? "a subcommand is missing: verify" : "unknown subcommand");
		return AUDIT_USAGE;
	}
	if (argc == 3 && (strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0))
		return cli_help(cli_audit_help);
	if (argc != 3) {
		fprintf(stderr, "mlskey audit verify: %s (see mlskey audit --help)\n",
			argc < 3 ? "FILE is missing" : "one FILE only");
		return AUDIT_USAGE;
	}
	return verify(argv[2]);
}
