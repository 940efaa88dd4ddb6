import BuilddCore
import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The whole log of a running build, live.
///
/// | Route | Who | What |
/// |---|---|---|
/// | `PATCH /v1/builds/ID/attempts/N/log` | the attempt's agent (its upload key) | appends a chunk at `X-Log-Offset`; 202 with the offset held, 416 with it when the chunk is not at the end; with `X-Log-Final: SHA256` and `?name=` the log is checked and stored (201) |
/// | `GET /v1/builds/ID/log?offset=N[&attempt=A]` | role read (private builds: their viewers) | the log from byte N: `X-Log-Offset` (where the next read starts), `X-Log-Complete`, `X-Log-Attempt`; with `Accept: text/event-stream` it follows the log as Server-Sent Events until the attempt ends |
///
/// Like GitLab's runner trace: the agent sends what the log grew by, the master answers with what it holds,
/// and a chunk sent twice or lost is answered with a 416 and the offset to go on from. The chunks go to the
/// artifact store all masters share (``ArtifactStore/appendLive(buildID:attempt:offset:bytes:maxBytes:)``), so an
/// agent that moves to another master goes on where it was; the last request carries the whole log's digest,
/// and the log is stored from what was appended, not sent a second time.
extension HTTPAPI {
    public static let logOffsetHeader = HTTPField.Name("X-Log-Offset")!
    public static let logFinalHeader = HTTPField.Name("X-Log-Final")!
    public static let logCompleteHeader = HTTPField.Name("X-Log-Complete")!
    public static let logAttemptHeader = HTTPField.Name("X-Log-Attempt")!
    /// The largest chunk one append takes.
    public static let maxLogChunk = 1 << 20

    func addLogRoutes(to router: Router<BasicRequestContext>) {
        router.patch("/v1/builds/:id/attempts/:attempt/log") { request, context in
            try await self.appendLog(request, context)
        }
        router.get("/v1/builds/:id/log") { request, context in
            let caller = try await self.authorize(request, .read)
            return try await self.readLog(request, context, visible: Access.visibleArchives(to: caller.role))
        }
    }

