/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Assuan PIN dialog (agent/pinentry.h) against tests/pinentry-test, a real program on a
 * real socket: the PIN arrives percent-decoded in wiping memory; cancel, timeout, abort, a
 * missing or mute program end the dialog with the right error; what the person is shown
 * (title, description with newlines, prompt) arrives as sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/pinentry.h"
#include "common/error.h"
#include "common/secmem.h"
#include "tests/fixture.h"
#include "tests/tap.h"

static char program[1024], logpath[512];

static mk_pinentry_request req(void)
{
	return (mk_pinentry_request){
		.program = program,
		.title = "mlskey: PIN for alice",
		.description = "Please enter the PIN of token \"alice\" (serial 42).\n\n"
			       "Requested by: /usr/bin/x (pid 7)\nOperation: 100% sign",
		.prompt = "PIN:",
		.timeout_s = 10,
		.cancel_fd = -1,
	};
}

static char *slurp(const char *path)
{
	static char buf[8192];
	FILE *f = fopen(path, "re");
	size_t n = 0;

	buf[0] = '\0';
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_codec(void)
{
	uint8_t out[16];
	char enc[64];

	mkt_ok(mk_assuan_decode("12%2534", 7, out, sizeof(out)) == 5 && !memcmp(out, "12%34", 5),
	       "decode %%25");
	mkt_ok(mk_assuan_decode("a%0Ab%0d", 8, out, sizeof(out)) == 4 && !memcmp(out, "a\nb\r", 4),
	       "decode %%0A and lower-case %%0d");
	mkt_ok_err(mk_assuan_decode("a%2", 3, out, sizeof(out)), -EINVAL, "a cut escape");
	mkt_ok_err(mk_assuan_decode("a%zz", 4, out, sizeof(out)), -EINVAL, "a non-hex escape");
	mkt_ok_err(mk_assuan_decode("abcdef", 6, out, 4), -E2BIG, "output too small");
	mkt_ok(mk_assuan_encode("a%b\nc\r", enc, sizeof(enc)) == 12 &&
		       !strcmp(enc, "a%25b%0Ac%0D"),
	       "encode %%, LF, CR: %s", enc);
	mkt_ok(mk_assuan_encode("abcdef", enc, 4) == 3 && !strcmp(enc, "abc"),
	       "encode stops when full");
	mkt_ok(mk_assuan_encode("a\n", enc, 4) == 1 && !strcmp(enc, "a"),
	       "encode never cuts an escape");
	mkt_ok(mk_assuan_encode("a\xc3\xbc", enc, 3) == 1 && !strcmp(enc, "a"),
	       "encode never cuts a UTF-8 character");
}

static void test_dialogs(void)
{
	mk_pinentry_request r = req();
	mk_secret *pin = NULL;
	const char *log;
	double t0;
	int efd;

	unsetenv("MKT_PINENTRY_PIN");
	mkt_ok_r(mk_pinentry_get_pin(&r, &pin), "GETPIN");
	mkt_ok(pin && pin->len == 6 && !memcmp(pin->data, "123456", 6), "the default PIN 123456");
	pin = mk_secret_free(pin);
	log = slurp(logpath);
	mkt_ok(strstr(log, "SETTITLE mlskey: PIN for alice\n") != NULL, "the title was shown");
	mkt_ok(strstr(log, "SETDESC Please enter the PIN of token \"alice\" (serial 42)."
			   "%0A%0ARequested by: /usr/bin/x (pid 7)%0AOperation: 100%25 sign\n"),
	       "the description, newlines and %% percent-encoded");
	mkt_ok(strstr(log, "SETPROMPT PIN:\n") != NULL, "the prompt");
	mkt_ok(strstr(log, "123456") == NULL, "the PIN itself is not in what the program was sent");

	setenv("MKT_PINENTRY_PIN", "12%2534%0A", 1);
	mkt_ok_r(mk_pinentry_get_pin(&r, &pin), "a PIN with escapes");
	mkt_ok(pin && pin->len == 6 && !memcmp(pin->data, "12%34\n", 6),
	       "arrives percent-decoded");
	pin = mk_secret_free(pin);
	setenv("MKT_PINENTRY_PIN", "12%zz", 1);
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -EACCES, "a malformed D line");
	unsetenv("MKT_PINENTRY_PIN");

	r.error = "Few tries are left";
	mkt_ok_r(mk_pinentry_get_pin(&r, &pin), "with SETERROR");
	pin = mk_secret_free(pin);
	mkt_ok(strstr(slurp(logpath), "SETERROR Few tries are left\n") != NULL,
	       "the warning was shown");
	r.error = NULL;

	setenv("MKT_PINENTRY_CANCEL", "1", 1);
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -ECANCELED, "the person cancels");
	mkt_ok(!strcmp(mk_error_name(-ECANCELED), "Cancelled"), "  which is Cancelled");
	mkt_ok(pin == NULL, "  and no PIN is returned");
	unsetenv("MKT_PINENTRY_CANCEL");

	setenv("MKT_PINENTRY_SLEEP", "5", 1);
	r.timeout_s = 1;
	t0 = now_s();
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -ECANCELED, "an unanswered dialog times out");
	mkt_ok(now_s() - t0 < 3.5, "  after about 1 s (%.2f s), the program killed",
	       now_s() - t0);
	mkt_ok(strstr(mk_error_message(), "timed out") != NULL, "  message: %s",
	       mk_error_message());

	r.timeout_s = 30;
	efd = eventfd(0, EFD_CLOEXEC);
	r.cancel_fd = efd;
	if (fork() == 0) {
		uint64_t one = 1;

		usleep(300 * 1000);
		if (write(efd, &one, sizeof(one)) < 0)
			_exit(1);
		_exit(0);
	}
	t0 = now_s();
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -ECANCELED, "the agent aborts the dialog");
	mkt_ok(now_s() - t0 < 3, "  at once (%.2f s)", now_s() - t0);
	close(efd);
	r.cancel_fd = -1;
	unsetenv("MKT_PINENTRY_SLEEP");

	r.program = "/nonexistent/pinentry";
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -EACCES, "a missing program");
	mkt_ok(strstr(mk_error_message(), "/nonexistent/pinentry") &&
		       strstr(mk_error_message(), "pinentry="),
	       "  says which and what to do: %s", mk_error_message());
	r.program = "true";
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -EACCES, "a program that exits at once");
}

