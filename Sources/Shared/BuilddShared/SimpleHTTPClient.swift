#if canImport(Glibc)
import Glibc
#endif

/// A small blocking HTTP/1.1 client for agents' uploads and tests (one request per connection), over
/// HTTPS (OpenSSL's libssl, checking the certificate against `trust` and the URL's host) or plain http.
///
/// Call it from a thread of its own (``runBlocking(name:_:)``), never from the cooperative pool.
public enum SimpleHTTPClient {
    public struct Response: Sendable {
        public let status: Int
        public let headers: [String: String]
        public let body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// What to send as the request body.
    public enum Body: Sendable {
        case none
        case bytes([UInt8])
        /// A file, streamed from disk.
        case file(path: String)
    }

    /// One connection: a socket, with TLS over it for https.
    final class Connection {
        let descriptor: Int32
        let tls: TLSSession?

        /// - Parameter trust: for https; nil: the system's store (set up only when first needed: OpenSSL's
        ///   state costs a few MiB that a client of plain http never pays).
        init(_ parsed: ServiceURL, timeoutSeconds: Int, trust: TLSTrust?) throws {
            descriptor = try SimpleHTTPClient.connect(host: parsed.host, port: parsed.port, timeoutSeconds: timeoutSeconds)
            do {
                tls = parsed.scheme == "https" ? try (trust ?? .system).connect(descriptor: descriptor, host: parsed.host) : nil
            } catch {
                Glibc.close(descriptor)
                throw error
            }
        }

        deinit {
            tls?.close()
            Glibc.close(descriptor)
        }

        func send(_ bytes: [UInt8]) throws { try send(bytes[...]) }

        func send(_ bytes: ArraySlice<UInt8>) throws {
            guard let tls else { return try SimpleHTTPClient.sendAll(descriptor, Array(bytes)) }
            do { try bytes.withUnsafeBytes { try tls.write($0) } } catch { throw Failure(description: "\(error)") }
        }

        /// Bytes read into `buffer`, 0 at the end of the stream.
        func receive(_ buffer: inout [UInt8]) throws -> Int {
            if let tls {
                do { return try buffer.withUnsafeMutableBytes { try tls.read($0) } } catch {
                    throw Failure(description: "\(error)")
                }
            }
            while true {
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count >= 0 { return count }
                if errno == EINTR { continue }
                throw Failure(description: errno == EAGAIN ? "timed out waiting for the response" : "recv failed: \(errorText())")
            }
        }
    }

    /// Sends one request. `url` is `https://` or `http://[user:password@]host:port/path?query`; credentials
    /// become Basic auth. `progress` is told the bytes of a file body sent so far, after each chunk.
    public static func send(method: String, url: String, headers: [String: String] = [:], body: Body = .none,
                            timeoutSeconds: Int = 60, maxResponseBytes: Int = 16 << 20,
                            trust: TLSTrust? = nil, progress: (@Sendable (Int64) -> Void)? = nil) throws -> Response {
        let (parsed, target) = try requestTarget(url)
        let connection = try Connection(parsed, timeoutSeconds: timeoutSeconds, trust: trust)

        var fileDescriptor: Int32 = -1
        var length = 0
        switch body {
        case .none: length = 0
        case .bytes(let bytes): length = bytes.count
        case .file(let path):
            // Never through a link: a build's results are read as the files they are.
            fileDescriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fileDescriptor >= 0 else { throw Failure(description: "cannot open \(path): \(errorText())") }
            var info = stat()
            fstat(fileDescriptor, &info)
            length = Int(info.st_size)
        }
        defer { if fileDescriptor >= 0 { close(fileDescriptor) } }

        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(parsed.host):\(parsed.port)\r\nConnection: close\r\n"
        if let user = parsed.user {
            head += "Authorization: Basic \(base64(Array("\(user):\(parsed.password ?? "")".utf8)))\r\n"
        }
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            guard !name.contains("\r") && !name.contains("\n") && !value.contains("\r") && !value.contains("\n") else {
                throw Failure(description: "header \(name) contains a line break")
            }
            head += "\(name): \(value)\r\n"
        }
        if method != "GET" || length > 0 { head += "Content-Length: \(length)\r\n" }
        head += "\r\n"
        try connection.send(Array(head.utf8))
        switch body {
        case .none: break
        case .bytes(let bytes): try connection.send(bytes)
        case .file:
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            var sent: Int64 = 0
            while true {
                let count = read(fileDescriptor, &chunk, chunk.count)
                if count < 0 { throw Failure(description: "read failed: \(errorText())") }
                if count == 0 { break }
                try connection.send(chunk[0..<count])
                sent += Int64(count)
                progress?(sent)
            }
        }
        return try readResponse(connection, maxBytes: maxResponseBytes)
    }

