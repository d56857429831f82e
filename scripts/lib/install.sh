# Shared by the scripts/install-* scripts: the cache folder outside the
# checkout, a lock so that parallel tests install once, and Debian helpers.
# Source it; it defines functions and $cache only.

cache="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
mkdir -p "$cache"

# lock NAME: holds $cache/NAME.lock on fd 9 until the script exits.
lock() {
    exec 9>"$cache/$1.lock"
    flock -w 1800 9 || { echo "${0##*/}: timed out waiting for $cache/$1.lock" >&2; exit 1; }
}

# as_root CMD...: runs CMD as root (directly, or with sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_locked CMD...: runs CMD (a command or one of these functions) holding
# $cache/apt.lock. The installers run in parallel, and two apt-gets at once
# fail on apt's own locks rather than wait ("Could not get lock
# /var/lib/apt/lists/lock"), so every apt call of ours takes this lock first.
apt_locked() {
    (
        flock -w 1800 8 || { echo "${0##*/}: timed out waiting for $cache/apt.lock" >&2; exit 1; }
        "$@"
    ) 8>"$cache/apt.lock"
}

# apt_update_once: `apt-get update` at most once a day per machine.
apt_update_once() { apt_locked apt_update_unlocked; }
apt_update_unlocked() {
    local stamp="$cache/apt-updated"
    [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ] || return 0
    # A second try after a pause: an apt run that is not ours (the machine's
    # own, at boot) may hold the lists lock for a while.
    as_root apt-get update -qq >&2 || { sleep 20; as_root apt-get update -qq >&2; }
    touch "$stamp"
}

# add_bullseye_source: Debian bullseye's main suite as an apt source, from the
# same archive and keyring as the machine's own sources (for consul 1.8.7).
# Under the apt lock, so that an update that began before the source was
# added cannot mark the lists fresh after it.
add_bullseye_source() { apt_locked add_bullseye_unlocked; }
add_bullseye_unlocked() {
    local f=/etc/apt/sources.list.d/tributary-bullseye.sources
    [ ! -f "$f" ] || return 0
    as_root tee "$f" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    rm -f "$cache/apt-updated"
}

# deb_extract PACKAGE DIR: downloads PACKAGE's .deb and unpacks it into DIR
# (no install, no maintainer scripts).
deb_extract() {
    local pkg="$1" dir="$2" tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt_locked apt-get download -q "$pkg" >&2) || { rm -rf "$tmp"; return 1; }
    rm -rf "$dir.partial"
    dpkg -x "$tmp"/*.deb "$dir.partial"
    rm -rf "$tmp" "$dir"
    mv "$dir.partial" "$dir"
}

# apt_install PACKAGE...: installs the packages (services are not started
# where the machine's policy-rc.d forbids it). DPkg::Lock::Timeout makes apt
# wait for a dpkg run that is not ours.
apt_install() {
    apt_update_once
    apt_locked as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >&2
}
