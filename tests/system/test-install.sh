#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# System test: `meson install` into a scratch DESTDIR puts every file where an operator and
# a client program expect it, and what it installs works from there (TAP output).
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

command -v cc >/dev/null || { echo "1..0 # SKIP no C compiler to build a client"; exit 0; }
command -v pkg-config >/dev/null || { echo "1..0 # SKIP pkg-config not installed"; exit 0; }

dest=$(mktemp -d "${TMPDIR:-/tmp}/mlskey-install-XXXXXX")
trap 'rm -rf "$dest"' EXIT

intro=$(meson introspect "$build" --buildoptions 2>/dev/null)
opt() { python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]==sys.argv[1]))' "$1" <<<"$intro"; }
prefix=$(opt prefix)
libdir=$(opt libdir)
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
root=$dest$prefix

check "meson install --destdir succeeds" meson install -C "$build" --no-rebuild --destdir "$dest" --quiet

check "mlskeyd installed in bin" test -x "$root/bin/mlskeyd"
check "mlskey CLI installed in bin" test -x "$root/bin/mlskey"
check "libmlskey.so.0 is a link to the versioned library" \
	bash -c "test -L '$dest$libdir/libmlskey.so.0' && test -f \"\$(readlink -f '$dest$libdir/libmlskey.so.0')\""
check "development link libmlskey.so installed" test -L "$dest$libdir/libmlskey.so"
check "header installed as <mlskey/mlskey.h>" test -f "$root/include/mlskey/mlskey.h"
pc=$dest$libdir/pkgconfig/mlskey.pc
check "pkg-config file installed" test -f "$pc"
check "interface XML installed in the D-Bus interfaces directory" \
	cmp "$src/ipc/org.mlskey.Agent1.xml" "$root/share/dbus-1/interfaces/org.mlskey.Agent1.xml"
svc=$root/share/dbus-1/services/org.mlskey.Agent1.service
check "D-Bus activation file installed" test -f "$svc"
check "activation file names the installed mlskeyd" grep -qx "Exec=$prefix/bin/mlskeyd.*" "$svc"
check "activation file names the bus name" grep -qx "Name=org.mlskey.Agent1" "$svc"
unit=$(find "$dest" -path '*/systemd/user/mlskeyd.service' | head -n 1)
check "systemd user unit installed" test -n "$unit"
check "user unit is Type=dbus with the bus name" \
	bash -c "grep -qx 'Type=dbus' '$unit' && grep -qx 'BusName=org.mlskey.Agent1' '$unit'"
# issue 6: HSM servers (system unit, bus policy, system activation, sysusers) and udev rules
check "activation file starts the user unit through systemd" grep -qx "SystemdService=mlskeyd.service" "$svc"
sysunit=$(find "$dest" -path '*/systemd/system/mlskeyd-system.service' | head -n 1)
check "systemd system unit installed" test -n "$sysunit"
check "system unit runs the installed mlskeyd on the system bus" \
	grep -qx "ExecStart=$prefix/bin/mlskeyd --system" "$sysunit"
check "D-Bus system bus policy installed" test -f "$root/share/dbus-1/system.d/org.mlskey.Agent1.conf"
check "D-Bus system activation file installed, naming the system unit" \
	grep -qx "SystemdService=mlskeyd-system.service" "$root/share/dbus-1/system-services/org.mlskey.Agent1.service"
check "sysusers entry for the mlskey user installed" \
	bash -c "find '$dest' -path '*/sysusers.d/mlskey.conf' | grep -q ."
check "udev rules installed in udev's rules.d" \
	bash -c "find '$dest' -path '*/udev/rules.d/70-mlskey.rules' | grep -q ."
check "nothing installed outside the prefix" \
	bash -c "cd '$dest' && ! find . -type f | grep -v '^.$prefix/'"

out=$("$root/bin/mlskeyd" --version 2>&1)
ok $? "installed mlskeyd runs: $out"
out=$(LD_LIBRARY_PATH=$dest$libdir "$root/bin/mlskey" --version 2>&1)
ok $? "installed mlskey runs against the installed libmlskey: $out"
check "installed mlskey finds libmlskey.so.0 in the install libdir" \
	bash -c "LD_LIBRARY_PATH='$dest$libdir' ldd '$root/bin/mlskey' | grep -q '$dest$libdir/libmlskey.so.0'"

flags=$(PKG_CONFIG_PATH=$dest$libdir/pkgconfig pkg-config --define-variable=prefix="$root" --cflags --libs mlskey 2>&1)
ok $? "pkg-config --cflags --libs mlskey: $flags"
# A client program built against the installed files only, as a packager would.
cc -o "$dest/example" "$src/clients/example.c" $flags >"$dest/cc.log" 2>&1
ok $? "clients/example.c builds against the installed header and library"
[ -s "$dest/cc.log" ] && sed 's/^/# /' "$dest/cc.log"
check "that client links libmlskey.so.0 (the soname)" \
	bash -c "readelf -d '$dest/example' | grep -q 'NEEDED.*libmlskey.so.0'"

echo "1..$n"
[ "$failed" -eq 0 ]
