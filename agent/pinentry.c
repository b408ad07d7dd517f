/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/pinentry.h"
#include "common/error.h"

extern char **environ;

/* Assuan lines are at most 1000 bytes; allow some slack for sloppy peers. */
#define LINE_MAX_BYTES 2048

/* GnuPG error codes (the low 16 bits of an ERR code) that mean "no PIN, by choice". */
#define GPG_ERR_TIMEOUT 62
#define GPG_ERR_CANCELED 99
#define GPG_ERR_FULLY_CANCELED 198

typedef struct conn {
	int fd;
	pid_t pid;
	int cancel_fd;
	struct timespec deadline; /* CLOCK_MONOTONIC; tv_sec 0 = none */
	mk_secret *buf;           /* raw input; holds the D line with the PIN, so it wipes */
	size_t len;               /* bytes in buf */
	size_t consumed;          /* bytes of the previous line to drop before reading on */
	const char *program;
} conn;

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mk_assuan_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b = (uint8_t)in[i];

		if (b == '%') {
			int hi, lo;

			if (n - i < 3)
				return -EINVAL;
			hi = hexval(in[i + 1]);
			lo = hexval(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			b = (uint8_t)(hi << 4 | lo);
			i += 2;
		}
		if (o >= cap)
			return -E2BIG;
		out[o++] = b;
	}
	return (int)o;
}

size_t mk_assuan_encode(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	if (cap == 0)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t clen = 1;

		if (*p < 0x20 || *p == '%' || *p == 0x7f) {
			if (o + 3 >= cap)
				break;
			snprintf(out + o, 4, "%%%02X", *p);
			o += 3;
			p++;
			continue;
		}
		/* a UTF-8 lead byte and its continuation bytes go together or not at all */
		if (*p >= 0xc0)
			while (p[clen] >= 0x80 && p[clen] < 0xc0)
				clen++;
		if (o + clen >= cap)
			break;
		memcpy(out + o, p, clen);
		o += clen;
		p += clen;
	}
	out[o] = '\0';
	return o;
}

static int ms_left(const conn *c)
{
	struct timespec now;
	long long ms;

	if (c->deadline.tv_sec == 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(c->deadline.tv_sec - now.tv_sec) * 1000 +
	     (c->deadline.tv_nsec - now.tv_nsec) / 1000000;
	if (ms < 0)
		return 0;
	return ms > 3600000 ? 3600000 : (int)ms;
}

/* Waits until fd is ready for events; -ECANCELED on timeout or cancel_fd. */
static int wait_fd(conn *c, short events)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = c->fd, .events = events },
				       { .fd = c->cancel_fd, .events = POLLIN } };
		int t = ms_left(c), n;

		if (t == 0)
			return mk_error(-ECANCELED, "the PIN dialog timed out");
		n = poll(p, c->cancel_fd >= 0 ? 2 : 1, t);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return mk_error(-EACCES, "cannot wait for the PIN dialog: %s", strerror(errno));
		if (n == 0)
			continue; /* ms_left() reports the timeout */
		if (c->cancel_fd >= 0 && (p[1].revents & POLLIN))
			return mk_error(-ECANCELED, "the PIN dialog was aborted: mlskeyd is stopping");
		if (p[0].revents)
			return 0;
	}
}

