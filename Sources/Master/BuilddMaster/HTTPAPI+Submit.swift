import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Submitting over the network: source files are uploaded by digest (`PUT /v1/uploads/SHA256`), then a build
/// names them (`POST /v1/builds`). Both need a token of role submitter or above; neither needs the database
/// URL or the artifact directory on the client's host.
extension HTTPAPI {
    static let idempotencyKeyHeader = HTTPField.Name("Idempotency-Key")!
    static let replayedHeader = HTTPField.Name("Idempotent-Replayed")!
    static let nextCursorHeader = HTTPField.Name("X-Next-Cursor")!
    static let linkHeader = HTTPField.Name("Link")!

    /// The most a `.dsc` may weigh to be read and checked against the files of its submit.
    static let maxDscBytes = 1 << 20

    func addSubmitRoutes(to router: Router<BasicRequestContext>) {
        router.put("/v1/uploads/:sha256") { request, context in
            try await self.uploadSource(request, context)
        }
        // Whether the store holds a file already (a client skips its upload then): 200 with its size, or 404.
        router.get("/v1/uploads/:sha256") { request, context in
            try await self.authorize(request, .submit, route: "source_upload")
            let digest = try context.parameters.require("sha256").lowercased()
            guard let size = self.artifacts.size(sha256: digest) else {
                throw HTTPError(.notFound, message: "no file with SHA-256 \(digest) was uploaded")
            }
            return Self.json(UploadedFile(sha256: digest, size: size))
        }
        router.post("/v1/builds") { request, _ in
            try await self.submitBuild(request)
        }
    }

    /// Streams one source file into the artifact store (never whole in memory), checked against the digest
    /// it is named by. The same file twice is stored once: 200 with the stored file when it is there, 201 when
    /// this upload stored it. A broken-off upload leaves nothing: send it again from the start.
    func uploadSource(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let route = "source_upload"
        let caller = try await authorize(request, .submit, route: route)
        let digest = try context.parameters.require("sha256").lowercased()
        let about: Logger.Metadata = ["caller": "\(caller.name ?? "-")", "file.sha256": "\(digest)"]
        guard Naming.isValidSHA256(digest) else {
            throw refuse(.badRequest, route: route, reason: "bad_digest",
                         "the path must name the file's SHA-256: 64 lowercase hex digits", about)
        }
        let tooLarge = { (declared: Int64?) in
            "file\(declared.map { " of \($0) bytes is" } ?? "") larger than this farm takes (--max-upload \(self.maxUploadBytes))"
        }
        try refuseDeclaredAbove(maxUploadBytes, request, route: route, about, tooLarge)
        if let size = artifacts.size(sha256: digest) {
            return Self.json(UploadedFile(sha256: digest, size: size))
        }
        let size = try await storeBody(request, sha256: digest, maxBytes: maxUploadBytes, route: route, about, tooLarge: tooLarge,
                                       mismatch: { "the bytes sent do not hash to the SHA-256 in the path (\($0)): nothing stored" })
        logger.info("source file uploaded", metadata: about.merging(["file.size": "\(size)"]) { $1 })
        return Self.json(UploadedFile(sha256: digest, size: size), status: .created)
    }

    /// Queues a build of uploaded files. 201 with the build; with an `Idempotency-Key` a retry of the same
    /// submit (also through another master) answers 200 with the same build and `Idempotent-Replayed: true`.
    func submitBuild(_ request: Request) async throws -> Response {
        let route = "submit"
        let caller = try await authorize(request, .submit, route: route)
        let buffer = try await request.body.collect(upTo: 256 * 1024)
        let bytes = Array(buffer.readableBytesView)
        let body = try SubmitBody.decode(bytes)
        let build = try body.request()
        // Every file named was uploaded, with the size given.
        for file in build.sourceFiles {
            guard let size = artifacts.size(sha256: file.sha256) else {
                throw HTTPError(.unprocessableContent, message: "file \(file.name) (sha256 \(file.sha256)) was not uploaded: "
                                + "PUT /v1/uploads/\(file.sha256) first")
            }
            guard size == file.size else {
                throw HTTPError(.unprocessableContent, message: "file \(file.name) is \(size) bytes as uploaded, not \(file.size)")
            }
        }
        try checkDsc(of: build)
        let key = request.headers[Self.idempotencyKeyHeader]
        if let key {
            guard (1...255).contains(key.utf8.count), key.allSatisfy({ $0.isASCII && !$0.isNewline }) else {
                throw HTTPError(.badRequest, message: "Idempotency-Key must be 1-255 ASCII characters")
            }
        }
        let outcome: BuilddStore.KeyedSubmit
        do {
            if let key {
                // The key is the caller's own: the same key from two tokens is two keys.
                let scoped = BuilddStore.SubmitKey(caller: caller.name ?? "-", key: key,
                                                   requestSHA256: SHA256.hex(of: body.canonical))
                outcome = try await store.submit(build, key: scoped, actor: Self.actor(caller))
            } else {
                outcome = .created(try await Self.mapped { try await self.store.submit(build, actor: Self.actor(caller)) })
            }
        } catch let error as StoreError where error.code == .notFound {
            throw HTTPError(.notFound, message: error.message)
        } catch let error as StoreError {
            _ = try await Self.mapped { throw error }
            throw error
        }
        let visible = Access.visibleArchives(to: caller.role)
        switch outcome {
        case .created(let id):
            logger.info("build submitted", metadata: ["build.id": "\(id)", "caller": "\(caller.name ?? "-")",
                                                      "build.source": "\(build.sourceName)"])
            var response = Self.json(try await store.build(id, visible: visible), status: .created)
            response.headers[.location] = "/v1/builds/\(id)"
            return response
        case .replayed(let id):
            var response = Self.json(try await store.build(id, visible: visible))
            response.headers[.location] = "/v1/builds/\(id)"
            response.headers[Self.replayedHeader] = "true"
            return response
        case .keyReused(let id):
            throw HTTPError(.unprocessableContent,
                            message: "Idempotency-Key \(key ?? "") was used for another submit (build \(id)): use a new key for a new submit")
        }
    }

