
/// An XML-RPC value: every type of the specification plus the common `nil` extension.
public enum XMLRPCValue: Sendable, Equatable {
    case int(Int)
    case bool(Bool)
    case string(String)
    case double(Double)
    case base64([UInt8])
    /// `dateTime.iso8601`, kept as sent (`20261129T08:28:34`): the protocol carries no time zone.
    case dateTime(String)
    case array([XMLRPCValue])
    case `struct`([String: XMLRPCValue])
    case `nil`

    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    public var intValue: Int? { if case .int(let value) = self { value } else { nil } }
    public var boolValue: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var arrayValue: [XMLRPCValue]? { if case .array(let value) = self { value } else { nil } }
    public var structValue: [String: XMLRPCValue]? { if case .struct(let value) = self { value } else { nil } }
    public var bytesValue: [UInt8]? { if case .base64(let value) = self { value } else { nil } }

    public subscript(key: String) -> XMLRPCValue? { structValue?[key] }
}

/// What went wrong with an XML-RPC answer.
public enum XMLRPCError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The server answered with a fault (launchpad-buildd: 8001 unknown method, 8002 any error).
    case fault(code: Int, message: String)
    /// The body is not a well-formed XML-RPC response.
    case malformed(String)

    public var description: String {
        switch self {
        case .fault(let code, let message): "Fault \(code): \(message)"
        case .malformed(let why): "malformed XML-RPC answer: \(why)"
        }
    }
}

/// XML-RPC encoding of calls and decoding of responses.
///
/// The parser is a small, strict one written for this: it accepts the XML that XML-RPC servers send
/// (declaration, comments, CDATA, the five predefined entities, character references) and refuses any
/// document type declaration, so no entity is ever defined, expanded or fetched. Nesting is limited,
/// and every malformed input ends in ``XMLRPCError/malformed(_:)``.
public enum XMLRPC {
    /// Deepest element nesting accepted (a guard for the recursive decoder).
    public static let maxDepth = 64

    // MARK: Encoding

    public static func encodeCall(_ method: String, _ parameters: [XMLRPCValue]) -> [UInt8] {
        var out = "<?xml version='1.0'?>\n<methodCall>\n<methodName>\(escape(method))</methodName>\n<params>\n"
        for parameter in parameters {
            out += "<param>\n"
            encode(parameter, into: &out)
            out += "</param>\n"
        }
        out += "</params>\n</methodCall>\n"
        return Array(out.utf8)
    }

    public static func encodeResponse(_ value: XMLRPCValue) -> [UInt8] {
        var out = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        encode(value, into: &out)
        out += "</param>\n</params>\n</methodResponse>\n"
        return Array(out.utf8)
    }

