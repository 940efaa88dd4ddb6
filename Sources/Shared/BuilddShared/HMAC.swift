internal import CLibCrypto

/// HMAC-SHA256 through OpenSSL's libcrypto (already linked for the digests): what signs webhook deliveries.
public enum HMACSHA256 {
    /// The MAC of `message` under `key`, as lowercase hex.
    public static func hex(key: [UInt8], message: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                _ = HMAC(EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count),
                         messageBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), messageBytes.count, &out, &length)
            }
        }
        return BuilddShared.hex(out.prefix(Int(length)))
    }

    /// The signature header of a webhook delivery: `t=UNIX,sha256=HMAC(secret, "UNIX." + body)`. The time in
    /// the signed text lets a receiver refuse a replay.
    public static func signature(secret: String, timestamp: Int, body: [UInt8]) -> String {
        "t=\(timestamp),sha256=" + hex(key: Array(secret.utf8), message: Array("\(timestamp).".utf8) + body)
    }
}
