# Sourced by scripts/ and bench/: installs the Debian packages behind
# programs that are missing, so every script works on a fresh machine.
#
#   ensure_packages "PROGRAM PACKAGE..." ...
#
# PROGRAM is looked up on PATH and in /usr/sbin and /sbin; a PROGRAM that
# starts with / is a file that must exist. Returns 1 (installing nothing)
# when packages are missing and this is not root.
ensure_packages() {
    local missing=() pair prog pkgs
    for pair in "$@"; do
        read -r prog pkgs <<<"$pair"
        if [[ $prog == /* ]]; then
            [ -e "$prog" ] && continue
        elif command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || [ -x "/sbin/$prog" ]; then
            continue
        fi
        # shellcheck disable=SC2206 # one or more package names
        missing+=($pkgs)
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "not root: cannot install ${missing[*]}" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
