import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// The operator's pages, drawn on the server: the builds list with filters, a build with its whole log
/// (followed live), a builder with its history and actions, and the farm's plots.
///
/// | route | what |
/// |---|---|
/// | `GET /builds?status=&processor=&source=&builder=&archive=&since=&until=&cursor=` | builds, newest first, 50 a page |
/// | `GET /builds/{id}[?offset=N]` | a build: facts, history with actors, files, the log from byte N, followed live |
/// | `GET /builders/{name}` | a builder: state, current build, recent builds, history, and actions for operators |
/// | `GET /builders/{name}/confirm/{action}` | the confirmation form of enable, disable, manual, automatic or reset |
/// | `POST /builders/{name}/{action}` | the change, with the sign-in cookie and the form token |
/// | `GET /plots?range=24h\|7d` | the plots (``PlotPage``) |
extension HTTPAPI {
    /// Builds a page lists at once.
    static let buildsPerPage = 50
    /// The most of a log one page shows; past it a link goes on from where it stopped.
    static let logPageBytes = 4 << 20

    func addOperatorPageRoutes(to router: Router<BasicRequestContext>) {
        router.get("/builds") { request, _ in
            try await self.pageFor(request) { caller, viewer in try await self.buildsPage(request, caller, viewer) }
        }
        router.get("/builds/:id") { request, context in
            let id = try context.parameters.require("id", as: Int64.self)
            return try await self.pageFor(request) { caller, viewer in try await self.buildPage(id, request, caller, viewer) }
        }
        router.get("/builders/:name") { request, context in
            let name = try context.parameters.require("name")
            return try await self.pageFor(request) { caller, viewer in try await self.builderPage(name, request, caller, viewer) }
        }
        router.get("/builders/:name/confirm/:action") { request, context in
            let name = try context.parameters.require("name")
            let action = try context.parameters.require("action")
            return try await self.pageFor(request) { caller, viewer in
                try await self.confirmPage(name, action: action, request, caller, viewer)
            }
        }
        router.post("/builders/:name/:action") { request, context in
            let name = try context.parameters.require("name")
            let action = try context.parameters.require("action")
            return try await self.builderFormChange(name, action: action, request)
        }
        router.get("/plots") { request, _ in
            try await self.pageFor(request) { _, viewer in try await self.plotsPage(request, viewer) }
        }
    }

    /// Runs `draw` for a caller who may read, or sends them to sign in. Store errors become pages that say so.
    func pageFor(_ request: Request, _ draw: (Caller, Page.Viewer) async throws -> Response) async throws -> Response {
        let signIn = Response(status: .seeOther, headers: [.location: "/signin" + Page.query([("next", request.uri.path)])])
        let caller: Caller
        do {
            caller = try await self.caller(request, route: "page")
        } catch where Self.bearer(request) == nil {
            return signIn  // a sign-in cookie whose token was removed or expired: sign in again
        }
        guard Access.allows(caller.role, .read, anonymousRead: anonymousRead) else { return signIn }
        let viewer = Page.Viewer(name: caller.name, role: caller.role)
        do {
            // Store errors as the API answers them (``HTTPAPI/mapped(_:)``: not found 404, conflicts 409, invalid 400).
            return try await Self.mapped { try await draw(caller, viewer) }
        } catch let error as HTTPError {
            let title = error.status == .notFound ? "Not found" : "Cannot show this"
            return Page.response(title: title, section: .none, viewer: viewer,
                                 body: "<h1>\(title)</h1>" + Page.message(error.body ?? "\(error.status)", kind: "error"),
                                 status: error.status)
        }
    }

    // MARK: Builds

