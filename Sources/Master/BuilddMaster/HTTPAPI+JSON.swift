import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// The JSON API (documented in docs/API.md). Each route needs the role ``Access`` says; reading public
/// builds is open unless `serve --anonymous-read off`, and private builds exist only for viewers and above.
extension HTTPAPI {
    func addJSONRoutes(to router: Router<BasicRequestContext>) {
        router.get("/v1/status") { request, _ in
            try await self.authorize(request, .read)
            let processors = try await self.store.processors()
            // Finished builds are counted only when asked for (?finished=true): that scans all history.
            let finished = request.uri.queryParameters["finished"].map { $0 == "true" || $0 == "1" } ?? false
            let counts = try await self.store.buildCounts(includingFinished: finished)
            let builders = try await self.store.builders()
            var states: [String: Int] = [:]
            for builder in builders { states[builder.state(silentAfterSeconds: Self.silence), default: 0] += 1 }
            return Self.json(FarmStatus(processors: processors, builds: counts, builders: states))
        }
        router.get("/v1/processors") { request, _ in
            try await self.authorize(request, .read)
            return Self.json(try await self.store.processors())
        }
        router.get("/v1/builders") { request, _ in
            let caller = try await self.authorize(request, .read)
            return Self.json(try await self.store.builders().map { BuilderView($0, for: caller.role) })
        }
        router.get("/v1/builders/:name") { request, context in
            let caller = try await self.authorize(request, .read)
            let name = try context.parameters.require("name")
            let visible = Access.visibleArchives(to: caller.role)
            let (builder, recent) = try await Self.mapped { try await self.store.builder(name, visible: visible) }
            return Self.json(BuilderDetailView(builder: BuilderView(builder, for: caller.role), recentBuilds: recent))
        }
        // A builder's history may name what its builds did (a failure's reason): for viewers and above.
        router.get("/v1/builders/:name/history") { request, context in
            try await self.authorize(request, .readPrivate)
            let name = try context.parameters.require("name")
            let query = request.uri.queryParameters
            let limit = query["limit"].flatMap { Int($0) } ?? 100
            guard (1...10_000).contains(limit) else { throw HTTPError(.badRequest, message: "limit must be 1-10000") }
            var before: Int64?
            if let cursor = query["cursor"] {
                guard case .newest(let id)? = Self.pageStart(cursor: String(cursor)) else {
                    throw HTTPError(.badRequest, message: "cursor: not one this API gave (use X-Next-Cursor as it came)")
                }
                before = id
            }
            let page = try await Self.mapped { try await self.store.builderHistoryPage(name, limit: limit, before: before) }
            var response = Self.json(page.lines)
            if let next = page.next {
                let cursor = Self.cursor(.newest(before: next))
                response.headers[Self.nextCursorHeader] = cursor
                response.headers[Self.linkHeader] = "</v1/builders/\(name)/history?limit=\(limit)&cursor=\(cursor)>; rel=\"next\""
            }
            return response
        }
        router.get("/v1/builds") { request, _ in try await self.listBuilds(request) }
        router.get("/v1/queue/:processor") { request, context in
            let caller = try await self.authorize(request, .read)
            let processor = try context.parameters.require("processor")
            let limit = request.uri.queryParameters["limit"].flatMap { Int($0) } ?? 100
            guard (1...10_000).contains(limit) else { throw HTTPError(.badRequest, message: "limit must be 1-10000") }
            let visible = Access.visibleArchives(to: caller.role)
            return Self.json(try await Self.mapped {
                try await self.store.queue(processor: processor, limit: limit, visible: visible)
            })
        }

        // Changes: each needs a token whose role allows it, and records the token's name as its actor. A
        // private build a caller may not view does not exist for it, whatever its role.
        router.post("/v1/builds/:id/cancel") { request, context in
            let caller = try await self.authorize(request, .cancel)
            let id = try await self.visibleBuild(context, caller)
            let status = try await Self.mapped { try await self.store.cancel(id, actor: Self.actor(caller)) }
            return Self.json(["id": "\(id)", "status": status.rawValue])
        }
        router.post("/v1/builds/:id/retry") { request, context in
            let caller = try await self.authorize(request, .retry)
            let id = try await self.visibleBuild(context, caller)
            try await Self.mapped { try await self.store.retry(id, actor: Self.actor(caller)) }
            return Self.json(["id": "\(id)", "status": BuildStatus.needsBuild.rawValue])
        }
        router.post("/v1/builds/:id/rescore") { request, context in
            let caller = try await self.authorize(request, .rescore)
            let id = try await self.visibleBuild(context, caller)
            let body = try await Self.body(request, as: RescoreRequest.self, example: #"{"score": 9000} or {"score": null}"#)
            let score = try await Self.mapped {
                try await self.store.rescore(id, score: body.score, actor: Self.actor(caller))
            }
            return Self.json(["id": "\(id)", "score": "\(score)"])
        }
        router.post("/v1/builders/:name/enable") { request, context in
            let caller = try await self.authorize(request, .changeBuilder)
            let name = try context.parameters.require("name")
            try await Self.mapped { try await self.store.enableBuilder(name, actor: Self.actor(caller)) }
            return Self.json(["name": name, "builderok": "true"])
        }
        router.post("/v1/builders/:name/disable") { request, context in
            let caller = try await self.authorize(request, .changeBuilder)
            let name = try context.parameters.require("name")
            let body = try await Self.body(request, as: DisableRequest.self, example: #"{"reason": "disk replaced"}"#)
            guard !body.reason.isEmpty else { throw HTTPError(.badRequest, message: "reason must not be empty") }
            try await Self.mapped {
                try await self.store.disableBuilder(name, reason: body.reason, actor: Self.actor(caller))
            }
            return Self.json(["name": name, "builderok": "false"])
        }
        // An operator asks for a reset now: the builder is DIRTY and the next pass resets it (BuilderReset.requested).
        router.post("/v1/builders/:name/reset") { request, context in
            let caller = try await self.authorize(request, .changeBuilder)
            let name = try context.parameters.require("name")
            let outcome = try await Self.mapped { try await self.store.requestReset(builder: name, actor: Self.actor(caller)) }
            return Self.json(["name": name, "outcome": "\(outcome)"])
        }
        // The end of an asynchronous reset (protocol 2.0), said by whatever reset the builder: it is CLEAN.
        router.post("/v1/builders/:name/clean") { request, context in
            let caller = try await self.authorize(request, .changeBuilder)
            let name = try context.parameters.require("name")
            let outcome = try await Self.mapped { try await self.store.resetCompleted(builder: name, actor: Self.actor(caller)) }
            return Self.json(["name": name, "clean_status": CleanStatus.clean.rawValue, "outcome": "\(outcome)"])
        }
        router.post("/v1/builders/:name/manual") { request, context in
            let caller = try await self.authorize(request, .changeBuilder)
            let name = try context.parameters.require("name")
            let body = try await Self.body(request, as: ManualRequest.self, example: #"{"manual": true}"#)
            try await Self.mapped { try await self.store.setBuilderManual(name, body.manual, actor: Self.actor(caller)) }
            return Self.json(["name": name, "manual": "\(body.manual)"])
        }
    }

    /// An agent not heard from for this long shows as offline.
    static var silence: Double { Double(BuilddStore.agentSilenceSeconds) }

    /// The build a route names, when it exists for the caller (a private build it may not view is a 404,
    /// as one that does not exist).
    func visibleBuild(_ context: BasicRequestContext, _ caller: Caller) async throws -> Int64 {
        let id = try context.parameters.require("id", as: Int64.self)
        guard try await store.buildExists(id, visible: Access.visibleArchives(to: caller.role)) else {
            throw HTTPError(.notFound, message: "no build \(id)")
        }
        return id
    }

    /// Store errors as HTTP statuses: not found 404, conflicts 409, invalid input 400.
    @discardableResult
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            switch error.code {
            case .notFound: throw HTTPError(.notFound, message: error.message)
            case .conflict, .alreadyExists: throw HTTPError(.conflict, message: error.message)
            case .invalid: throw HTTPError(.badRequest, message: error.message)
            }
        }
    }

    static func body<T: Decodable>(_ request: Request, as type: T.Type, example: String) async throws -> T {
        let buffer = try await request.body.collect(upTo: 64 * 1024)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            throw HTTPError(.badRequest, message: "the body must be JSON like \(example)")
        }
    }
}

