import BuilddShared

/// The decoders of agent events, jobs and control messages: any bytes give a message or a `WireError` -
/// never a crash, never another error - and a decoded message re-encodes and decodes to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let event = decoded({ try WireCodec.decodeEvent(bytes) }) {
        precondition(decoded({ try WireCodec.decodeEvent(WireCodec.encode(event)) }) == event, "event does not round-trip")
    }
    if let job = decoded({ try WireCodec.decodeJob(bytes) }) {
        precondition(decoded({ try WireCodec.decodeJob(WireCodec.encode(job)) }) == job, "job does not round-trip")
    }
    if let control = decoded({ try WireCodec.decodeControl(bytes) }) {
        precondition(decoded({ try WireCodec.decodeControl(WireCodec.encode(control)) }) == control,
                     "control message does not round-trip")
    }
    return 0
}

/// The decoded value; nil for a `WireError`; any other error is a bug.
func decoded<T>(_ decode: () throws -> T) -> T? {
    do {
        return try decode()
    } catch is WireError {
        return nil
    } catch {
        preconditionFailure("untyped error \(error)")
    }
}
