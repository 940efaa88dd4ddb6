import BuilddAgent

/// The agent's configuration parser: any text gives a configuration or a list of problems, never a crash
/// and never an untyped error; and a configuration, written out as a file (`fileText`) and parsed again,
/// is the same configuration.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAgentConfig(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: data.map { UnsafeBufferPointer(start: $0, count: size) } ?? UnsafeBufferPointer(start: nil, count: 0),
                      as: UTF8.self)
    let environment = ["BUILDD_AGENT_BROKER_PASSWORD": "x"]
    let configuration: AgentConfiguration
    do {
        configuration = try AgentConfiguration.parse(text, environment: environment, readFile: { _ in "secret" })
    } catch is AgentConfiguration.Invalid {
        return 0
    } catch {
        preconditionFailure("untyped error \(error)")
    }
    do {
        let again = try AgentConfiguration.parse(configuration.fileText, environment: environment,
                                                 readFile: { _ in "secret" })
        precondition(again == configuration, "configuration does not round-trip:\n\(configuration.fileText)")
    } catch {
        preconditionFailure("its own file text is refused: \(error)\n\(configuration.fileText)")
    }
    return 0
}
