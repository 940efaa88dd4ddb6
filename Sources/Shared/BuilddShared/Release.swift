/// This build's release, as `--version` prints it, its packages are numbered and `hello` announces it.
///
/// Which releases run together (README, "Upgrading a running farm"): masters and agents of two adjacent
/// releases, N and N+1, on one database and broker. A release's schema changes are expand-only
/// (``Migration/servableFrom``) until the release after it contracts them, and its wire messages only add
/// optional fields that older readers ignore, announced by a capability in `hello`.
public enum BuilddRelease {
    public static let version = "1.1.0"

    /// What this build's agents can do beyond the first release's messages, announced in `hello` so that a
    /// master of either release knows what the machine understands. The first release names its own, so
    /// later ones are told apart by what they add.
    public static let agentCapabilities = ["apt-sources", "chroot", "control-clean", "one-shot", "upload-key"]
}