    func appendLog(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let buildID = try context.parameters.require("id", as: Int64.self)
        let attempt = try context.parameters.require("attempt", as: Int32.self)
        let route = "log", about: Logger.Metadata = ["build.id": "\(buildID)", "build.attempt": "\(attempt)"]
        guard let key = Self.bearer(request) else {
            throw refuse(.unauthorized, route: route, reason: "missing_token", "missing upload key", about)
        }
        try await admit(key, buildID: buildID, attempt: attempt, route: route, about)
        guard let offset = request.headers[Self.logOffsetHeader].flatMap({ Int64($0) }), offset >= 0 else {
            throw refuse(.badRequest, route: route, reason: "bad_offset", "missing or invalid X-Log-Offset", about)
        }
        let final = request.headers[Self.logFinalHeader]?.lowercased()
        let name = request.uri.queryParameters["name"].map(String.init)
        if let final {
            guard Naming.isValidSHA256(final) else {
                throw refuse(.badRequest, route: route, reason: "bad_checksum_header", "invalid X-Log-Final", about)
            }
            guard let name, Naming.isValidFileName(name) else {
                throw refuse(.badRequest, route: route, reason: "bad_name", "the last append names the log: ?name=", about)
            }
        }
        try refuseDeclaredAbove(Int64(Self.maxLogChunk), request, route: route, about) { _ in
            "a log chunk is at most \(Self.maxLogChunk) bytes"
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxLogChunk)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw refuse(.contentTooLarge, route: route, reason: "too_large", "a log chunk is at most \(Self.maxLogChunk) bytes", about)
        }
        let held: Int64
        do {
            held = try artifacts.appendLive(buildID: buildID, attempt: attempt, offset: offset,
                                            bytes: Array(body.readableBytesView), maxBytes: maxArtifactBytes)
        } catch let mismatch as ArtifactStore.LiveOffsetMismatch {
            BuilddMetrics.httpRefused(route: route, reason: "offset")
            throw HTTPError(.rangeNotSatisfiable, headers: [Self.logOffsetHeader: "\(mismatch.held)"],
                            message: "the log holds \(mismatch.held) bytes: send from there")
        } catch let failure as ArtifactStore.Failure where failure.isFull {
            throw refuse(Self.insufficientStorage, route: route, reason: "store_full",
                         "the artifact store is full (\(failure)): try again later", about)
        } catch let failure as ArtifactStore.Failure {
            throw refuse(.contentTooLarge, route: route, reason: "too_large", "\(failure)", about)
        }
        guard let final, let name else {
            return Response(status: .accepted, headers: [Self.logOffsetHeader: "\(held)"])
        }
        let stored: (sha256: String, size: Int64)
        do {
            stored = try artifacts.commitLive(buildID: buildID, attempt: attempt, expectedSHA256: final)
        } catch let failure as ArtifactStore.Failure where failure.isChecksumMismatch {
            throw refuse(.unprocessableContent, route: route, reason: "checksum_mismatch", failure.description, about)
        }
        do {
            try await store.recordFile(buildID: buildID, attempt: attempt, name: name, kind: "log", sha256: stored.sha256,
                                       size: stored.size)
        } catch let error as StoreError where error.code == .conflict {
            throw refuse(.conflict, route: route, reason: "already_stored", error.message, about)
        }
        logger.info("build log stored from its live appends",
                    metadata: about.merging(["log.bytes": "\(stored.size)"]) { $1 })
        var response = Self.json(FileDigest(name: name, sha256: stored.sha256, size: stored.size), status: .created)
        response.headers[Self.logOffsetHeader] = "\(stored.size)"
        return response
    }

    /// Where an attempt's log is read from: the stored log once the attempt's end recorded it, else the live
    /// one its agent is appending to. `complete` once nothing more will come (the log stored, or the attempt
    /// over: the build ended or went on to another attempt).
    struct LogSource {
        let attempt: Int32
        let path: String?
        let complete: Bool
        let status: BuildStatus
        /// Whether the attempt's end is recorded (the build ended, or went on to another attempt): a log is
        /// stored just before its build's end is.
        let over: Bool
    }

    func logSource(_ buildID: Int64, visible: [ArchivePurpose], attempt wanted: Int32?) async throws -> LogSource {
        let detail: BuildDetail
        do {
            detail = try await store.build(buildID, visible: visible)
        } catch let error as StoreError where error.code == .notFound {
            throw HTTPError(.notFound, message: error.message)
        }
        return logSource(detail, attempt: wanted)
    }

    /// Where the log of `detail`'s attempt `wanted` (nil: its current one) is read from, for a caller that has
    /// read the build already (the build's page).
    func logSource(_ detail: BuildDetail, attempt wanted: Int32?) -> LogSource {
        let buildID = detail.build.id
        let current = Int32(detail.build.attempt)
        let attempt = wanted ?? current
        let over = attempt < current || !detail.build.status.isActive
        if let stored = detail.files.last(where: { $0.kind == "log" && $0.attempt == Int(attempt) }) {
            return LogSource(attempt: attempt, path: artifacts.path(sha256: stored.sha256), complete: true,
                             status: detail.build.status, over: over)
        }
        let live = artifacts.livePath(buildID: buildID, attempt: attempt)
        return LogSource(attempt: attempt, path: access(live, F_OK) == 0 ? live : nil, complete: over,
                         status: detail.build.status, over: over)
    }

    func readLog(_ request: Request, _ context: BasicRequestContext, visible: [ArchivePurpose]) async throws -> Response {
        let buildID = try context.parameters.require("id", as: Int64.self)
        let query = request.uri.queryParameters
        // EventSource sends the last event's id (the offset it had reached) when it reconnects.
        let offsetText = request.headers[HTTPField.Name("Last-Event-ID")!] ?? query["offset"].map(String.init) ?? "0"
        guard let offset = Int64(offsetText), offset >= 0 else {
            throw HTTPError(.badRequest, message: "offset must be a byte offset (0 or more)")
        }
        var attempt: Int32?
        if let text = query["attempt"] {
            guard let value = Int32(text), value >= 1 else { throw HTTPError(.badRequest, message: "attempt must be 1 or more") }
            attempt = value
        }
        let source = try await logSource(buildID, visible: visible, attempt: attempt)
        if request.headers[.accept]?.contains("text/event-stream") == true {
            return followLog(buildID, visible: visible, attempt: source.attempt, from: offset)
        }
        let bytes = source.path.flatMap { ArtifactStore.readBytes($0, from: offset, limit: 4 << 20) } ?? []
        let next = offset + Int64(bytes.count)
        // Complete when the attempt is over and this read reached the end of what it left.
        let complete = source.complete && bytes.count < 4 << 20
        return Response(status: .ok, headers: [
            .contentType: "text/plain; charset=utf-8", .cacheControl: "no-store",
            Self.logOffsetHeader: "\(next)", Self.logCompleteHeader: complete ? "true" : "false",
            Self.logAttemptHeader: "\(source.attempt)",
        ], body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Follows an attempt's log as Server-Sent Events: each event holds whole lines (its `id` the byte offset
    /// after them, which a reconnecting EventSource sends back as `Last-Event-ID`), then an `end` event with the
    /// build's status once every byte was sent and the attempt's end is recorded. Carriage returns are left out (they end
    /// an event's line); the plain `GET` gives the bytes as they are.
    func followLog(_ buildID: Int64, visible: [ArchivePurpose], attempt: Int32, from start: Int64) -> Response {
        let body = ResponseBody { writer in
            var offset = start
            var pending: [UInt8] = []
            var quietSince = ContinuousClock.now
            func send(_ text: String) async throws {
                try await writer.write(ByteBuffer(string: text))
                quietSince = .now
            }
            func event(_ lines: ArraySlice<UInt8>, id: Int64) async throws {
                let text = String(decoding: lines.filter { $0 != 13 }, as: UTF8.self)
                let data = text.split(separator: "\n", omittingEmptySubsequences: false).map { "data: \($0)\n" }.joined()
                try await send("id: \(id)\n\(data)\n")
            }
            while true {
                let source = try await self.logSource(buildID, visible: visible, attempt: attempt)
                var read = 0
                if let path = source.path, let bytes = ArtifactStore.readBytes(path, from: offset, limit: 256 * 1024) {
                    read = bytes.count
                    offset += Int64(bytes.count)
                    pending += bytes
                }
                // Whole lines go out as they come; a line longer than 64 KiB goes out in parts.
                if let newline = pending.lastIndex(of: 10) {
                    try await event(pending[..<newline], id: offset - Int64(pending.count - newline - 1))
                    pending.removeSubrange(...newline)
                } else if pending.count >= 64 * 1024 {
                    try await event(pending[...], id: offset)
                    pending.removeAll()
                }
                // The end once every byte is out and the attempt's end is recorded (so `end` carries its result).
                if source.complete && source.over && read == 0 {
                    if !pending.isEmpty { try await event(pending[...], id: offset) }
                    try await send("event: end\nid: \(offset)\ndata: {\"status\":\"\(source.status.rawValue)\",\"attempt\":\(attempt),\"offset\":\(offset)}\n\n")
                    break
                }
                if read == 0 {
                    if ContinuousClock.now - quietSince > .seconds(15) { try await send(": still running\n\n") }
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [
            .contentType: "text/event-stream", .cacheControl: "no-store",
            Self.logAttemptHeader: "\(attempt)", HTTPField.Name("X-Accel-Buffering")!: "no",
        ], body: body)
    }
}
