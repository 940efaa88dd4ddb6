import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Who is asking, and whether they may: every route of the API and the pages asks ``authorize(_:_:)``
/// before it does anything, and reads only what ``Access/visibleArchives(to:)`` allows the caller.
extension HTTPAPI {
    /// The cookie the sign-in form sets: the pages send it with every read of the API.
    public static let sessionCookie = "buildd_token"

    /// The caller of a request: its `Authorization: Bearer` token, or for a read its sign-in cookie; no
    /// token is the anonymous caller. A token that is wrong, removed or expired is refused (403), never
    /// taken for no token.
    func caller(_ request: Request, route: String) async throws -> Caller {
        let about: Logger.Metadata = ["http.path": "\(request.uri.path)"]
        // The cookie counts for reads only: a change needs the header, which a page of another site
        // cannot make a browser send (no cross-site request forgery through the cookie).
        let token = Self.bearer(request) ?? (request.method == .get ? Self.cookie(request, Self.sessionCookie) : nil)
        guard let token else { return .anonymous }
        switch try await store.authorizeAPI(token: token) {
        case .valid(let caller):
            return caller
        case .refused:
            throw refuse(.forbidden, route: route, reason: "token_refused", "token refused", about)
        case .expired(let name):
            throw refuse(.forbidden, route: route, reason: "token_expired", "token \(name) has expired", about)
        }
    }

    /// The caller, when it may do `action`; else 401 (no token) or 403 (a token whose role is too low).
    @discardableResult
    func authorize(_ request: Request, _ action: Action, route: String = "api") async throws -> Caller {
        let caller = try await caller(request, route: route)
        guard Access.allows(caller.role, action, anonymousRead: anonymousRead) else {
            let about: Logger.Metadata = ["http.path": "\(request.uri.path)", "caller": "\(caller.name ?? "-")"]
            guard let role = caller.role, let name = caller.name else {
                throw refuse(.unauthorized, route: route, reason: "missing_token",
                             "this needs an API token: Authorization: Bearer <token>", about)
            }
            let least = Access.leastRole(for: action)?.rawValue ?? "viewer"
            throw refuse(.forbidden, route: route, reason: "role_too_low",
                         "token \(name) is a \(role.rawValue): \(action.rawValue) needs \(least) or above", about)
        }
        return caller
    }

    /// The value of cookie `name`, if the request carries it.
    static func cookie(_ request: Request, _ name: String) -> String? {
        for header in request.headers[values: .cookie] {
            for pair in header.split(separator: ";") {
                let trimmed = pair.trimmingCharacters(in: .whitespaces)
                if trimmed.hasPrefix(name + "=") { return String(trimmed.dropFirst(name.count + 1)) }
            }
        }
        return nil
    }

    /// The actor recorded for a change a caller makes.
    static func actor(_ caller: Caller) -> String? { caller.name }

    /// The sign-in form for the pages (`serve --anonymous-read off`): it sets the token as an HttpOnly
    /// cookie, sent with the pages' reads and never readable by their scripts.
    func addSignInRoutes(to router: Router<BasicRequestContext>) {
        router.get("/signin") { request, _ in
            Self.signInPage(message: nil, next: request.uri.queryParameters["next"].map(String.init))
        }
        router.post("/signin") { request, _ in
            let body = try await request.body.collect(upTo: 4096)
            let form = FormFields(String(buffer: body))
            let token = form["token"] ?? ""
            let next = Self.localPath(form["next"]) ?? "/builders"
            guard case .valid = try await self.store.authorizeAPI(token: token) else {
                BuilddMetrics.httpRefused(route: "signin", reason: "token_refused")
                return Self.signInPage(message: "That token was refused.", next: next, status: .forbidden)
            }
            let secure = self.secureCookies ? "; Secure" : ""
            return Response(status: .seeOther, headers: [
                .location: next,
                .setCookie: "\(Self.sessionCookie)=\(token); Path=/; HttpOnly; SameSite=Strict\(secure)",
            ])
        }
        router.post("/signout") { _, _ in
            Response(status: .seeOther, headers: [
                .location: "/signin", .setCookie: "\(Self.sessionCookie)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
            ])
        }
    }

    /// `path` when it is a path on this master (never another site: `//host` and `/\\host` are refused).
    static func localPath(_ path: String?) -> String? {
        guard let path, path.hasPrefix("/"), !path.hasPrefix("//"), !path.hasPrefix("/\\"),
              !path.contains(where: { $0.isNewline }) else { return nil }
        return path
    }

    static func signInPage(message: String?, next: String?, status: HTTPResponse.Status = .ok) -> Response {
        let note = message.map { Page.message($0, kind: "error") } ?? ""
        let body = """
            <h1>Sign in</h1>\(note)
            <form class="action" method="post" action="/signin">
            <label for="token">API token</label>
            <input id="token" name="token" type="password" autocomplete="current-password" required>
            <input type="hidden" name="next" value="\(Page.esc(localPath(next) ?? "/builders"))">
            <div class="actions"><button type="submit" class="primary">Sign in</button></div>
            </form>
            <p class="muted">A token is made with <code>buildd-master token add NAME --role viewer</code> (operators: <code>--role operator</code>).</p>
            """
        return Page.response(title: "Sign in", section: .none, viewer: .anonymous, body: body, status: status)
    }
}
