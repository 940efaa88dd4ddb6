import BuilddShared
import Foundation
import Hummingbird

/// `/plots`: the farm's last day or week, drawn on the master from the per-minute samples (``FarmSampler``,
/// `farm_sample`): per processor its queue depth, oldest wait, builds ended per hour by result, dispatch latency
/// p50/p99 and its builders busy, idle and failed.
extension HTTPAPI {
    enum PlotRange: String, CaseIterable {
        case day = "24h", week = "7d"

        var seconds: Int { self == .day ? 86_400 : 7 * 86_400 }
        /// The lines' buckets: 288 a day, 336 a week.
        var bucketSeconds: Int { self == .day ? 300 : 1_800 }
        var label: String { self == .day ? "last 24 hours" : "last 7 days" }
    }

    /// The colours of the ended builds' bars, by status (the rest are "other").
    static let endedSeries: [(name: String, statuses: Set<String>, color: String)] = [
        ("FULLYBUILT", [BuildStatus.fullyBuilt.rawValue], "#1d6b22"),
        ("FAILEDTOBUILD", [BuildStatus.failedToBuild.rawValue], "#b3261e"),
        ("MANUALDEPWAIT", [BuildStatus.manualDepWait.rawValue], "#a04000"),
        ("other", Set(BuildStatus.allCases.filter { !$0.isActive }.map(\.rawValue))
            .subtracting([BuildStatus.fullyBuilt.rawValue, BuildStatus.failedToBuild.rawValue, BuildStatus.manualDepWait.rawValue]),
         "#5f5f5f"),
    ]

    func plotsPage(_ request: Request, _ viewer: Page.Viewer) async throws -> Response {
        let range = request.uri.queryParameters["range"].flatMap { PlotRange(rawValue: String($0)) } ?? .day
        let data = try await store.plotData(rangeSeconds: range.seconds, bucketSeconds: range.bucketSeconds,
                                            endedBucketSeconds: 3600)
        let processors = try await store.processors().map(\.name)
        let end = data.now, start = data.now - Double(range.seconds)
        var body = "<h1>Plots: \(range.label)</h1><nav class=\"pager\" aria-label=\"Range\">" + PlotRange.allCases.map {
            $0 == range ? "<strong aria-current=\"page\">\($0.label)</strong>" : "<a href=\"/plots?range=\($0.rawValue)\">\($0.label)</a>"
        }.joined() + "</nav>"
        body += "<p class=\"muted\">Times are UTC. Sampled every \(samplePeriodText) by the masters; a bucket of \(range.bucketSeconds / 60) minutes "
            + "shows its largest queue and wait, its mean builders, the mean p50 and the largest p99 of dispatch latency "
            + "(from a build's NEEDSBUILD to its BUILDING).</p>"
        if processors.isEmpty { body += "<p class=\"muted\">No processors yet.</p>" }
        for (index, processor) in processors.enumerated() {
            let buckets = data.buckets[processor] ?? []
            let ended = data.ended[processor] ?? [:]
            func line(_ name: String, _ color: String, _ value: (BuilddStore.PlotBucket) -> Double?) -> SVGPlot.Series {
                SVGPlot.Series(name: name, color: color, points: buckets.map { ($0.start, value($0)) })
            }
            let id = "p\(index)"
            // Waits in the unit that reads best: seconds, minutes or hours.
            let longest = buckets.map(\.oldestWaitSeconds).max() ?? 0
            let waitUnit: (name: String, seconds: Double) = longest < 120 ? ("s", 1) : longest < 7_200 ? ("min", 60) : ("h", 3_600)
            let plots = [
                SVGPlot(id: "\(id)-queue", title: "\(processor): builds waiting", unit: "builds", xStart: start, xEnd: end,
                        series: [line("waiting", "#0b57d0") { Double($0.waiting) }]),
                SVGPlot(id: "\(id)-wait", title: "\(processor): oldest wait", unit: waitUnit.name, xStart: start, xEnd: end,
                        series: [line("oldest wait", "#a04000") { $0.oldestWaitSeconds / waitUnit.seconds }]),
                SVGPlot(id: "\(id)-ended", title: "\(processor): builds ended per hour", unit: "builds", xStart: start,
                        xEnd: end, series: Self.endedSeries.map { series in
                            SVGPlot.Series(name: series.name, color: series.color, points: ended.keys.sorted().map { hour in
                                (hour, Double(ended[hour]!.filter { series.statuses.contains($0.key) }.values.reduce(0, +)))
                            })
                        }, kind: .stackedBars(width: 3600)),
                SVGPlot(id: "\(id)-dispatch", title: "\(processor): dispatch latency", unit: "s", xStart: start, xEnd: end,
                        series: [line("p50", "#0b57d0") { $0.dispatchP50 }, line("p99", "#b3261e") { $0.dispatchP99 }]),
                SVGPlot(id: "\(id)-builders", title: "\(processor): builders", unit: "builders", xStart: start, xEnd: end,
                        series: [line("busy", "#0b57d0") { $0.busy }, line("idle", "#1d6b22") { $0.idle },
                                 line("failed", "#b3261e") { $0.failed }]),
            ]
            body += "<section aria-labelledby=\"\(id)-heading\" class=\"processor\" data-processor=\"\(Page.esc(processor))\">"
                + "<h2 id=\"\(id)-heading\">\(Page.esc(processor))</h2><div class=\"plots\">"
                + plots.map { $0.render() }.joined() + "</div></section>"
        }
        return Page.response(title: "Plots", section: .plots, viewer: viewer, body: body)
    }

    var samplePeriodText: String {
        let seconds = Int(samplePeriod.components.seconds)
        return seconds % 60 == 0 ? "\(seconds / 60) min" : "\(seconds) s"
    }
}