static int send_raw(conn *c, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w;
		int r = wait_fd(c, POLLOUT);

		if (r < 0)
			return r;
		w = send(c->fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w < 0)
			return mk_error(-EACCES, "the PIN program %s went away (%s)", c->program,
					strerror(errno));
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads the next line into c->buf->data (NUL-terminated); sets *ret_len. */
static int read_line(conn *c, size_t *ret_len)
{
	uint8_t *d = c->buf->data;
	size_t cap = c->buf->len;

	if (c->consumed) {
		memmove(d, d + c->consumed, c->len - c->consumed);
		c->len -= c->consumed;
		mk_wipe(d + c->len, cap - c->len);
		c->consumed = 0;
	}
	for (;;) {
		uint8_t *nl = memchr(d, '\n', c->len);
		ssize_t n;
		int r;

		if (nl) {
			size_t l = (size_t)(nl - d);

			*nl = '\0';
			c->consumed = l + 1;
			*ret_len = l;
			return 0;
		}
		if (c->len + 1 >= cap)
			return mk_error(-EACCES, "the PIN program %s sent a line over %d bytes",
					c->program, LINE_MAX_BYTES);
		r = wait_fd(c, POLLIN);
		if (r < 0)
			return r;
		n = recv(c->fd, d + c->len, cap - 1 - c->len, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return mk_error(-EACCES, "cannot read from the PIN program %s: %s",
					c->program, strerror(errno));
		if (n == 0)
			return mk_error(-EACCES, "the PIN program %s exited during the dialog",
					c->program);
		c->len += (size_t)n;
	}
}

static int map_err_line(conn *c, const char *line)
{
	unsigned long code = strtoul(line + 3, NULL, 10);
	unsigned e = (unsigned)(code & 0xffff);

	if (e == GPG_ERR_CANCELED || e == GPG_ERR_FULLY_CANCELED)
		return mk_error(-ECANCELED, "the PIN dialog was cancelled");
	if (e == GPG_ERR_TIMEOUT)
		return mk_error(-ECANCELED, "the PIN dialog timed out");
	/* -EPROTO stays inside this file: an OPTION may fail harmlessly; else -EACCES */
	return mk_error(-EPROTO, "the PIN program %s failed: %.200s", c->program, line + 3);
}

/*
 * Reads responses up to OK or ERR. With pin, D lines are decoded into it (pin->len is its
 * capacity, *pin_len what it holds); without, D lines are ignored.
 */
static int read_response(conn *c, mk_secret *pin, size_t *pin_len)
{
	for (;;) {
		const char *line = (const char *)c->buf->data;
		size_t n = 0;
		int r = read_line(c, &n);

		if (r < 0)
			return r;
		if (n >= 2 && line[0] == 'O' && line[1] == 'K' && (n == 2 || line[2] == ' '))
			return 0;
		if (n >= 3 && !strncmp(line, "ERR", 3) && (n == 3 || line[3] == ' '))
			return map_err_line(c, line);
		if (n >= 2 && line[0] == 'D' && line[1] == ' ') {
			if (!pin)
				continue;
			r = mk_assuan_decode(line + 2, n - 2, pin->data + *pin_len,
					     pin->len - *pin_len);
			if (r == -E2BIG)
				return mk_error(-EACCES, "the PIN is longer than %d bytes",
						MK_PIN_MAX);
			if (r < 0)
				return mk_error(-EACCES, "the PIN program %s sent a malformed D line",
						c->program);
			*pin_len += (size_t)r;
			continue;
		}
		if (n == 0 || line[0] == '#' || (line[0] == 'S' && (n == 1 || line[1] == ' ')))
			continue;
		if (!strncmp(line, "INQUIRE", 7))
			return mk_error(-EACCES, "the PIN program %s asked for data (INQUIRE)",
					c->program);
		return mk_error(-EACCES, "the PIN program %s does not speak Assuan", c->program);
	}
}

/* Sends "CMD encoded-arg\n" and reads its response; a NULL arg is not sent at all. */
static int command(conn *c, const char *cmd, const char *arg, bool ignore_err)
{
	char line[1002];
	size_t n = (size_t)snprintf(line, sizeof(line), "%s", cmd);
	int r;

	if (arg) {
		line[n++] = ' ';
		n += mk_assuan_encode(arg, line + n, sizeof(line) - 1 - n);
	}
	line[n++] = '\n';
	r = send_raw(c, line, n);
	if (r < 0)
		return r;
	r = read_response(c, NULL, NULL);
	if (r == -EPROTO && ignore_err) {
		mk_error_clear(); /* an OPTION the program does not know */
		return 0;
	}
	return r;
}

static int spawn(conn *c, const char *program)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, def;
	char *argv[] = { (char *)program, NULL };
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return mk_error(-EACCES, "cannot start the PIN program: %s", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, sv[1], STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	/* the daemon blocks SIGTERM/SIGINT (signalfd) and ignores SIGPIPE: not the child */
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGINT);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &def);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	r = posix_spawnp(&c->pid, program, &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	if (r != 0) {
		close(sv[0]);
		c->pid = 0;
		return mk_error(-EACCES,
				"cannot run the PIN program \"%s\" (%s); install pinentry or set "
				"pinentry= in mlskeyd.conf",
				program, strerror(r));
	}
	c->fd = sv[0];
	return 0;
}

static void reap(conn *c, bool kill_now)
{
	int status;

	if (c->fd >= 0) {
		if (!kill_now)
			(void)send(c->fd, "BYE\n", 4, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(c->fd);
		c->fd = -1;
	}
	if (c->pid <= 0)
		return;
	if (kill_now)
		kill(c->pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		pid_t p = waitpid(c->pid, &status, WNOHANG);

		if (p == c->pid || (p < 0 && errno != EINTR)) {
			c->pid = 0;
			return;
		}
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	kill(c->pid, SIGKILL);
	while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
		;
	c->pid = 0;
}

/* The first of the environment variables that is set and not empty, or NULL. */
static const char *env_first(const char *a, const char *b, const char *c)
{
	const char *names[] = { a, b, c };

	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		const char *v = names[i] ? getenv(names[i]) : NULL;

		if (v && *v)
			return v;
	}
	return NULL;
}

/* "OPTION name=value" when value is set; a program that does not know it is no error. */
static int option(conn *c, const char *name, const char *value)
{
	char opt[600];

	if (!value || !*value)
		return 0;
	snprintf(opt, sizeof(opt), "%s=%s", name, value);
	return command(c, "OPTION", opt, true);
}

/*
 * What gpg-agent tells a pinentry about where to show itself: the X display, the terminal
 * (GPG_TTY as gpg-agent's users set it, else the daemon's own terminal in --foreground) and
 * its type, and the locale. Graphical pinentries also read WAYLAND_DISPLAY and
 * DBUS_SESSION_BUS_ADDRESS from the environment they inherit.
 */
static int set_tty_options(conn *c)
{
	const char *tty = env_first("GPG_TTY", NULL, NULL);
	int r;

	if (!tty && isatty(STDERR_FILENO))
		tty = ttyname(STDERR_FILENO);
	r = option(c, "display", env_first("DISPLAY", NULL, NULL));
	if (r == 0)
		r = option(c, "ttyname", tty);
	if (r == 0 && tty)
		r = option(c, "ttytype", env_first("TERM", NULL, NULL));
	if (r == 0)
		r = option(c, "lc-ctype", env_first("LC_ALL", "LC_CTYPE", "LANG"));
	if (r == 0)
		r = option(c, "lc-messages", env_first("LC_ALL", "LC_MESSAGES", "LANG"));
	return r;
}

/* The greeting, the options and every text of req, up to the command that shows it. */
static int prepare(conn *c, const mk_pinentry_request *req)
{
	const struct {
		const char *cmd, *arg;
	} texts[] = {
		{ "SETTITLE", req->title },   { "SETDESC", req->description },
		{ "SETPROMPT", req->prompt }, { "SETERROR", req->error },
		{ "SETOK", req->ok },         { "SETCANCEL", req->cancel },
	};
	int r;

	r = read_response(c, NULL, NULL); /* the greeting: "OK Pleased to meet you" */
	if (r < 0)
		return r;
	r = set_tty_options(c);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(texts); i++)
		if (texts[i].arg && (r = command(c, texts[i].cmd, texts[i].arg, false)) < 0)
			return r;
	return 0;
}

static int dialog(conn *c, const mk_pinentry_request *req, mk_secret **ret_pin)
{
	_cleanup_secret_ mk_secret *pin = NULL;
	size_t pin_len = 0;
	int r;

	r = prepare(c, req);
	if (r < 0)
		return r;
	r = mk_secret_new(MK_PIN_MAX, &pin);
	if (r < 0)
		return r;
	r = send_raw(c, "GETPIN\n", 7);
	if (r < 0)
		return r;
	r = read_response(c, pin, &pin_len);
	if (r < 0)
		return r;
	if (pin_len == 0)
		return mk_error(-ECANCELED, "no PIN was entered");
	return mk_secret_new_copy(pin->data, pin_len, ret_pin);
}

/* Starts the program for req with its line buffer and deadline (timeout_s, capped by
 * max_s when not 0). The caller ends it with conn_end(). */
static int conn_start(conn *c, const mk_pinentry_request *req, unsigned max_s)
{
	unsigned t = req->timeout_s;
	int r;

	*c = (conn){ .fd = -1, .cancel_fd = req->cancel_fd, .program = req->program };
	r = mk_secret_new(LINE_MAX_BYTES, &c->buf);
	if (r < 0)
		return r;
	if (max_s && (t == 0 || t > max_s))
		t = max_s;
	if (t) {
		clock_gettime(CLOCK_MONOTONIC, &c->deadline);
		c->deadline.tv_sec += t;
	}
	return spawn(c, req->program);
}

/* Ends the program (killed when kill_now) and wipes the line buffer; maps -EPROTO. */
static int conn_end(conn *c, int r)
{
	reap(c, r < 0);
	c->buf = mk_secret_free(c->buf);
	return r == -EPROTO ? -EACCES : r;
}

int mk_pinentry_get_pin(const mk_pinentry_request *req, mk_secret **ret_pin)
{
	mk_secret *pin = NULL;
	conn c;
	int r;

	r = conn_start(&c, req, 0);
	if (r == 0)
		r = dialog(&c, req, &pin);
	r = conn_end(&c, r);
	if (r < 0)
		return r;
	*ret_pin = pin;
	return 0;
}

int mk_pinentry_confirm(const mk_pinentry_request *req)
{
	conn c;
	int r;

	r = conn_start(&c, req, 0);
	if (r == 0)
		r = prepare(&c, req);
	if (r == 0) {
		r = send_raw(&c, "CONFIRM\n", 8);
		if (r == 0)
			r = read_response(&c, NULL, NULL);
		/* any ERR to CONFIRM (Cancel, "not confirmed", a closed window) is a no */
		if (r == -EPROTO)
			r = mk_error(-ECANCELED, "the question was answered with No");
	}
	return conn_end(&c, r);
}

struct mk_pinentry_popup {
	conn c;
};

int mk_pinentry_popup_open(const mk_pinentry_request *req, mk_pinentry_popup **ret)
{
	mk_pinentry_popup *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	/* the person is not asked anything before MESSAGE: a program that takes longer than
	 * this to say OK to SETDESC is not going to show the notice in time anyway */
	r = conn_start(&p->c, req, 10);
	if (r == 0)
		r = prepare(&p->c, req);
	/* MESSAGE answers only when the person closes the notice: do not wait for that */
	if (r == 0)
		r = send_raw(&p->c, "MESSAGE\n", 8);
	if (r < 0) {
		r = conn_end(&p->c, r);
		free(p);
		return r;
	}
	*ret = p;
	return 0;
}

mk_pinentry_popup *mk_pinentry_popup_close(mk_pinentry_popup *p)
{
	if (!p)
		return NULL;
	/* the notice is modal: end it (SIGTERM), as gpg-agent ends its PIN-pad popups */
	conn_end(&p->c, -ECANCELED);
	free(p);
	return NULL;
}