    /// A submit with a `.dsc` among its files must list exactly the files the `.dsc` names (by SHA-256 and
    /// size) beside it, and be of the source and version the `.dsc` says: as `build submit --dsc` checks on
    /// the command line.
    func checkDsc(of build: BuildRequest) throws {
        let dscs = build.sourceFiles.filter { $0.name.hasSuffix(".dsc") }
        guard !dscs.isEmpty else { return }
        guard dscs.count == 1, let dsc = dscs.first else {
            throw HTTPError(.unprocessableContent, message: "a submit names at most one .dsc")
        }
        guard dsc.size <= Self.maxDscBytes,
              let data = FileManager.default.contents(atPath: artifacts.path(sha256: dsc.sha256)),
              let text = String(data: data, encoding: .utf8) else {
            throw HTTPError(.unprocessableContent, message: "\(dsc.name) cannot be read as a .dsc")
        }
        let package: DebianControl.SourcePackage
        do {
            package = try DebianControl.sourcePackage(dsc: text)
        } catch {
            throw HTTPError(.unprocessableContent, message: "\(dsc.name): \(error)")
        }
        if let problem = DebianControl.mismatch(of: package, source: build.sourceName, version: build.sourceVersion,
                                                files: build.sourceFiles.filter { $0.name != dsc.name }) {
            throw HTTPError(.unprocessableContent, message: "\(dsc.name): \(problem)")
        }
    }

    /// The builds a list asks for (`/v1/builds` and the builds page): filters, order and cursor, and the page's
    /// size. An empty value is no filter (what a page's form sends for a field left blank). 400 names the field.
    struct BuildsQuery {
        var filter = BuilddStore.BuildFilter()
        var start: BuilddStore.PageStart = .newest(before: nil)
        var limit = 100

