import AMQP
import BuilddShared
import HTTPTypes
import Hummingbird
import Logging
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// The master's HTTP side: the artifact store agents upload to, downloads, build JSON and health.
///
/// | route | what |
/// |---|---|
/// | `PUT /v1/builds/{id}/attempts/{attempt}/files/{name}?kind=result\|log` | upload by the attempt's builder; `Authorization: Bearer <upload key>` (the key whose SHA-256 its `accepted` declared), `X-Checksum-Sha256` |
/// | `GET /v1/builds/{id}/files/{name}` | download a stored file |
/// | `GET /v1/builds/{id}/attempts/{attempt}/sources/{name}` | a source file, for the running attempt's builder (its upload key as `Bearer`, or as the Basic password launchpad-buildd's `ensurepresent` sends) |
/// | `GET /v1/chroots/{sha1 or sha256}` | a chroot tarball, for legacy builders and agents |
/// | `GET /v1/builds/{id}` | a build as JSON |
/// | `GET /healthz` | 200 when the database and the broker answer, else 503 |
/// | `GET /metrics` | Prometheus text format |
/// | `GET /builders`, `/builds/{id}`, `/queue/{processor}` | the status pages |
/// | `/v1/...` | the JSON API (docs/API.md) |
public struct HTTPAPI: Sendable {
    let store: BuilddStore
    let artifacts: ArtifactStore
    let broker: AMQPClient?
    /// Whether this master consumes the status shards (``/healthz`` says when it stepped down).
    let intake: StatusShardIntake?
    let maxArtifactBytes: Int64
    /// The largest source file `PUT /v1/uploads` takes (`serve --max-upload`).
    let maxUploadBytes: Int64
    let metrics: PrometheusCollectorRegistry?
    let logger: Logger
    /// Whether reading public builds needs no token (`serve --anonymous-read`).
    let anonymousRead: Bool
    /// Whether the sign-in cookie is marked Secure (the master serves HTTPS, or sits behind a proxy that does).
    let secureCookies: Bool
    /// Refused requests per route and reason (``NoiseRule``).
    let refusals = RefusalLog()
    /// How often the masters sample the farm for the plots (`serve --sample-interval`).
    let samplePeriod: Duration
    /// Whether and how this master enrols build machines (`POST /v1/enrol`); nil: it does not.
    public var enrolment: EnrolmentSettings?

    public static let checksumHeader = HTTPField.Name("X-Checksum-Sha256")!

    /// - Parameter metrics: the registry swift-metrics was bootstrapped with; `/metrics` emits it.
    public init(store: BuilddStore, artifacts: ArtifactStore, broker: AMQPClient?, maxArtifactBytes: Int64,
                metrics: PrometheusCollectorRegistry? = nil, logger: Logger = Logger(label: "buildd.http"),
                anonymousRead: Bool = true, secureCookies: Bool = false, intake: StatusShardIntake? = nil,
                maxUploadBytes: Int64? = nil, samplePeriod: Duration = .seconds(60)) {
        self.samplePeriod = samplePeriod
        self.maxUploadBytes = maxUploadBytes ?? maxArtifactBytes
        self.intake = intake
        self.anonymousRead = anonymousRead
        self.secureCookies = secureCookies
        self.store = store
        self.artifacts = artifacts
        self.broker = broker
        self.maxArtifactBytes = maxArtifactBytes
        self.metrics = metrics
        self.logger = logger
    }

    /// 507: the artifact store has no room left.
    static let insufficientStorage = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")

