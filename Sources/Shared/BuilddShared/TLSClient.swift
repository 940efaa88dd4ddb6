import CLibSSL

#if canImport(Glibc)
import Glibc
#endif

/// Which certificate authorities an HTTPS client trusts: the system's store, or one CA file (a farm's
/// private CA). Every connection checks the certificate chain and the host name (or IP address) of the
/// URL; TLS 1.2 is the oldest spoken.
///
/// Made once and shared: an `SSL_CTX` is safe to use from many threads once it is set up.
public final class TLSTrust: @unchecked Sendable {
    let context: OpaquePointer
    /// What the trust is, for messages: "the system's CA store" or the CA file's path.
    public let origin: String

    /// The system's trust store (OpenSSL's default paths).
    public static let system: TLSTrust = {
        do { return try TLSTrust(caFile: nil) } catch { fatalError("cannot set up TLS: \(error)") }
    }()

    /// - Parameter caFile: a PEM file of the CAs to trust instead of the system's; nil for the system's.
    public init(caFile: String?) throws {
        guard let context = SSL_CTX_new(TLS_client_method()) else { throw TLSFailure("SSL_CTX_new failed: \(TLSFailure.queue())") }
        self.context = context
        origin = caFile ?? "the system's CA store"
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        guard buildd_ssl_ctx_min_tls12(context) == 1 else { throw TLSFailure("cannot require TLS 1.2: \(TLSFailure.queue())") }
        if let caFile {
            guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
                throw TLSFailure("cannot read CA file \(caFile): \(TLSFailure.queue())")
            }
        } else {
            guard SSL_CTX_set_default_verify_paths(context) == 1 else {
                throw TLSFailure("cannot load the system's CA store: \(TLSFailure.queue())")
            }
        }
    }

    deinit { SSL_CTX_free(context) }

    /// Starts TLS on a connected socket to `host` and checks its certificate; the session reads and
    /// writes through the socket, whose send and receive timeouts still apply.
    func connect(descriptor: Int32, host: String) throws -> TLSSession {
        guard let ssl = SSL_new(context) else { throw TLSFailure("SSL_new failed: \(TLSFailure.queue())") }
        let session = TLSSession(ssl: ssl)
        var address = in6_addr()
        let isAddress = inet_pton(AF_INET, host, &address) == 1 || inet_pton(AF_INET6, host, &address) == 1
        if isAddress {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {
                throw TLSFailure("cannot check the address \(host)")
            }
        } else {
            guard SSL_set1_host(ssl, host) == 1, buildd_ssl_set_sni(ssl, host) == 1 else {
                throw TLSFailure("cannot check the host name \(host)")
            }
        }
        SSL_set_fd(ssl, descriptor)
        ERR_clear_error()
        let result = SSL_connect(ssl)
        guard result == 1 else {
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                let reason = X509_verify_cert_error_string(verify).map { String(cString: $0) } ?? "code \(verify)"
                throw TLSFailure("the certificate of \(host) is not trusted (\(reason)); trusting \(origin)")
            }
            throw TLSFailure("TLS handshake with \(host) failed: \(session.error(result))")
        }
        return session
    }
}

/// One TLS connection (owns its `SSL`, not the socket).
final class TLSSession {
    let ssl: OpaquePointer
    private var closed = false

    init(ssl: OpaquePointer) { self.ssl = ssl }

    /// Says goodbye (close_notify) and frees the session; call it before the socket is closed, so that
    /// nothing is written to a descriptor number another thread may already have reused.
    func close() {
        guard !closed else { return }
        closed = true
        SSL_shutdown(ssl)
        SSL_free(ssl)
    }

    deinit { close() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            ERR_clear_error()
            let written = SSL_write(ssl, bytes.baseAddress! + offset, Int32(min(bytes.count - offset, Int(Int32.max))))
            guard written > 0 else { throw TLSFailure("TLS write failed: \(error(written))") }
            offset += Int(written)
        }
    }

    /// Bytes read, 0 at the end of the stream.
    func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            ERR_clear_error()
            let count = SSL_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
            if count > 0 { return Int(count) }
            switch SSL_get_error(ssl, count) {
            case SSL_ERROR_ZERO_RETURN: return 0
            case SSL_ERROR_SYSCALL where errno == EINTR: continue
            case SSL_ERROR_SYSCALL where errno == EAGAIN || errno == EWOULDBLOCK:
                throw TLSFailure("timed out waiting for the response")
            // A peer that closes without close_notify: the end of a `Connection: close` response.
            case SSL_ERROR_SYSCALL where count == 0: return 0
            case SSL_ERROR_SSL where ERR_GET_REASON_shim(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING: return 0
            default: throw TLSFailure("TLS read failed: \(error(count))")
            }
        }
    }

    func error(_ result: Int32) -> String {
        let code = SSL_get_error(ssl, result)
        let queued = TLSFailure.queue()
        if code == SSL_ERROR_SYSCALL { return queued.isEmpty ? String(cString: strerror(errno)) : queued }
        return queued.isEmpty ? "SSL error \(code)" : queued
    }
}

/// ERR_GET_REASON is a macro in OpenSSL 3.
@inline(__always) func ERR_GET_REASON_shim(_ code: UInt) -> Int32 { Int32(code & 0x7FFFFF) }

public struct TLSFailure: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }

    /// OpenSSL's error queue as text (and emptied).
    static func queue() -> String {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.joined(separator: "; ")
    }
}
