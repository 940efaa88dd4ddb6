@testable import BuilddMasterKit
import BuilddCore
import BuilddShared
import Foundation
import Testing

/// The pure parts of the operator's pages: escaping, the form token, the builds query, the utilisation rule
/// and the SVG plots' scales and marks.
@Suite(.timeLimit(.minutes(1))) struct OperatorPagesTests {
    @Test func everythingFromTheDatabaseIsEscaped() {
        #expect(Page.esc("<script>alert('x') & \"y\"</script>") == "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;")
        let plot = SVGPlot(id: "p", title: "<b>amd64</b>", unit: "builds", xStart: 0, xEnd: 3600,
                           series: [.init(name: "a\"><script>", color: "#000", points: [(0, 1), (60, 2)])])
        let svg = plot.render()
        #expect(!svg.contains("<b>") && !svg.contains("<script>") && svg.contains("&lt;b&gt;amd64&lt;/b&gt;"))
        #expect(Page.query([("source", "a&b c"), ("status", ""), ("builder", nil)]) == "?source=a%26b%20c")
    }

    @Test func aPageRunsOnlyItsOwnScriptAndCannotBeFramed() throws {
        let response = Page.response(title: "t", section: .none, viewer: .anonymous, body: "<p>x</p>", script: "1")
        let policy = try #require(response.headers[.init("Content-Security-Policy")!])
        let nonce = try #require(policy.range(of: "script-src 'nonce-").map { String(policy[$0.upperBound...].prefix(32)) })
        #expect(nonce.count == 32 && nonce.allSatisfy(\.isHexDigit), "\(policy)")
        #expect(!policy.contains("script-src 'self'") && !policy.contains("'unsafe-eval'"), "no script but the nonce's: \(policy)")
        #expect(policy.contains("frame-ancestors 'none'") && policy.contains("form-action 'self'"))
        #expect(response.headers[.init("X-Frame-Options")!] == "DENY")
        let other = Page.response(title: "t", section: .none, viewer: .anonymous, body: "", script: "1")
        #expect(other.headers[.init("Content-Security-Policy")!] != policy, "a new nonce for every page")
    }

    @Test func theFormTokenIsTheSessionsAndNoOtherOne() {
        let token = FormToken.make(sessionToken: "bdt_one")
        #expect(token.count == 64 && token == FormToken.make(sessionToken: "bdt_one"), "every master computes the same token")
        #expect(FormToken.matches(token, sessionToken: "bdt_one"))
        #expect(!FormToken.matches(token, sessionToken: "bdt_two"))
        #expect(!FormToken.matches(nil, sessionToken: "bdt_one"))
        #expect(!FormToken.matches(String(token.dropLast()), sessionToken: "bdt_one"))
        #expect(!FormToken.matches(String(token.dropLast()) + "0" == token ? String(token.dropLast()) + "1" : String(token.dropLast()) + "0",
                                   sessionToken: "bdt_one"))
    }

    @Test func theSignInGoesBackOnlyToThisMastersOwnPages() {
        #expect(HTTPAPI.localPath("/builders/a") == "/builders/a")
        for bad in ["//elsewhere.example/x", "https://elsewhere.example", "/\\elsewhere.example", "builders", "/a\nb", nil] {
            #expect(HTTPAPI.localPath(bad) == nil, "\(String(describing: bad))")
        }
    }

    @Test func aBuildsQueryNamesTheFieldItRefusesAndTakesAFormsTimes() throws {
        let query = try HTTPAPI.BuildsQuery(["status": "failedtobuild", "source": " hello ", "builder": "", "since": "2026-12-05T10:00",
                                             "until": "2026-12-06T00:00:00Z"], defaultLimit: 50)
        #expect(query.filter.statuses == [.failedToBuild] && query.filter.source == "hello" && query.filter.builder == nil)
        #expect(query.filter.since == "2026-12-05T10:00:00Z" && query.filter.until == "2026-12-06T00:00:00Z")
        #expect(query.limit == 50)
        for (field, value) in [("status", "NOSUCH"), ("archive", "moon"), ("since", "yesterday"), ("limit", "0"), ("order", "random"),
                               ("cursor", "zz")] {
            #expect(throws: (any Error).self, "\(field)=\(value)") { try HTTPAPI.BuildsQuery([field: value]) }
        }
        // Only the filters in use are in the statement, numbered from the first free parameter.
        let (sql, parameters) = query.filter.conditions(from: 4)
        #expect(parameters.count == 4 && sql.count == 6)
        #expect(sql[0] == "b.status = $4" && sql[1] == "b.source_name = $5")
        #expect(query.filter.leadingColumn == "b.source_name")
        #expect(sql.joined().contains("$6::timestamptz") && sql.joined().contains("$7::timestamptz"))
        #expect(BuilddStore.BuildFilter().conditions(from: 4).sql.isEmpty)
    }

    @Test func everyBuilderStateHasItsPlaceInTheUtilisationPlot() {
        #expect(BuilderAvailability.allCases.filter { $0.utilisation == .busy } == [.building, .aborting])
        #expect(BuilderAvailability.allCases.filter { $0.utilisation == .failed } == [.failed, .offline])
        #expect(Set(BuilderAvailability.allCases.filter { $0.utilisation == .idle }) == [.idle, .manual, .dirty, .cleaning])
        #expect(BuilderAvailability.removed.utilisation == nil)
    }

    @Test func plotScalesAreRoundAndTheirTicksCoverTheRange() {
        #expect(SVGPlot.yTicks(maximum: 0) == (1, 4))
        #expect(SVGPlot.yTicks(maximum: 7) == (2, 8))
        #expect(SVGPlot.yTicks(maximum: 1234) == (500, 1500))
        #expect(SVGPlot.yTicks(maximum: 0.3) == (0.1, 0.30000000000000004) || SVGPlot.yTicks(maximum: 0.3).top >= 0.3)
        let day = SVGPlot.xTicks(start: 1_000_000, end: 1_000_000 + 86_400)
        #expect(day.step == 3 * 3600 && day.ticks.count == 8 && day.ticks.allSatisfy { $0.truncatingRemainder(dividingBy: 10_800) == 0 })
        let week = SVGPlot.xTicks(start: 1_000_000, end: 1_000_000 + 7 * 86_400)
        #expect(week.step == 86_400 && week.ticks.count == 7)
        #expect(SVGPlot.timeLabel(0, step: 3600) == "00:00" && SVGPlot.timeLabel(0, step: 86_400) == "Jan 1")
    }

    @Test func aPlotDrawsItsAxesItsSeriesAndSaysWhatItShows() throws {
        let lines = SVGPlot(id: "q", title: "amd64: builds waiting", unit: "builds", xStart: 0, xEnd: 86_400,
                            series: [.init(name: "waiting", color: "#0b57d0", points: [(0, 2), (300, nil), (600, 5), (900, 3)])])
        let svg = lines.render()
        #expect(svg.contains("class=\"axis y\"") && svg.contains("class=\"axis x\""))
        #expect(svg.contains("data-series=\"waiting\" data-sum=\"10.0\" data-last=\"3.0\""))
        // A gap (no sample) starts a new line rather than drawing across it.
        let path = try #require(svg.range(of: " d=\"M", options: .backwards).map { String(svg[$0.upperBound...].prefix(while: { $0 != "\"" })) })
        #expect(path.filter { $0 == "M" }.count == 1 && path.filter { $0 == "L" }.count == 1, "M0 ... M600 L900: \(path)")
        #expect(svg.contains("role=\"img\"") && svg.contains("<desc id=\"q-desc\">waiting: last 3 builds</desc>"))
        let bars = SVGPlot(id: "e", title: "ended", unit: "builds", xStart: 0, xEnd: 86_400,
                           series: [.init(name: "FULLYBUILT", color: "#1d6b22", points: [(0, 3), (3600, 1)]),
                                    .init(name: "FAILEDTOBUILD", color: "#b3261e", points: [(0, 2), (3600, 0)])],
                           kind: .stackedBars(width: 3600))
        #expect(bars.maximum == 5, "bars stack")
        let drawn = bars.render()
        #expect(drawn.components(separatedBy: "<rect").count - 1 == 3, "a bar per non-zero value")
        #expect(drawn.contains("data-total=\"6.0\""))
        let empty = SVGPlot(id: "z", title: "none", unit: "s", xStart: 0, xEnd: 100, series: [.init(name: "p50", color: "#000", points: [])])
        #expect(empty.render().contains("No samples in this range yet"))
    }
}