    static func encode(_ value: XMLRPCValue, into out: inout String) {
        out += "<value>"
        switch value {
        case .int(let number): out += "<int>\(number)</int>"
        case .bool(let flag): out += "<boolean>\(flag ? 1 : 0)</boolean>"
        case .string(let text): out += "<string>\(escape(text))</string>"
        case .double(let number): out += "<double>\(number)</double>"
        case .base64(let bytes): out += "<base64>\(SimpleHTTPClient.base64(bytes))</base64>"
        case .dateTime(let text): out += "<dateTime.iso8601>\(escape(text))</dateTime.iso8601>"
        case .nil: out += "<nil/>"
        case .array(let items):
            out += "<array><data>\n"
            for item in items { encode(item, into: &out); out += "\n" }
            out += "</data></array>"
        case .struct(let members):
            out += "<struct>\n"
            for key in members.keys.sorted() {
                out += "<member><name>\(escape(key))</name>\n"
                encode(members[key]!, into: &out)
                out += "</member>\n"
            }
            out += "</struct>"
        }
        out += "</value>"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\r": out += "&#13;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    // MARK: Decoding

    /// Decodes a `methodResponse`: its one value, or a thrown ``XMLRPCError/fault(code:message:)``.
    public static func decodeResponse(_ bytes: [UInt8]) throws -> XMLRPCValue {
        let root = try XMLDocumentParser.parse(bytes)
        guard root.name == "methodResponse" else { throw XMLRPCError.malformed("root element is <\(root.name)>") }
        let children = root.elements
        guard children.count == 1 else { throw XMLRPCError.malformed("methodResponse needs one child") }
        let body = children[0]
        switch body.name {
        case "params":
            let params = body.elements
            guard params.count == 1, params[0].name == "param" else {
                throw XMLRPCError.malformed("a response carries exactly one param")
            }
            return try decodeValue(try params[0].only("value"), depth: 0)
        case "fault":
            let fault = try decodeValue(try body.only("value"), depth: 0)
            guard let code = fault["faultCode"]?.intValue else { throw XMLRPCError.malformed("fault without faultCode") }
            let message = fault["faultString"]?.stringValue ?? ""
            throw XMLRPCError.fault(code: code, message: message)
        default:
            throw XMLRPCError.malformed("unexpected <\(body.name)> in methodResponse")
        }
    }

    /// Decodes a `methodCall` (used by tests and tools): method name and parameters.
    public static func decodeCall(_ bytes: [UInt8]) throws -> (method: String, parameters: [XMLRPCValue]) {
        let root = try XMLDocumentParser.parse(bytes)
        guard root.name == "methodCall" else { throw XMLRPCError.malformed("root element is <\(root.name)>") }
        let name = try root.only("methodName").text
        let parameters = try root.elements.first { $0.name == "params" }.map { params in
            try params.elements.map { param -> XMLRPCValue in
                guard param.name == "param" else { throw XMLRPCError.malformed("unexpected <\(param.name)> in params") }
                return try decodeValue(try param.only("value"), depth: 0)
            }
        } ?? []
        return (name, parameters)
    }

    static func decodeValue(_ element: XMLElementNode, depth: Int) throws -> XMLRPCValue {
        guard element.name == "value" else { throw XMLRPCError.malformed("expected <value>, found <\(element.name)>") }
        guard depth < maxDepth else { throw XMLRPCError.malformed("values nested too deeply") }
        let typed = element.elements
        if typed.isEmpty { return .string(element.text) }  // untyped value: a string
        guard typed.count == 1 else { throw XMLRPCError.malformed("a value holds one typed element") }
        let node = typed[0]
        let text = node.text
        switch node.name {
        case "int", "i4", "i8":
            guard let number = Int(text.trimmed(" \t\r\n")) else { throw XMLRPCError.malformed("bad integer '\(text.prefix(40))'") }
            return .int(number)
        case "boolean":
            switch text.trimmed(" \t\r\n") {
            case "0": return .bool(false)
            case "1": return .bool(true)
            default: throw XMLRPCError.malformed("bad boolean '\(text.prefix(40))'")
            }
        case "string": return .string(text)
        case "double":
            guard let number = Double(text.trimmed(" \t\r\n")), number.isFinite else {
                throw XMLRPCError.malformed("bad double '\(text.prefix(40))'")
            }
            return .double(number)
        case "base64":
            guard let bytes = decodeBase64(text) else { throw XMLRPCError.malformed("bad base64") }
            return .base64(bytes)
        case "dateTime.iso8601": return .dateTime(text.trimmed(" \t\r\n"))
        case "nil": return .nil
        case "array":
            let data = try node.only("data")
            return .array(try data.elements.map { try decodeValue($0, depth: depth + 1) })
        case "struct":
            var members: [String: XMLRPCValue] = [:]
            for member in node.elements {
                guard member.name == "member" else { throw XMLRPCError.malformed("unexpected <\(member.name)> in struct") }
                let name = try member.only("name").text
                members[name] = try decodeValue(try member.only("value"), depth: depth + 1)
            }
            return .struct(members)
        default:
            throw XMLRPCError.malformed("unknown type <\(node.name)>")
        }
    }

    /// Standard base64, whitespace ignored; nil when the text is not base64.
    public static func decodeBase64(_ text: String) -> [UInt8]? {
        var values: [UInt8] = []
        values.reserveCapacity(text.utf8.count)
        var padding = 0
        for byte in text.utf8 {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="): padding += 1; continue
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): continue
            default: return nil
            }
            if padding > 0 { return nil }  // data after padding
            values.append(value)
        }
        if padding > 0 {
            guard padding <= 2, (values.count + padding) % 4 == 0 else { return nil }
        } else if values.count % 4 == 1 {
            return nil
        }
        var out: [UInt8] = []
        out.reserveCapacity(values.count * 3 / 4)
        var index = 0
        while index + 1 < values.count {
            let a = values[index], b = values[index + 1]
            out.append(a << 2 | b >> 4)
            if index + 2 < values.count {
                let c = values[index + 2]
                out.append(b << 4 | c >> 2)
                if index + 3 < values.count { out.append(c << 6 | values[index + 3]) }
            }
            index += 4
        }
        return out
    }
}

/// One element of a parsed document: its name, child elements and character data.
struct XMLElementNode {
    var name: String
    var elements: [XMLElementNode] = []
    var text: String = ""

    func only(_ child: String) throws -> XMLElementNode {
        let matching = elements.filter { $0.name == child }
        guard matching.count == 1 else {
            throw XMLRPCError.malformed("<\(name)> needs exactly one <\(child)>, has \(matching.count)")
        }
        return matching[0]
    }
}

/// A strict, non-validating parser for the subset of XML that XML-RPC uses. It refuses DTDs.
struct XMLDocumentParser {
    private let bytes: [UInt8]
    private var index = 0

