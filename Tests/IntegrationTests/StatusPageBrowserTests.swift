import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// The status pages in a real headless browser (Debian's Chromium): what a person sees, and that it
/// follows the farm without a reload.
@Suite(.serialized, .timeLimit(.minutes(5))) struct StatusPageBrowserTests {
    @Test func theBuildersPageShowsTheFarmAndFollowsItWithoutAReload() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64", "arm64"])
            try await farm.store.addBuilder(name: "page-agent", processors: ["amd64"])
            try await farm.store.addBuilder(name: "page-broken", processors: ["amd64"])
            try await farm.store.addBuilder(name: "page-manual", processors: ["arm64"])
            try await farm.store.disableBuilder("page-broken", reason: "disk replaced", actor: "test")
            try await farm.store.setBuilderManual("page-manual", true, actor: "test")
            try await farm.startMaster()
            // "slow" sources build for a minute (ended by a cancel below), others for a second.
            try farm.startAgent("page-agent", processors: ["amd64"], sampleSeconds: 1,
                                environment: ["BUILDD_SAMPLE_SLOW_SECONDS": "60"])
            let building = try await farm.store.submit(BuildRequest(
                distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: "hello-slow", sourceVersion: "2.10-3"))
            let waiting = try await farm.store.submit(BuildRequest(
                distribution: "ubuntu", series: "noble", archTag: "arm64", sourceName: "coreutils", sourceVersion: "9.4-3"))
            let urgent = try await farm.store.submit(BuildRequest(
                distribution: "ubuntu", series: "noble", archTag: "arm64", sourceName: "openssl", sourceVersion: "3.0.13",
                urgency: .emergency, pocket: .security))
            #expect(try await eventually(timeout: .seconds(20)) { try await farm.store.build(building).build.status == .building })

            let browser = try await HeadlessBrowser(url: farm.masterURLs[0] + "/builders")
            try await closing(browser) {
                // What a person sees: per processor its builders, state, current build with its log tail,
                // failnotes, manual mode, queue depth and an estimated wait.
                let (shown, text) = try await browser.waitForText([
                    "amd64", "arm64", "page-agent", "building", "#\(building) hello-slow 2.10-3", "page-broken", "disk replaced",
                    "page-manual", "manual mode", "2 waiting",
                ])
                #expect(shown, "the builders page showed:\n\(text)")
                // The log tail arrives with the agent's next heartbeat.
                let tailShown = try await eventually(timeout: .seconds(15)) {
                    let tail = try await browser.evaluate(
                        "document.querySelector('tr[data-name=\"page-agent\"] pre.logtail')?.innerText ?? ''") as? String
                    return tail?.contains("sample-build: building hello-slow 2.10-3") == true
                }
                #expect(tailShown, "the running build's log tail is on the page")
                #expect(try await !browser.text().contains("[object "), "no stray object text on the builders page")
                if let directory = ProcessInfo.processInfo.environment["BUILDD_SCREENSHOT_DIR"] {
                    try await browser.screenshot().write(to: URL(fileURLWithPath: directory + "/status-builders.png"))
                }
                // The running build's own page: its status, and its log so far as text under a heading.
                let running = try await HeadlessBrowser(url: farm.masterURLs[0] + "/builds/\(building)")
                try await closing(running) {
                    let (shown, text) = try await running.waitForText(
                        ["Build #\(building): hello-slow 2.10-3 on ubuntu/noble/amd64", "BUILDING", "Log",
                         "sample-build: building hello-slow 2.10-3"])
                    #expect(shown, "the running build's page showed:\n\(text)")
                    #expect(!text.contains("[object "), "no stray object text on a running build's page:\n\(text)")
                    let log = try await running.evaluate("document.getElementById('log')?.innerText ?? ''") as? String
                    #expect(log?.contains("sample-build: building hello-slow 2.10-3") == true,
                            "the log is a <pre> of its own: \(log ?? "nil")")
                    let heading = try await running.evaluate(
                        "document.getElementById('log-heading')?.textContent ?? ''") as? String
                    #expect(heading == "Log attempt 1")
                }
                // Mark this page load, end the build, and watch the page catch up by itself.
                _ = try await browser.evaluate("window.__sameLoad = 'yes'")
                #expect(try await farm.store.cancel(building) == .cancelling)
                #expect(try await eventually(timeout: .seconds(30)) { try await farm.store.build(building).build.status == .cancelled })
                let (followed, after) = try await browser.waitForText(["idle"], timeout: .seconds(15))
                #expect(followed && !after.contains("#\(building) hello"), "the page followed the build's end:\n\(after)")
                #expect(try await browser.evaluate("window.__sameLoad") as? String == "yes", "without a reload")
            }
            let built = try await farm.store.submit(BuildRequest(
                distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: "hello", sourceVersion: "2.10-3"))
            #expect(try await eventually(timeout: .seconds(30)) { try await farm.store.build(built).build.status == .fullyBuilt })

            // The queue page lists waiting builds in dispatch order (best score first).
            let queue = try await HeadlessBrowser(url: farm.masterURLs[0] + "/queue/arm64")
            try await closing(queue) {
                let (shown, text) = try await queue.waitForText(["Queue of arm64: 2 waiting", "openssl", "coreutils"])
                #expect(shown, "\(text)")
                let order = try await queue.evaluate(
                    "Array.from(document.querySelectorAll('tr.queued a')).map(a => a.textContent)") as? [String]
                #expect(order == ["#\(urgent) openssl 3.0.13", "#\(waiting) coreutils 9.4-3"])
                #expect(!text.contains("[object "), "no stray object text on the queue page")
            }

            // A build's page: status, history, result files and the log.
            let page = try await HeadlessBrowser(url: farm.masterURLs[0] + "/builds/\(built)")
            try await closing(page) {
                let detail = try await farm.store.build(built)
                let files = detail.files.map(\.name)
                #expect(!files.isEmpty)
                let (shown, text) = try await page.waitForText(
                    ["Build #\(built): hello 2.10-3 on ubuntu/noble/amd64", "FULLYBUILT", "BUILDING", "page-agent"] + files)
                #expect(shown, "\(text)")
                #expect(!text.contains("[object "), "no stray object text on a finished build's page:\n\(text)")
                // Finished: its full log is a file to download, and shown whole, followed no more.
                let logName = detail.files.first { $0.kind == "log" }?.name
                #expect(logName != nil && text.contains(logName!))
                #expect(text.contains("The build has ended: this is its whole log."), "\(text)")
                #expect(try await page.evaluate("document.getElementById('log').dataset.follow") as? String == "false")
            }
        }
    }
}