    func buildsPage(_ request: Request, _ caller: Caller, _ viewer: Page.Viewer) async throws -> Response {
        let parameters = Dictionary(request.uri.queryParameters.map { (String($0.key), String($0.value)) },
                                    uniquingKeysWith: { first, _ in first })
        let processors = try await store.processors().map(\.name)
        var problem: String?
        var query: BuildsQuery
        do {
            query = try BuildsQuery(parameters, defaultLimit: Self.buildsPerPage)
        } catch let error as HTTPError {
            problem = error.body
            query = try BuildsQuery([:], defaultLimit: Self.buildsPerPage)
        }
        let page = problem == nil
            ? try await store.buildPage(query.filter, start: query.start, limit: query.limit,
                                        visible: Access.visibleArchives(to: caller.role))
            : BuilddStore.BuildPage(builds: [], next: nil)
        func field(_ name: String) -> String { Page.esc(parameters[name] ?? "") }
        func select(_ name: String, _ label: String, _ options: [String]) -> String {
            let chosen = parameters[name] ?? ""
            return "<label>\(label)<select name=\"\(name)\"><option value=\"\">any</option>"
                + options.map { "<option\($0 == chosen ? " selected" : "")>\(Page.esc($0))</option>" }.joined()
                + "</select></label>"
        }
        var body = "<h1>Builds</h1>"
        body += """
            <form class="filters" method="get" action="/builds" role="search" aria-label="Filter builds">
            \(select("status", "Status", BuildStatus.allCases.map(\.rawValue)))
            \(select("processor", "Processor", processors))
            <label>Source<input name="source" value="\(field("source"))" size="14" autocomplete="off"></label>
            <label>Builder<input name="builder" value="\(field("builder"))" size="12" autocomplete="off"></label>
            \(select("archive", "Archive", ArchivePurpose.allCases.map(\.rawValue)))
            <label>Created from (UTC)<input type="datetime-local" name="since" value="\(field("since"))"></label>
            <label>Created before (UTC)<input type="datetime-local" name="until" value="\(field("until"))"></label>
            <button type="submit" class="primary">Filter</button> <a href="/builds">Clear</a>
            </form>
            """
        if let problem { body += Page.message(problem, kind: "error") }
        if page.builds.isEmpty {
            body += "<p class=\"muted\" id=\"no-builds\">No builds match.</p>"
        } else {
            let order = parameters["order"] == "oldest" ? "oldest first" : "newest first"
            body += "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Builds\"><table class=\"builds wide\"><caption class=\"muted\">\(page.builds.count) builds, \(order)</caption>"
                + "<thead><tr><th scope=\"col\">Build</th><th scope=\"col\">Status</th><th scope=\"col\" class=\"opt\">Arch series</th>"
                + "<th scope=\"col\">Builder</th><th scope=\"col\" class=\"opt\">Created</th><th scope=\"col\" class=\"opt\">Finished</th></tr></thead><tbody>"
            for build in page.builds {
                body += "<tr class=\"build\" data-id=\"\(build.id)\"><td><a href=\"/builds/\(build.id)\">#\(build.id) \(Page.esc(build.source)) \(Page.esc(build.version))</a></td>"
                    + "<td>\(Page.badge(build.status.rawValue, "b-"))</td><td class=\"opt\">\(Page.esc(build.archSeries))</td>"
                    + "<td>\(build.builder.map { "<a href=\"/builders/\(Page.segment($0))\">\(Page.esc($0))</a>" } ?? "-")</td>"
                    + "<td class=\"opt\">\(Page.time(build.dateCreated))</td><td class=\"opt\">\(Page.time(build.dateFinished))</td></tr>"
            }
            body += "</tbody></table></div>"
        }
        var pager: [String] = []
        if parameters["cursor"] != nil {
            pager.append("<a href=\"/builds\(Page.query(parameters.filter { $0.key != "cursor" }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }))\">Newest</a>")
        }
        if let next = page.next {
            let pairs = parameters.filter { $0.key != "cursor" }.sorted { $0.key < $1.key }.map { ($0.key, Optional($0.value)) }
            let label = parameters["order"] == "oldest" ? "Newer builds" : "Older builds"
            pager.append("<a rel=\"next\" href=\"/builds\(Page.query(pairs + [("cursor", Self.cursor(next))]))\">\(label)</a>")
        }
        if !pager.isEmpty { body += "<nav class=\"pager\" aria-label=\"Pages\">\(pager.joined())</nav>" }
        return Page.response(title: "Builds", section: .builds, viewer: viewer, body: body,
                             status: problem == nil ? .ok : .badRequest)
    }

    /// A build: what it is, its history with who did what, its files, and its log from `?offset=` (0: the whole
    /// log), followed live while it runs. Without JavaScript the page reloads every 5 s while the build is active.
    func buildPage(_ id: Int64, _ request: Request, _ caller: Caller, _ viewer: Page.Viewer) async throws -> Response {
        let visible = Access.visibleArchives(to: caller.role)
        let detail: BuildDetail
        do {
            detail = try await store.build(id, visible: visible)
        } catch let error as StoreError where error.code == .notFound {
            throw HTTPError(.notFound, message: "no build \(id)")
        }
        let build = detail.build
        let offset = request.uri.queryParameters["offset"].flatMap { Int64($0) }.map { max(0, $0) } ?? 0
        let source = logSource(detail, attempt: nil)
        let bytes = source.path.flatMap { ArtifactStore.readBytes($0, from: offset, limit: Self.logPageBytes) } ?? []
        let logEnd = offset + Int64(bytes.count)
        let more = bytes.count == Self.logPageBytes
        let active = build.status.isActive
        var facts: [(String, String)] = [
            ("Status", Page.badge(build.status.rawValue, "b-") + (build.result.map { " <span class=\"muted\">result \(Page.esc($0))</span>" } ?? "")),
            ("Source", "\(Page.esc(build.source)) \(Page.esc(build.version)) <span class=\"muted\">(\(Page.esc(build.buildType)))</span>"),
            ("Arch series", Page.esc(build.archSeries) + " <span class=\"muted\">on \(Page.esc(build.processor))</span>"),
            ("Archive", Page.esc(detail.archiveName ?? build.archive.rawValue) + " <span class=\"muted\">\(Page.esc(build.archive.rawValue)), \(Page.esc(detail.pocket)), \(Page.esc(detail.component)), urgency \(Page.esc(detail.urgency))</span>"),
            ("Builder", build.builder.map { "<a href=\"/builders/\(Page.segment($0))\">\(Page.esc($0))</a>" } ?? "-"),
            ("Attempt", "\(build.attempt)" + (build.failureCount > 0 ? " <span class=\"muted\">(\(build.failureCount) infrastructure failures)</span>" : "")),
            ("Created", Page.time(build.dateCreated)), ("Started", Page.time(build.dateStarted)),
            ("Finished", Page.time(build.dateFinished)),
        ]
        if let score = build.score { facts.append(("Score", "\(score)")) }
        if let notes = build.failnotes { facts.append(("Failure", "<span class=\"failnotes\">\(Page.esc(notes))</span>")) }
        if build.status == .manualDepWait, let missing = detail.dependencies {
            facts.append(("Missing", "<code id=\"missing\">\(Page.esc(missing))</code> <span class=\"muted\">retried when its archives have it</span>"))
        }
        if let why = detail.waitingBecause { facts.append(("Waiting because", Page.esc(why))) }
        var body = "<h1>Build #\(build.id): \(Page.esc(build.source)) \(Page.esc(build.version)) on \(Page.esc(build.archSeries))</h1>"
        body += "<dl class=\"facts\">" + facts.map { "<dt>\($0.0)</dt><dd>\($0.1)</dd>" }.joined() + "</dl>"
        body += "<h2 id=\"history-heading\">History</h2><div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"History\"><table class=\"history wide\" aria-labelledby=\"history-heading\"><thead><tr>"
            + "<th scope=\"col\">When</th><th scope=\"col\">Status</th><th scope=\"col\">Attempt</th><th scope=\"col\">Builder</th>"
            + "<th scope=\"col\">By</th><th scope=\"col\" class=\"opt\">Note</th></tr></thead><tbody>"
        for line in detail.history {
            body += "<tr><td>\(Page.time(line.at))</td><td>\(Page.badge(line.status, "b-"))</td><td>\(line.attempt)</td>"
                + "<td>\(Page.esc(line.builder ?? "-"))</td><td>\(Page.esc(line.actor ?? "farm"))</td><td class=\"opt\">\(Page.esc(line.message ?? ""))</td></tr>"
        }
        body += "</tbody></table></div>"
        body += "<h2 id=\"files-heading\">Files</h2>"
        if detail.files.isEmpty {
            body += "<p class=\"muted\">None yet.</p>"
        } else {
            body += "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Files\"><table class=\"files wide\" aria-labelledby=\"files-heading\"><thead><tr><th scope=\"col\">File</th><th scope=\"col\">Kind</th>"
                + "<th scope=\"col\">Attempt</th><th scope=\"col\">Size</th><th scope=\"col\" class=\"opt\">SHA-256</th></tr></thead><tbody>"
            for file in detail.files {
                body += "<tr><td><a href=\"/v1/builds/\(build.id)/files/\(Page.segment(file.name))\">\(Page.esc(file.name))</a></td>"
                    + "<td>\(Page.esc(file.kind))</td><td>\(file.attempt)</td><td>\(file.size) bytes</td><td class=\"opt muted\">\(Page.esc(file.sha256))</td></tr>"
            }
            body += "</tbody></table></div>"
        }
        body += "<h2 id=\"log-heading\">Log <span class=\"muted\">attempt \(source.attempt)</span></h2>"
        let state = active ? "The build is running: the log is followed as it grows." : "The build has ended: this is its whole log."
        body += "<p id=\"log-state\" role=\"status\">\(bytes.isEmpty && !active && offset == 0 ? "No log was kept." : state)</p>"
        if offset > 0 { body += "<p><a href=\"/builds/\(build.id)\">From the start</a> <span class=\"muted\">(this shows from byte \(offset))</span></p>" }
        body += "<pre class=\"log\" id=\"log\" tabindex=\"0\" aria-labelledby=\"log-heading\" data-offset=\"\(logEnd)\" data-attempt=\"\(source.attempt)\" data-follow=\"\(active && !more)\">"
            + Page.esc(String(decoding: bytes.filter { $0 != 13 }, as: UTF8.self)) + "</pre>"
        if more {
            body += "<p><a id=\"log-next\" href=\"/builds/\(build.id)?offset=\(logEnd)\">The log goes on: from byte \(logEnd)</a></p>"
        }
        // Without JavaScript: the page reloads while the build is active.
        let head = active ? "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>" : ""
        return Page.response(title: "Build #\(build.id)", section: .builds, viewer: viewer, body: body, head: head,
                             script: active && !more ? Self.followLogScript : nil)
    }

    /// Follows the log with the live-log API's Server-Sent Events from where the page stopped; at the end the
    /// page reloads once, to show the build's result and files.
    static let followLogScript = """
        'use strict';
        (function () {
          const log = document.getElementById('log');
          const state = document.getElementById('log-state');
          if (!log || log.dataset.follow !== 'true' || !window.EventSource) return;
          const id = location.pathname.split('/').pop();
          const url = '/v1/builds/' + id + '/log?attempt=' + log.dataset.attempt + '&offset=' + log.dataset.offset;
          const source = new EventSource(url);
          source.onmessage = function (event) {
            const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
            log.append(document.createTextNode(event.data + '\\n'));
            log.dataset.offset = event.lastEventId;
            if (atEnd) log.scrollTop = log.scrollHeight;
          };
          source.addEventListener('end', function (event) {
            source.close();
            let status = '';
            try { status = JSON.parse(event.data).status; } catch (e) {}
            log.dataset.follow = 'ended';
            state.textContent = 'The build has ended' + (status ? ': ' + status : '') + '. Reloading for its files...';
            setTimeout(function () { location.reload(); }, 1500);
          });
          source.onerror = function () { state.textContent = 'Connection lost: trying again...'; };
          source.onopen = function () { state.textContent = 'The build is running: the log is followed as it grows.'; };
        })();
        """

    // MARK: Builders

    /// The changes a builder page offers, with what each asks of the operator.
    enum BuilderAction: String, CaseIterable {
        case enable, disable, manual, automatic, reset

        var label: String {
            switch self {
            case .enable: "Enable"
            case .disable: "Disable"
            case .manual: "Manual mode"
            case .automatic: "Automatic mode"
            case .reset: "Reset"
            }
        }

        var explanation: String {
            switch self {
            case .enable: "The builder is marked ok again: its failure count and failnotes are cleared and it gets work."
            case .disable: "The builder gets no more work until it is enabled. A build it runs now goes on."
            case .manual: "The dispatcher gives it no work (for debugging). A build it runs now goes on."
            case .automatic: "The dispatcher gives it work again."
            case .reset: "It is marked DIRTY, and the master's next pass resets it (its reset command, URL or agent), as after a build."
            }
        }
    }

    func builderPage(_ name: String, _ request: Request, _ caller: Caller, _ viewer: Page.Viewer) async throws -> Response {
        let visible = Access.visibleArchives(to: caller.role)
        let (summary, recent) = try await store.builder(name, recent: 20, visible: visible)
        let shown = BuilderView(summary, for: caller.role)
        let builder = shown.summary
        // A builder's history may name what a private build did: for viewers and above, as the API says.
        let history = Access.allows(caller.role, .readPrivate, anonymousRead: anonymousRead)
            ? try await store.builderHistoryPage(name, limit: 50, before: nil).lines : nil
        var body = "<h1>Builder \(Page.esc(builder.name))</h1>"
        if let done = request.uri.queryParameters["done"], let action = BuilderAction(rawValue: String(done)) {
            body += Page.message("Done: \(action.label).")
        }
        var facts: [(String, String)] = [
            ("State", Page.badge(shown.state, "s-") + (builder.manual ? " <span class=\"muted\">manual mode</span>" : "")),
            ("Health", builder.builderok ? "ok" + (builder.failnotes.map { " <span class=\"muted\">(\(Page.esc($0)))</span>" } ?? "")
                : "<span class=\"failnotes\">not ok: \(Page.esc(builder.failnotes ?? "disabled"))</span>"),
            ("Failures in a row", "\(builder.failureCount)"),
            ("Processors", builder.processors.map { "<a href=\"/queue/\(Page.segment($0))\">\(Page.esc($0))</a>" }.joined(separator: ", ")),
            ("Kind", builder.kind == "xmlrpc" ? "launchpad-buildd \(Page.esc(builder.url ?? ""))" : "agent"),
            ("Last heard from", Page.time(builder.lastSeen)),
        ]
        if let placement = builder.placement {
            facts.append(("Offers", (placement.virtualized ? "virtualized" : "not virtualized")
                + (placement.openResources.isEmpty ? "" : ", " + Page.esc(placement.openResources.sorted().joined(separator: ", ")))
                + (placement.restrictedResources.isEmpty ? "" : "; kept for " + Page.esc(placement.restrictedResources.sorted().joined(separator: ", ")))))
        }
        facts.append(("Reset", Page.esc(summary.reset?.description ?? builder.resetMethod ?? "none")
            + (builder.cleanStatus.map { " <span class=\"muted\">(\(Page.esc($0)))</span>" } ?? "")))
        body += "<dl class=\"facts\">" + facts.map { "<dt>\($0.0)</dt><dd>\($0.1)</dd>" }.joined() + "</dl>"
        body += "<h2>Current build</h2>"
        if let current = builder.currentBuild {
            body += "<p><a href=\"/builds/\(current)\">#\(current) \(Page.esc(builder.currentTitle ?? ""))</a></p>"
            if let tail = builder.logTail { body += "<pre class=\"log\" id=\"tail\">\(Page.esc(tail))</pre>" }
        } else {
            body += "<p class=\"muted\">\(Page.esc(builder.currentTitle ?? "None."))</p>"
        }
        body += "<h2>Actions</h2>"
        if Access.allows(caller.role, .changeBuilder, anonymousRead: anonymousRead), viewer.signedIn {
            // Reset is offered for a builder the master resets; the others clean themselves after each build.
            let resets = summary.reset?.resets(virtualized: builder.placement?.virtualized ?? true) ?? false
            let offered: [BuilderAction] = [builder.builderok ? .disable : .enable, builder.manual ? .automatic : .manual]
                + (resets ? [.reset] : [])
            body += "<div class=\"actions\">" + offered.map {
                "<a href=\"/builders/\(Page.segment(builder.name))/confirm/\($0.rawValue)\" id=\"action-\($0.rawValue)\">\($0.label)...</a>"
            }.joined() + "</div>"
        } else if viewer.signedIn {
            body += "<p class=\"muted\">Changing a builder needs an operator's token; this one is a \(Page.esc(viewer.role?.rawValue ?? "reader")).</p>"
        } else {
            body += "<p><a href=\"/signin\(Page.query([("next", "/builders/\(builder.name)")]))\">Sign in</a> with an operator's token to enable, disable, reset or set this builder to manual mode.</p>"
        }
        body += "<h2 id=\"recent-heading\">Latest builds</h2>"
        if recent.isEmpty {
            body += "<p class=\"muted\">None.</p>"
        } else {
            body += "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Latest builds\"><table class=\"recent wide\" aria-labelledby=\"recent-heading\"><thead><tr><th scope=\"col\">Build</th><th scope=\"col\">Status</th>"
                + "<th scope=\"col\" class=\"opt\">Started</th><th scope=\"col\" class=\"opt\">Finished</th></tr></thead><tbody>"
            for build in recent {
                body += "<tr><td><a href=\"/builds/\(build.id)\">#\(build.id) \(Page.esc(build.source)) \(Page.esc(build.version))</a></td>"
                    + "<td>\(Page.badge(build.status.rawValue, "b-"))</td><td class=\"opt\">\(Page.time(build.dateStarted))</td><td class=\"opt\">\(Page.time(build.dateFinished))</td></tr>"
            }
            body += "</tbody></table></div>"
            body += "<p><a href=\"/builds\(Page.query([("builder", builder.name)]))\">All builds on \(Page.esc(builder.name))</a></p>"
        }
        body += "<h2 id=\"history-heading\">History</h2>"
        if let history {
            if history.isEmpty { body += "<p class=\"muted\">Nothing yet.</p>" } else {
                body += "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Builder history\"><table class=\"builder-history wide\" aria-labelledby=\"history-heading\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">What</th>"
                    + "<th scope=\"col\">By</th><th scope=\"col\">Why</th></tr></thead><tbody>"
                for line in history {
                    body += "<tr><td>\(Page.time(line.at))</td><td>\(Page.esc(line.kind))</td><td>\(Page.esc(line.actor ?? "farm"))</td><td>\(Page.esc(line.reason ?? ""))</td></tr>"
                }
                body += "</tbody></table></div>"
            }
        } else {
            body += "<p class=\"muted\">A builder's history needs a viewer's token (it may name what private builds did).</p>"
        }
        return Page.response(title: "Builder \(builder.name)", section: .builders, viewer: viewer, body: body)
    }

    /// The confirmation of a builder change: what it does, a reason for a disable, and the button that posts it
    /// with the form token.
    func confirmPage(_ name: String, action text: String, _ request: Request, _ caller: Caller,
                     _ viewer: Page.Viewer) async throws -> Response {
        guard let action = BuilderAction(rawValue: text) else { throw HTTPError(.notFound, message: "no action \(text)") }
        guard viewer.signedIn, Access.allows(caller.role, .changeBuilder, anonymousRead: anonymousRead),
              let token = Self.cookie(request, Self.sessionCookie) else {
            throw HTTPError(.forbidden, message: "changing a builder needs signing in with an operator's token")
        }
        _ = try await store.builder(name, recent: 0, visible: [])
        let path = "/builders/\(Page.segment(name))"
        let reason = action == .disable
            ? "<label for=\"reason\">Reason (shown to everyone in the builder's failnotes and history)</label><input id=\"reason\" name=\"reason\" required maxlength=\"500\" autocomplete=\"off\">"
            : ""
        let body = """
            <h1>\(action.label): \(Page.esc(name))?</h1>
            <form class="action" method="post" action="\(path)/\(action.rawValue)">
            <p>\(Page.esc(action.explanation))</p>
            <input type="hidden" name="form_token" value="\(FormToken.make(sessionToken: token))">
            \(reason)
            <div class="actions"><button type="submit" class="\(action == .disable || action == .reset ? "danger" : "primary")" id="confirm">\(action.label) \(Page.esc(name))</button>
            <a href="\(path)">Cancel</a></div>
            </form>
            """
        return Page.response(title: "\(action.label) \(name)", section: .builders, viewer: viewer, body: body)
    }

    /// A builder change posted from its confirmation form. It needs the sign-in cookie of an operator, the form
    /// token of that session, and (when the browser says where the form came from) this master's own origin;
    /// anything else is refused with nothing changed.
    func builderFormChange(_ name: String, action text: String, _ request: Request) async throws -> Response {
        do {
            return try await applyBuilderForm(name, action: text, request)
        } catch let error as HTTPError {
            let body = "<h1>Not changed</h1>" + Page.message(error.body ?? "\(error.status)", kind: "error")
                + "<p><a href=\"/builders/\(Page.segment(name))\">Back to \(Page.esc(name))</a></p>"
            return Page.response(title: "Not changed", section: .builders, viewer: .anonymous, body: body, status: error.status)
        }
    }

    func applyBuilderForm(_ name: String, action text: String, _ request: Request) async throws -> Response {
        let route = "page_form"
        let about: Logger.Metadata = ["http.path": "\(request.uri.path)"]
        guard let action = BuilderAction(rawValue: text) else { throw HTTPError(.notFound, message: "no action \(text)") }
        guard let token = Self.cookie(request, Self.sessionCookie) else {
            throw refuse(.unauthorized, route: route, reason: "missing_token", "sign in first", about)
        }
        let body = try await request.body.collect(upTo: 16 * 1024)
        let form = FormFields(String(buffer: body))
        // The browser names the page that posted (Origin, or Referer): it must be this master's.
        if let claimed = request.headers[.origin] ?? request.headers[.referer] {
            let from = URLComponents(string: claimed).flatMap { url in url.host.map { host in url.port.map { "\(host):\($0)" } ?? host } }
            guard let from, from == request.head.authority else {
                throw refuse(.forbidden, route: route, reason: "cross_origin", "a form of another site may not change this farm", about)
            }
        }
        guard FormToken.matches(form["form_token"], sessionToken: token) else {
            throw refuse(.forbidden, route: route, reason: "form_token", "the form's token is missing or not this session's: reload the page and try again", about)
        }
        let caller: Caller
        switch try await store.authorizeAPI(token: token) {
        case .valid(let valid): caller = valid
        case .refused: throw refuse(.forbidden, route: route, reason: "token_refused", "token refused: sign in again", about)
        case .expired(let tokenName): throw refuse(.forbidden, route: route, reason: "token_expired", "token \(tokenName) has expired: sign in again", about)
        }
        guard Access.allows(caller.role, .changeBuilder, anonymousRead: anonymousRead) else {
            throw refuse(.forbidden, route: route, reason: "role_too_low",
                         "token \(caller.name ?? "") is a \(caller.role?.rawValue ?? "reader"): changing a builder needs operator or above", about)
        }
        let actor = Self.actor(caller)
        try await Self.mapped {
            switch action {
            case .enable: try await self.store.enableBuilder(name, actor: actor)
            case .disable:
                let reason = (form["reason"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                guard !reason.isEmpty else { throw HTTPError(.badRequest, message: "a disable needs a reason") }
                try await self.store.disableBuilder(name, reason: String(reason.prefix(500)), actor: actor)
            case .manual: try await self.store.setBuilderManual(name, true, actor: actor)
            case .automatic: try await self.store.setBuilderManual(name, false, actor: actor)
            case .reset: try await self.store.requestReset(builder: name, actor: actor)
            }
        }
        logger.info("builder changed from its page", metadata: [
            "builder": "\(name)", "action": "\(action.rawValue)", "actor": "\(actor ?? "-")"])
        return Response(status: .seeOther, headers: [.location: "/builders/\(Page.segment(name))?done=\(action.rawValue)"])
    }
}
