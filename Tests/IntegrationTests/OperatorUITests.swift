import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// The operator's pages in Debian's Chromium (headless), on a farm whose agents run their builds: what a person
/// sees and does. Filters narrow the builds list; a running build's log grows on its page and stops at its
/// end, with and without JavaScript; an operator disables a builder from its page and the next build goes
/// elsewhere, and forged or foreign forms change nothing; each plot has its axes and a series that moves when
/// builds end; axe-core finds no violation on any page, at a desktop's width and a phone's.
@Suite(.serialized, .timeLimit(.minutes(8))) struct OperatorUITests {
    /// A form post as a browser of another page would make it: the cookie, a form body, an Origin.
    static func post(_ farm: FarmHarness, _ path: String, cookie: String?, form: String, origin: String? = nil)
        async throws -> (status: Int, text: String) {
        var headers = ["Content-Type": "application/x-www-form-urlencoded"]
        if let cookie { headers["Cookie"] = cookie }
        if let origin { headers["Origin"] = origin }
        let url = farm.masterURLs[0] + path, sent = headers
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: "POST", url: url, headers: sent, body: .bytes(Array(form.utf8)), timeoutSeconds: 10)
        }
        return (response.status, response.text)
    }

    static func screenshot(_ browser: HeadlessBrowser, _ name: String) async throws {
        guard let directory = ProcessInfo.processInfo.environment["BUILDD_SCREENSHOT_DIR"] else { return }
        try await browser.screenshot().write(to: URL(fileURLWithPath: directory + "/\(name).png"))
    }

    /// No violation axe-core reports, and nothing wider than the window (a phone's width included).
    static func checkQuality(_ browser: HeadlessBrowser, _ page: String) async throws {
        let violations = try await browser.accessibilityViolations()
        #expect(violations.isEmpty, "axe-core on \(page):\n\(violations.joined(separator: "\n"))")
        let overflow = try await browser.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth") as? Int
        #expect((overflow ?? 1) <= 0, "\(page) is wider than the window by \(overflow ?? -1) px")
    }

    @Test func buildsFilterALiveLogGrowsAndEndsAndThePlotsFollowTheBuilds() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64", "arm64"])
            try await farm.store.addBuilder(name: "ui-agent", processors: ["amd64"])
            try await farm.startMaster(arguments: ["--sample-interval", "1"])
            try farm.startAgent("ui-agent", processors: ["amd64"], sampleSeconds: 0.5,
                                environment: ["BUILDD_SAMPLE_SLOW_SECONDS": "16", "BUILDD_SAMPLE_LINES": "16"])
            func submit(_ source: String, _ arch: String = "amd64", archive: ArchivePurpose = .primary) async throws -> Int64 {
                try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: arch,
                                                         sourceName: source, sourceVersion: "1.0", archive: archive))
            }
            let hello = try await submit("hello")
            let broken = try await submit("broken-thing")
            let depwait = try await submit("depwait-thing")
            let waiting = try await submit("coreutils", "arm64")
            let secret = try await submit("secretpkg", archive: .private)
            for id in [hello, broken, depwait, secret] {
                #expect(try await eventually(timeout: .seconds(40)) { try await !farm.store.build(id).build.status.isActive })
            }
            let base = farm.masterURLs[0]
            let browser = try await HeadlessBrowser(url: base + "/plots")
            try await closing(browser) {
                // The plots: each has its axes and its series; the ended builds are counted once sampled.
                let plotted = try await eventually(timeout: .seconds(15)) {
                    try await browser.navigate(base + "/plots")
                    let total = try await browser.evaluate("Number(document.getElementById('p0-ended').dataset.total)") as? Double
                    return (total ?? 0) >= 4
                }
                #expect(plotted, "the amd64 ended plot counted the four ended builds")
                let ids = ["queue", "wait", "ended", "dispatch", "builders"].flatMap { ["p0-\($0)", "p1-\($0)"] }
                for id in ids {
                    let shape = try await browser.evaluate("""
                        (() => { const s = document.getElementById('\(id)'); if (!s) return 'missing';
                          return [s.querySelectorAll('.axis.x text').length, s.querySelectorAll('.axis.y text').length,
                                  s.querySelectorAll('.series').length, s.querySelector('title')?.textContent].join('|'); })()
                        """) as? String ?? "nil"
                    let parts = shape.split(separator: "|")
                    #expect(parts.count == 4 && Int(parts[0]) ?? 0 >= 2 && Int(parts[1]) ?? 0 >= 2 && Int(parts[2]) ?? 0 >= 1,
                            "plot \(id): x ticks | y ticks | series | title = \(shape)")
                }
                let endedByStatus = try await browser.evaluate("""
                    Object.fromEntries(Array.from(document.querySelectorAll('#p0-ended .series')).map(g => [g.dataset.series, Number(g.dataset.sum)]))
                    """) as? [String: Double] ?? [:]
                #expect(endedByStatus["FULLYBUILT"] ?? 0 >= 2, "hello and the private build: \(endedByStatus)")
                #expect(endedByStatus["FAILEDTOBUILD"] == 1 && endedByStatus["MANUALDEPWAIT"] == 1, "\(endedByStatus)")
                let waitingNow = try await browser.evaluate(
                    "Number(document.querySelector('#p1-queue .series').dataset.last)") as? Double
                #expect(waitingNow == 1, "arm64's queue holds coreutils: \(String(describing: waitingNow))")
                try await Self.checkQuality(browser, "/plots")
                try await Self.screenshot(browser, "plots")
                let endedBefore = try await browser.evaluate("Number(document.getElementById('p0-ended').dataset.total)") as? Double ?? 0

                // The builds page: everything readable by anyone; filters narrow it; a row leads to its build.
                try await browser.navigate(base + "/builds")
                let (all, allText) = try await browser.waitForText(["#\(hello) hello", "#\(broken) broken-thing", "#\(waiting) coreutils"])
                #expect(all, "\(allText)")
                #expect(!allText.contains("secretpkg"), "a private build is not listed for an anonymous reader")
                func rows() async throws -> [String] {
                    try await browser.evaluate("Array.from(document.querySelectorAll('tr.build')).map(r => r.dataset.id)") as? [String] ?? []
                }
                #expect(try await rows().count == 4)
                try await Self.checkQuality(browser, "/builds")
                _ = try await browser.evaluate("""
                    document.querySelector('select[name=status]').value = 'FAILEDTOBUILD';
                    document.querySelector('form.filters').requestSubmit(); true
                    """)
                #expect(try await eventually(timeout: .seconds(10)) { try await rows() == ["\(broken)"] }, "status filter")
                try await browser.navigate(base + "/builds?processor=arm64")
                #expect(try await rows() == ["\(waiting)"], "processor filter")
                try await browser.navigate(base + "/builds?source=hello&builder=ui-agent")
                #expect(try await rows() == ["\(hello)"], "source and builder filters")
                // Paging by cursor: two a page, each page its own builds, and the way back to the newest.
                try await browser.navigate(base + "/builds?limit=2")
                let firstPage = try await rows()
                _ = try await browser.evaluate("document.querySelector('a[rel=next]').click(); true")
                // While the next page loads the table is briefly empty: wait for its rows, not just for a change.
                #expect(try await eventually(timeout: .seconds(10)) {
                    let now = try await rows()
                    return now.count == 2 && now != firstPage
                }, "the next page")
                let secondPage = try await rows()
                #expect(firstPage.count == 2 && secondPage.count == 2 && Set(firstPage).isDisjoint(with: secondPage)
                        && firstPage.compactMap { Int64($0) }.min()! > secondPage.compactMap { Int64($0) }.max()!,
                        "newest first, page by page: \(firstPage) then \(secondPage)")
                #expect(try await browser.text().contains("Newest"))
                let future = "2099-01-01T00:00"
                try await browser.navigate(base + "/builds?since=\(future)")
                let none = try await rows()
                let noneText = try await browser.text()
                #expect(none.isEmpty && noneText.contains("No builds match."), "a time range with no builds")
                try await browser.navigate(base + "/builds?until=\(future)&status=MANUALDEPWAIT")
                #expect(try await rows() == ["\(depwait)"], "until and status")
                _ = try await browser.evaluate("document.querySelector('tr.build a').click(); true")
                let (depShown, depText) = try await browser.waitForText(["Build #\(depwait): depwait-thing 1.0", "MANUALDEPWAIT",
                                                                         "libfoo-dev (>= 2.0)", "History", "ui-agent"])
                #expect(depShown, "the dep-wait build's page names what it misses:\n\(depText)")
                try await browser.navigate(base + "/builds?status=NOSUCH")
                #expect(try await browser.text().contains("status: unknown status NOSUCH"))
                // A private build does not exist for an anonymous reader.
                try await browser.navigate(base + "/builds/\(secret)")
                #expect(try await browser.text().contains("Not found"))

                // A running build: its log grows on the page, then the page shows its end and its files.
                let slow = try await submit("hello-slow")
                #expect(try await eventually(timeout: .seconds(20)) { try await farm.store.build(slow).build.status == .building })
                try await browser.navigate(base + "/builds/\(slow)")
                func logLines() async throws -> Int {
                    (try await browser.evaluate("document.getElementById('log').textContent.split('\\n').filter(l => l.includes('sample-build: step')).length") as? Int) ?? -1
                }
                _ = try await browser.evaluate("window.__sameLoad = 'yes'")
                let first = try await logLines()
                let grew = try await eventually(timeout: .seconds(12)) { try await logLines() >= first + 3 }
                #expect(grew, "the log grew on the page without a reload (from \(first) step lines)")
                #expect(try await browser.evaluate("window.__sameLoad") as? String == "yes")
                #expect(try await farm.store.build(slow).build.status == .building, "and the build was still running")
                try await Self.checkQuality(browser, "/builds/\(slow) while it runs")
                try await Self.screenshot(browser, "build-live-log")
                let (ended, endText) = try await browser.waitForText(["FULLYBUILT", "hello-slow_1.0_amd64.deb",
                                                                      "The build has ended: this is its whole log."], timeout: .seconds(40))
                #expect(ended, "the page followed the build to its end:\n\(endText)")
                let whole = try await browser.evaluate("document.getElementById('log').textContent") as? String ?? ""
                #expect(whole.contains("sample-build: step 16/16") && whole.contains("sample-build: done"), "the whole log")
                #expect(try await browser.evaluate("document.getElementById('log').dataset.follow") as? String == "false",
                        "nothing follows a finished build's log")
                // From an offset: the page shows the log from there.
                try await browser.navigate(base + "/builds/\(slow)?offset=200")
                let tail = try await browser.evaluate("document.getElementById('log').textContent") as? String ?? ""
                #expect(whole.hasSuffix(tail) && tail.count < whole.count && tail.contains("sample-build: done"))

                // The plot moved: one more build ended since the first load.
                let movedOn = try await eventually(timeout: .seconds(10)) {
                    try await browser.navigate(base + "/plots")
                    return (try await browser.evaluate("Number(document.getElementById('p0-ended').dataset.total)") as? Double ?? 0) > endedBefore
                }
                #expect(movedOn, "the ended plot counted the slow build")
                // The builders plot: busy while builds ran (a bucket is the mean of its samples, so its value is a
                // share of the bucket, not a count: only that it is above zero is certain).
                let busy = try await browser.evaluate("Number(document.querySelector('#p0-builders .series[data-series=\"busy\"]').dataset.sum)") as? Double
                #expect((busy ?? 0) > 0, "the busy series shows the builds that ran: \(String(describing: busy))")

                // At a phone's width every page still fits and passes the checker.
                try await browser.setViewport(width: 390, height: 844, mobile: true)
                for path in ["/builds", "/builds/\(depwait)", "/builders/ui-agent", "/plots", "/builders", "/queue/arm64", "/signin"] {
                    try await browser.navigate(base + path)
                    if path == "/builders" || path == "/queue/arm64" {
                        _ = try await browser.waitForText(["updated"])
                    }
                    try await Self.checkQuality(browser, "\(path) at 390 px")
                }
                try await browser.navigate(base + "/builds")
                try await Self.screenshot(browser, "builds-phone")
                try await browser.setViewport(width: 1280, height: 900, mobile: false)

                // By keyboard: the first Tab reaches the skip link, and the filters and their button follow.
                try await browser.navigate(base + "/builds")
                try await browser.press("Tab")
                #expect(try await browser.evaluate("document.activeElement.textContent") as? String == "Skip to content")
                // (each date and time field has a stop for each of its parts)
                var reached: [String] = []
                for _ in 0..<40 {
                    try await browser.press("Tab")
                    if let name = try await browser.evaluate("document.activeElement.name || document.activeElement.textContent") as? String {
                        reached.append(name)
                        if name == "Filter" { break }
                    }
                }
                #expect(reached.contains("status") && reached.contains("source") && reached.last == "Filter", "Tab order: \(reached)")
                try await browser.press("Enter")
                #expect(try await eventually(timeout: .seconds(5)) { try await rows().count == 5 }, "Enter on Filter lists the builds")
                try await Self.screenshot(browser, "builds")
            }

            // Without JavaScript: the running build's page carries the log so far and reloads itself.
            let slow2 = try await submit("again-slow")
            #expect(try await eventually(timeout: .seconds(20)) { try await farm.store.build(slow2).build.status == .building })
            let plain = try await HeadlessBrowser(url: "about:blank")
            try await closing(plain) {
                try await plain.setJavaScript(enabled: false)
                try await plain.navigate(base + "/builds/\(slow2)")
                func steps() async throws -> Int {
                    (try await plain.evaluate("document.getElementById('log').textContent.split('\\n').filter(l => l.includes('step')).length") as? Int) ?? -1
                }
                let before = try await steps()
                #expect(try await plain.evaluate("!!document.querySelector('meta[http-equiv=refresh]')") as? Bool == true,
                        "the page asks to be reloaded")
                #expect(try await eventually(timeout: .seconds(15)) { try await steps() > before },
                        "after its own reload, the page shows more of the log (from \(before) lines)")
            }
        }
    }

    @Test func anOperatorDisablesABuilderFromItsPageAndForgedFormsChangeNothing() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "op-a", processors: ["amd64"])
            try await farm.store.addBuilder(name: "op-b", processors: ["amd64"])
            let operatorToken = try await farm.store.addToken(name: "ops", role: .operator)
            let viewerToken = try await farm.store.addToken(name: "eve", role: .viewer)
            try await farm.startMaster()
            try farm.startAgent("op-a", processors: ["amd64"], sampleSeconds: 0.3)
            try farm.startAgent("op-b", processors: ["amd64"], sampleSeconds: 0.3)
            let base = farm.masterURLs[0]
            let browser = try await HeadlessBrowser(url: base + "/builders/op-a")
            try await closing(browser) {
                // Not signed in: no actions, a way to sign in.
                let (shown, text) = try await browser.waitForText(["Builder op-a", "Sign in with an operator's token"])
                #expect(shown, "\(text)")
                #expect(try await browser.evaluate("document.querySelectorAll('.actions a').length") as? Int == 0)
                try await Self.checkQuality(browser, "/builders/op-a anonymous")
                // Sign in through the form; back on the builder's page.
                _ = try await browser.evaluate("document.querySelector('main a[href^=\"/signin\"]').click(); true")
                _ = try await browser.waitForText(["API token"])
                try await Self.checkQuality(browser, "/signin")
                _ = try await browser.evaluate("""
                    document.getElementById('token').value = '\(operatorToken)'; document.querySelector('form.action').submit(); true
                    """)
                let (back, backText) = try await browser.waitForText(["Builder op-a", "ops (operator)", "Disable..."])
                #expect(back, "\(backText)")
                try await Self.checkQuality(browser, "/builders/op-a as an operator")
                #expect(try await browser.evaluate("document.getElementById('action-reset') === null") as? Bool == true,
                        "no Reset for a builder that cleans itself")
                // Disable, with its confirmation and a reason.
                _ = try await browser.evaluate("document.getElementById('action-disable').click(); true")
                let (asked, askedText) = try await browser.waitForText(["Disable: op-a?", "gets no more work"])
                #expect(asked, "\(askedText)")
                try await Self.checkQuality(browser, "the disable confirmation")
                #expect(try await farm.store.builders().first { $0.name == "op-a" }?.builderok == true, "nothing changed before the confirmation")
                _ = try await browser.evaluate("""
                    document.getElementById('reason').value = 'fan broken'; document.getElementById('confirm').click(); true
                    """)
                let (done, doneText) = try await browser.waitForText(["Done: Disable.", "not ok: fan broken", "disabled", "ops"])
                #expect(done, "\(doneText)")
                #expect(try await farm.store.builders().first { $0.name == "op-a" }?.builderok == false)
                let history = try await farm.store.builderHistory("op-a")
                #expect(history.first?.kind == "disabled" && history.first?.actor == "ops" && history.first?.reason == "fan broken")
                // The next builds go elsewhere.
                var built: [Int64] = []
                for index in 0..<3 {
                    built.append(try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                          sourceName: "after-\(index)", sourceVersion: "1.0")))
                }
                for id in built {
                    #expect(try await eventually(timeout: .seconds(30)) { try await farm.store.build(id).build.status == .fullyBuilt })
                    #expect(try await farm.store.build(id).build.builder == "op-b", "build \(id) went to the builder still enabled")
                }
                // Reset: this builder has no reset set, and the page says so; nothing changes.
                try await browser.navigate(base + "/builders/op-a/confirm/reset")
                _ = try await browser.evaluate("document.getElementById('confirm').click(); true")
                let (refused, refusedText) = try await browser.waitForText(["Not changed", "has no reset set"])
                #expect(refused, "\(refusedText)")

                // Forged and foreign posts, with the operator's own cookie: each refused, nothing changed.
                let cookie = "\(HTTPAPI.sessionCookie)=\(operatorToken)"
                let formToken = try #require(await browser.evaluate("""
                    fetch('/builders/op-a/confirm/enable').then(r => r.text()).then(t => /name="form_token" value="([0-9a-f]+)"/.exec(t)[1])
                    """) as? String)
                let attempts: [(String, String?, String?, Int)] = [
                    ("no form token", cookie, nil, 403),
                    ("another session's token", cookie, FormToken.make(sessionToken: viewerToken), 403),
                    ("no cookie", nil, formToken, 401),
                    ("a viewer's cookie and its own token", "\(HTTPAPI.sessionCookie)=\(viewerToken)", FormToken.make(sessionToken: viewerToken), 403),
                ]
                for (what, sentCookie, token, status) in attempts {
                    let answer = try await Self.post(farm, "/builders/op-a/enable", cookie: sentCookie,
                                                     form: token.map { "form_token=\($0)" } ?? "")
                    #expect(answer.status == status, "\(what): \(answer.status) \(answer.text.prefix(300))")
                }
                let foreign = try await Self.post(farm, "/builders/op-a/enable", cookie: cookie, form: "form_token=\(formToken)",
                                                  origin: "http://elsewhere.example")
                #expect(foreign.status == 403 && foreign.text.contains("another site"), "a foreign origin: \(foreign.status)")
                #expect(try await farm.store.builders().first { $0.name == "op-a" }?.builderok == false, "still disabled")
                // The same form from this origin goes through (the refusals were the guard, not the route).
                let own = try await Self.post(farm, "/builders/op-a/enable", cookie: cookie, form: "form_token=\(formToken)",
                                              origin: base)
                #expect(own.status == 303, "the operator's own form: \(own.status) \(own.text.prefix(200))")
                #expect(try await farm.store.builders().first { $0.name == "op-a" }?.builderok == true)
                // The API still takes no cookie for a change.
                let api = try await AccessTests.send(farm, "POST", "/v1/builders/op-a/manual", cookie: cookie, body: #"{"manual": true}"#)
                #expect(api.status == 401, "the API refuses the cookie for a change: \(api.status)")
                try await browser.navigate(base + "/builders/op-b")
                #expect(try await browser.waitForText(["#\(built[0]) after-0 1.0", "History"]).0)
                try await Self.checkQuality(browser, "/builders/op-b with its builds")
                try await Self.screenshot(browser, "builder")
                // A viewer signed in sees no actions and cannot open a confirmation.
                let viewer = try await HeadlessBrowser(url: base + "/signin")
                try await closing(viewer) {
                    #expect(try await viewer.waitForText(["API token"]).0)
                    _ = try await viewer.evaluate("""
                        document.getElementById('token').value = '\(viewerToken)'; document.querySelector('form.action').submit(); true
                        """)
                    #expect(try await viewer.waitForText(["eve (viewer)"]).0, "the viewer signed in")
                    try await viewer.navigate(base + "/builders/op-a")
                    #expect(try await viewer.text().contains("needs an operator's token"))
                    try await viewer.navigate(base + "/builders/op-a/confirm/disable")
                    #expect(try await viewer.text().contains("needs signing in with an operator's token"))
                }
            }
        }
    }
}
