import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

/// How the CLI reaches a farm over its HTTP API instead of its database: `--master` (or `BUILDD_MASTER_URL`),
/// with `--token` (or `BUILDD_TOKEN`) and, for a private CA, `--ca-file` (or `BUILDD_CA_FILE`).
struct MasterOptions: ParsableArguments {
    @Option(help: """
        A master's URL (default: $BUILDD_MASTER_URL), or several separated by commas, tried in turn: the command \
        then goes through the HTTP API and needs neither the database nor the artifact directory.
        """)
    var master: String?

    @Option(help: "The API token (default: $BUILDD_TOKEN); its role decides what the command may do.")
    var token: String?

    @Option(help: "The CA certificate (PEM) that signed the masters' certificates (default: $BUILDD_CA_FILE; else the system's).")
    var caFile: String?

    /// The client, when a master is named (by flag, environment or configuration file).
    func client() throws -> MasterClient? {
        guard let urls = try master ?? MasterSettings.value("BUILDD_MASTER_URL") else { return nil }
        let list = urls.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for url in list where !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            throw ValidationError("--master \(url): an http:// or https:// URL")
        }
        guard !list.isEmpty else { throw ValidationError("--master names no URL") }
        let trust = try (caFile ?? MasterSettings.value("BUILDD_CA_FILE")).map { try TLSTrust(caFile: $0) }
        return MasterClient(masters: list.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 },
                            token: try token ?? MasterSettings.value("BUILDD_TOKEN"), trust: trust)
    }
}

/// The farm's HTTP API as the CLI uses it: each request goes to the first master that answers, on to the
/// next when one cannot be reached or answers 502-504 (a master stepped down or a proxy without one).
struct MasterClient: Sendable {
    let masters: [String]
    let token: String?
    let trust: TLSTrust?

    /// An answer the API gave as an error: its status and message (`{"error": {"message": ...}}`).
    struct APIError: Error, CustomStringConvertible {
        let status: Int
        let message: String
        var description: String { "\(message) (HTTP \(status))" }
    }

    func send(_ method: String, _ path: String, body: SimpleHTTPClient.Body = .none, headers: [String: String] = [:],
              timeoutSeconds: Int = 60, progress: (@Sendable (Int64) -> Void)? = nil) async throws -> SimpleHTTPClient.Response {
        var headers = headers
        if let token { headers["Authorization"] = "Bearer \(token)" }
        var failures: [String] = []
        for master in masters {
            let url = master + path
            do {
                let response = try await runBlocking(name: "http") { [headers, trust] in
                    try SimpleHTTPClient.send(method: method, url: url, headers: headers, body: body,
                                              timeoutSeconds: timeoutSeconds, trust: trust, progress: progress)
                }
                if (502...504).contains(response.status) && master != masters.last {
                    failures.append("\(master): HTTP \(response.status)")
                    continue
                }
                return response
            } catch {
                failures.append("\(master): \(error)")
            }
        }
        throw ValidationError("no master answered: \(failures.joined(separator: "; "))")
    }

    /// A JSON answer of 2xx decoded, or the API's error thrown.
    func json<T: Decodable>(_ method: String, _ path: String, as type: T.Type, body: [UInt8]? = nil,
                            headers: [String: String] = [:]) async throws -> T {
        var headers = headers
        if body != nil { headers["Content-Type"] = "application/json" }
        let response = try await send(method, path, body: body.map { .bytes($0) } ?? .none, headers: headers)
        try Self.check(response)
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw APIError(status: response.status, message: "unexpected answer from \(path): \(error)")
        }
    }

    static func check(_ response: SimpleHTTPClient.Response) throws {
        guard !(200...299).contains(response.status) else { return }
        struct Envelope: Decodable { struct Inner: Decodable { let message: String }; let error: Inner }
        let message = (try? JSONDecoder().decode(Envelope.self, from: Data(response.body)))?.error.message ?? response.text
        throw APIError(status: response.status, message: message.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// Runs a command's body and turns the API's errors into a message and an exit status: 77 (EX_NOPERM) for a
/// refused token, 66 (EX_NOINPUT) for something that does not exist, 65 (EX_DATAERR) for refused input, 69
/// (EX_UNAVAILABLE) when no master answered, 1 otherwise.
func withMaster<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as MasterClient.APIError {
        FileHandle.standardError.write(Data("error: \(error.message) (HTTP \(error.status))\n".utf8))
        switch error.status {
        case 401, 403: throw ExitCode(77)
        case 404: throw ExitCode(66)
        case 400, 409, 413, 422: throw ExitCode(65)
        case 502...504, 507: throw ExitCode(69)
        default: throw ExitCode.failure
        }
    }
}
