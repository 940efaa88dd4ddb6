import BuilddShared
import CRabbitMQ

#if canImport(Glibc)
import Glibc
#endif

/// Settings for one broker connection.
public struct AMQPConfiguration: Sendable {
    /// `amqp://user:password@host:port/vhost` (the vhost percent-encoded, `%2F` for `/`), or `amqps://` for
    /// TLS, with query parameters `cacert=PATH` (the CA that signed the broker's certificate; default the
    /// system's bundle), `cert=PATH&key=PATH` (a client certificate) and `verify=false` (no peer or host
    /// name check: laboratories only).
    ///
    /// The node a connection is made to; ``nodes`` lists every node of the cluster, `url` first.
    public var url: ServiceURL
    /// The cluster's nodes, in the order they are tried: a client that cannot reach one, or loses it, goes
    /// on to the next (``AMQPClient``). One URL for a single broker.
    public var nodes: [ServiceURL]
    /// Heartbeat interval negotiated with the broker. Default 10 s.
    public var heartbeat: Duration
    /// Connect and RPC timeout. Default 10 s.
    public var timeout: Duration
    /// Shown in the broker's connection list.
    public var connectionName: String

    public init(url: ServiceURL, heartbeat: Duration = .seconds(10), timeout: Duration = .seconds(10),
                connectionName: String = "buildd") throws {
        guard url.scheme == "amqp" || url.scheme == "amqps" else {
            throw AMQPError(.invalidArgument, text: "unsupported broker scheme \(url.scheme) (use amqp:// or amqps://)")
        }
        self.url = url
        self.nodes = [url]
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.connectionName = connectionName
    }

    /// Several nodes of one cluster, tried in this order (all with the same scheme, user and vhost).
    public init(nodes: [ServiceURL], heartbeat: Duration = .seconds(10), timeout: Duration = .seconds(10),
                connectionName: String = "buildd") throws {
        guard let first = nodes.first else { throw AMQPError(.invalidArgument, text: "no broker URL") }
        try self.init(url: first, heartbeat: heartbeat, timeout: timeout, connectionName: connectionName)
        for node in nodes.dropFirst() {
            guard node.scheme == first.scheme, node.user == first.user, node.path == first.path else {
                throw AMQPError(.invalidArgument, text: "broker URLs of one cluster must share scheme, user and vhost: "
                                + "\(first) and \(node)")
            }
        }
        self.nodes = nodes
    }

    /// One broker URL, or the nodes of a cluster separated by commas
    /// (`amqps://u:p@rmq1:5671/buildd,amqps://u:p@rmq2:5671/buildd`).
    public init(url text: String, connectionName: String = "buildd") throws {
        var nodes: [ServiceURL] = []
        for part in text.split(separator: ",") {
            do { nodes.append(try ServiceURL(parsing: part.trimmed(" "))) } catch {
                throw AMQPError(.invalidArgument, text: "broker URL: \(error)")
            }
        }
        try self.init(nodes: nodes, connectionName: connectionName)
    }

    /// This configuration aimed at node `index` (modulo the number of nodes).
    public func node(_ index: Int) -> AMQPConfiguration {
        var copy = self
        copy.url = nodes[index % nodes.count]
        return copy
    }

    /// The vhost: the URL's path without its leading slash, "/" when empty.
    public var vhost: String {
        let path = url.path.hasPrefix("/") ? String(url.path.dropFirst()) : url.path
        return path.isEmpty ? "/" : path
    }
}

/// An event read from the broker.
public enum AMQPEvent {
    case delivery(Delivery)
    /// Publisher confirm on a channel in confirm mode.
    case confirm(channel: UInt16, deliveryTag: UInt64, multiple: Bool, ack: Bool)
    /// A mandatory message was returned; `messageID` identifies it.
    case returned(channel: UInt16, messageID: String?, replyCode: Int, replyText: String)
    /// The broker cancelled a consumer (its queue was deleted).
    case consumerCancelled(channel: UInt16, consumerTag: String)
}

