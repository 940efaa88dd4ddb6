import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A time-series plot drawn as SVG on the master: axes with their ticks and labels, lines or stacked bars,
/// and a legend. No script and no font from anywhere: the text uses the reader's own sans-serif. Each
/// series carries its values' sum and last value as data attributes, so a test (or a person with the
/// inspector) reads what was drawn.
struct SVGPlot {
    struct Series {
        var name: String
        var color: String
        /// x in epoch seconds; a nil y is a gap (no sample).
        var points: [(x: Double, y: Double?)]
    }

    enum Kind {
        case lines
        /// Bars of `width` seconds, the series stacked in order.
        case stackedBars(width: Double)
    }

    var id: String
    var title: String
    /// What the y axis counts ("builds", "s").
    var unit: String
    var xStart: Double
    var xEnd: Double
    var series: [Series]
    var kind: Kind = .lines

    static let width = 600.0, height = 230.0
    static let left = 52.0, right = 12.0, top = 24.0, bottom = 30.0

    var plotWidth: Double { Self.width - Self.left - Self.right }
    var plotHeight: Double { Self.height - Self.top - Self.bottom }

    /// The largest value drawn (of the stacked total for bars).
    var maximum: Double {
        switch kind {
        case .lines:
            return series.flatMap { $0.points.compactMap(\.y) }.max() ?? 0
        case .stackedBars:
            var totals: [Double: Double] = [:]
            for one in series { for point in one.points { totals[point.x, default: 0] += point.y ?? 0 } }
            return totals.values.max() ?? 0
        }
    }

