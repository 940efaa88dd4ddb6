import CRabbitMQ

#if canImport(Glibc)
import Glibc
#endif

/// A value in an AMQP field table (queue arguments, message headers).
public enum AMQPValue: Sendable, Equatable {
    case string(String)
    case int(Int64)
    case bool(Bool)
}

/// The message properties buildd uses.
public struct MessageProperties: Sendable, Equatable {
    public var persistent: Bool
    public var contentType: String?
    public var messageID: String?
    /// The broker checks this against the connection's user, so a consumer can trust it.
    public var userID: String?
    public var type: String?
    public var timestamp: UInt64?
    /// Per-message TTL in milliseconds, as a decimal string.
    public var expiration: String?
    public var headers: [String: AMQPValue]

    public init(persistent: Bool = true, contentType: String? = "application/json", messageID: String? = nil,
                userID: String? = nil, type: String? = nil, timestamp: UInt64? = nil, expiration: String? = nil,
                headers: [String: AMQPValue] = [:]) {
        self.persistent = persistent
        self.contentType = contentType
        self.messageID = messageID
        self.userID = userID
        self.type = type
        self.timestamp = timestamp
        self.expiration = expiration
        self.headers = headers
    }
}

/// A message delivered to a consumer. Ack or reject it through the client that delivered it.
public struct Delivery: Sendable {
    public let consumerTag: String
    public let deliveryTag: UInt64
    /// Which connection the tag belongs to: tags of a dropped connection are void.
    public let generation: Int
    public let redelivered: Bool
    public let exchange: String
    public let routingKey: String
    public let properties: MessageProperties
    public let body: [UInt8]
    /// The channel it arrived on: consumers' deliveries on ``AMQPClient/consumeChannel``, `basic.get`
    /// answers on ``AMQPClient/getChannel``.
    public var channel: UInt16 = AMQPClient.consumeChannel
}

/// C memory for one call: every string, table and array handed to librabbitmq is copied here and
/// freed together when the arena goes away, so nothing points into a temporary Swift string.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for pointer in allocations { free(pointer) }
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        let utf8 = Array(string.utf8)
        guard !utf8.isEmpty else { return amqp_empty_bytes }
        let pointer = malloc(utf8.count)!
        allocations.append(pointer)
        utf8.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: utf8.count) }
        return amqp_bytes_t(len: utf8.count, bytes: pointer)
    }

    func cString(_ string: String) -> UnsafePointer<CChar> {
        let pointer = strdup(string)!
        allocations.append(UnsafeMutableRawPointer(pointer))
        return UnsafePointer(pointer)
    }

    func table(_ entries: [String: AMQPValue]) -> amqp_table_t {
        guard !entries.isEmpty else { return amqp_empty_table }
        let raw = malloc(MemoryLayout<amqp_table_entry_t>.stride * entries.count)!
        allocations.append(raw)
        let buffer = raw.bindMemory(to: amqp_table_entry_t.self, capacity: entries.count)
        for (index, key) in entries.keys.sorted().enumerated() {
            var value = amqp_field_value_t()
            switch entries[key]! {
            case .string(let string):
                value.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
                value.value.bytes = bytes(string)
            case .int(let number):
                value.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
                value.value.i64 = number
            case .bool(let flag):
                value.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
                value.value.boolean = flag ? 1 : 0
            }
            (buffer + index).initialize(to: amqp_table_entry_t(key: bytes(key), value: value))
        }
        return amqp_table_t(num_entries: Int32(entries.count), entries: buffer)
    }

    func properties(_ properties: MessageProperties) -> amqp_basic_properties_t {
        var raw = amqp_basic_properties_t()
        var flags: UInt32 = 0
        if properties.persistent {
            raw.delivery_mode = 2
            flags |= UInt32(AMQP_BASIC_DELIVERY_MODE_FLAG)
        }
        if let contentType = properties.contentType {
            raw.content_type = bytes(contentType)
            flags |= UInt32(AMQP_BASIC_CONTENT_TYPE_FLAG)
        }
        if let messageID = properties.messageID {
            raw.message_id = bytes(messageID)
            flags |= UInt32(AMQP_BASIC_MESSAGE_ID_FLAG)
        }
        if let userID = properties.userID {
            raw.user_id = bytes(userID)
            flags |= UInt32(AMQP_BASIC_USER_ID_FLAG)
        }
        if let type = properties.type {
            raw.type = bytes(type)
            flags |= UInt32(AMQP_BASIC_TYPE_FLAG)
        }
        if let timestamp = properties.timestamp {
            raw.timestamp = timestamp
            flags |= UInt32(AMQP_BASIC_TIMESTAMP_FLAG)
        }
        if let expiration = properties.expiration {
            raw.expiration = bytes(expiration)
            flags |= UInt32(AMQP_BASIC_EXPIRATION_FLAG)
        }
        if !properties.headers.isEmpty {
            raw.headers = table(properties.headers)
            flags |= UInt32(AMQP_BASIC_HEADERS_FLAG)
        }
        raw._flags = amqp_flags_t(flags)
        return raw
    }
}

extension amqp_bytes_t {
    /// Copies the bytes into a Swift string (lossy for invalid UTF-8).
    var string: String {
        guard len > 0, let bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self)
    }

    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: len))
    }
}

extension MessageProperties {
    /// Copies received properties out of librabbitmq's memory.
    init(copying raw: amqp_basic_properties_t) {
        let flags = UInt32(raw._flags)
        func has(_ flag: Int32) -> Bool { flags & UInt32(flag) != 0 }
        var headers: [String: AMQPValue] = [:]
        if has(AMQP_BASIC_HEADERS_FLAG), raw.headers.num_entries > 0, let entries = raw.headers.entries {
            for index in 0..<Int(raw.headers.num_entries) {
                let entry = entries[index]
                let key = entry.key.string
                switch UInt32(entry.value.kind) {
                case AMQP_FIELD_KIND_UTF8.rawValue, AMQP_FIELD_KIND_BYTES.rawValue:
                    headers[key] = .string(entry.value.value.bytes.string)
                case AMQP_FIELD_KIND_I64.rawValue: headers[key] = .int(entry.value.value.i64)
                case AMQP_FIELD_KIND_I32.rawValue: headers[key] = .int(Int64(entry.value.value.i32))
                case AMQP_FIELD_KIND_BOOLEAN.rawValue: headers[key] = .bool(entry.value.value.boolean != 0)
                default: continue
                }
            }
        }
        self.init(
            persistent: has(AMQP_BASIC_DELIVERY_MODE_FLAG) && raw.delivery_mode == 2,
            contentType: has(AMQP_BASIC_CONTENT_TYPE_FLAG) ? raw.content_type.string : nil,
            messageID: has(AMQP_BASIC_MESSAGE_ID_FLAG) ? raw.message_id.string : nil,
            userID: has(AMQP_BASIC_USER_ID_FLAG) ? raw.user_id.string : nil,
            type: has(AMQP_BASIC_TYPE_FLAG) ? raw.type.string : nil,
            timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG) ? raw.timestamp : nil,
            expiration: has(AMQP_BASIC_EXPIRATION_FLAG) ? raw.expiration.string : nil,
            headers: headers
        )
    }
}
