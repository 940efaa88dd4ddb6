import BuilddShared
import NIOCore
import Synchronization
import NIOHTTP1
import NIOPosix

/// Why an HTTP exchange with a legacy builder failed.
public enum LegacyHTTPError: Error, Equatable, CustomStringConvertible, Sendable {
    case refused(String)
    case timeout(seconds: Double)
    case status(Int)
    case tooLarge(limit: Int)
    case connectionClosed
    case badURL(String)
    case io(String)

    public var description: String {
        switch self {
        case .refused(let why): "connection refused: \(why)"
        case .timeout(let seconds): "no answer within \(seconds) s"
        case .status(let code): "HTTP error \(code)"
        case .tooLarge(let limit): "answer larger than \(limit) bytes"
        case .connectionClosed: "connection closed before the answer was complete"
        case .badURL(let url): "bad builder URL \(url)"
        case .io(let why): why
        }
    }
}

/// One keep-alive HTTP/1.1 connection to one legacy builder, used by one caller at a time (the
/// builder's poller). A request on a reused connection that the server had closed meanwhile is sent
/// once more on a fresh one; every request has a deadline and a cap on the answer's size.
public final class LegacyHTTPConnection: @unchecked Sendable {
    // Mutated only by the one task that owns this connection (a builder is followed by one task).
    private var channel: Channel?
    private var handler: ResponseCollector?
    public let host: String
    public let port: Int
    /// Path prefix of the builder's URL (usually empty: `http://host:8221`).
    public let basePath: String

    public init(url: String) throws {
        guard let parsed = try? ServiceURL(parsing: url), parsed.scheme == "http" else { throw LegacyHTTPError.badURL(url) }
        host = parsed.host
        port = parsed.port
        basePath = parsed.path.hasSuffix("/") ? String(parsed.path.dropLast()) : parsed.path
    }

    /// Sends one request and returns the status and body of a 2xx answer; any other status throws.
    public func request(method: HTTPMethod, path: String, body: [UInt8]? = nil, contentType: String? = nil,
                        timeout: Double, maxBytes: Int) async throws -> [UInt8] {
        let reused = channel?.isActive == true
        do {
            return try await attempt(method: method, path: path, body: body, contentType: contentType,
                                     timeout: timeout, maxBytes: maxBytes)
        } catch LegacyHTTPError.connectionClosed where reused {
            return try await attempt(method: method, path: path, body: body, contentType: contentType,
                                     timeout: timeout, maxBytes: maxBytes)
        }
    }

    /// Sends a GET and hands the body of a 2xx answer to `sink` chunk by chunk as it arrives (on the
    /// connection's event loop, in order), never holding it whole; returns how many bytes came. A body over
    /// `maxBytes`, or a sink that throws, ends the request with that error.
    public func download(path: String, timeout: Double, maxBytes: Int,
                         into sink: @escaping @Sendable (ByteBuffer) throws -> Void) async throws -> Int {
        let reused = channel?.isActive == true
        let received = ReceivedBytes()
        let counting: @Sendable (ByteBuffer) throws -> Void = { buffer in
            received.count.withLock { $0 += buffer.readableBytes }
            try sink(buffer)
        }
        do {
            _ = try await attempt(method: .GET, path: path, body: nil, contentType: nil, timeout: timeout,
                                  maxBytes: maxBytes, sink: counting)
        } catch LegacyHTTPError.connectionClosed where reused && received.count.withLock({ $0 }) == 0 {
            // A kept-alive connection the builder had closed: nothing reached the sink, so ask again.
            _ = try await attempt(method: .GET, path: path, body: nil, contentType: nil, timeout: timeout,
                                  maxBytes: maxBytes, sink: counting)
        }
        return received.count.withLock { $0 }
    }

    public func close() {
        channel?.close(promise: nil)
        channel = nil
        handler = nil
    }

