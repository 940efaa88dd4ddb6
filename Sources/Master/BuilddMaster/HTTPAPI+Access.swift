import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Who is asking, and whether they may: every route of the API and the pages asks ``authorize(_:_:)``
/// before it does anything, and reads only what ``Access/visibleArchives(to:)`` allows the caller.
extension HTTPAPI {
    /// The cookie the sign-in form sets: the pages send it with every read of the API.
    static let sessionCookie = "buildd_token"

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
        router.get("/signin") { _, _ in Self.signInPage(message: nil) }
        router.post("/signin") { request, _ in
            let body = try await request.body.collect(upTo: 4096)
            let form = String(buffer: body)
            let token = form.split(separator: "&").compactMap { pair -> String? in
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[0] == "token" else { return nil }
                return String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            }.first ?? ""
            guard case .valid = try await self.store.authorizeAPI(token: token) else {
                BuilddMetrics.httpRefused(route: "signin", reason: "token_refused")
                return Self.signInPage(message: "That token was refused.", status: .forbidden)
            }
            let secure = self.secureCookies ? "; Secure" : ""
            return Response(status: .seeOther, headers: [
                .location: "/builders",
                .setCookie: "\(Self.sessionCookie)=\(token); Path=/; HttpOnly; SameSite=Strict\(secure)",
            ])
        }
        router.post("/signout") { _, _ in
            Response(status: .seeOther, headers: [
                .location: "/signin", .setCookie: "\(Self.sessionCookie)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
            ])
        }
    }

    static func signInPage(message: String?, status: HTTPResponse.Status = .ok) -> Response {
        let note = message.map { "<p class=\"failnotes\" role=\"alert\">\($0)</p>" } ?? ""
        let html = """
            <!doctype html>
            <html lang="en">
            <head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Sign in - buildd</title><style>\(style)</style></head>
            <body><header><a class="brand" href="/builders">buildd</a></header>
            <main><h2>Sign in</h2>\(note)
            <form method="post" action="/signin">
            <label for="token">API token</label>
            <input id="token" name="token" type="password" autocomplete="current-password" required>
            <button type="submit">Sign in</button>
            </form>
            <p class="muted">A token is made with <code>buildd-master token add NAME --role viewer</code>.</p>
            </main></body></html>
            """
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }
}
