import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird

/// What every server-drawn page shares: escaping, the layout (navigation, sign-in state, a skip link), the
/// style sheet, and the form token that guards every change made from a page.
///
/// Pages are drawn on the server, so they read without JavaScript; a page's script only adds what a reload
/// would (the build page follows its log live). Everything from the database goes through ``esc(_:)``.
enum Page {
    /// Text for HTML content and attribute values: the five characters that could end either are escaped.
    static func esc(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// A path segment (a builder's or processor's name) for a link.
    static func segment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#")))
            ?? text
    }

    /// A query string of the pairs whose value is not empty.
    static func query(_ pairs: [(String, String?)]) -> String {
        var components = URLComponents()
        components.queryItems = pairs.compactMap { name, value in
            guard let value, !value.isEmpty else { return nil }
            return URLQueryItem(name: name, value: value)
        }
        return components.percentEncodedQuery.map { "?" + $0 } ?? ""
    }

    /// Who is looking, for the layout: signed in (with the cookie) or not, and their role.
    struct Viewer {
        var name: String?
        var role: Role?
        var signedIn: Bool { name != nil }
        static let anonymous = Viewer(name: nil, role: nil)
    }

    enum Section: String { case builders, builds, plots, none }

    /// A whole page. `head` goes into `<head>` (a refresh for readers without JavaScript); `script` runs at
    /// the end of the body.
    static func response(title: String, section: Section, viewer: Viewer, body: String, head: String = "",
                         script: String? = nil, status: HTTPResponse.Status = .ok) -> Response {
        func link(_ path: String, _ label: String, _ mine: Section) -> String {
            "<a href=\"\(path)\"\(section == mine ? " aria-current=\"page\"" : "")>\(label)</a>"
        }
        // The page's own script runs by its nonce; no other script would, were any markup ever to get through.
        let nonce = randomHexToken(bytes: 16)
        let account = viewer.signedIn
            ? "<span class=\"who\">\(esc(viewer.name ?? "")) (\(esc(viewer.role?.rawValue ?? "")))</span>"
                + "<form method=\"post\" action=\"/signout\" class=\"inline\"><button type=\"submit\" class=\"link\">Sign out</button></form>"
            : "<a href=\"/signin\">Sign in</a>"
        let html = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(esc(title)) - buildd</title>
            <style>\(style)</style>
            \(head)
            </head>
            <body>
            <a class="skip" href="#main">Skip to content</a>
            <header><nav aria-label="Main">
            <a class="brand" href="/builders">buildd</a>
            \(link("/builders", "Builders", .builders)) \(link("/builds", "Builds", .builds)) \(link("/plots", "Plots", .plots))
            </nav><div class="account">\(account)</div></header>
            <main id="main" tabindex="-1">
            \(body)
            </main>
            \(script.map { "<script nonce=\"\(nonce)\">\($0)</script>" } ?? "")
            </body>
            </html>
            """
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                                                  .init("X-Frame-Options")!: "DENY",
                                                  .init("Content-Security-Policy")!: contentSecurityPolicy(nonce: nonce)],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// Nothing from another origin (no script, font or style); no script but the page's own (by its nonce); no
    /// framing (no click-jacking of the forms); forms post only here. Inline style is the page's own.
    static func contentSecurityPolicy(nonce: String) -> String {
        "default-src 'self'; script-src 'nonce-\(nonce)'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            + "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    }

    /// A status badge: the text is the status itself, so colour is never the only sign.
    static func badge(_ text: String, _ prefix: String) -> String {
        "<span class=\"badge \(prefix)\(esc(text))\">\(esc(text))</span>"
    }

    /// A time from the database (ISO 8601) as the pages show it: `2026-12-06 16:04:05 UTC`.
    static func time(_ iso: String?) -> String {
        guard let iso else { return "-" }
        let trimmed = iso.replacingOccurrences(of: "T", with: " ")
        if let dot = trimmed.firstIndex(of: ".") ?? trimmed.firstIndex(of: "Z") ?? trimmed.lastIndex(of: "+") {
            return esc(String(trimmed[..<dot])) + " UTC"
        }
        return esc(trimmed)
    }

    static func message(_ text: String, kind: String = "note") -> String {
        "<p class=\"\(kind)\" role=\"\(kind == "error" ? "alert" : "status")\">\(esc(text))</p>"
    }

    /// Colours meet WCAG AA contrast (4.5:1 for text) on their backgrounds; focus is always drawn; at a
    /// phone's width tables scroll inside their box and forms stack.
    static let style = """
        *{box-sizing:border-box}
        body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1f1f1f;background:#fafafa}
        a{color:#0b57d0}a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,main:focus-visible{outline:3px solid #b3261e;outline-offset:2px}
        .skip{position:absolute;left:-999px;top:0;background:#fff;color:#0b57d0;padding:8px;z-index:2}.skip:focus{left:8px}
        header{background:#242424;color:#f2f2f2;padding:8px 16px;display:flex;flex-wrap:wrap;gap:8px 16px;align-items:baseline}
        header a,header .link{color:#f2f2f2}header nav{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:baseline}
        header a[aria-current]{text-decoration:underline;text-underline-offset:4px}
        .brand{font-weight:bold;font-size:17px;text-decoration:none}.account{margin-left:auto;display:flex;gap:12px;align-items:baseline}
        .who{font-size:13px}.inline{display:inline}
        button.link{background:none;border:0;padding:0;font:inherit;text-decoration:underline;cursor:pointer}
        main{padding:8px 16px 32px;max-width:1200px}
        h1{font-size:21px;margin:16px 0 8px}h2{margin:22px 0 6px;font-size:17px}
        .scroll{overflow-x:auto;max-width:100%}
        table{border-collapse:collapse;width:100%;background:#fff}caption{text-align:left;padding:4px 0}
        th,td{border-bottom:1px solid #d9d9d9;padding:5px 8px;text-align:left;vertical-align:top}
        th{background:#efefef;font-weight:600}td{overflow-wrap:anywhere}
        .muted{color:#5f5f5f}.failnotes,.error{color:#b3261e}.note{color:#1d5e20}
        .badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:13px;color:#fff;background:#5f5f5f;white-space:nowrap;overflow-wrap:normal}
        .s-idle{background:#1d6b22}.s-building{background:#0b57d0}.s-aborting,.s-manual{background:#a04000}
        .s-failed{background:#b3261e}.s-dirty,.s-cleaning{background:#6a1b9a}.s-offline,.s-removed{background:#5f5f5f}
        .b-FULLYBUILT{background:#1d6b22}.b-BUILDING,.b-GATHERING{background:#0b57d0}.b-NEEDSBUILD{background:#5f5f5f}
        .b-FAILEDTOBUILD,.b-CHROOTWAIT,.b-FAILEDTOUPLOAD{background:#b3261e}.b-MANUALDEPWAIT,.b-CANCELLING{background:#a04000}
        .b-CANCELLED,.b-SUPERSEDED{background:#5f5f5f}
        pre{background:#1e1e1e;color:#e8e8e8;padding:8px;overflow:auto;font-size:13px;margin:4px 0;white-space:pre-wrap;overflow-wrap:anywhere}
        pre.log{max-height:36em}
        dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
        form.filters{display:flex;flex-wrap:wrap;gap:8px 12px;align-items:flex-end;background:#fff;padding:8px;border:1px solid #d9d9d9}
        form.filters label,form.action label{display:flex;flex-direction:column;font-size:13px;font-weight:600}
        input,select,button{font:inherit;padding:4px 6px;min-height:32px}
        button.primary{background:#0b57d0;color:#fff;border:1px solid #0b57d0;border-radius:3px;padding:4px 14px}
        button.danger{background:#b3261e;color:#fff;border:1px solid #b3261e;border-radius:3px;padding:4px 14px}
        .actions{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}.actions a{display:inline-block;padding:4px 12px;border:1px solid #0b57d0;border-radius:3px;text-decoration:none}
        form.action{background:#fff;border:1px solid #d9d9d9;padding:12px;max-width:36em;display:flex;flex-direction:column;gap:10px}
        .pager{display:flex;gap:16px;margin:8px 0}
        .plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));gap:12px}
        figure{margin:0;background:#fff;border:1px solid #d9d9d9;padding:6px}figcaption{font-weight:600;font-size:14px}
        svg.plot{width:100%;height:auto;display:block}svg.plot text{font:11px system-ui,sans-serif;fill:#1f1f1f}
        svg.plot .grid{stroke:#e3e3e3}svg.plot .axis line,svg.plot .axis path{stroke:#5f5f5f}
        .legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:4px 0 0;padding:0;list-style:none}
        .swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
        @media (max-width:600px){main{padding:8px}dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:6px}
          table.wide th.opt,table.wide td.opt{display:none}}
        """
}

/// The form token that guards every change made from a page (enable, disable, manual, reset). A change from a
/// page comes with the sign-in cookie, which a browser also sends with a form another site makes it post; the
/// token is the HMAC of the session's own API token, which that site can neither read (the cookie is
/// HttpOnly, the page is same-origin) nor compute, so its post is refused. Every master computes the same
/// token from the same API token, so a form drawn by one master may be posted to another.
public enum FormToken {
    public static func make(sessionToken: String) -> String {
        HMACSHA256.hex(key: Array(sessionToken.utf8), message: Array("buildd page form v1".utf8))
    }

    /// Whether `presented` is the session's token (compared in constant time).
    static func matches(_ presented: String?, sessionToken: String) -> Bool {
        guard let presented else { return false }
        let expected = Array(make(sessionToken: sessionToken).utf8)
        let given = Array(presented.utf8)
        guard given.count == expected.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(given, expected) { difference |= a ^ b }
        return difference == 0
    }
}

/// An `application/x-www-form-urlencoded` body.
struct FormFields {
    let values: [String: String]

    init(_ text: String) {
        var values: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = parts.first.flatMap({ Self.decode(String($0)) }) else { continue }
            values[name] = parts.count > 1 ? Self.decode(String(parts[1])) ?? "" : ""
        }
        self.values = values
    }

    subscript(_ name: String) -> String? { values[name] }

    static func decode(_ text: String) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
