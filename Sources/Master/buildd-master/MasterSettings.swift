import ArgumentParser
import BuilddShared
import Foundation

/// Settings shared by `serve` and the operations commands, so a command run by hand on a master uses what the
/// master's unit uses. Each value comes from its flag, else from the environment, else from the master's
/// configuration file: `$BUILDD_CONFIG`, or `/etc/buildd/master.env` when that exists (the file the systemd
/// unit loads with `EnvironmentFile=`; `KEY=VALUE` lines, `#` comments, values optionally quoted).
enum MasterSettings {
    static let defaultFile = "/etc/buildd/master.env"

    /// The configuration file in use, if any.
    static var file: String? {
        if let path = ProcessInfo.processInfo.environment["BUILDD_CONFIG"], !path.isEmpty { return path }
        return FileManager.default.fileExists(atPath: defaultFile) ? defaultFile : nil
    }

    /// `KEY` from the environment, else from the configuration file; nil when unset or empty.
    static func value(_ key: String) throws -> String? {
        if let value = ProcessInfo.processInfo.environment[key], !value.isEmpty { return value }
        switch loaded {
        case nil: return nil
        case .values(let values)?: return values[key].flatMap { $0.isEmpty ? nil : $0 }
        case .unreadable(let reason)?: throw ValidationError(reason)
        }
    }

    /// The configuration file, read once per process (a command asks for several settings, some twice).
    enum Loaded: Sendable {
        case values([String: String])
        case unreadable(String)
    }

    static let loaded: Loaded? = file.map { file in
        do {
            return .values(try parse(file: file))
        } catch {
            return .unreadable("\(error)")
        }
    }

    /// Where a setting may be given, for error messages.
    static func sources(flag: String, key: String) -> String {
        "pass \(flag), set \(key), or put \(key)=... in \(file ?? defaultFile)"
    }

    static func parse(file: String) throws -> [String: String] {
        // Read to the end rather than by the size stat reports, so /dev/null (no file) reads as empty.
        guard let handle = FileHandle(forReadingAtPath: file), let data = try? handle.readToEnd() ?? Data() else {
            throw ValidationError("""
                cannot read the configuration file \(file): run as a user who may read it, or give the setting \
                as a flag or environment variable (BUILDD_CONFIG=/dev/null reads no file)
                """)
        }
        try? handle.close()
        return try parse(text: String(decoding: data, as: UTF8.self), file: file)
    }

    static func parse(text: String, file: String) throws -> [String: String] {
        var values: [String: String] = [:]
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmed(" \t\r")
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            guard let equals = line.firstIndex(of: "="), equals != line.startIndex else {
                throw ValidationError("\(file):\(index + 1): expected KEY=VALUE")
            }
            let key = String(line[..<equals]).trimmed(" \t")
            var value = String(line[line.index(after: equals)...]).trimmed(" \t")
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            values[key] = value
        }
        return values
    }
}

/// The masters' shared artifact store, for the commands that read or write it.
struct ArtifactOptions: ParsableArguments {
    @Option(help: """
        The masters' shared artifact store directory (default: $BUILDD_ARTIFACTS or the configuration file's \
        BUILDD_ARTIFACTS). Required: a wrong folder would make agents fetch files that are not there.
        """)
    var artifacts: String?

    /// The directory; `mustExist` for commands that only use a store the masters already serve.
    func directory(mustExist: Bool = true) throws -> String {
        guard let path = try artifacts ?? MasterSettings.value("BUILDD_ARTIFACTS") else {
            throw ValidationError("no artifact store: "
                                  + MasterSettings.sources(flag: "--artifacts", key: "BUILDD_ARTIFACTS"))
        }
        var isDirectory: ObjCBool = false
        if mustExist, !(FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue) {
            throw ValidationError("the artifact store \(path) does not exist: it must be the directory the masters "
                                  + "serve (their --artifacts / BUILDD_ARTIFACTS)")
        }
        return path
    }
}

/// The broker queue type every declaration of this farm uses.
struct QueueTypeOptions: ParsableArguments {
    @Option(help: """
        x-queue-type of declared queues, classic or quorum (default: $BUILDD_QUEUE_TYPE or the configuration \
        file's BUILDD_QUEUE_TYPE, else classic). Every master, `processor add` and agent must use the farm's \
        type; deploy/rabbitmq/definitions.json declares quorum.
        """)
    var queueType: String?

    static let allowed = ["classic", "quorum"]

    func resolved() throws -> String {
        let value = try queueType ?? MasterSettings.value("BUILDD_QUEUE_TYPE") ?? "classic"
        guard Self.allowed.contains(value) else {
            throw ValidationError("queue type '\(value)' is not one of \(Self.allowed.joined(separator: ", "))")
        }
        return value
    }
}
