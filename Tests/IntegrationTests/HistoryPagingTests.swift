import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// A builder's history pages by cursor, as the build list does: newest first, each line once, the next page's
/// cursor in `X-Next-Cursor` and `Link`, while new lines arrive. Real PostgreSQL and a master.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HistoryPagingTests {
    @Test func aBuildersHistoryPagesByCursorAndSeesEachLineOnce() async throws {
        try await FarmHarness.with { farm in
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "long-lived", processors: ["amd64"])
            try await farm.startMaster()
            _ = try await farm.store.database.query("""
                INSERT INTO builder_event (builder, kind, actor, reason)
                SELECT 'long-lived', CASE WHEN g % 2 = 0 THEN 'disabled' ELSE 'enabled' END, 'op-' || g, 'line ' || g
                  FROM generate_series(1, 250) g
                """)
            let viewer = try await farm.store.addToken(name: "reader", role: .viewer)
            var reasons: [String] = []
            var path: String? = "/v1/builders/long-lived/history?limit=100"
            var pages = 0
            while let current = path {
                let url = farm.masterURLs[0] + current
                let answer = try await runBlocking {
                    try SimpleHTTPClient.send(method: "GET", url: url, headers: ["Authorization": "Bearer \(viewer)"], timeoutSeconds: 10)
                }
                #expect(answer.status == 200, "\(current): \(answer.text)")
                let lines = (try JSONSerialization.jsonObject(with: Data(answer.body)) as? [[String: Any]]) ?? []
                reasons += lines.compactMap { $0["reason"] as? String }
                pages += 1
                if pages == 1 {
                    // A line that arrives meanwhile is newer than every page still to come: it is not listed twice.
                    try await farm.store.setBuilderManual("long-lived", true, actor: "late")
                }
                path = answer.headers["link"].flatMap { link in
                    link.firstRange(of: "<").flatMap { open in link.firstRange(of: ">").map { String(link[open.upperBound..<$0.lowerBound]) } }
                }
                #expect((path == nil) == (answer.headers["x-next-cursor"] == nil))
            }
            // The 250 lines (and the "added" line of the builder), newest first, each once.
            let numbered = reasons.filter { $0.hasPrefix("line ") }
            #expect(pages == 3, "\(pages) pages")
            #expect(numbered == (1...250).reversed().map { "line \($0)" }, "\(numbered.prefix(5)) ...")
            #expect(Set(reasons).count == reasons.count, "a line was listed twice")
            // Without a token (a builder's history is for viewers), with a cursor it never gave: refused.
            let anonymous = try await runBlocking { [url = farm.masterURLs[0]] in
                try SimpleHTTPClient.send(method: "GET", url: url + "/v1/builders/long-lived/history", timeoutSeconds: 10)
            }
            #expect(anonymous.status == 401)
            let bad = try await runBlocking { [url = farm.masterURLs[0]] in
                try SimpleHTTPClient.send(method: "GET", url: url + "/v1/builders/long-lived/history?cursor=o5",
                                          headers: ["Authorization": "Bearer \(viewer)"], timeoutSeconds: 10)
            }
            #expect(bad.status == 400, "\(bad.text)")
        }
    }
}