private enum Method {
    static let connectionClose: UInt32 = 0x000A_0032
    static let connectionCloseOk: UInt32 = 0x000A_0033
    static let channelClose: UInt32 = 0x0014_0028
    static let channelCloseOk: UInt32 = 0x0014_0029
    static let basicDeliver: UInt32 = 0x003C_003C
    static let basicAck: UInt32 = 0x003C_0050
    static let basicNack: UInt32 = 0x003C_0078
    static let basicReturn: UInt32 = 0x003C_0032
    static let basicCancel: UInt32 = 0x003C_001E
    static let basicGetOk: UInt32 = 0x003C_0047
}

/// One connection to the broker. It is not thread-safe: create, use and close it on one thread
/// (``AMQPClient`` does that). Errors carry the broker's reply code and text.
public final class AMQPConnection {
    private var state: amqp_connection_state_t?
    public private(set) var isBroken = false
    public let generation: Int
    private var publishSeq: [UInt16: UInt64] = [:]

    /// Connects and logs in. Frees everything on every failure path.
    public init(configuration: AMQPConfiguration, generation: Int = 0) throws {
        self.generation = generation
        guard let connection = amqp_new_connection() else {
            throw AMQPError(.library, text: "out of memory", context: "connect")
        }
        state = connection
        do {
            let socket = configuration.url.scheme == "amqps" ? try Self.tlsSocket(connection, configuration.url)
                : amqp_tcp_socket_new(connection)
            guard let socket else {
                throw AMQPError(.library, text: "cannot create socket", context: "connect")
            }
            var timeout = Self.timeval(configuration.timeout)
            let status = amqp_socket_open_noblock(socket, configuration.url.host, Int32(configuration.url.port), &timeout)
            if status != AMQP_STATUS_OK.rawValue {
                throw AMQPError(.library, code: Int(status), text: String(cString: amqp_error_string2(status)),
                                context: "connect to \(configuration.url.host):\(configuration.url.port)")
            }
            _ = amqp_set_rpc_timeout(connection, &timeout)
            let heartbeat = Int32(configuration.heartbeat.components.seconds)
            // The connection's name goes to the broker, so an operator (and a test) can tell in RabbitMQ's
            // management UI which master or agent each connection is.
            let arena = CArena()
            var properties = arena.table(["connection_name": .string(configuration.connectionName)])
            let reply = buildd_amqp_login_plain_properties(
                connection, configuration.vhost, 0, 131_072, heartbeat, &properties,
                configuration.url.user ?? "guest", configuration.url.password ?? "guest")
            try check(reply, context: "login to vhost \(configuration.vhost) as \(configuration.url.user ?? "guest")")
        } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    /// A TLS socket set up from the URL's query: CA, client certificate, verification.
    private static func tlsSocket(_ connection: amqp_connection_state_t, _ url: ServiceURL) throws -> OpaquePointer? {
        guard let socket = amqp_ssl_socket_new(connection) else {
            throw AMQPError(.library, text: "cannot create a TLS socket", context: "connect")
        }
        let verify = url.query["verify"].map { $0 != "false" && $0 != "0" } ?? true
        amqp_ssl_socket_set_verify_peer(socket, verify ? 1 : 0)
        amqp_ssl_socket_set_verify_hostname(socket, verify ? 1 : 0)
        let systemBundle = "/etc/ssl/certs/ca-certificates.crt"
        if let ca = url.query["cacert"] ?? (access(systemBundle, R_OK) == 0 ? systemBundle : nil) {
            let status = amqp_ssl_socket_set_cacert(socket, ca)
            guard status == AMQP_STATUS_OK.rawValue else {
                throw AMQPError(.invalidArgument, code: Int(status), text: "cannot use CA certificate \(ca): "
                                + String(cString: amqp_error_string2(status)), context: "connect")
            }
        }
        switch (url.query["cert"], url.query["key"]) {
        case let (cert?, key?):
            let status = amqp_ssl_socket_set_key(socket, cert, key)
            guard status == AMQP_STATUS_OK.rawValue else {
                throw AMQPError(.invalidArgument, code: Int(status), text: "cannot use client certificate \(cert): "
                                + String(cString: amqp_error_string2(status)), context: "connect")
            }
        case (nil, nil):
            break
        default:
            throw AMQPError(.invalidArgument, text: "a client certificate needs both cert= and key=", context: "connect")
        }
        return socket
    }

    private func destroy() {
        if let state {
            amqp_destroy_connection(state)
            self.state = nil
        }
    }

    static func timeval(_ duration: Duration) -> Glibc.timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    private func connection() throws -> amqp_connection_state_t {
        guard let state, !isBroken else { throw AMQPError(.notConnected, text: "connection is closed") }
        return state
    }

    /// The socket, for `poll(2)`.
    public var socketDescriptor: Int32 { state.map { amqp_get_sockfd($0) } ?? -1 }

    /// Closes channels and the connection politely; the object is unusable afterwards.
    public func close() {
        if let state, !isBroken {
            _ = amqp_connection_close(state, Int32(AMQP_REPLY_SUCCESS))
        }
        isBroken = true
        destroy()
    }

    // MARK: Errors

    private func check(_ reply: amqp_rpc_reply_t, context: String) throws {
        switch reply.reply_type.rawValue {
        case AMQP_RESPONSE_NORMAL.rawValue:
            return
        case AMQP_RESPONSE_LIBRARY_EXCEPTION.rawValue:
            isBroken = true
            throw AMQPError(.library, code: Int(reply.library_error),
                            text: String(cString: amqp_error_string2(reply.library_error)), context: context)
        case AMQP_RESPONSE_SERVER_EXCEPTION.rawValue:
            isBroken = true
            if reply.reply.id == Method.connectionClose, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                sendCloseOk(connection: true, channel: 0)
                throw AMQPError(.server, code: Int(close.reply_code), text: close.reply_text.string, context: context)
            }
            if reply.reply.id == Method.channelClose, let decoded = reply.reply.decoded {
                let close = decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                throw AMQPError(.server, code: Int(close.reply_code), text: close.reply_text.string, context: context)
            }
            throw AMQPError(.server, text: "unexpected method \(reply.reply.id)", context: context)
        default:
            isBroken = true
            throw AMQPError(.library, text: "no reply", context: context)
        }
    }

