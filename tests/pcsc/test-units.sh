#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# System test: what the build makes for systemd, D-Bus and udev is accepted by them: the user
# and system units (systemd-analyze verify and security), the activation files wired to the
# units, the system bus policy (dbus-daemon loads it), the sysusers entry (systemd-sysusers
# makes the user) and the udev rules (their form, and what they ask for). TAP output.
set -u

build=${MLSKEY_BUILD_ROOT:?run under meson test}
src=${MLSKEY_SOURCE_ROOT:?run under meson test}
n=0
failed=0
ok() { # ok COND-EXIT-STATUS DESCRIPTION
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
check() { local d=$1; shift; "$@" >/dev/null 2>&1; ok $? "$d"; }
diag() { [ -n "$1" ] && sed 's/^/# /' <<<"$1"; }

command -v systemd-analyze >/dev/null ||
	{ echo "1..0 # SKIP systemd-analyze not installed (apt-get install systemd)"; exit 0; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlskey-units-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/run" && chmod 700 "$tmp/run"
export XDG_RUNTIME_DIR=$tmp/run # systemd-analyze --user needs one

user_unit=$build/ipc/mlskeyd.service
system_unit=$build/ipc/mlskeyd-system.service
# verify checks that ExecStart is there: point it at the build tree's mlskeyd
for u in "$user_unit" "$system_unit"; do
	sed "s|^ExecStart=[^ ]*/mlskeyd |ExecStart=$build/ipc/mlskeyd |" "$u" >"$tmp/$(basename "$u")"
done

out=$(systemd-analyze --user verify --recursive-errors=no --man=no "$tmp/mlskeyd.service" 2>&1)
ok $(( $? != 0 || ${#out} != 0 )) "systemd-analyze --user verify accepts mlskeyd.service, no warning"
diag "$out"
out=$(systemd-analyze verify --recursive-errors=no --man=no "$tmp/mlskeyd-system.service" 2>&1)
ok $(( $? != 0 || ${#out} != 0 )) "systemd-analyze verify accepts mlskeyd-system.service, no warning"
diag "$out"

for key in Type=dbus BusName=org.mlskey.Agent1 NoNewPrivileges=yes ProtectSystem=strict \
	PrivateTmp=yes RestrictAddressFamilies=AF_UNIX MemoryDenyWriteExecute=yes \
	LockPersonality=yes SystemCallFilter=@system-service RestrictNamespaces=yes \
	RestrictRealtime=yes ProtectKernelTunables=yes ProtectControlGroups=yes \
	SystemCallArchitectures=native UMask=0077 LimitCORE=0; do
	grep -qx "$key" "$user_unit"
	ok $? "user unit: $key"
done
# a user agent writes where the user keeps tokens: home stays writable, no ProtectHome=
check "user unit: home read-write (ReadWritePaths=-%h), no ProtectHome=" \
	bash -c "grep -qx 'ReadWritePaths=-%h' '$user_unit' && ! grep -q '^ProtectHome=' '$user_unit'"
for key in Type=dbus BusName=org.mlskey.Agent1 User=mlskey NoNewPrivileges=yes \
	ProtectSystem=strict ProtectHome=yes PrivateTmp=yes MemoryDenyWriteExecute=yes \
	SystemCallFilter=@system-service 'ExecStart=.*/mlskeyd --system'; do
	grep -qx "$key" "$system_unit"
	ok $? "system unit: $key"
done
# exposure as systemd rates it (0 best .. 10 worst; its scale for --threshold is 0..100)
out=$(systemd-analyze --user security --offline=yes --threshold=30 "$tmp/mlskeyd.service" 2>&1)
ok $? "user unit: systemd-analyze security rates it at most 3.0: $(grep -o 'exposure level.*' <<<"$out")"
out=$(systemd-analyze security --offline=yes --threshold=20 "$tmp/mlskeyd-system.service" 2>&1)
ok $? "system unit: systemd-analyze security rates it at most 2.0: $(grep -o 'exposure level.*' <<<"$out")"

# the activation files name the units, and the units the bus name
act=$build/ipc/org.mlskey.Agent1.service
check "session activation file: SystemdService=mlskeyd.service" grep -qx 'SystemdService=mlskeyd.service' "$act"
sys_act=$build/ipc/org.mlskey.Agent1.system.service
check "system activation file: Name, User=mlskey, SystemdService=mlskeyd-system.service" \
	bash -c "grep -qx 'Name=org.mlskey.Agent1' '$sys_act' && grep -qx 'User=mlskey' '$sys_act' &&
		grep -qx 'SystemdService=mlskeyd-system.service' '$sys_act'"

# the system bus policy: well-formed, and a dbus-daemon loads a configuration with it
policy=$src/ipc/org.mlskey.Agent1.conf
check "bus policy is well-formed XML" python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$policy"
if command -v dbus-daemon >/dev/null; then
	cat >"$tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/></policy>
  <include>$policy</include>
</busconfig>
CONF
	dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile --print-address=1 \
		>"$tmp/bus.addr" 2>"$tmp/bus.err" &
	bus=$!
	for _ in $(seq 100); do [ -s "$tmp/bus.addr" ] || ! kill -0 $bus 2>/dev/null && break; sleep 0.05; done
	grep -q '^unix:' "$tmp/bus.addr"
	ok $? "dbus-daemon loads a configuration with the policy and listens"
	diag "$(cat "$tmp/bus.err")"
	kill $bus 2>/dev/null
	wait $bus 2>/dev/null
else
	echo "# dbus-daemon not installed: the policy is checked as XML only"
fi
check "policy: user mlskey may own org.mlskey.Agent1" grep -q '<allow own="org.mlskey.Agent1"/>' "$policy"
check "policy: others may not call it" grep -q '<deny send_destination="org.mlskey.Agent1"/>' "$policy"

# sysusers: systemd-sysusers makes the user in a scratch root
if command -v systemd-sysusers >/dev/null; then
	mkdir -p "$tmp/root/etc"
	systemd-sysusers --root="$tmp/root" "$src/ipc/mlskey.sysusers.conf" >/dev/null 2>&1
	check "systemd-sysusers makes the system user mlskey from the sysusers entry" \
		grep -q '^mlskey:' "$tmp/root/etc/passwd"
fi

# udev rules: every rule line is KEY[{attr}] OP "value" pairs of keys udev knows, GOTOs land
rules=$src/udev/70-mlskey.rules
bad=$(python3 - "$rules" <<'PY'
import re, sys
known = {"ACTION", "SUBSYSTEM", "ENV", "ATTR", "ATTRS", "TAG", "GOTO", "LABEL", "IMPORT",
	 "DRIVER", "DRIVERS", "KERNEL", "SUBSYSTEMS"}
pair = re.compile(r'\s*([A-Z]+)(\{[^}]+\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(,|$)')
gotos, labels, bad = set(), set(), []
for no, line in enumerate(open(sys.argv[1]), 1):
	line = line.strip()
	if not line or line.startswith("#"):
		continue
	pos = 0
	while pos < len(line):
		m = pair.match(line, pos)
		if not m or m.group(1) not in known:
			bad.append(f"line {no}: {line[pos:pos + 40]}")
			break
		if m.group(1) == "GOTO":
			gotos.add(m.group(4))
		if m.group(1) == "LABEL":
			labels.add(m.group(4))
		pos = m.end()
bad += [f"GOTO {g} without LABEL" for g in gotos - labels]
print("\n".join(bad))
PY
)
ok $(( ${#bad} != 0 )) "udev rules: every line is well-formed, every GOTO has its LABEL"
diag "$bad"
check "udev rules: CCID readers by interface class 0x0b" grep -q 'ID_USB_INTERFACES}=="\*:0b????:\*"' "$rules"
check "udev rules: uaccess for them" grep -q 'TAG+="uaccess"' "$rules"
check "udev rules: ask the user's systemd for mlskeyd.service" \
	grep -q 'ENV{SYSTEMD_USER_WANTS}+="mlskeyd.service"' "$rules"
check "udev rules: a 70- name, before 73-seat-late applies uaccess" test -f "$src/udev/70-mlskey.rules"

echo "1..$n"
[ "$failed" -eq 0 ]
