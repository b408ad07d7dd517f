/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mkt-pinentry: a scripted pinentry for tests. It speaks Assuan on stdin/stdout like
 * GnuPG's pinentry programs, records everything it is shown, and answers from a script
 * that is shared by every run (each dialog of the agent starts a new process):
 *
 *   MKT_PINSCRIPT      the script: one answer per line, used in order across runs
 *                      (the position is kept in MKT_PINSCRIPT.pos, under flock):
 *       PIN <text>       answer GETPIN with this PIN (sent as given)
 *       CANCEL           answer GETPIN or CONFIRM with "Operation cancelled"
 *       CONFIRM yes|no   answer CONFIRM with OK / "Not confirmed"
 *       DELAY <ms>       wait this long before the next answer (then read on)
 *       HANG             never answer (until the agent ends the dialog)
 *     An exhausted script cancels; an answer of the wrong kind (a PIN for CONFIRM)
 *     cancels too and is logged as SCRIPT-MISMATCH, so a test sees unexpected dialogs.
 *   MKT_PINSCRIPT_LOG  appended to, one line each: "START pid=N", every command as it
 *                      arrived (OPTION, SETTITLE, SETDESC, SETPROMPT, SETERROR, SETOK,
 *                      SETCANCEL, GETPIN, CONFIRM, MESSAGE, ...; arguments percent-encoded
 *                      as sent), "ANSWER PIN|CANCEL|CONFIRM yes|CONFIRM no", "END".
 *                      The PIN itself is never written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define GPG_CANCELLED "ERR 83886179 Operation cancelled <Pinentry>"
#define GPG_NOT_CONFIRMED "ERR 83886194 Not confirmed <Pinentry>"

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	const char *path = getenv("MKT_PINSCRIPT_LOG");
	char buf[4096];
	va_list ap;
	int fd, n;

	if (!path)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, buf, (size_t)n) < 0) {
		/* a test log: nothing to do */
	}
	close(fd);
}

static void reply(const char *s)
{
	printf("%s\n", s);
	fflush(stdout);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * The next answer of the script that is not a DELAY (DELAYs before it are slept), into
 * line. false when the script is used up.
 */
static bool next_answer(char *line, size_t cap)
{
	const char *script = getenv("MKT_PINSCRIPT");
	char pos_path[1024], buf[512];
	long pos = 0, i = 0, delay = 0;
	bool found = false;
	FILE *f, *p;
	int fd;

	if (!script)
		return false;
	snprintf(pos_path, sizeof(pos_path), "%s.pos", script);
	fd = open(pos_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	flock(fd, LOCK_EX);
	p = fdopen(fd, "r+");
	if (!p) {
		close(fd);
		return false;
	}
	if (fscanf(p, "%ld", &pos) != 1)
		pos = 0;
	f = fopen(script, "re");
	while (f && fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\r\n")] = '\0';
		if (!buf[0] || buf[0] == '#')
			continue;
		if (i++ < pos)
			continue;
		pos++;
		if (!strncmp(buf, "DELAY ", 6)) {
			delay += atol(buf + 6);
			continue;
		}
		snprintf(line, cap, "%s", buf);
		found = true;
		break;
	}
	if (f)
		fclose(f);
	rewind(p);
	if (ftruncate(fileno(p), 0) == 0)
		fprintf(p, "%ld\n", pos);
	fclose(p); /* and the lock */
	if (delay)
		sleep_ms(delay);
	return found;
}

static void hang(void)
{
	logf_("ANSWER HANG");
	for (;;)
		pause();
}

static void on_getpin(void)
{
	char a[512];

	if (!next_answer(a, sizeof(a))) {
		logf_("SCRIPT-EMPTY");
		reply(GPG_CANCELLED);
	} else if (!strncmp(a, "PIN ", 4)) {
		logf_("ANSWER PIN");
		printf("D %s\n", a + 4);
		reply("OK");
	} else if (!strcmp(a, "CANCEL")) {
		logf_("ANSWER CANCEL");
		reply(GPG_CANCELLED);
	} else if (!strcmp(a, "HANG")) {
		hang();
	} else {
		logf_("SCRIPT-MISMATCH GETPIN got \"%s\"", a);
		reply(GPG_CANCELLED);
	}
}

static void on_confirm(void)
{
	char a[512];

	if (!next_answer(a, sizeof(a))) {
		logf_("SCRIPT-EMPTY");
		reply(GPG_CANCELLED);
	} else if (!strcmp(a, "CONFIRM yes")) {
		logf_("ANSWER CONFIRM yes");
		reply("OK");
	} else if (!strcmp(a, "CONFIRM no")) {
		logf_("ANSWER CONFIRM no");
		reply(GPG_NOT_CONFIRMED);
	} else if (!strcmp(a, "CANCEL")) {
		logf_("ANSWER CANCEL");
		reply(GPG_CANCELLED);
	} else if (!strcmp(a, "HANG")) {
		hang();
	} else {
		logf_("SCRIPT-MISMATCH CONFIRM got \"%s\"", a);
		reply(GPG_CANCELLED);
	}
}

int main(void)
{
	char line[2048];

	logf_("START pid=%d", (int)getpid());
	printf("OK Pleased to meet you, scripted pinentry %d\n", (int)getpid());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		logf_("%s", line);
		if (!strcmp(line, "GETPIN"))
			on_getpin();
		else if (!strcmp(line, "CONFIRM") || !strncmp(line, "CONFIRM ", 8))
			on_confirm();
		else if (!strcmp(line, "BYE") || !strncmp(line, "BYE ", 4)) {
			reply("OK closing connection");
			break;
		} else
			reply("OK"); /* SET*, OPTION, MESSAGE (the person closes it at once) */
	}
	logf_("END");
	return 0;
}