        init(_ parameters: [String: String], defaultLimit: Int = 100) throws {
            func value(_ name: String) -> String? {
                guard let text = parameters[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
                return text
            }
            for text in (value("status") ?? "").split(separator: ",") {
                guard let status = BuildStatus(rawValue: text.uppercased()) else {
                    throw HTTPError(.badRequest, message: "status: unknown status \(text)")
                }
                filter.statuses.append(status)
            }
            filter.processor = value("processor")
            filter.source = value("source")
            filter.builder = value("builder")
            if let archive = value("archive") {
                guard let purpose = ArchivePurpose(rawValue: archive) else {
                    throw HTTPError(.badRequest, message: "archive: one of \(ArchivePurpose.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                filter.archive = purpose
            }
            for field in ["since", "until"] {
                guard let text = value(field) else { continue }
                guard let date = Self.time(text) else {
                    throw HTTPError(.badRequest, message: "\(field): an ISO 8601 time with its zone, like 2026-12-05T10:00:00Z (or 2026-12-05T10:00, taken as UTC)")
                }
                let iso = ISO8601DateFormatter().string(from: date)
                if field == "since" { filter.since = iso } else { filter.until = iso }
            }
            limit = value("limit").flatMap { Int($0) } ?? defaultLimit
            guard (1...10_000).contains(limit) else { throw HTTPError(.badRequest, message: "limit must be 1-10000") }
            let order = value("order") ?? "newest"
            guard order == "newest" || order == "oldest" else {
                throw HTTPError(.badRequest, message: "order: newest or oldest")
            }
            start = order == "newest" ? .newest(before: nil) : .oldest(after: nil)
            if let cursor = value("cursor") {
                guard let parsed = HTTPAPI.pageStart(cursor: cursor) else {
                    throw HTTPError(.badRequest, message: "cursor: not one this API gave (use X-Next-Cursor as it came)")
                }
                start = parsed
            }
        }

        /// ISO 8601 with a zone, or a form's `datetime-local` value (no zone: UTC).
        static func time(_ text: String) -> Date? {
            if let date = ISO8601DateFormatter().date(from: text) { return date }
            let local = DateFormatter()
            local.locale = Locale(identifier: "en_US_POSIX")
            local.timeZone = TimeZone(identifier: "UTC")
            for format in ["yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd"] {
                local.dateFormat = format
                if let date = local.date(from: text) { return date }
            }
            return nil
        }
    }

    /// `GET /v1/builds` with filters and a cursor: the page as a list (as before), the next page's cursor in
    /// `X-Next-Cursor` and in a `Link: <...>; rel="next"` header.
    func listBuilds(_ request: Request) async throws -> Response {
        let caller = try await authorize(request, .read)
        let query = request.uri.queryParameters
        let parsed = try BuildsQuery(Dictionary(query.map { (String($0.key), String($0.value)) }, uniquingKeysWith: { first, _ in first }))
        let (filter, start, limit) = (parsed.filter, parsed.start, parsed.limit)
        let page = try await store.buildPage(filter, start: start, limit: limit, visible: Access.visibleArchives(to: caller.role))
        var response = Self.json(page.builds)
        if let next = page.next {
            let cursor = Self.cursor(next)
            response.headers[Self.nextCursorHeader] = cursor
            var components = URLComponents()
            components.path = "/v1/builds"
            components.queryItems = query.filter { $0.key != "cursor" && $0.key != "order" }
                .map { URLQueryItem(name: String($0.key), value: String($0.value)) } + [URLQueryItem(name: "cursor", value: cursor)]
            response.headers[Self.linkHeader] = "<\(components.string ?? "")>; rel=\"next\""
        }
        return response
    }

    /// A page's start as a cursor, and back: `n` and the id to go below (newest first), `o` and the id to go
    /// above (oldest first). Clients take it as it comes.
    static func cursor(_ start: BuilddStore.PageStart) -> String {
        switch start {
        case .newest(let before): return "n\(before.map(String.init) ?? "")"
        case .oldest(let after): return "o\(after.map(String.init) ?? "")"
        }
    }

    static func pageStart(cursor: String) -> BuilddStore.PageStart? {
        guard let kind = cursor.first, let id = Int64(cursor.dropFirst()), id >= 0 else { return nil }
        switch kind {
        case "n": return .newest(before: id)
        case "o": return .oldest(after: id)
        default: return nil
        }
    }
}

/// The answer to an upload.
struct UploadedFile: Encodable {
    let sha256: String
    let size: Int64
}

/// `POST /v1/builds`: what to build, and the uploaded files by digest.
struct SubmitBody: Decodable {
    let archseries: String
    let source: String
    let version: String
    var urgency: Urgency?
    var pocket: Pocket?
    var component: Component?
    var archive: ArchivePurpose?
    var buildType: String?
    var files: [FileDigest]?
    /// Whether it must run on a virtualized builder (default true; a private archive's build always must).
    var virtualized: Bool?
    /// Resources its builder must offer (``Placement``).
    var constraints: [String]?
    /// The archive it is for (`archive add`; a private one makes the build private), and whether it builds the
    /// architecture-independent packages too.
    var archiveName: String?
    var archIndep: Bool?
    /// The request as decoded, encoded again with sorted keys: what an `Idempotency-Key` is compared by.
    var canonical: [UInt8] = []

    enum CodingKeys: String, CodingKey {
        case archseries, source, version, urgency, pocket, component, archive, files, virtualized, constraints
        case buildType = "build_type", archiveName = "archive_name", archIndep = "arch_indep"
    }

    static let example = #"{"archseries": "debian/bookworm/amd64", "source": "hello", "version": "2.10-3", "files": [{"name": "hello_2.10-3.dsc", "sha256": "...", "size": 1183}]}"#

    /// The body, or a 400 that names the field that is missing or wrong.
    static func decode(_ bytes: [UInt8]) throws -> SubmitBody {
        do {
            var body = try JSONDecoder().decode(SubmitBody.self, from: Data(bytes))
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            body.canonical = Array(try encoder.encode(CanonicalSubmit(body)))
            return body
        } catch let error as DecodingError {
            throw HTTPError(.badRequest, message: Self.describe(error))
        } catch {
            throw HTTPError(.badRequest, message: "the body must be JSON like \(example)")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [CodingKey]) -> String {
            codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                .replacingOccurrences(of: ".[", with: "[")
        }
        let allowed: [String: String] = [
            "urgency": Urgency.allCases.map(\.rawValue).joined(separator: ", "),
            "pocket": Pocket.allCases.map(\.rawValue).joined(separator: ", "),
            "component": Component.allCases.map(\.rawValue).joined(separator: ", "),
            "archive": ArchivePurpose.allCases.map(\.rawValue).joined(separator: ", "),
        ]
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath + [key])
            return "\(field): missing (a submit is like \(example))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context.codingPath)): wrong type"
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            if let values = allowed[field] { return "\(field): one of \(values)" }
            return field.isEmpty ? "the body must be JSON like \(example)" : "\(field): not valid"
        @unknown default:
            return "the body must be JSON like \(example)"
        }
    }