static void test_empty_pin(void)
{
	char script[600];
	mk_pinentry_request r = req();
	mk_secret *pin = NULL;
	FILE *f;

	/* a pinentry that answers OK without a D line: nothing was entered */
	snprintf(script, sizeof(script), "%s/empty-pinentry", mkt_tmpdir());
	f = fopen(script, "we");
	fputs("#!/bin/sh\necho OK hi\nwhile read -r l; do echo OK; done\n", f);
	fclose(f);
	chmod(script, 0755);
	r.program = script;
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -ECANCELED, "an empty PIN counts as cancelled");

	/* a program that greets in another language */
	snprintf(script, sizeof(script), "%s/chatty-pinentry", mkt_tmpdir());
	f = fopen(script, "we");
	fputs("#!/bin/sh\necho hello there\ncat >/dev/null\n", f);
	fclose(f);
	chmod(script, 0755);
	mkt_ok_err(mk_pinentry_get_pin(&r, &pin), -EACCES, "a program that does not speak Assuan");
	mkt_ok(strstr(mk_error_message(), "Assuan") != NULL, "  says so: %s", mk_error_message());
}

/* CONFIRM, the PIN pad notice (MESSAGE) and the options, with tests/pin/mkt-pinentry. */
static void test_confirm_message(void)
{
	const char *root = getenv("MLSKEY_BUILD_ROOT");
	char scripted[1024], script[600], slog[600], pos[620];
	mk_pinentry_request r = req();
	mk_pinentry_popup *p = NULL;
	const char *log;
	double t0;
	FILE *f;

	snprintf(scripted, sizeof(scripted), "%s/tests/pin/mkt-pinentry", root ? root : ".");
	snprintf(script, sizeof(script), "%s/confirm.script", mkt_tmpdir());
	snprintf(slog, sizeof(slog), "%s/confirm.log", mkt_tmpdir());
	snprintf(pos, sizeof(pos), "%s.pos", script);
	setenv("MKT_PINSCRIPT", script, 1);
	setenv("MKT_PINSCRIPT_LOG", slog, 1);
	f = fopen(script, "we");
	fputs("CONFIRM yes\nCONFIRM no\nCANCEL\nPIN 1234\n", f);
	fclose(f);
	unlink(pos);
	r.program = scripted;
	r.ok = "Enter the PIN";
	r.cancel = "Cancel";
	setenv("DISPLAY", ":7", 1);
	setenv("GPG_TTY", "/dev/pts/77", 1);
	setenv("TERM", "xterm-test", 1);
	setenv("LC_ALL", "de_DE.UTF-8", 1);
	mkt_ok_r(mk_pinentry_confirm(&r), "CONFIRM answered OK: 0");
	log = slurp(slog);
	mkt_ok(strstr(log, "\nCONFIRM\n") && strstr(log, "SETOK Enter the PIN\n") &&
		       strstr(log, "SETCANCEL Cancel\n") && strstr(log, "SETDESC Please enter"),
	       "  the question came with its description and button labels");
	mkt_ok(strstr(log, "OPTION display=:7\n") && strstr(log, "OPTION ttyname=/dev/pts/77\n") &&
		       strstr(log, "OPTION ttytype=xterm-test\n") &&
		       strstr(log, "OPTION lc-ctype=de_DE.UTF-8\n") &&
		       strstr(log, "OPTION lc-messages=de_DE.UTF-8\n"),
	       "  with the options gpg-agent passes: display, ttyname (GPG_TTY), ttytype, "
	       "lc-ctype, lc-messages");
	mkt_ok(strstr(log, "GETPIN") == NULL, "  and no GETPIN");
	mkt_ok_err(mk_pinentry_confirm(&r), -ECANCELED, "CONFIRM answered \"Not confirmed\"");
	mkt_ok_err(mk_pinentry_confirm(&r), -ECANCELED, "CONFIRM answered Cancel");
	unsetenv("DISPLAY");
	unsetenv("GPG_TTY");
	unsetenv("LC_ALL");

	r.ok = r.cancel = NULL;
	r.description = "Please enter the PIN on the reader's keypad.";
	t0 = now_s();
	mkt_ok_r(mk_pinentry_popup_open(&r, &p), "the PIN pad notice opens");
	mkt_ok(now_s() - t0 < 2.0, "  without waiting for the person (%.2f s)", now_s() - t0);
	for (int i = 0; i < 100 && !strstr(slurp(slog), "\nMESSAGE\n"); i++)
		usleep(10 * 1000);
	log = slurp(slog);
	mkt_ok(strstr(log, "SETDESC Please enter the PIN on the reader's keypad.\n") &&
		       strstr(log, "\nMESSAGE\n") && !strstr(strstr(log, "\nMESSAGE\n"), "SETDESC"),
	       "  it showed the text with MESSAGE");
	t0 = now_s();
	p = mk_pinentry_popup_close(p);
	mkt_ok(p == NULL && now_s() - t0 < 2.0, "  and closes at once (%.2f s)", now_s() - t0);
	mkt_ok(mk_pinentry_popup_close(NULL) == NULL, "closing NULL is fine");
	r.program = "/nonexistent/pinentry";
	mkt_ok_err(mk_pinentry_popup_open(&r, &p), -EACCES, "a notice without a program: -EACCES");
	mkt_ok_err(mk_pinentry_confirm(&r), -EACCES, "a question without a program: -EACCES");
}

int main(void)
{
	const char *src = getenv("MLSKEY_SOURCE_ROOT");

	mk_secmem_init();
	snprintf(program, sizeof(program), "%s/tests/pinentry-test", src ? src : "..");
	snprintf(logpath, sizeof(logpath), "%s/pinentry.log", mkt_tmpdir());
	setenv("MKT_PINENTRY_LOG", logpath, 1);
	unsetenv("MKT_PINENTRY_CONTROL");
	test_codec();
	test_dialogs();
	test_empty_pin();
	test_confirm_message();
	return mkt_done();
}
