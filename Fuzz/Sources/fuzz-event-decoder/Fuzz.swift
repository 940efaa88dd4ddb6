import BuilddShared

/// The master's decoder of agent events: any bytes give an event or a `WireError`, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let event = try? WireCodec.decodeEvent(bytes) {
        // A decoded event re-encodes and decodes to itself.
        precondition((try? WireCodec.decodeEvent(WireCodec.encode(event))) == event, "event does not round-trip")
    }
    _ = try? WireCodec.decodeJob(bytes)
    _ = try? WireCodec.decodeControl(bytes)
    return 0
}