    /// Downloads a body to `path` (replacing it), streaming, and returns its status, SHA-256 and size.
    /// Only a 200 response writes the file. `url` is `https://host:port/path` (or `http://`).
    public static func download(url: String, headers: [String: String] = [:], to path: String,
                                maxBytes: Int64, timeoutSeconds: Int = 300,
                                trust: TLSTrust? = nil) throws -> (status: Int, sha256: String, size: Int64) {
        let (parsed, target) = try requestTarget(url)
        let connection = try Connection(parsed, timeoutSeconds: timeoutSeconds, trust: trust)
        var head = "GET \(target) HTTP/1.1\r\nHost: \(parsed.host):\(parsed.port)\r\nConnection: close\r\n"
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { head += "\(name): \(value)\r\n" }
        try connection.send(Array((head + "\r\n").utf8))
        var buffered: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var headerEnd: Int?
        while headerEnd == nil {
            let count = try connection.receive(&chunk)
            guard count > 0 else { throw Failure(description: "connection closed before the response headers") }
            buffered.append(contentsOf: chunk[0..<count])
            headerEnd = findHeaderEnd(buffered)
            if headerEnd == nil && buffered.count > 64 * 1024 { throw Failure(description: "response headers too large") }
        }
        let statusLine = String(decoding: buffered[0..<headerEnd!], as: UTF8.self).split(separator: "\r\n").first ?? ""
        guard let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw Failure(description: "unreadable response")
        }
        guard status == 200 else { return (status, "", 0) }
        let file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard file >= 0 else { throw Failure(description: "cannot write \(path): \(errorText())") }
        defer { close(file) }
        var hasher = SHA256()
        var size: Int64 = 0
        func store(_ bytes: ArraySlice<UInt8>) throws {
            size += Int64(bytes.count)
            guard size <= maxBytes else { throw Failure(description: "download larger than \(maxBytes) bytes") }
            hasher.update(bytes)
            let written = bytes.withUnsafeBytes { write(file, $0.baseAddress, $0.count) }
            guard written == bytes.count else { throw Failure(description: "cannot write \(path): \(errorText())") }
        }
        try store(buffered[headerEnd!...])
        while true {
            let count = try connection.receive(&chunk)
            if count == 0 { break }
            try store(chunk[0..<count])
        }
        return (status, hasher.finalizeHex(), size)
    }

    /// The parsed http:// URL and the path-and-query to request.
    static func requestTarget(_ url: String) throws -> (ServiceURL, String) {
        let parsed: ServiceURL
        do { parsed = try ServiceURL(parsing: url) } catch { throw Failure(description: "bad URL: \(error)") }
        guard parsed.scheme == "http" || parsed.scheme == "https" else {
            throw Failure(description: "only https:// and http:// are supported")
        }
        guard let slash = url.dropFirst(parsed.scheme.count + 3).firstIndex(of: "/") else { return (parsed, "/") }
        return (parsed, String(url[slash...]))
    }

    static func errorText() -> String { String(cString: strerror(errno)) }

    public static func connect(host: String, port: Int, timeoutSeconds: Int) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw Failure(description: "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        var lastError = "no address"
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            candidate = info.pointee.ai_next
            let descriptor = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
                                    info.pointee.ai_protocol)
            if descriptor < 0 { lastError = errorText(); continue }
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            if Glibc.connect(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return descriptor }
            lastError = errorText()
            close(descriptor)
        }
        throw Failure(description: "cannot connect to \(host):\(port): \(lastError)")
    }

    public static func sendAll(_ descriptor: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "send failed: \(errorText())")
            }
            offset += sent
        }
    }

    static func readResponse(_ connection: Connection, maxBytes: Int) throws -> Response {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var headerEnd: Int?
        var expected: Int?
        var chunked = false
        var status = 0
        var headers: [String: String] = [:]
        while true {
            if let end = headerEnd, let expected, data.count - end >= expected { break }
            let count = try connection.receive(&chunk)
            if count == 0 { break }
            data.append(contentsOf: chunk[0..<count])
            guard data.count <= maxBytes else { throw Failure(description: "response larger than \(maxBytes) bytes") }
            if headerEnd == nil, let end = findHeaderEnd(data) {
                headerEnd = end
                let lines = String(decoding: data[0..<end - 4], as: UTF8.self).split(separator: "\r\n")
                guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1."),
                      let code = Int(statusLine.split(separator: " ").dropFirst().first ?? "")
                else { throw Failure(description: "unreadable response") }
                status = code
                for line in lines.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    let name = line[..<colon].lowercased()
                    headers[name] = line[line.index(after: colon)...].trimmed(" ")
                }
                expected = headers["content-length"].flatMap { Int($0) }
                chunked = headers["transfer-encoding"]?.lowercased().contains("chunked") == true
                if chunked { expected = nil }
            }
        }
        guard let end = headerEnd else { throw Failure(description: "connection closed before the response headers") }
        var body = Array(data[end...])
        if let expected { body = Array(body.prefix(expected)) }
        if chunked { body = try dechunk(body) }
        return Response(status: status, headers: headers, body: body)
    }

    static func findHeaderEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for index in 0...(data.count - 4)
        where data[index] == 13 && data[index + 1] == 10 && data[index + 2] == 13 && data[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    static func dechunk(_ data: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while index < data.count {
            guard let lineEnd = (index..<data.count - 1).first(where: { data[$0] == 13 && data[$0 + 1] == 10 }) else { break }
            let sizeText = String(decoding: data[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmed(" "), radix: 16) else {
                throw Failure(description: "bad chunk size")
            }
            if size == 0 { break }
            let start = lineEnd + 2
            guard start + size <= data.count else { throw Failure(description: "truncated chunk") }
            out.append(contentsOf: data[start..<start + size])
            index = start + size + 2
        }
        return out
    }

    /// Standard base64.
    public static func base64(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let b0 = bytes[index], b1 = index + 1 < bytes.count ? bytes[index + 1] : 0
            let b2 = index + 2 < bytes.count ? bytes[index + 2] : 0
            out.append(table[Int(b0 >> 2)])
            out.append(table[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(index + 1 < bytes.count ? table[Int((b1 & 0x0f) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(index + 2 < bytes.count ? table[Int(b2 & 0x3f)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Substring {
    /// The text without leading and trailing characters from `characters`.
    public func trimmed(_ characters: String) -> String {
        var slice = self
        while let first = slice.first, characters.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, characters.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}

extension String {
    /// The text without leading and trailing characters from `characters`.
    public func trimmed(_ characters: String) -> String { Substring(self).trimmed(characters) }
}
