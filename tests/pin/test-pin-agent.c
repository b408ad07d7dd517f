/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The agent's hooks for the rest of the daemon (agent/ops.h), called in-process as the PC/SC
 * monitor and the bus call them: mk_agent_token_gone ends a PIN dialog open for the removed
 * token (TokenAbsent at once) and logs out of it; a removal of an unknown token logs out of
 * nothing that is still there; mk_agent_request_lock logs out of everything;
 * mk_agent_abort_dialogs ends a dialog and every later one. SoftHSM behind the counting
 * shim, the scripted pinentry.
 */
#include <pthread.h>

#include "agent/log.h"
#include "agent/ops.h"
#include "common/error.h"
#include "common/secmem.h"
#include "tests/pin/pin-test.h"

#define PIN "123456"

static mk_agent *a;
static mk_caller caller;
static char key_uri[1024];

typedef struct bg {
	pthread_t th;
	int r;
	char msg[512];
	double took;
} bg;

static int sign(char *msg, size_t cap)
{
	mk_bytes sig = { 0 };
	int r;

	mk_error_clear();
	r = mk_agent_sign(a, &caller, key_uri, 2, "LeafNodeTBS", (const uint8_t *)"abc", 3, &sig);
	if (msg)
		snprintf(msg, cap, "%s", r < 0 ? mk_error_text(r) : "");
	mk_bytes_clear(&sig);
	return r;
}

static void *sign_bg(void *p)
{
	bg *b = p;
	double t0 = mkt_now();

	b->r = sign(b->msg, sizeof(b->msg));
	b->took = mkt_now() - t0;
	return NULL;
}

/* Starts a signature on another thread and waits until its dialog asks for the PIN. */
static void start_dialog(bg *b)
{
	int n = pin_log_count("GETPIN");

	pthread_create(&b->th, NULL, sign_bg, b);
	for (int i = 0; i < 500 && pin_log_count("GETPIN") == n; i++)
		usleep(10 * 1000);
	if (pin_log_count("GETPIN") == n)
		mkt_bail("the dialog did not open");
}

static void login(void)
{
	char msg[512];

	pin_script("PIN " PIN "\n");
	if (sign(msg, sizeof(msg)) < 0)
		mkt_bail("cannot sign: %s", msg);
}

int main(void)
{
	mk_config cfg;
	char *uri = NULL, msg[512];
	int logouts, starts;
	bg b;

	mk_secmem_init();
	mk_log_open(true, LOG_INFO);
	pin_add_token("clerk", PIN);
	mkt_shim_setup();
	mk_config_init(&cfg);
	mk_config_set(&cfg, "pinentry", pin_script_program());
	mk_config_set(&cfg, "p11-kit", "no");
	mk_config_add_module(&cfg, mkt_shim_path());
	caller = (mk_caller){ .uid = getuid(), .pid = getpid(), .exe = "/usr/bin/test-caller" };

	mkt_ok_r(mk_agent_new(&cfg, &a), "the agent starts in-process");
	pin_script("PIN " PIN "\n");
	mkt_ok_r(mk_agent_generate(a, &caller, "pkcs11:token=clerk", MK_ALG_ECDSA_P256, "k", 0, &uri),
		 "GenerateKey asks the PIN and makes a key");
	snprintf(key_uri, sizeof(key_uri), "%s", uri ? uri : "");
	free(uri);
	mkt_ok(strstr(pin_log_last("SETDESC "), "/usr/bin/test-caller (pid ") &&
		       strstr(pin_log_last("SETDESC "), "generate a new ecdsa-p256 key \"k\""),
	       "  its dialog names the caller and the operation");
	mkt_ok_r(sign(NULL, 0), "it signs without another dialog");

	/* the card is pulled while its PIN is being asked */
	mk_agent_lock(a, "");
	pin_log_reset();
	pin_script("DELAY 4000\nPIN " PIN "\n");
	logouts = mkt_shim_count("C_Logout");
	start_dialog(&b);
	mk_agent_token_gone(a, "pkcs11:token=clerk");
	pthread_join(b.th, NULL);
	mkt_ok_err(b.r, -ENOMEDIUM, "removal during the dialog: the call ends with TokenAbsent");
	mkt_ok(b.took < 2.5, "  at once, not when the person answers (%.2f s)", b.took);
	mkt_ok(strstr(b.msg, "was removed while its PIN was asked") != NULL, "  and says so: %s",
	       b.msg);
	mkt_ok(pin_wait_shim("C_Logout", logouts + 1, 3000), "  the agent logs out of the token");

	/* removal while logged in */
	login();
	logouts = mkt_shim_count("C_Logout");
	mk_agent_token_gone(a, "pkcs11:model=SoftHSM%20v2;token=clerk");
	mkt_ok(pin_wait_shim("C_Logout", logouts + 1, 3000),
	       "removal of a logged-in token (any URI that matches it): C_Logout");
	starts = pin_log_count("START");
	login();
	mkt_ok(pin_log_count("START") == starts + 1, "  its next use asks for the PIN again");

	/* a removal without a name, of a token that is still there: nothing happens to it */
	logouts = mkt_shim_count("C_Logout");
	mk_agent_token_gone(a, NULL);
	usleep(500 * 1000);
	mkt_ok(mkt_shim_count("C_Logout") == logouts, "a removal of some token: the token that is "
	       "still there stays logged in");
	starts = pin_log_count("START");
	mkt_ok(sign(msg, sizeof(msg)) == 0 && pin_log_count("START") == starts,
	       "  and signs without a dialog (%s)", msg);
	mk_agent_token_gone(a, "pkcs11:token=somebody-else");
	usleep(300 * 1000);
	mkt_ok(mkt_shim_count("C_Logout") == logouts, "  so does the removal of another token");

	/* the session locks */
	mk_agent_request_lock(a, "a test locked the session");
	mkt_ok(pin_wait_shim("C_Logout", logouts + 1, 3000), "mk_agent_request_lock: C_Logout");
	starts = pin_log_count("START");
	login();
	mkt_ok(pin_log_count("START") == starts + 1, "  the next use asks again");

	/* shutdown: an open dialog ends, and later ones do not start */
	mk_agent_lock(a, "");
	pin_script("DELAY 4000\nPIN " PIN "\nPIN " PIN "\n");
	start_dialog(&b);
	mk_agent_abort_dialogs(a);
	pthread_join(b.th, NULL);
	mkt_ok(b.r == -ECANCELED && b.took < 2.5, "abort: the open dialog ends with Cancelled at "
	       "once (%.2f s: %s)", b.took, b.msg);
	starts = pin_log_count("START");
	mkt_ok(sign(msg, sizeof(msg)) == -ECANCELED && pin_log_count("START") == starts,
	       "  and no new dialog starts (%s)", msg);

	mk_agent_free(a);
	mk_config_clear(&cfg);
	return mkt_done();
}
