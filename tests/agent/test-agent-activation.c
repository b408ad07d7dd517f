/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * D-Bus activation: with a service file for org.mlskey.Agent1 in the bus's service
 * directory, the first call starts mlskeyd (which then answers on the bus that started it,
 * DBUS_STARTER_ADDRESS) and is answered. Also checks the activation file the build makes.
 */
#include <sys/prctl.h>

#include "tests/agent/agent-test.h"

static char tmp[512];

static pid_t start_bus(char *addr, size_t cap)
{
	char conf[600], sock[600], services[600];
	int p[2];
	ssize_t n;
	size_t len = 0;
	pid_t pid;
	FILE *f;

	snprintf(conf, sizeof(conf), "%s/activation-bus.conf", tmp);
	snprintf(sock, sizeof(sock), "%s/activation-bus", tmp);
	snprintf(services, sizeof(services), "%s/services", tmp);
	f = fopen(conf, "we");
	if (!f)
		mkt_bail("cannot write %s", conf);
	fprintf(f,
		"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
		" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		"<busconfig>\n  <type>session</type>\n  <listen>unix:path=%s</listen>\n"
		"  <auth>EXTERNAL</auth>\n  <servicedir>%s</servicedir>\n"
		"  <policy context=\"default\">\n    <allow send_destination=\"*\"/>\n"
		"    <allow receive_sender=\"*\"/>\n"
		"    <allow own=\"*\"/>\n    <allow user=\"*\"/>\n  </policy>\n</busconfig>\n",
		sock, services);
	fclose(f);
	if (pipe2(p, O_CLOEXEC) < 0)
		mkt_bail("pipe");
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		char cf[700];

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(p[1], 3);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		snprintf(cf, sizeof(cf), "--config-file=%s", conf);
		execlp("dbus-daemon", "dbus-daemon", cf, "--nofork", "--nopidfile",
		       "--print-address=3", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (len < cap - 1 && (n = read(p[0], addr + len, cap - 1 - len)) > 0) {
		len += (size_t)n;
		if (memchr(addr, '\n', len))
			break;
	}
	close(p[0]);
	addr[len] = '\0';
	addr[strcspn(addr, "\n")] = '\0';
	if (!addr[0])
		mkt_bail("the activation bus did not start");
	return pid;
}

static pid_t owner_pid(DBusConnection *c)
{
	DBusMessage *m = dbus_message_new_method_call(DBUS_SERVICE_DBUS, DBUS_PATH_DBUS,
						      DBUS_INTERFACE_DBUS,
						      "GetConnectionUnixProcessID"),
		    *r;
	const char *name = AGENT_NAME;
	dbus_uint32_t pid = 0;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &name, DBUS_TYPE_INVALID);
	r = agent_send(c, m, 10000, NULL, 0, NULL, 0);
	if (r) {
		dbus_message_get_args(r, NULL, DBUS_TYPE_UINT32, &pid, DBUS_TYPE_INVALID);
		dbus_message_unref(r);
	}
	return (pid_t)pid;
}

int main(void)
{
	char addr[512], dir[700], path[800], xdg[600], exe[700], link[800];
	const char *src = getenv("MLSKEY_SOURCE_ROOT");
	DBusConnection *c;
	DBusMessage *r;
	run_result *res = malloc(sizeof(*res));
	pid_t bus, agent;
	ssize_t n;
	FILE *f;

	/* the service file meson generates for installation */
	run_list(res, "cat", mkt_build_path("ipc/org.mlskey.Agent1.service"), NULL);
	mkt_ok(res->status == 0 && strstr(res->out, "[D-BUS Service]") &&
		       strstr(res->out, "Name=org.mlskey.Agent1\n") &&
		       strstr(res->out, "/bin/mlskeyd") &&
		       strstr(res->out, "SystemdService=mlskeyd.service\n"),
	       "the build makes org.mlskey.Agent1.service (Name, Exec, SystemdService)");
	run_list(res, "cat", mkt_build_path("ipc/mlskeyd.service"), NULL);
	mkt_ok(res->status == 0 && strstr(res->out, "Type=dbus") &&
		       strstr(res->out, "BusName=org.mlskey.Agent1"),
	       "and the systemd user unit it names (Type=dbus, BusName)");

	mkt_softhsm_setup();
	mkt_softhsm_add_token("alice");
	snprintf(tmp, sizeof(tmp), "%s", mkt_tmpdir());
	snprintf(xdg, sizeof(xdg), "%s/xdg-config", tmp);
	mkdir(xdg, 0700);
	setenv("XDG_CONFIG_HOME", xdg, 1);
	snprintf(dir, sizeof(dir), "%s/services", tmp);
	if (mkdir(dir, 0700) < 0)
		mkt_bail("mkdir %s", dir);
	snprintf(exe, sizeof(exe), "%s", mkt_build_path("ipc/mlskeyd"));
	snprintf(path, sizeof(path), "%s/org.mlskey.Agent1.service", dir);
	f = fopen(path, "we");
	if (!f)
		mkt_bail("cannot write %s", path);
	fprintf(f,
		"[D-BUS Service]\nName=org.mlskey.Agent1\n"
		"Exec=%s --session --no-p11-kit --module %s --pinentry %s/tests/pinentry-test "
		"--foreground\n",
		exe, mkt_softhsm_module(), src ? src : "..");
	fclose(f);

	bus = start_bus(addr, sizeof(addr));
	unsetenv("DBUS_SESSION_BUS_ADDRESS"); /* the agent must find the bus by activation */
	c = bus_open(addr);
	mkt_ok(!dbus_bus_name_has_owner(c, AGENT_NAME, NULL), "nobody owns %s yet", AGENT_NAME);
	r = agent_send(c, agent_call_new("ListTokens"), 20000, NULL, 0, NULL, 0);
	mkt_ok(r && dbus_message_has_signature(r, "a(sa{sv})"),
	       "the first call starts mlskeyd and is answered");
	if (r)
		dbus_message_unref(r);
	agent = owner_pid(c);
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)agent);
	n = readlink(link, path, sizeof(path) - 1);
	path[n > 0 ? n : 0] = '\0';
	mkt_ok(agent > 0 && strstr(path, "mlskeyd"), "the owner is mlskeyd (pid %d, %s)",
	       (int)agent, path);
	if (agent > 0) {
		kill(agent, SIGTERM);
		for (int i = 0; i < 500 && dbus_bus_name_has_owner(c, AGENT_NAME, NULL); i++)
			usleep(10000);
		mkt_ok(!dbus_bus_name_has_owner(c, AGENT_NAME, NULL),
		       "on SIGTERM it stops and gives up the name");
	}
	bus_close(c);
	kill(bus, SIGTERM);
	waitpid(bus, NULL, 0);
	free(res);
	return mkt_done();
}
