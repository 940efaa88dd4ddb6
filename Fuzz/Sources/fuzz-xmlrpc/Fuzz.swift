import BuilddShared

/// The XML-RPC parser reading a legacy builder's answers: a value, a fault or a typed error, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzXMLRPC(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        let value = try XMLRPC.decodeResponse(bytes)
        // What was read encodes and reads back to the same value.
        precondition((try? XMLRPC.decodeResponse(XMLRPC.encodeResponse(value))) == value, "value does not round-trip")
    } catch is XMLRPCError {
    } catch {
        preconditionFailure("untyped error \(error)")
    }
    _ = try? XMLRPC.decodeCall(bytes)
    return 0
}
