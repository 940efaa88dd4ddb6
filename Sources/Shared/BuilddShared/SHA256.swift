internal import CLibCrypto

/// A streaming digest through OpenSSL's EVP interface (libcrypto, which librabbitmq links already: both
/// daemons have it mapped, so using it costs the agent no memory, where swift-crypto's static BoringSSL
/// added 0.8 MiB to its idle RSS). A context is freed when the last copy of the digest goes.
final class EVPDigest: @unchecked Sendable {
    private let context: OpaquePointer
    let size: Int

    init(_ algorithm: OpaquePointer) {
        context = EVP_MD_CTX_new()!
        size = Int(EVP_MD_get_size(algorithm))
        EVP_DigestInit_ex(context, algorithm, nil)
    }

    private init(copying other: EVPDigest) {
        context = EVP_MD_CTX_new()!
        size = other.size
        EVP_MD_CTX_copy_ex(context, other.context)
    }

    deinit { EVP_MD_CTX_free(context) }

    func copy() -> EVPDigest { EVPDigest(copying: self) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) }
    }

    func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if bytes.withContiguousStorageIfAvailable({ update(UnsafeRawBufferPointer($0)) }) == nil {
            Array(bytes).withUnsafeBytes { update($0) }
        }
    }

    func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &length)
        return Array(digest.prefix(Int(length)))
    }
}

/// A digest algorithm of libcrypto's.
public protocol DigestAlgorithm: Sendable {
    static func algorithm() -> OpaquePointer
}

/// SHA-256.
public enum SHA256Algorithm: DigestAlgorithm {
    public static func algorithm() -> OpaquePointer { EVP_sha256() }
}

/// SHA-1, which launchpad-buildd names files by (never used to trust content: every file is also checked
/// by its SHA-256).
public enum SHA1Algorithm: DigestAlgorithm {
    public static func algorithm() -> OpaquePointer { EVP_sha1() }
}

/// A streaming digest (value semantics: a copy goes on from where the original was).
public struct Digest<Algorithm: DigestAlgorithm>: Sendable {
    private var digest = EVPDigest(Algorithm.algorithm())

    public init() {}

    /// Feeds bytes.
    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if !isKnownUniquelyReferenced(&digest) { digest = digest.copy() }
        digest.update(bytes)
    }

    /// Feeds the UTF-8 bytes of a string.
    public mutating func update(string: String) { update(Array(string.utf8)) }

    /// The digest's bytes (32 for SHA-256, 20 for SHA-1).
    public mutating func finalize() -> [UInt8] {
        if !isKnownUniquelyReferenced(&digest) { digest = digest.copy() }
        return digest.finalize()
    }

    /// The digest as lowercase hex digits.
    public mutating func finalizeHex() -> String { BuilddShared.hex(finalize()) }

    /// The hex digest of some bytes.
    public static func hex<C: Collection>(of bytes: C) -> String where C.Element == UInt8 {
        var hasher = Self()
        hasher.update(bytes)
        return hasher.finalizeHex()
    }

    /// The hex digest of a string's UTF-8 bytes.
    public static func hex(of string: String) -> String { hex(of: Array(string.utf8)) }
}

public typealias SHA256 = Digest<SHA256Algorithm>
public typealias SHA1 = Digest<SHA1Algorithm>

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
