/// Which live master follows which legacy (launchpad-buildd) builder: rendezvous hashing, so each master
/// follows a fair share and a master that joins or leaves moves only the builders it wins or held.
///
/// Each master computes the same answer from the same names: for a builder, every live master gets a
/// weight from a hash of the two names, and the heaviest follows it. A builder changes hands only when
/// its winner joins or leaves; the per-builder ownership lease in the database keeps two masters from
/// following one builder while they disagree about who is alive.
public enum LegacyShare {
    /// The master that follows `builder` among `masters` (nil when there is none).
    public static func owner(of builder: String, among masters: some Sequence<String>) -> String? {
        var best: (master: String, weight: UInt64)?
        for master in masters {
            let weight = self.weight(master: master, builder: builder)
            // Ties (astronomically rare) go to the smaller name, so every master picks the same one.
            if best == nil || weight > best!.weight || (weight == best!.weight && master < best!.master) {
                best = (master, weight)
            }
        }
        return best?.master
    }

    /// The builders of `builders` that `master` follows among `masters`.
    public static func share(of master: String, builders: [String], among masters: [String]) -> [String] {
        builders.filter { owner(of: $0, among: masters) == master }
    }

    /// FNV-1a over `master`, a zero byte and `builder`, then SplitMix64's finaliser to spread the bits.
    static func weight(master: String, builder: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in master.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        hash = (hash ^ 0) &* 0x0000_0100_0000_01b3
        for byte in builder.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }
}