    /// A 1, 2 or 5 times a power of ten step giving about four ticks up to `maximum`, and the axis top.
    static func yTicks(maximum: Double) -> (step: Double, top: Double) {
        guard maximum > 0 else { return (1, 4) }
        let rough = maximum / 4
        let power = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= rough } ?? 10 * power
        return (step, ceil(maximum / step) * step)
    }

    /// Ticks on the time axis: every 1, 3 or 6 hours, or every day, whichever gives at most eight.
    static func xTicks(start: Double, end: Double) -> (step: Double, ticks: [Double]) {
        let span = max(end - start, 1)
        let step = [3600.0, 3 * 3600, 6 * 3600, 86_400].first { span / $0 <= 8 } ?? 86_400 * ceil(span / 86_400 / 8)
        var ticks: [Double] = []
        var tick = ceil(start / step) * step
        while tick <= end {
            ticks.append(tick)
            tick += step
        }
        return (step, ticks)
    }

    /// A tick's label: as many decimals as the step needs (0.05 steps: two), none for whole numbers.
    static func label(_ value: Double, step: Double = 1) -> String {
        if value == value.rounded() && step >= 1 { return String(Int(value)) }
        let decimals = step >= 1 ? (value < 10 ? 1 : 0) : min(6, Int(-floor(log10(step))))
        return String(format: "%.\(decimals)f", value)
    }

    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `HH:mm` (UTC), or `MMM d` for steps of a day or more: worked out from the seconds, not with a
    /// DateFormatter (a plot has hundreds of labels, and making formatters cost most of a week's plot).
    static func timeLabel(_ epoch: Double, step: Double) -> String {
        var seconds = time_t(epoch)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        if step >= 86_400 { return "\(months[Int(parts.tm_mon)]) \(parts.tm_mday)" }
        return String(format: "%02d:%02d", parts.tm_hour, parts.tm_min)
    }

    func x(_ time: Double) -> Double { Self.left + (time - xStart) / max(xEnd - xStart, 1) * plotWidth }
    func y(_ value: Double, top: Double) -> Double { Self.top + plotHeight - value / top * plotHeight }

    static func number(_ value: Double) -> String { String(format: "%.1f", value) }

    func render() -> String {
        let (step, top) = Self.yTicks(maximum: maximum)
        let (xStep, xTicks) = Self.xTicks(start: xStart, end: xEnd)
        let total = series.flatMap { $0.points.compactMap(\.y) }.reduce(0, +)
        let summary = series.map { one in
            let values = one.points.compactMap(\.y)
            return "\(one.name): " + (values.last.map { "last \(Self.label($0)) \(unit)" } ?? "no samples")
        }.joined(separator: "; ")
        var svg = "<svg class=\"plot\" id=\"\(id)\" viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" role=\"img\" "
            + "aria-labelledby=\"\(id)-title \(id)-desc\" data-total=\"\(Self.number(total))\" xmlns=\"http://www.w3.org/2000/svg\">"
            + "<title id=\"\(id)-title\">\(Page.esc(title))</title><desc id=\"\(id)-desc\">\(Page.esc(summary))</desc>"
        // The y axis: grid lines and labels at each tick, the unit at the top.
        svg += "<g class=\"axis y\">"
        var value = 0.0
        while value <= top + step / 2 {
            let position = Self.number(y(value, top: top))
            svg += "<line class=\"grid\" x1=\"\(Self.left)\" x2=\"\(Self.width - Self.right)\" y1=\"\(position)\" y2=\"\(position)\"/>"
                + "<text x=\"\(Self.left - 6)\" y=\"\(position)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(Self.label(value, step: step))</text>"
            value += step
        }
        svg += "<text class=\"unit\" x=\"4\" y=\"4\" dominant-baseline=\"hanging\">\(Page.esc(unit))</text>"
            + "<path d=\"M\(Self.left) \(Self.top)V\(Self.top + plotHeight)\"/></g>"
        // The x axis: a tick and a UTC time at each step.
        svg += "<g class=\"axis x\"><path d=\"M\(Self.left) \(Self.top + plotHeight)H\(Self.width - Self.right)\"/>"
        for tick in xTicks {
            let position = Self.number(x(tick))
            svg += "<line x1=\"\(position)\" x2=\"\(position)\" y1=\"\(Self.top + plotHeight)\" y2=\"\(Self.top + plotHeight + 4)\"/>"
                + "<text x=\"\(position)\" y=\"\(Self.height - 8)\" text-anchor=\"middle\">\(Self.timeLabel(tick, step: xStep))</text>"
        }
        svg += "</g>"
        switch kind {
        case .lines:
            for one in series {
                var path = ""
                var drawing = false
                for point in one.points.sorted(by: { $0.x < $1.x }) {
                    guard let value = point.y else { drawing = false; continue }
                    path += (drawing ? "L" : "M") + Self.number(x(point.x)) + " " + Self.number(y(value, top: top))
                    drawing = true
                }
                let values = one.points.compactMap(\.y)
                svg += "<path class=\"series\" data-series=\"\(Page.esc(one.name))\" data-sum=\"\(Self.number(values.reduce(0, +)))\" "
                    + "data-last=\"\(values.last.map(Self.number) ?? "")\" fill=\"none\" stroke=\"\(one.color)\" stroke-width=\"2\" d=\"\(path)\"/>"
                // A lone sample has no line: a dot shows it.
                if values.count == 1, let only = one.points.first(where: { $0.y != nil }), let v = only.y {
                    svg += "<circle cx=\"\(Self.number(x(only.x)))\" cy=\"\(Self.number(y(v, top: top)))\" r=\"2.5\" fill=\"\(one.color)\"/>"
                }
            }
        case .stackedBars(let width):
            var base: [Double: Double] = [:]
            let barWidth = max(1, width / max(xEnd - xStart, 1) * plotWidth - 1)
            for one in series {
                let values = one.points.compactMap(\.y)
                svg += "<g class=\"series\" data-series=\"\(Page.esc(one.name))\" data-sum=\"\(Self.number(values.reduce(0, +)))\" fill=\"\(one.color)\">"
                for point in one.points {
                    guard let v = point.y, v > 0 else { continue }
                    let below = base[point.x, default: 0]
                    base[point.x] = below + v
                    let yTop = y(below + v, top: top), yBottom = y(below, top: top)
                    svg += "<rect x=\"\(Self.number(x(point.x)))\" y=\"\(Self.number(yTop))\" width=\"\(Self.number(barWidth))\" "
                        + "height=\"\(Self.number(max(yBottom - yTop, 0.5)))\"><title>\(Page.esc(one.name)) \(Self.label(v)) at "
                        + "\(Self.timeLabel(point.x, step: 3600)) UTC</title></rect>"
                }
                svg += "</g>"
            }
        }
        if series.allSatisfy({ $0.points.allSatisfy { $0.y == nil } }) {
            svg += "<text x=\"\(Self.number(Self.left + plotWidth / 2))\" y=\"\(Self.number(Self.top + plotHeight / 2))\" text-anchor=\"middle\">No samples in this range yet</text>"
        }
        svg += "</svg>"
        let legend = "<ul class=\"legend\">" + series.map {
            "<li><span class=\"swatch\" style=\"background:\($0.color)\" aria-hidden=\"true\"></span>\(Page.esc($0.name))</li>"
        }.joined() + "</ul>"
        return "<figure aria-labelledby=\"\(id)-caption\"><figcaption id=\"\(id)-caption\">\(Page.esc(title))</figcaption>\(svg)\(legend)</figure>"
    }
}
