/// A parsed `scheme://user:password@host:port/path?query` URL (amqp, amqps, http).
///
/// The password is kept out of `description`, so a URL can be logged safely.
public struct ServiceURL: Sendable, Equatable, CustomStringConvertible {
    public var scheme: String
    public var user: String?
    public var password: String?
    public var host: String
    public var port: Int
    /// The path with its leading slash, percent-decoded ("" when absent).
    public var path: String
    public var query: [String: String]

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let reason: String
        public var description: String { "invalid URL: \(reason)" }
    }

    public static let defaultPorts = ["amqp": 5672, "amqps": 5671, "http": 80, "https": 443]

    public init(parsing text: String) throws {
        guard let colon = text.firstIndex(of: ":"), text[colon...].hasPrefix("://") else {
            throw ParseError(reason: "missing scheme")
        }
        scheme = String(text[..<colon]).lowercased()
        var rest = Substring(text[text.index(colon, offsetBy: 3)...])
        var queryItems: [String: String] = [:]
        if let questionMark = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: questionMark)...].split(separator: "&") {
                // "=" alone gives two empty parts (a crash found by fuzzing the agent's configuration).
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = try Self.percentDecode(String(parts[0]))
                queryItems[key] = parts.count > 1 ? try Self.percentDecode(String(parts[1])) : ""
            }
            rest = rest[..<questionMark]
        }
        query = queryItems
        var authority = rest
        path = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = try Self.percentDecode(String(rest[slash...]))
        }
        user = nil
        password = nil
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = try Self.percentDecode(String(credentials[..<colon]))
                password = try Self.percentDecode(String(credentials[credentials.index(after: colon)...]))
            } else {
                user = try Self.percentDecode(String(credentials))
            }
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw ParseError(reason: "unclosed IPv6 address") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
            if authority.hasPrefix(":") { authority = authority.dropFirst() } else { authority = "" }
            port = authority.isEmpty ? (Self.defaultPorts[scheme] ?? 0) : (Int(authority) ?? -1)
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = Int(authority[authority.index(after: colon)...]) ?? -1
        } else {
            host = String(authority)
            port = Self.defaultPorts[scheme] ?? 0
        }
        guard !host.isEmpty else { throw ParseError(reason: "missing host") }
        guard (1...65535).contains(port) else { throw ParseError(reason: "bad port") }
    }

    /// `text` with any `user:password@` after its scheme replaced by `***@`, for a URL that is shown or
    /// logged as given (a private archive's, whose credentials are its whole secret); the rest unchanged.
    public static func withoutCredentials(_ text: String) -> String {
        guard let scheme = text.firstRange(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@"),
              !text[scheme.upperBound..<at].contains("/") else { return text }
        return String(text[..<scheme.upperBound]) + "***@" + String(text[text.index(after: at)...])
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        var text = "\(scheme)://"
        if let user { text += user + (password == nil ? "" : ":***") + "@" }
        text += host.contains(":") ? "[\(host)]" : host
        text += ":\(port)\(path)"
        return text
    }

    static func percentDecode(_ text: String) throws -> String {
        guard text.contains("%") else { return text }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { throw ParseError(reason: "bad percent escape") }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Percent-encodes everything but unreserved characters (for a vhost in a path segment).
    public static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            if (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || "-._~".unicodeScalars.contains(scalar) {
                out.unicodeScalars.append(scalar)
            } else {
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }
}