    /// A refused request: counted in `buildd_http_refused_total` by route and reason, logged (never with
    /// the token) within ``NoiseRule``'s bound per route and reason, each line with the refusals it stands
    /// for, then thrown as the HTTP error the client sees.
    func refuse(_ status: HTTPResponse.Status, route: String, reason: String, _ message: String,
                _ metadata: Logger.Metadata = [:]) -> HTTPError {
        BuilddMetrics.httpRefused(route: route, reason: reason)
        let verdict = refusals.note("\(route)/\(reason)", now: ContinuousClock.now.secondsSinceStart)
        if verdict.log {
            logger.notice("request refused", metadata: metadata.merging([
                "http.route": "\(route)", "refusal.reason": "\(reason)", "http.status": "\(status.code)",
                "refusals": "\(verdict.standsFor)",
            ]) { $1 })
        }
        return HTTPError(status, message: message)
    }

    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        addJSONRoutes(to: router)
        addEnrolRoute(to: router)
        addJoinTokenRoutes(to: router)
        addSubmitRoutes(to: router)
        addLogRoutes(to: router)
        addPageRoutes(to: router)
        addOperatorPageRoutes(to: router)
        addSignInRoutes(to: router)
        router.get("/metrics") { request, _ in
            try await self.authorize(request, .read)
            return try await self.exportMetrics()
        }
        router.get("/healthz") { _, _ in try await self.health() }
        router.put("/v1/builds/:id/attempts/:attempt/files/:name") { request, context in
            try await self.upload(request, context)
        }
        router.get("/v1/builds/:id/files/:name") { request, context in
            let caller = try await self.authorize(request, .read)
            return try await self.download(context, visible: Access.visibleArchives(to: caller.role))
        }
        router.get("/v1/builds/:id/attempts/:attempt/sources/:name") { request, context in
            try await self.downloadSource(request, context)
        }
        // Chroots by SHA-1 (launchpad-buildd's `ensurepresent`) or SHA-256 (agents). They hold nothing
        // private (a Debian base system), so they need no token.
        router.get("/v1/chroots/:digest") { _, context in
            let digest = try context.parameters.require("digest")
            guard digest.count == 40 || digest.count == 64, digest.allSatisfy(\.isHexDigit),
                  let chroot = try await self.store.chroot(digest: digest.lowercased()) else {
                throw HTTPError(.notFound, message: "no chroot \(digest)")
            }
            return try self.serve(name: chroot.name, sha256: chroot.sha256, size: chroot.size)
        }
        router.get("/v1/builds/:id") { request, context in
            let caller = try await self.authorize(request, .read)
            let id = try context.parameters.require("id", as: Int64.self)
            do {
                return Self.json(try await self.store.build(id, visible: Access.visibleArchives(to: caller.role)))
            } catch let error as StoreError where error.code == .notFound {
                throw HTTPError(.notFound, message: error.message)
            }
        }
        return router
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: WireCodec.encode(value))))
    }

    /// Prometheus text format: the gauges are read from the database at each scrape.
    func exportMetrics() async throws -> Response {
        guard let metrics else { throw HTTPError(.notFound, message: "metrics are not enabled") }
        BuilddMetrics.storage(databaseAcceptsWrites: try? await store.acceptsWrites(),
                              artifactStoreFreeBytes: artifacts.freeBytes())
        let processors = try await store.processors()
        var states: [String: Int] = [:]
        // Every state has a series, at zero when no builder is in it (DIRTY and CLEANING included).
        for state in BuilderAvailability.allCases { states[state.rawValue] = 0 }
        let builders = try await store.builders()
        for builder in builders { states[builder.state(silentAfterSeconds: Self.silence), default: 0] += 1 }
        let idle = builders.filter { $0.availability(silentAfterSeconds: Self.silence).takesWork }.map {
            BuilderDemand.Idle(processors: Set($0.processors), placement: $0.placement ?? .plain)
        }
        BuilddMetrics.record(shortfall: BuilderDemand.shortfall(waiting: try await store.waitingDemand(), idle: idle))
        BuilddMetrics.record(FarmSnapshot(
            processors: processors.map { .init(name: $0.name, waiting: $0.waiting, oldestWaitSeconds: $0.oldestWaitSeconds ?? 0) },
            builderStates: states))
        var buffer: [UInt8] = []
        metrics.emit(into: &buffer)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
    }

    func health() async throws -> Response {
        var problems: [String] = []
        do {
            if try await !store.acceptsWrites() { problems.append("database: refuses writes (read-only, or a standby)") }
        } catch {
            problems.append("database: \(error)")
        }
        if let intake, !intake.isOn {
            let holdDown = intake.holdDown
            problems.append("status shards: stepped down (events cannot be applied: \(intake.whyDown ?? "database unreachable")); "
                            + "consuming again once the database takes writes"
                            + (holdDown.stepDownsInARow > 1
                               ? ", held down \(holdDown.wait.components.seconds) s after \(holdDown.stepDownsInARow) step-downs in a row"
                               : ""))
        }
        if let broker, broker.currentGeneration == nil { problems.append("broker: not connected") }
        if artifacts.fullness.isFull {
            let free = artifacts.freeBytes()
            // Room enough for the largest file allowed again: the next upload will say.
            if let free, free > maxArtifactBytes {
                artifacts.fullness.clear()
            } else {
                problems.append("artifact store: full (\(free.map { "\($0) bytes free" } ?? "free space unknown")): uploads are refused until space is freed")
            }
        }
        if problems.isEmpty { return Response(status: .ok, body: ResponseBody(byteBuffer: ByteBuffer(string: "ok\n"))) }
        return Response(status: .serviceUnavailable,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: problems.joined(separator: "\n") + "\n")))
    }

    func upload(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let buildID = try context.parameters.require("id", as: Int64.self)
        let attempt = try context.parameters.require("attempt", as: Int32.self)
        let name = try context.parameters.require("name")
        let route = "upload"
        let about: Logger.Metadata = ["build.id": "\(buildID)", "build.attempt": "\(attempt)"]
        guard Naming.isValidFileName(name) else {
            throw refuse(.badRequest, route: route, reason: "bad_name", "invalid file name", about)
        }
        let kind = request.uri.queryParameters["kind"].map(String.init) ?? "result"
        guard kind == "result" || kind == "log" else {
            throw refuse(.badRequest, route: route, reason: "bad_kind", "kind must be result or log", about)
        }
        guard let key = Self.bearer(request) else {
            throw refuse(.unauthorized, route: route, reason: "missing_token", "missing upload key", about)
        }
        try await admit(key, buildID: buildID, attempt: attempt, route: route, about)
        guard let expected = request.headers[Self.checksumHeader]?.lowercased(), Naming.isValidSHA256(expected) else {
            throw refuse(.badRequest, route: route, reason: "bad_checksum_header", "missing or invalid X-Checksum-Sha256",
                         about)
        }
        // A failed write or commit leaves no partial file; a store with no room left answers 507, which the agent
        // takes for the farm's failure (BUILDERFAIL, the build retried), not the package's.
        let size = try await storeBody(request, sha256: expected, maxBytes: maxArtifactBytes, route: route, about,
                                       tooLarge: { _ in "file larger than \(self.maxArtifactBytes) bytes" },
                                       mismatch: { $0.description })
        do {
            try await store.recordFile(buildID: buildID, attempt: attempt, name: name, kind: kind, sha256: expected,
                                       size: size)
        } catch let error as StoreError where error.code == .conflict {
            throw refuse(.conflict, route: route, reason: "already_stored", error.message, about)
        }
        // A log sent whole (its agent could not finish the live one) replaces what was appended live.
        if kind == "log" { unlink(artifacts.livePath(buildID: buildID, attempt: attempt)) }
        return Self.json(FileDigest(name: name, sha256: expected, size: size), status: .created)
    }

    /// 413 when the request declares a body longer than `maxBytes` (before any of it is read).
    func refuseDeclaredAbove(_ maxBytes: Int64, _ request: Request, route: String, _ about: Logger.Metadata,
                             _ tooLarge: (_ declared: Int64?) -> String) throws {
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > maxBytes {
            throw refuse(.contentTooLarge, route: route, reason: "too_large", tooLarge(length), about)
        }
    }

    /// Streams a request's body into the artifact store (never whole in memory): at most `maxBytes` (413 by
    /// the declared length or by what arrives), kept only when it hashes to `sha256` (422). A refused, failed or
    /// broken-off upload leaves no partial file (the upload discards itself); a store with no room left is a
    /// 507 that says so. Returns the size stored. `tooLarge` words the 413 (given the declared length when it
    /// is the one refused), `mismatch` the 422.
    func storeBody(_ request: Request, sha256: String, maxBytes: Int64, route: String, _ about: Logger.Metadata,
                   tooLarge: (_ declared: Int64?) -> String,
                   mismatch: (ArtifactStore.Failure) -> String) async throws -> Int64 {
        try refuseDeclaredAbove(maxBytes, request, route: route, about, tooLarge)
        do {
            let upload = try artifacts.beginUpload()
            for try await buffer in request.body {
                guard upload.size + Int64(buffer.readableBytes) <= maxBytes else {
                    upload.discard()
                    throw refuse(.contentTooLarge, route: route, reason: "too_large", tooLarge(nil), about)
                }
                try buffer.withUnsafeReadableBytes { try upload.write($0) }
            }
            let size = upload.size
            _ = try upload.commit(expectedSHA256: sha256)
            return size
        } catch let failure as ArtifactStore.Failure where failure.isFull {
            logger.error("artifact store full: upload refused", metadata: about.merging([
                "http.route": "\(route)", "error": "\(failure)",
                "free.bytes": "\(artifacts.freeBytes().map(String.init) ?? "?")"]) { $1 })
            throw refuse(Self.insufficientStorage, route: route, reason: "store_full",
                         "the artifact store is full (\(failure)): try again later", about)
        } catch let failure as ArtifactStore.Failure where failure.isChecksumMismatch {
            throw refuse(.unprocessableContent, route: route, reason: "checksum_mismatch", mismatch(failure), about)
        } catch let failure as ArtifactStore.Failure {
            logger.error("artifact store failed: upload refused", metadata: about.merging([
                "http.route": "\(route)", "error": "\(failure)"]) { $1 })
            throw HTTPError(.internalServerError, message: "the artifact store failed: \(failure)")
        }
    }

    func download(_ context: BasicRequestContext, visible: [ArchivePurpose]) async throws -> Response {
        let buildID = try context.parameters.require("id", as: Int64.self)
        let name = try context.parameters.require("name")
        guard Naming.isValidFileName(name),
              let file = try await store.file(buildID: buildID, name: name, visible: visible) else {
            throw HTTPError(.notFound, message: "build \(buildID) has no file of that name")
        }
        return try serve(name: name, sha256: file.sha256, size: file.size)
    }

    /// Source files may belong to private archives: only the agent running the build may fetch them.
    func downloadSource(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let buildID = try context.parameters.require("id", as: Int64.self)
        let attempt = try context.parameters.require("attempt", as: Int32.self)
        let name = try context.parameters.require("name")
        let route = "source", about: Logger.Metadata = ["build.id": "\(buildID)", "build.attempt": "\(attempt)"]
        guard let key = Self.token(request) else {
            throw refuse(.unauthorized, route: route, reason: "missing_token", "missing upload key", about)
        }
        try await admit(key, buildID: buildID, attempt: attempt, route: route, about)
        guard Naming.isValidFileName(name) else {
            throw refuse(.badRequest, route: route, reason: "bad_name", "invalid file name", about)
        }
        guard let file = try await store.sourceFile(buildID: buildID, name: name) else {
            throw HTTPError(.notFound, message: "no source file \(name) for build \(buildID)")
        }
        return try serve(name: name, sha256: file.sha256, size: file.size)
    }

    /// Lets a request for an attempt's files through only with the key its builder declared on accept
    /// (``AttemptCredential``). Every refusal answers the same, so it tells a caller nothing of the build; a
    /// request that came before any accept of the current attempt was applied (its builder is early and
    /// tries again) is counted apart, as `not_accepted_yet`.
    func admit(_ key: String, buildID: Int64, attempt: Int32, route: String, _ about: Logger.Metadata) async throws {
        // A master that stepped down from the status shards cannot reach the database (or it refuses writes):
        // it says so at once, and the agent goes on to its next master, rather than each file waiting for a
        // database timeout here.
        if let intake, !intake.isOn {
            throw HTTPError(.serviceUnavailable, message: "this master cannot use its database now: try another master")
        }
        // Nor does a request wait longer than the master's patience for the database (the time it would take
        // the master to step down): on a link cut a moment ago, a statement fails only after its TCP timeout.
        let patience = intake?.patience ?? StatusShardIntake.stepDownAfter(leaseSeconds: 30)
        guard let verdict = try await StatusShardIntake.answer(within: patience, { [store] in
            try await store.authorizeUpload(buildID: buildID, attempt: attempt, key: key)
        }) else {
            BuilddMetrics.httpRefused(route: route, reason: "database_slow")
            throw HTTPError(.serviceUnavailable,
                            message: "this master's database has not answered for \(patience): try another master")
        }
        guard verdict != .admitted else { return }
        throw refuse(.forbidden, route: route, reason: verdict == .notAcceptedYet ? "not_accepted_yet" : "token_refused",
                     "upload key refused, or attempt \(attempt) of build \(buildID) is not running", about)
    }

    /// The token of `Authorization: Bearer TOKEN`, if that is what the request carries.
    static func bearer(_ request: Request) -> String? {
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer ") else { return nil }
        return String(authorization.dropFirst("Bearer ".count))
    }

    /// The attempt's token: `Bearer TOKEN` (agents), or the password of `Basic` (launchpad-buildd's
    /// `ensurepresent` fetches with a user and password).
    static func token(_ request: Request) -> String? {
        if let token = bearer(request) { return token }
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("Basic "),
              let decoded = XMLRPC.decodeBase64(String(authorization.dropFirst("Basic ".count))),
              let text = String(validating: decoded, as: UTF8.self), let colon = text.firstIndex(of: ":")
        else { return nil }
        let password = String(text[text.index(after: colon)...])
        return password.isEmpty ? nil : password
    }

    func serve(name: String, sha256: String, size: Int64) throws -> Response {
        let file = (sha256: sha256, size: size)
        let path = artifacts.path(sha256: file.sha256)
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw HTTPError(.notFound, message: "file \(name) is missing from the store") }
        let body = ResponseBody { writer in
            defer { close(descriptor) }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = read(descriptor, &chunk, chunk.count)
                if count <= 0 { break }
                try await writer.write(ByteBuffer(bytes: chunk[0..<count]))
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [
            .contentType: name.hasSuffix(".txt") ? "text/plain; charset=utf-8" : "application/octet-stream",
            .contentLength: String(file.size), Self.checksumHeader: file.sha256,
        ], body: body)
    }
}
