/// A Debian package version, `[epoch:]upstream[-revision]`, ordered as dpkg orders them (deb-version(7)):
/// epochs numerically, then upstream and revision by dpkg's comparison, where `~` sorts before anything,
/// even the end of the string, letters before other characters, and runs of digits compare as numbers.
public struct DebianVersion: Comparable, Hashable, Sendable, CustomStringConvertible {
    public let epoch: Int
    public let upstream: String
    public let revision: String

    /// Parses a version; nil when it is not one (empty, a bad epoch, an upstream that does not start with a
    /// digit, or a character dpkg does not allow).
    public init?(_ text: String) {
        var rest = Substring(text)
        var epoch = 0
        if let colon = rest.firstIndex(of: ":") {
            guard let value = Int(rest[..<colon]), value >= 0 else { return nil }
            epoch = value
            rest = rest[rest.index(after: colon)...]
        }
        var revision = ""
        if let hyphen = rest.lastIndex(of: "-") {
            revision = String(rest[rest.index(after: hyphen)...])
            rest = rest[..<hyphen]
            guard !revision.isEmpty, revision.utf8.allSatisfy(Self.allowedInRevision) else { return nil }
        }
        guard let first = rest.utf8.first, Self.isDigit(first),
              rest.utf8.allSatisfy({ Self.allowedInRevision($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ":") })
        else { return nil }
        self.epoch = epoch
        upstream = String(rest)
        self.revision = revision
    }

    public var description: String {
        (epoch != 0 ? "\(epoch):" : "") + upstream + (revision.isEmpty ? "" : "-\(revision)")
    }

    public static func < (lhs: DebianVersion, rhs: DebianVersion) -> Bool { compare(lhs, rhs) < 0 }

    public static func == (lhs: DebianVersion, rhs: DebianVersion) -> Bool { compare(lhs, rhs) == 0 }

    public func hash(into hasher: inout Hasher) {
        // Equal versions may be spelt differently ("1.0" and "1.00", "1.0" and "0:1.0"): hash what they share.
        hasher.combine(epoch)
    }

    /// dpkg's three-way comparison: negative, zero or positive.
    public static func compare(_ lhs: DebianVersion, _ rhs: DebianVersion) -> Int {
        if lhs.epoch != rhs.epoch { return lhs.epoch < rhs.epoch ? -1 : 1 }
        let upstream = compare(Array(lhs.upstream.utf8), Array(rhs.upstream.utf8))
        if upstream != 0 { return upstream }
        return compare(Array(lhs.revision.utf8), Array(rhs.revision.utf8))
    }

    /// dpkg's `verrevcmp` over one part.
    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var i = 0, j = 0
        while i < a.count || j < b.count {
            var firstDifference = 0
            while (i < a.count && !isDigit(a[i])) || (j < b.count && !isDigit(b[j])) {
                let left = order(i < a.count ? a[i] : nil), right = order(j < b.count ? b[j] : nil)
                if left != right { return left - right }
                i += 1
                j += 1
            }
            while i < a.count && a[i] == UInt8(ascii: "0") { i += 1 }
            while j < b.count && b[j] == UInt8(ascii: "0") { j += 1 }
            while i < a.count && isDigit(a[i]) && j < b.count && isDigit(b[j]) {
                if firstDifference == 0 { firstDifference = Int(a[i]) - Int(b[j]) }
                i += 1
                j += 1
            }
            if i < a.count && isDigit(a[i]) { return 1 }
            if j < b.count && isDigit(b[j]) { return -1 }
            if firstDifference != 0 { return firstDifference }
        }
        return 0
    }

    /// A character's weight: the end of the string 0, `~` -1, letters their code, others after letters.
    static func order(_ character: UInt8?) -> Int {
        guard let character else { return 0 }
        if isDigit(character) { return 0 }
        if isLetter(character) { return Int(character) }
        if character == UInt8(ascii: "~") { return -1 }
        return Int(character) + 256
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
    static func isLetter(_ byte: UInt8) -> Bool { (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) }
    static func allowedInRevision(_ byte: UInt8) -> Bool {
        isDigit(byte) || isLetter(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "~")
    }
}