    private func attempt(method: HTTPMethod, path: String, body: [UInt8]?, contentType: String?, timeout: Double,
                         maxBytes: Int, sink: (@Sendable (ByteBuffer) throws -> Void)? = nil) async throws -> [UInt8] {
        let (channel, handler) = try await connected(timeout: timeout)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "User-Agent", value: "buildd-master")
        if let contentType { headers.add(name: "Content-Type", value: contentType) }
        headers.add(name: "Content-Length", value: "\(body?.count ?? 0)")
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: basePath + path, headers: headers)
        let promise = channel.eventLoop.makePromise(of: CollectedResponse.self)
        let nanoseconds = Int64(timeout * 1_000_000_000)
        let payload = body.map { ByteBuffer(bytes: $0) }
        channel.eventLoop.execute {
            handler.begin(promise: promise, maxBytes: maxBytes, sink: sink)
            let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
                handler.fail(LegacyHTTPError.timeout(seconds: timeout))
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in deadline.cancel() }
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let payload { channel.write(HTTPClientRequestPart.body(.byteBuffer(payload)), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        let response: CollectedResponse
        do {
            response = try await promise.futureResult.get()
        } catch {
            close()
            throw error
        }
        if !response.keepAlive { close() }
        guard (200..<300).contains(response.status) else { throw LegacyHTTPError.status(response.status) }
        return response.body
    }

    private func connected(timeout: Double) async throws -> (Channel, ResponseCollector) {
        if let channel, let handler, channel.isActive { return (channel, handler) }
        close()
        let collector = ResponseCollector()
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.milliseconds(Int64(min(timeout, 30) * 1000)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
        do {
            let fresh = try await bootstrap.connect(host: host, port: port).get()
            channel = fresh
            handler = collector
            return (fresh, collector)
        } catch let error as ChannelError {
            if case .connectTimeout = error { throw LegacyHTTPError.timeout(seconds: min(timeout, 30)) }
            throw LegacyHTTPError.refused("\(error)")
        } catch {
            throw LegacyHTTPError.refused("\(error)")
        }
    }
}

/// How many bytes of a download reached its sink.
final class ReceivedBytes: Sendable {
    let count = Mutex(0)
}

struct CollectedResponse: Sendable {
    var status: Int
    var keepAlive: Bool
    var body: [UInt8]
}

/// Collects one response at a time; lives on the channel's event loop only.
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<CollectedResponse>?
    private var response = CollectedResponse(status: 0, keepAlive: true, body: [])
    private var maxBytes = 0
    /// Where a streamed body goes (``LegacyHTTPConnection/download(path:timeout:maxBytes:into:)``); nil
    /// collects it.
    private var sink: (@Sendable (ByteBuffer) throws -> Void)?
    private var received = 0

    func begin(promise: EventLoopPromise<CollectedResponse>, maxBytes: Int,
               sink: (@Sendable (ByteBuffer) throws -> Void)? = nil) {
        self.promise = promise
        self.maxBytes = maxBytes
        self.sink = sink
        received = 0
        response = CollectedResponse(status: 0, keepAlive: true, body: [])
    }

    func fail(_ error: Error) {
        let pending = promise
        promise = nil
        pending?.fail(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            response.status = Int(head.status.code)
            response.keepAlive = head.isKeepAlive
        case .body(var buffer):
            guard promise != nil else { return }
            guard received + buffer.readableBytes <= maxBytes else {
                fail(LegacyHTTPError.tooLarge(limit: maxBytes))
                context.close(promise: nil)
                return
            }
            received += buffer.readableBytes
            // Only a 2xx body is the file; another status's body is kept to be thrown away.
            if let sink, (200..<300).contains(response.status) {
                do {
                    try sink(buffer)
                } catch {
                    fail(error)
                    context.close(promise: nil)
                }
                return
            }
            response.body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            let pending = promise
            promise = nil
            pending?.succeed(response)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(LegacyHTTPError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(LegacyHTTPError.io("\(error)"))
        context.close(promise: nil)
    }
}
