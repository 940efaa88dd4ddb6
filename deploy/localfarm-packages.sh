# deploy/localfarm packages: the Debian packages buildd-master and buildd-agent (sourced by deploy/localfarm).
#
#   deploy/localfarm packages [--version V] [--out DIR]
#
# Builds both binaries as release builds with the Swift standard library linked in (the packages need no
# Swift toolchain), then assembles each package with dpkg-deb from deploy/debian/ (control, maintainer
# scripts, copyright), deploy/systemd/ (the unit), deploy/examples/ (the example configuration, installed
# as a conffile or under /usr/share/doc) and a manual page made from the binary's --help. The version is
# BuilddRelease.version (Sources/Shared/BuilddShared/Release.swift) unless --version says otherwise.
# Dependencies come from dpkg-shlibdeps on the binaries. lintian must report no error and no warning.
# Writes DIR/buildd-master_V_ARCH.deb and DIR/buildd-agent_V_ARCH.deb (default DIR: .localfarm/packages).

release_version() {
    sed -n 's/.*public static let version = "\([^"]*\)".*/\1/p' "$ROOT/Sources/Shared/BuilddShared/Release.swift"
}

# build_release_binaries: sets RELEASE_BIN to the folder with the release buildd-master and buildd-agent.
build_release_binaries() {
    log "building buildd-master and buildd-agent (release, static Swift standard library)"
    local product
    for product in buildd-master buildd-agent; do
        (cd "$ROOT" && swift build -c release --static-swift-stdlib --product "$product" 2>&1 \
            | grep -Ev '^\[[0-9]+/[0-9]+\] |^$' | grep -E 'error|warning: unre' >&2) || true
    done
    RELEASE_BIN=$(cd "$ROOT" && swift build -c release --static-swift-stdlib --show-bin-path)
    [ -x "$RELEASE_BIN/buildd-master" ] && [ -x "$RELEASE_BIN/buildd-agent" ] || die "the release build failed"
}

