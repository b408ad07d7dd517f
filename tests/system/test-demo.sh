#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# System test: the README's main command (scripts/demo) on the build under test does what
# it promises, step by step, and leaves nothing behind (TAP output).
set -u

build=${MLSKEY_BUILD_ROOT:?run under meson test}
src=${MLSKEY_SOURCE_ROOT:?run under meson test}
n=0
failed=0
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
has() { grep -qF -- "$1" "$out"; ok $? "$2"; }

for tool in softhsm2-util dbus-daemon openssl; do
	command -v "$tool" >/dev/null || { echo "1..0 # SKIP $tool not installed"; exit 0; }
done

out=$(mktemp "${TMPDIR:-/tmp}/mlskey-demo-out-XXXXXX")
trap 'rm -f "$out"' EXIT
MLSKEY_DEMO_BUILD=$build TMPDIR=${TMPDIR:-/tmp} "$src/scripts/demo" >"$out" 2>&1 </dev/null
ok $? "scripts/demo exits 0"
sed 's/^/# /' "$out" | head -n 200

has "serves org.mlskey.Agent1 on the private bus" "the agent starts on a private bus"
has "[demo PIN dialog] Please enter the PIN" "the PIN dialog is shown once a key needs the token"
has "ecdsa-p256 signature key, suite 2" "a signature key is generated and listed"
has "dhkem-p256 hpke key, suite 2" "an HPKE key is generated and listed"
has "generated on the token, never left it" "the keys' provenance is shown"
has "signature (DER): 30" "the token signs a SignContent (DER)"
grep -A1 -F 'mlskey verify "$SIG_KEY"' "$out" | grep -qx '     valid'
ok $? "VerifyWithLabel accepts the signature"
has "INVALID signature" "a forged content is refused"
has "Verified OK" "OpenSSL verifies the token's signature over the SignContent"
has "the Welcome secrets for alice" "the message sealed to the HPKE key opens through the agent"
has "org.mlskey.Error.DecryptFailed" "the same ciphertext under another label fails"
grep -A1 -F "mlskey tokens | grep 'logged in'" "$out" | grep -q 'present, not logged in'
ok $? "after Lock the token shows as not logged in"
has "SignWithLabel uid=" "the agent logged the signature with its caller"
has "done: the private key never left the token" "the demo ends"

dir=$(sed -n 's/.*token "mlskey demo" in \([^ ]*\) (SoftHSM2).*/\1/p' "$out")
[ -n "$dir" ] && [ ! -e "$dir" ]
ok $? "its private directory ${dir:-?} is removed"
pgrep -f "mlskeyd .*${dir:-/nonexistent}/" >/dev/null
[ $? -ne 0 ]
ok $? "no mlskeyd of the demo is left running"

echo "1..$n"
[ "$failed" -eq 0 ]
