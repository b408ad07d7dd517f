/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <getopt.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clients/cli.h"

/* Inputs larger than the agent accepts by default make no sense; this is a sanity cap. */
#define DATA_MAX (64u << 20)

int cli_exit_code(int r)
{
	switch (r) {
	case 0:
		return EXIT_OK;
	case -EINVAL:
	case -EOPNOTSUPP:
		return EXIT_USAGE;
	case -ENOKEY:
	case -ENODEV:
	case -ENOMEDIUM:
		return EXIT_NOTFOUND;
	case -EKEYREJECTED:
	case -EKEYREVOKED:
	case -ECANCELED:
		return EXIT_PIN;
	case -EACCES:
		return EXIT_DENIED;
	case -EBADMSG:
		return EXIT_BADDATA;
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ETIMEDOUT:
		return EXIT_NOAGENT;
	default:
		return EXIT_TOKEN;
	}
}

int cli_fail(const cli_global *g, int r, const char *what)
{
	const mlskey_error *e = mlskey_last_error();
	const char *msg = e->code == r && e->message[0] ? e->message : strerror(-r);

	if (e->code == r && e->name[0])
		fprintf(stderr, "mlskey %s: %s: %s (%s)\n", g->cmd, what, msg, e->name);
	else
		fprintf(stderr, "mlskey %s: %s: %s\n", g->cmd, what, msg);
	return cli_exit_code(r);
}

int cli_common_option(cli_global *g, int c, char **argv)
{
	switch (c) {
	case OPT_ADDRESS:
		g->address = optarg;
		return CLI_OPT_DONE;
	case OPT_JSON:
		g->json = true;
		return CLI_OPT_DONE;
	case 'h':
		return CLI_OPT_HELP;
	case ':':
		return cli_usage_error(g, "option %s needs a value (see mlskey %s --help)",
				       argv[optind - 1], g->cmd);
	case '?':
		return cli_usage_error(g, "unknown option %s (see mlskey %s --help)",
				       argv[optind - 1], g->cmd);
	default:
		return CLI_OPT_OWN;
	}
}

int cli_usage_error(const cli_global *g, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mlskey%s%s: ", g->cmd ? " " : "", g->cmd ? g->cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static int read_fd(int fd, mk_bytes *ret)
{
	uint8_t *buf = NULL, *p;
	size_t len = 0, cap = 0;
	ssize_t k;

	for (;;) {
		if (len == cap) {
			if (cap >= DATA_MAX) {
				free(buf);
				return -EFBIG;
			}
			cap = cap ? cap * 2 : 4096;
			p = realloc(buf, cap);
			if (!p) {
				free(buf);
				return -ENOMEM;
			}
			buf = p;
		}
		k = read(fd, buf + len, cap - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			k = -errno;
			free(buf);
			return (int)k;
		}
		if (k == 0)
			break;
		len += k;
	}
	if (!buf && !(buf = malloc(1)))
		return -ENOMEM;
	*ret = (mk_bytes){ buf, len };
	return 0;
}

int cli_read_data(cli_global *g, const char *option, const char *arg, mk_bytes *ret)
{
	int fd, r;

	if (strcmp(arg, "-") == 0) {
		if (g->stdin_used)
			return cli_usage_error(g, "%s: standard input was read for another option "
					       "already; use @FILE or hex", option);
		g->stdin_used = true;
		r = read_fd(STDIN_FILENO, ret);
		if (r < 0)
			return cli_usage_error(g, "%s: cannot read standard input: %s", option,
					       strerror(-r));
		return 0;
	}
	if (arg[0] == '@') {
		fd = open(arg + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return cli_usage_error(g, "%s: cannot open %s: %m", option, arg + 1);
		r = read_fd(fd, ret);
		close(fd);
		if (r < 0)
			return cli_usage_error(g, "%s: cannot read %s: %s", option, arg + 1,
					       strerror(-r));
		return 0;
	}
	r = mk_hex_decode(arg, ret);
	if (r == -ENOMEM)
		return cli_usage_error(g, "out of memory");
	if (r < 0)
		return cli_usage_error(g, "%s: \"%.40s%s\" is not hex (an even number of 0-9a-f); "
				       "write @FILE for a file's bytes or - for standard input",
				       option, arg, strlen(arg) > 40 ? "..." : "");
	return 0;
}

int cli_write_data(const cli_global *g, const char *out, const uint8_t *p, size_t n)
{
	FILE *f;

	if (!out) {
		for (size_t i = 0; i < n; i++)
			printf("%02x", p[i]);
		printf("\n");
		return fflush(stdout) == 0 ? 0 : cli_usage_error(g, "cannot write: %m");
	}
	if (strcmp(out, "-") == 0) {
		if (fwrite(p, 1, n, stdout) != n || fflush(stdout) != 0)
			return cli_usage_error(g, "cannot write to standard output: %m");
		return 0;
	}
	f = fopen(out, "we");
	if (!f)
		return cli_usage_error(g, "cannot create %s: %m", out);
	if (fwrite(p, 1, n, f) != n) {
		fclose(f);
		return cli_usage_error(g, "cannot write %s: %m", out);
	}
	if (fclose(f) != 0)
		return cli_usage_error(g, "cannot write %s: %m", out);
	return 0;
}

int cli_parse_u16(const cli_global *g, const char *option, const char *arg, uint16_t *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(arg, &end, 0);
	if (errno || end == arg || *end || v > UINT16_MAX || arg[0] == '-')
		return cli_usage_error(g, "%s: \"%s\" is not a number from 0 to 65535", option, arg);
	*ret = (uint16_t)v;
	return 0;
}

void cli_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

int cli_help(const char *text)
{
	fputs(text, stdout);
	return EXIT_OK;
}