# shlib_depends BINARY...: the Depends dpkg-shlibdeps finds for the binaries.
shlib_depends() {
    local work
    work=$(mktemp -d)
    mkdir -p "$work/debian"
    printf 'Source: buildd\n\nPackage: buildd\nArchitecture: any\n' > "$work/debian/control"
    (cd "$work" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
    rm -rf "$work"
}

# man_page NAME SECTION BINARY: a manual page from the binary's --help (and its subcommands'), on stdout.
man_page() {
    local name=$1 section=$2 binary=$3 upper
    upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
    printf '.TH %s %s "%s" "buildd %s" "buildd"\n' "$upper" "$section" "$(date -u -d "@${SOURCE_DATE_EPOCH:-0}" +%Y-%m-%d)" "$VERSION"
    printf '.SH NAME\n%s \\- %s\n' "$name" "$("$binary" --help | head -n 1 | sed 's/^OVERVIEW: //; s/\.$//')"
    printf '.SH SYNOPSIS\n.B %s\n.I subcommand\n[\\fIoptions\\fR]\n' "$name"
    printf '.SH DESCRIPTION\n.nf\n'
    "$binary" --help | sed 's/\\/\\e/g; s/^\./\\\&./'
    local sub
    for sub in $("$binary" --help | sed -n '/^SUBCOMMANDS:/,/^$/p' | awk 'NR > 1 && NF { print $1 }'); do
        printf '\n.fi\n.SS %s\n.nf\n' "$sub"
        "$binary" "$sub" --help 2>/dev/null | sed 's/\\/\\e/g; s/^\./\\\&./'
    done
    printf '.fi\n.SH SEE ALSO\n/usr/share/doc/%s/README.Debian\n' "$name"
}

# debian_changelog PACKAGE: the package's Debian changelog (a native package: changelog.gz), on stdout.
debian_changelog() {
    printf '%s (%s) unstable; urgency=medium\n\n' "$1" "$VERSION"
    printf '  * buildd %s: see CHANGELOG.md.gz beside this file for what changed.\n\n' "$VERSION"
    printf ' -- buildd developers <buildd-dev@lists.example.org>  %s\n' \
        "$(date -u -R -d "@${SOURCE_DATE_EPOCH:-0}")"
}

# make_package NAME ROOT: DEBIAN/ from deploy/debian/NAME.*, then dpkg-deb; prints the .deb's path.
make_package() {
    local name=$1 tree=$2 deb script
    mkdir -p "$tree/DEBIAN"
    for script in postinst prerm postrm; do
        install -m 0755 "$ROOT/deploy/debian/$name.$script" "$tree/DEBIAN/$script"
    done
    (cd "$tree" && find etc -type f 2>/dev/null | sed 's|^|/|' | sort) > "$tree/DEBIAN/conffiles"
    [ -s "$tree/DEBIAN/conffiles" ] || rm -f "$tree/DEBIAN/conffiles"
    local depends size
    depends=$(shlib_depends "$tree/usr/bin/$name")
    size=$(du -k -s --exclude=DEBIAN "$tree" | cut -f1)
    sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" \
        "$ROOT/deploy/debian/$name.control" > "$tree/DEBIAN/control"
    (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) \
        > "$tree/DEBIAN/md5sums"
    deb=$OUT/${name}_${VERSION}_$ARCH.deb
    dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
    echo "$deb"
}

# doc_files NAME TREE: copyright, changelogs, README.Debian.
doc_files() {
    local name=$1 tree=$2 doc=$2/usr/share/doc/$1
    install -d -m 0755 "$doc"
    install -m 0644 "$ROOT/deploy/debian/copyright" "$doc/copyright"
    debian_changelog "$name" | gzip -9n > "$doc/changelog.gz"
    gzip -9n < "$ROOT/CHANGELOG.md" > "$doc/CHANGELOG.md.gz"
    install -m 0644 "$ROOT/deploy/debian/$name.README.Debian" "$doc/README.Debian"
}

# package_common NAME TREE: what both packages hold in the same places: the stripped binary, its unit, the
# documentation and the manual page.
package_common() {
    local name=$1 tree=$2
    install -d -m 0755 "$tree/usr/bin" "$tree/lib/systemd/system" "$tree/usr/share/man/man8" \
        "$tree/usr/share/doc/$name/examples"
    install -m 0755 "$RELEASE_BIN/$name" "$tree/usr/bin/$name"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$tree/usr/bin/$name"
    install -m 0644 "$ROOT/deploy/systemd/$name.service" "$tree/lib/systemd/system/"
    doc_files "$name" "$tree"
    man_page "$name" 8 "$tree/usr/bin/$name" | gzip -9n > "$tree/usr/share/man/man8/$name.8.gz"
}

cmd_packages() {
    VERSION=""
    OUT=$STATE/packages
    while [ $# -gt 0 ]; do
        case "$1" in
            --version) VERSION=$2; shift 2 ;;
            --out) OUT=$2; shift 2 ;;
            *) die "usage: deploy/localfarm packages [--version V] [--out DIR]" ;;
        esac
    done
    [ -n "$VERSION" ] || VERSION=$(release_version)
    [[ $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "bad version '$VERSION'"
    command -v dpkg-shlibdeps >/dev/null || apt_install dpkg-dev
    command -v lintian >/dev/null || apt_install lintian
    ARCH=$(dpkg --print-architecture)
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
    build_release_binaries
    mkdir -p "$OUT"
    local work=$STATE/packages-work
    rm -rf "$work"

    log "assembling buildd-master $VERSION"
    local tree=$work/buildd-master
    package_common buildd-master "$tree"
    install -d -m 0755 "$tree/etc/buildd"
    # A conffile (placeholders only); the postinst makes it 0640 root:buildd, as it will hold passwords.
    install -m 0644 "$ROOT/deploy/examples/master.env" "$tree/etc/buildd/master.env"
    install -m 0755 "$ROOT/deploy/rabbitmq/add-master-user" "$ROOT/deploy/rabbitmq/enrol-agent" \
        "$ROOT/deploy/rabbitmq/add-event-subscriber" "$tree/usr/share/doc/buildd-master/examples/"
    install -m 0644 "$ROOT/deploy/rabbitmq/definitions.json" "$tree/usr/share/doc/buildd-master/examples/"
    local master_deb
    master_deb=$(make_package buildd-master "$tree")

    log "assembling buildd-agent $VERSION"
    tree=$work/buildd-agent
    package_common buildd-agent "$tree"
    install -d -m 0755 "$tree/etc/default" "$tree/usr/share/buildd"
    install -m 0644 "$ROOT/deploy/debian/buildd-agent.default" "$tree/etc/default/buildd-agent"
    install -m 0755 "$ROOT/deploy/examples/binarypackage" "$ROOT/deploy/examples/sample-build" "$tree/usr/share/buildd/"
    install -m 0644 "$ROOT/deploy/examples/agent.conf" "$tree/usr/share/doc/buildd-agent/examples/"
    local agent_deb
    agent_deb=$(make_package buildd-agent "$tree")

    log "lintian (no error or warning may remain)"
    local report=$OUT/lintian.txt
    lintian --fail-on error,warning \
        "$master_deb" "$agent_deb" > "$report" 2>&1 || { cat "$report" >&2; die "lintian found problems (above)"; }
    [ -s "$report" ] && sed 's/^/  /' "$report" >&2
    log "packages: $master_deb $agent_deb"
    echo "$master_deb"
    echo "$agent_deb"
}
