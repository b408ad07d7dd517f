# shellcheck shell=bash
# Helpers shared by scripts/setup, scripts/test and scripts/demo. Sourced, never run.
# The sourcing script sets mk_prog (the prefix of its messages) first.

mk_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

mk_say()
{
	printf '%s: %s\n' "${mk_prog:-mlskey}" "$*"
}

mk_die()
{
	printf '%s: error: %s\n' "${mk_prog:-mlskey}" "$*" >&2
	exit 1
}

# True when option NAME of the configured build dir DIR has VALUE (read from meson's
# introspection file, so no python and no meson start-up on the fast path).
mk_has_option()
{
	local dir=$1 name=$2 value=$3 intro=$1/meson-info/intro-buildoptions.json

	[[ -f $intro ]] || return 1
	grep -qF -e "\"name\": \"$name\", \"value\": $value," \
		-e "\"name\": \"$name\", \"value\": \"$value\"," "$intro"
}

# mk_configure DIR [NAME=VALUE...]: makes DIR a meson build dir of the source tree with these
# options. Does nothing when DIR is configured already with them (a changed meson.build is
# ninja's business: it re-runs meson by itself). Prints one line when it does something.
mk_configure()
{
	local dir=$1 opt missing=() args=() log
	shift
	for opt in "$@"; do
		args+=("-D$opt")
		mk_has_option "$dir" "${opt%%=*}" "${opt#*=}" || missing+=("-D$opt")
	done

	log=$(mktemp)
	if [[ -f $dir/build.ninja && -f $dir/meson-private/coredata.dat ]]; then
		((${#missing[@]})) || { rm -f "$log"; return 0; }
		mk_say "meson configure $dir ${missing[*]}"
		if ! meson configure "$dir" "${missing[@]}" >"$log" 2>&1; then
			cat "$log" >&2
			rm -f "$log"
			return 1
		fi
	else
		local how=()
		# A half-made dir (a setup that failed, an older meson) is configured afresh.
		[[ -f $dir/meson-private/coredata.dat ]] && how=(--wipe)
		mk_say "meson setup ${how[*]:+${how[*]} }$dir ${args[*]}"
		if ! meson setup "${how[@]}" "$dir" "$mk_root" "${args[@]}" >"$log" 2>&1; then
			cat "$log" >&2
			rm -f "$log"
			return 1
		fi
	fi
	rm -f "$log"
}

# mk_build DIR: builds DIR; ninja prints only compiler messages (warnings, errors).
mk_build()
{
	local dir=$1 t0=$SECONDS log

	# Re-running meson (after a meson.build changed) is chatty: show it only when it fails.
	log=$(mktemp)
	if ! ninja -C "$dir" --quiet build.ninja >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		mk_say "meson could not regenerate $dir"
		return 1
	fi
	rm -f "$log"
	if ninja -C "$dir" -n | grep -q '^ninja: no work to do'; then
		mk_say "$dir is up to date"
		return 0
	fi
	if ! ninja -C "$dir" --quiet; then
		mk_say "build of $dir FAILED"
		return 1
	fi
	mk_say "built $dir ($((SECONDS - t0)) s)"
}