struct RescoreRequest: Decodable {
    /// The new score, or null to go back to the computed one.
    let score: Int?
}

struct DisableRequest: Decodable {
    let reason: String
}

struct ManualRequest: Decodable {
    let manual: Bool
}

/// `GET /v1/status`.
struct FarmStatus: Encodable {
    let processors: [ProcessorSummary]
    let builds: [String: Int]
    /// Builders by state (idle, building, aborting, manual, failed, offline, removed).
    let builders: [String: Int]
}

/// A builder with the one-word state the status page shows.
struct BuilderView: Encodable {
    let summary: BuilderSummary
    let state: String

    /// The builder as a caller with `role` sees it: a private build it may not view shows as "private
    /// build", with no id, name, version or log.
    init(_ summary: BuilderSummary, for role: Role?) {
        state = summary.state(silentAfterSeconds: HTTPAPI.silence)
        var shown = summary
        if let archive = summary.currentArchive, !Access.mayView(archive: archive, role: role) {
            shown.currentBuild = nil
            shown.currentTitle = "private build"
            shown.logTail = nil
            shown.currentArchive = nil
        }
        self.summary = shown
    }

    func encode(to encoder: Encoder) throws {
        try summary.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(state, forKey: .state)
    }

    enum Key: String, CodingKey { case state }
}

struct BuilderDetailView: Encodable {
    let builder: BuilderView
    let recentBuilds: [BuildSummary]

    enum CodingKeys: String, CodingKey {
        case builder
        case recentBuilds = "recent_builds"
    }
}
