import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `build submit --master`: the sources checked here, uploaded by digest, the build submitted with an
/// Idempotency-Key, and followed with `--wait`.
extension BuildCommand.Submit {
    /// What `POST /v1/builds` takes.
    struct Body: Encodable {
        let archseries, source, version, urgency, pocket, component, archive, buildType: String
        let files: [FileDigest]
        var virtualized: Bool?
        var constraints: [String]?
        var archiveName: String?
        var archIndep: Bool?

        enum CodingKeys: String, CodingKey {
            case archseries, source, version, urgency, pocket, component, archive, files, virtualized, constraints
            case buildType = "build_type", archiveName = "archive_name", archIndep = "arch_indep"
        }
    }

    func submit(through client: MasterClient, _ name: ArchSeriesName) async throws {
        var files: [(path: String, digest: FileDigest)] = []
        if let dsc {
            files = try SourceImport.checkDsc(at: dsc, keyring: keyring, expecting: (source, version))
        } else if fromArchive {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("buildd-source-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: folder) }
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let path = try SourceImport.fetchFromArchive(name: source, version: version, sources: archiveSources, into: folder)
            files = try SourceImport.checkDsc(at: path, keyring: keyring, expecting: (source, version))
            try await upload(files, through: client)
            return try await submitAndFollow(files.map(\.digest), client, name)
        } else {
            for path in sourceFiles {
                files.append((path, try SourceImport.fileDigest(at: path, name: String(path.split(separator: "/").last!))))
            }
        }
        try await upload(files, through: client)
        try await submitAndFollow(files.map(\.digest), client, name)
    }

    /// Uploads each file the farm does not hold yet (`PUT /v1/uploads/SHA256` answers 200 for one it holds,
    /// before reading the body), with a progress line for large ones.
    func upload(_ files: [(path: String, digest: FileDigest)], through client: MasterClient) async throws {
        for (path, digest) in files {
            let held = try await client.send("GET", "/v1/uploads/\(digest.sha256)")
            if held.status == 200 {
                SourceImport.progress("\(digest.name): the farm has it already")
                continue
            }
            if held.status != 404 { try MasterClient.check(held) }
            let meter = ProgressMeter(name: digest.name, total: digest.size)
            var lastError: Error?
            // A broken-off upload left nothing on the master: it is sent again from the start.
            for attempt in 1...3 {
                do {
                    let response = try await client.send("PUT", "/v1/uploads/\(digest.sha256)", body: .file(path: path),
                                                         headers: ["Content-Type": "application/octet-stream"],
                                                         timeoutSeconds: 300,
                                                         progress: digest.size >= ProgressMeter.threshold ? meter.update : nil)
                    try MasterClient.check(response)
                    meter.finish(stored: response.status == 201)
                    lastError = nil
                    break
                } catch let error as MasterClient.APIError where error.status < 500 {
                    throw error
                } catch {
                    lastError = error
                    SourceImport.progress("uploading \(digest.name) failed (attempt \(attempt) of 3): \(error)")
                }
            }
            if let lastError { throw lastError }
        }
    }

    func submitAndFollow(_ digests: [FileDigest], _ client: MasterClient, _ name: ArchSeriesName) async throws {
        var body = Body(archseries: "\(name.distribution)/\(name.series)/\(name.archTag)", source: source, version: version,
                        urgency: urgency.rawValue, pocket: pocket.rawValue, component: component.rawValue,
                        archive: archive.rawValue, buildType: buildType, files: digests)
        if !virtualized { body.virtualized = false }
        if !constraints.isEmpty { body.constraints = constraints }
        body.archiveName = inArchive
        if archIndep { body.archIndep = true }
        let bytes = Array(try JSONEncoder().encode(body))
        // One key for every try of this submit: a retry whose first answer was lost finds the build it made.
        let key = "cli-" + randomHexToken(bytes: 16)
        var detail: BuildDetail?
        for attempt in 1...5 {
            do {
                detail = try await client.json("POST", "/v1/builds", as: BuildDetail.self, body: bytes,
                                               headers: ["Idempotency-Key": key])
                break
            } catch let error as MasterClient.APIError where error.status < 500 {
                throw error
            } catch {
                if attempt == 5 { throw error }
                SourceImport.progress("submit failed (attempt \(attempt) of 5), trying again with the same key: \(error)")
                try await Task.sleep(for: .seconds(attempt))
            }
        }
        guard let detail else { return }
        let id = detail.build.id
        if output.json && !wait { printJSON(Submitted(id: id)) } else if !wait { print(id) }
        guard wait else { return }
        SourceImport.progress("build \(id) submitted; waiting for it to end")
        var last = detail.build.status
        var current = detail
        while current.build.status.isActive {
            try await Task.sleep(for: .seconds(2))
            do {
                current = try await client.json("GET", "/v1/builds/\(id)", as: BuildDetail.self)
            } catch let error as MasterClient.APIError where error.status >= 500 {
                continue
            } catch is ValidationError {
                continue  // no master answered this time
            }
            if current.build.status != last {
                SourceImport.progress("build \(id): \(current.build.status.rawValue)\(current.build.builder.map { " on \($0)" } ?? "")")
                last = current.build.status
            }
        }
        if output.json { printJSON(current) } else { print("\(id) \(current.build.status.rawValue)") }
        let code = Self.exitCode(for: current.build.status)
        if code != 0 { throw ExitCode(code) }
    }

    /// `--wait`'s exit status for a build's end.
    static func exitCode(for status: BuildStatus) -> Int32 {
        switch status {
        case .fullyBuilt: return 0
        case .manualDepWait: return 2
        case .chrootWait: return 3
        case .cancelled, .superseded: return 4
        default: return 1
        }
    }
}

/// A progress line on standard error for a large upload: redrawn in place on a terminal, every tenth
/// otherwise.
final class ProgressMeter: @unchecked Sendable {
    static let threshold: Int64 = 4 << 20
    let name: String
    let total: Int64
    private let lock = NSLock()
    private var shownTenth = -1
    private var lastDrawn = Date.distantPast
    private let terminal = isatty(2) == 1

    init(name: String, total: Int64) {
        self.name = name
        self.total = max(total, 1)
    }

    @Sendable func update(_ sent: Int64) {
        lock.lock()
        defer { lock.unlock() }
        let tenth = Int(sent * 10 / total)
        if terminal {
            guard Date().timeIntervalSince(lastDrawn) >= 0.2 || sent == total else { return }
            lastDrawn = Date()
            let width = 30, filled = Int(sent * Int64(width) / total)
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\(name) [\(bar)] \(sent * 100 / total)% of \(Self.size(total))".utf8))
        } else if tenth > shownTenth {
            shownTenth = tenth
            FileHandle.standardError.write(Data("buildd-master: uploading \(name): \(tenth * 10)% of \(Self.size(total))\n".utf8))
        }
    }

    func finish(stored: Bool) {
        if terminal && total >= Self.threshold { FileHandle.standardError.write(Data("\n".utf8)) }
        SourceImport.progress(stored ? "uploaded \(name) (\(Self.size(total)))" : "\(name): the farm has it already")
    }

    static func size(_ bytes: Int64) -> String {
        bytes >= 1 << 20 ? String(format: "%.1f MiB", Double(bytes) / 1_048_576) : "\(bytes) bytes"
    }
}