    static func parse(_ bytes: [UInt8]) throws -> XMLElementNode {
        var parser = XMLDocumentParser(bytes: bytes)
        return try parser.document()
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func document() throws -> XMLElementNode {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3 }
        try skipMisc()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "<") else { throw XMLRPCError.malformed("no root element") }
        let root = try element(depth: 0)
        try skipMisc()
        guard index == bytes.count else { throw XMLRPCError.malformed("content after the root element") }
        return root
    }

    /// Whitespace, comments and processing instructions (the XML declaration) outside the root.
    private mutating func skipMisc() throws {
        while index < bytes.count {
            if isSpace(bytes[index]) { index += 1; continue }
            if starts("<?") { try skip(past: "?>"); continue }
            if starts("<!--") { try skip(past: "-->"); continue }
            if starts("<!") { throw XMLRPCError.malformed("document type declarations are not accepted") }
            return
        }
    }

    private mutating func element(depth: Int) throws -> XMLElementNode {
        guard depth <= XMLRPC.maxDepth * 3 else { throw XMLRPCError.malformed("elements nested too deeply") }
        index += 1  // "<"
        var node = XMLElementNode(name: try name())
        // Attributes are read and ignored; XML-RPC has none.
        while true {
            skipSpace()
            guard index < bytes.count else { throw XMLRPCError.malformed("unterminated tag <\(node.name)>") }
            if starts("/>") { index += 2; return node }
            if bytes[index] == UInt8(ascii: ">") { index += 1; break }
            _ = try name()
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else {
                throw XMLRPCError.malformed("attribute without value in <\(node.name)>")
            }
            index += 1
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") || bytes[index] == UInt8(ascii: "'") else {
                throw XMLRPCError.malformed("unquoted attribute in <\(node.name)>")
            }
            let quote = bytes[index]
            index += 1
            while index < bytes.count, bytes[index] != quote { index += 1 }
            guard index < bytes.count else { throw XMLRPCError.malformed("unterminated attribute in <\(node.name)>") }
            index += 1
        }
        var text: [UInt8] = []
        while true {
            guard index < bytes.count else { throw XMLRPCError.malformed("<\(node.name)> is not closed") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "<") {
                if starts("</") {
                    index += 2
                    let closing = try name()
                    skipSpace()
                    guard closing == node.name, index < bytes.count, bytes[index] == UInt8(ascii: ">") else {
                        throw XMLRPCError.malformed("<\(node.name)> closed by </\(closing)>")
                    }
                    index += 1
                    guard let decoded = String(validating: text, as: UTF8.self) else {
                        throw XMLRPCError.malformed("text of <\(node.name)> is not UTF-8")
                    }
                    node.text = decoded
                    return node
                } else if starts("<!--") {
                    try skip(past: "-->")
                } else if starts("<![CDATA[") {
                    index += 9
                    let start = index
                    try skip(past: "]]>")
                    text.append(contentsOf: bytes[start..<(index - 3)])
                } else if starts("<!") || starts("<?") {
                    throw XMLRPCError.malformed("declarations are not accepted inside elements")
                } else {
                    node.elements.append(try element(depth: depth + 1))
                }
            } else if byte == UInt8(ascii: "&") {
                text.append(contentsOf: try reference())
            } else {
                text.append(byte)
                index += 1
            }
        }
    }

    /// `&name;` for the five predefined entities, `&#N;` and `&#xN;`. Anything else is an error: no
    /// entity can be declared, so none can be resolved.
    private mutating func reference() throws -> [UInt8] {
        let start = index + 1
        var end = start
        while end < bytes.count, end - start < 12, bytes[end] != UInt8(ascii: ";") { end += 1 }
        guard end < bytes.count, bytes[end] == UInt8(ascii: ";") else { throw XMLRPCError.malformed("bad entity reference") }
        let name = String(decoding: bytes[start..<end], as: UTF8.self)
        index = end + 1
        switch name {
        case "lt": return [UInt8(ascii: "<")]
        case "gt": return [UInt8(ascii: ">")]
        case "amp": return [UInt8(ascii: "&")]
        case "quot": return [UInt8(ascii: "\"")]
        case "apos": return [UInt8(ascii: "'")]
        default:
            guard name.hasPrefix("#") else { throw XMLRPCError.malformed("unknown entity &\(name);") }
            let digits = name.dropFirst()
            let code = digits.hasPrefix("x") ? UInt32(digits.dropFirst(), radix: 16) : UInt32(digits, radix: 10)
            guard let code, code != 0, let scalar = Unicode.Scalar(code) else {
                throw XMLRPCError.malformed("bad character reference &\(name);")
            }
            return Array(String(Character(scalar)).utf8)
        }
    }

    private mutating func name() throws -> String {
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if isSpace(byte) || byte == UInt8(ascii: ">") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "=")
                || byte == UInt8(ascii: "<") { break }
            index += 1
        }
        guard index > start, index - start <= 128 else { throw XMLRPCError.malformed("bad element name") }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func starts(_ prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        return prefix.withUTF8Buffer { buffer in
            for offset in 0..<count where bytes[index + offset] != buffer[offset] { return false }
            return true
        }
    }

    private mutating func skip(past terminator: StaticString) throws {
        while index < bytes.count {
            if starts(terminator) { index += terminator.utf8CodeUnitCount; return }
            index += 1
        }
        throw XMLRPCError.malformed("unterminated construct, expected \(terminator)")
    }

    private mutating func skipSpace() {
        while index < bytes.count, isSpace(bytes[index]) { index += 1 }
    }

    private func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
    }
}
