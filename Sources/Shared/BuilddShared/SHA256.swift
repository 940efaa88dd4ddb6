internal import Crypto

/// SHA-256, streaming: swift-crypto's (BoringSSL's assembly where the processor has it), behind the
/// small interface both daemons use to check every artifact by its digest.
public struct SHA256: Sendable {
    private var hasher = Crypto.SHA256()

    public init() {}

    /// Feeds bytes.
    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if let done = bytes.withContiguousStorageIfAvailable({ hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }) {
            return done
        }
        hasher.update(data: Array(bytes))
    }

    /// Feeds the UTF-8 bytes of a string.
    public mutating func update(string: String) { update(Array(string.utf8)) }

    /// The digest as 32 bytes.
    public mutating func finalize() -> [UInt8] { Array(hasher.finalize()) }

    /// The digest as 64 lowercase hex digits.
    public mutating func finalizeHex() -> String { BuilddShared.hex(finalize()) }

    /// The hex SHA-256 of some bytes.
    public static func hex<C: Collection>(of bytes: C) -> String where C.Element == UInt8 {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalizeHex()
    }

    /// The hex SHA-256 of a string's UTF-8 bytes.
    public static func hex(of string: String) -> String { hex(of: Array(string.utf8)) }
}

/// SHA-1, which launchpad-buildd names files by (never used to trust content: every file is also checked
/// by its SHA-256): swift-crypto's `Insecure.SHA1`.
public struct SHA1: Sendable {
    private var hasher = Insecure.SHA1()

    public init() {}

    /// Feeds bytes.
    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if let done = bytes.withContiguousStorageIfAvailable({ hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }) {
            return done
        }
        hasher.update(data: Array(bytes))
    }

    /// The digest as 20 bytes.
    public mutating func finalize() -> [UInt8] { Array(hasher.finalize()) }

    /// The digest as 40 lowercase hex digits.
    public mutating func finalizeHex() -> String { BuilddShared.hex(finalize()) }

    /// The hex SHA-1 of some bytes.
    public static func hex<C: Collection>(of bytes: C) -> String where C.Element == UInt8 {
        var hasher = SHA1()
        hasher.update(bytes)
        return hasher.finalizeHex()
    }
}

/// Lowercase hex of bytes.
public func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// `count` random bytes as hex, from the system's CSPRNG.
public func randomHexToken(bytes count: Int = 24) -> String {
    var generator = SystemRandomNumberGenerator()
    return hex((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
}