    /// The build request, or a 400 naming the field.
    func request() throws -> BuildRequest {
        guard let name = Naming.archSeries(archseries) else {
            throw HTTPError(.badRequest, message: "archseries: DISTRIBUTION/SERIES/ARCH, like debian/bookworm/amd64")
        }
        guard Naming.isValidSourceName(source) else { throw HTTPError(.badRequest, message: "source: not a Debian source package name") }
        guard Naming.isValidVersion(version) else { throw HTTPError(.badRequest, message: "version: not a Debian version") }
        let type = buildType ?? "binarypackage"
        guard Naming.isValidName(type) else { throw HTTPError(.badRequest, message: "build_type: not a valid name") }
        var seen = Set<String>()
        for (index, file) in (files ?? []).enumerated() {
            guard Naming.isValidFileName(file.name) else { throw HTTPError(.badRequest, message: "files[\(index)].name: not a valid file name") }
            guard Naming.isValidSHA256(file.sha256) else {
                throw HTTPError(.badRequest, message: "files[\(index)].sha256: 64 lowercase hex digits")
            }
            guard file.size >= 0 else { throw HTTPError(.badRequest, message: "files[\(index)].size: not negative") }
            guard seen.insert(file.name).inserted else { throw HTTPError(.badRequest, message: "files[\(index)].name: \(file.name) twice") }
        }
        if virtualized == false && archive == .private {
            throw HTTPError(.badRequest, message: "virtualized: a private archive's build always runs on a virtualized builder")
        }
        let asked = constraints ?? []
        guard asked.count <= 16 else { throw HTTPError(.badRequest, message: "constraints: at most 16") }
        for (index, name) in asked.enumerated() where !Placement.isValidResource(name) {
            throw HTTPError(.badRequest, message: "constraints[\(index)]: a resource name is [a-z0-9][a-z0-9.+_-]{0,63}")
        }
        var request = BuildRequest(distribution: name.distribution, series: name.series, archTag: name.archTag,
                                   sourceName: source, sourceVersion: version, buildType: type,
                                   urgency: urgency ?? .medium, pocket: pocket ?? .release, component: component ?? .main,
                                   archive: archive ?? .primary, sourceFiles: files ?? [])
        request.virtualized = virtualized ?? true
        request.constraints = Set(asked)
        if let archiveName {
            guard Naming.isValidName(archiveName) else { throw HTTPError(.badRequest, message: "archive_name: not a valid name") }
            request.archiveName = archiveName
        }
        request.archIndep = archIndep ?? false
        return request
    }
}

/// What an idempotent submit is compared by: the request with its defaults filled in.
private struct CanonicalSubmit: Encodable {
    let archseries, source, version, urgency, pocket, component, archive, buildType: String
    let files: [FileDigest]
    /// Only when not the default, so a submit without them compares as it did before they existed.
    let virtualized: Bool?
    let constraints: [String]?
    let archiveName: String?
    let archIndep: Bool?

    init(_ body: SubmitBody) {
        archiveName = body.archiveName
        archIndep = body.archIndep == true ? true : nil
        virtualized = body.virtualized == false ? false : nil
        constraints = (body.constraints ?? []).isEmpty ? nil : Array(Set(body.constraints ?? [])).sorted()
        archseries = body.archseries
        source = body.source
        version = body.version
        urgency = (body.urgency ?? .medium).rawValue
        pocket = (body.pocket ?? .release).rawValue
        component = (body.component ?? .main).rawValue
        archive = (body.archive ?? .primary).rawValue
        buildType = body.buildType ?? "binarypackage"
        files = (body.files ?? []).sorted { $0.name < $1.name }
    }
}
