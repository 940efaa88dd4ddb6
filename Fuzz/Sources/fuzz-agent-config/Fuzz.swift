import BuilddAgent

/// The agent's configuration parser: any text gives a configuration or a list of problems, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAgentConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: data.map { UnsafeBufferPointer(start: $0, count: size) } ?? UnsafeBufferPointer(start: nil, count: 0),
                      as: UTF8.self)
    do {
        _ = try AgentConfiguration.parse(text, environment: ["BUILDD_AGENT_BROKER_PASSWORD": "x"], readFile: { _ in "secret" })
    } catch is AgentConfiguration.Invalid {
    } catch {
        preconditionFailure("untyped error \(error)")
    }
    return 0
}