    private func checkStatus(_ status: Int32, context: String) throws {
        guard status == AMQP_STATUS_OK.rawValue else {
            isBroken = true
            throw AMQPError(.library, code: Int(status), text: String(cString: amqp_error_string2(status)),
                            context: context)
        }
    }

    private func sendCloseOk(connection: Bool, channel: UInt16) {
        guard let state else { return }
        if connection {
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, 0, Method.connectionCloseOk, &ok)
        } else {
            var ok = amqp_channel_close_ok_t(dummy: 0)
            _ = amqp_send_method(state, channel, Method.channelCloseOk, &ok)
        }
    }

    private func lastReply(_ context: String) throws {
        try check(amqp_get_rpc_reply(try connection()), context: context)
    }

    // MARK: Channels and topology

    public func openChannel(_ channel: UInt16) throws {
        _ = amqp_channel_open(try connection(), channel)
        try lastReply("open channel \(channel)")
    }

    public func declareExchange(_ name: String, type: String, durable: Bool = true, internal isInternal: Bool = false,
                                arguments: [String: AMQPValue] = [:], channel: UInt16 = 1) throws {
        let arena = CArena()
        _ = amqp_exchange_declare(try connection(), channel, arena.bytes(name), arena.bytes(type), 0,
                                  durable ? 1 : 0, 0, isInternal ? 1 : 0, arena.table(arguments))
        try lastReply("declare exchange \(name)")
    }

    /// Declares a queue; returns its message and consumer counts.
    @discardableResult
    public func declareQueue(_ name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                             arguments: [String: AMQPValue] = [:], passive: Bool = false,
                             channel: UInt16 = 1) throws -> (messages: Int, consumers: Int) {
        let arena = CArena()
        let ok = amqp_queue_declare(try connection(), channel, arena.bytes(name), passive ? 1 : 0, durable ? 1 : 0,
                                    exclusive ? 1 : 0, autoDelete ? 1 : 0, arena.table(arguments))
        try lastReply("declare queue \(name)")
        guard let ok else { return (0, 0) }
        return (Int(ok.pointee.message_count), Int(ok.pointee.consumer_count))
    }

    public func deleteQueue(_ name: String, channel: UInt16 = 1) throws {
        let arena = CArena()
        _ = amqp_queue_delete(try connection(), channel, arena.bytes(name), 0, 0)
        try lastReply("delete queue \(name)")
    }

    public func bindQueue(_ queue: String, exchange: String, routingKey: String,
                          arguments: [String: AMQPValue] = [:], channel: UInt16 = 1) throws {
        let arena = CArena()
        _ = amqp_queue_bind(try connection(), channel, arena.bytes(queue), arena.bytes(exchange),
                            arena.bytes(routingKey), arena.table(arguments))
        try lastReply("bind queue \(queue) to \(exchange)")
    }

    public func bindExchange(destination: String, source: String, routingKey: String, channel: UInt16 = 1) throws {
        let arena = CArena()
        _ = amqp_exchange_bind(try connection(), channel, arena.bytes(destination), arena.bytes(source),
                               arena.bytes(routingKey), amqp_empty_table)
        try lastReply("bind exchange \(destination) to \(source)")
    }

    // MARK: Publishing

    /// Puts a channel in confirm mode; publishes on it are numbered from 1.
    public func confirmSelect(channel: UInt16) throws {
        _ = amqp_confirm_select(try connection(), channel)
        try lastReply("confirm.select")
        publishSeq[channel] = 0
    }

    /// Publishes a message. On a channel in confirm mode, returns the publish's delivery tag,
    /// which a later ``AMQPEvent/confirm(channel:deliveryTag:multiple:ack:)`` settles.
    @discardableResult
    public func publish(exchange: String, routingKey: String, body: [UInt8], properties: MessageProperties,
                        mandatory: Bool = false, channel: UInt16 = 1) throws -> UInt64 {
        let state = try connection()
        let arena = CArena()
        var raw = arena.properties(properties)
        let status = body.withUnsafeBytes { buffer in
            amqp_basic_publish(state, channel, arena.bytes(exchange), arena.bytes(routingKey), mandatory ? 1 : 0, 0,
                               &raw, amqp_bytes_t(len: buffer.count, bytes: UnsafeMutableRawPointer(mutating: buffer.baseAddress)))
        }
        try checkStatus(status, context: "publish to \(exchange)/\(routingKey)")
        if let seq = publishSeq[channel] {
            publishSeq[channel] = seq + 1
            return seq + 1
        }
        return 0
    }

    // MARK: Consuming

    public func qos(prefetch: UInt16, global: Bool = false, channel: UInt16) throws {
        _ = amqp_basic_qos(try connection(), channel, 0, prefetch, global ? 1 : 0)
        try lastReply("basic.qos")
    }

    /// Starts a consumer with manual acks; returns its tag.
    @discardableResult
    public func consume(queue: String, consumerTag: String = "", exclusive: Bool = false,
                        arguments: [String: AMQPValue] = [:], channel: UInt16) throws -> String {
        let arena = CArena()
        let ok = amqp_basic_consume(try connection(), channel, arena.bytes(queue), arena.bytes(consumerTag), 0, 0,
                                    exclusive ? 1 : 0, arena.table(arguments))
        try lastReply("consume \(queue)")
        return ok?.pointee.consumer_tag.string ?? consumerTag
    }

    /// Takes one message from `queue` (`basic.get`, manual ack), or nil when the queue is empty.
    /// Use a channel without consumers: frames of other channels that arrive meanwhile stay queued
    /// for ``nextEvent(timeout:)``.
    public func get(queue: String, channel: UInt16) throws -> Delivery? {
        let state = try connection()
        let arena = CArena()
        let reply = amqp_basic_get(state, channel, arena.bytes(queue), 0)
        try check(reply, context: "get from \(queue)")
        guard reply.reply.id == Method.basicGetOk, let decoded = reply.reply.decoded else { return nil }
        let ok = decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
        let exchange = ok.exchange.string
        let routingKey = ok.routing_key.string
        let deliveryTag = ok.delivery_tag
        let redelivered = ok.redelivered != 0
        var message = amqp_message_t()
        try check(amqp_read_message(state, channel, &message, 0), context: "read message from \(queue)")
        defer { amqp_destroy_message(&message) }
        return Delivery(consumerTag: "", deliveryTag: deliveryTag, generation: generation, redelivered: redelivered,
                        exchange: exchange, routingKey: routingKey,
                        properties: MessageProperties(copying: message.properties), body: message.body.array,
                        channel: channel)
    }

    public func cancel(consumerTag: String, channel: UInt16) throws {
        let arena = CArena()
        _ = amqp_basic_cancel(try connection(), channel, arena.bytes(consumerTag))
        try lastReply("cancel \(consumerTag)")
    }

    /// Acknowledges a delivery; with `multiple`, every delivery up to it on the channel too.
    public func ack(deliveryTag: UInt64, multiple: Bool = false, channel: UInt16) throws {
        try checkStatus(amqp_basic_ack(try connection(), channel, deliveryTag, multiple ? 1 : 0), context: "ack")
    }

    /// Rejects a message; without requeue it goes to the queue's dead-letter exchange.
    public func reject(deliveryTag: UInt64, requeue: Bool, channel: UInt16) throws {
        try checkStatus(amqp_basic_reject(try connection(), channel, deliveryTag, requeue ? 1 : 0), context: "reject")
    }

    /// Whether librabbitmq holds unread frames or bytes, so a `poll(2)` on the socket would miss them.
    public var hasBufferedInput: Bool {
        guard let state, !isBroken else { return false }
        return amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0
    }

    /// Reads the next event, waiting at most `timeout` (zero: only what has arrived). Also sends
    /// heartbeats that are due, so the owning thread must call this at least every heartbeat/2.
    public func nextEvent(timeout: Duration = .zero) throws -> AMQPEvent? {
        let state = try connection()
        while true {
            var frame = amqp_frame_t()
            var tv = Self.timeval(timeout)
            let status = amqp_simple_wait_frame_noblock(state, &frame, &tv)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return nil }
            try checkStatus(status, context: "read from broker")
            amqp_maybe_release_buffers(state)
            guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { continue }
            let method = buildd_frame_method_id(&frame)
            let decoded = buildd_frame_method_decoded(&frame)
            switch method {
            case Method.basicDeliver:
                let deliver = decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
                let consumerTag = deliver.consumer_tag.string
                let exchange = deliver.exchange.string
                let routingKey = deliver.routing_key.string
                var message = amqp_message_t()
                try check(amqp_read_message(state, frame.channel, &message, 0), context: "read message")
                defer { amqp_destroy_message(&message) }
                return .delivery(Delivery(
                    consumerTag: consumerTag, deliveryTag: deliver.delivery_tag, generation: generation,
                    redelivered: deliver.redelivered != 0, exchange: exchange, routingKey: routingKey,
                    properties: MessageProperties(copying: message.properties), body: message.body.array,
                    channel: frame.channel))
            case Method.basicAck:
                let ack = decoded!.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
                return .confirm(channel: frame.channel, deliveryTag: ack.delivery_tag, multiple: ack.multiple != 0, ack: true)
            case Method.basicNack:
                let nack = decoded!.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
                return .confirm(channel: frame.channel, deliveryTag: nack.delivery_tag, multiple: nack.multiple != 0, ack: false)
            case Method.basicReturn:
                let returned = decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
                let code = Int(returned.reply_code)
                let text = returned.reply_text.string
                var message = amqp_message_t()
                try check(amqp_read_message(state, frame.channel, &message, 0), context: "read returned message")
                defer { amqp_destroy_message(&message) }
                let properties = MessageProperties(copying: message.properties)
                return .returned(channel: frame.channel, messageID: properties.messageID, replyCode: code, replyText: text)
            case Method.basicCancel:
                let cancel = decoded!.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
                return .consumerCancelled(channel: frame.channel, consumerTag: cancel.consumer_tag.string)
            case Method.channelClose:
                let close = decoded!.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                sendCloseOk(connection: false, channel: frame.channel)
                isBroken = true
                throw AMQPError(.server, code: Int(close.reply_code), text: close.reply_text.string,
                                context: "channel \(frame.channel) closed by broker")
            case Method.connectionClose:
                let close = decoded!.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                sendCloseOk(connection: true, channel: 0)
                isBroken = true
                throw AMQPError(.server, code: Int(close.reply_code), text: close.reply_text.string,
                                context: "connection closed by broker")
            default:
                continue
            }
        }
    }
}
