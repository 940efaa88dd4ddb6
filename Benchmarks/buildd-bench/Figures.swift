#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import BuilddShared
import Synchronization

/// Latency samples in milliseconds and the figures a benchmark prints.
struct Samples {
    private(set) var values: [Double] = []

    mutating func add(_ milliseconds: Double) { values.append(milliseconds) }

    var count: Int { values.count }

    /// The nearest-rank percentile (0...100) of the samples; 0 when there are none.
    func percentile(_ p: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}

/// Monotonic time in seconds, for intervals inside one process.
@inline(__always)
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func milliseconds(since start: Double) -> Double { (now() - start) * 1000 }

/// One result line on stdout: a flat JSON object that `deploy/localfarm bench` gathers into its table.
func emit(_ fields: [String: Double], name: String) {
    var object: [String: Double] = [:]
    for (key, value) in fields { object[key] = (value * 1000).rounded() / 1000 }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let body = String(decoding: try! encoder.encode(object), as: UTF8.self)
    writeAll(1, "{\"bench\":\"\(name)\",\(body.dropFirst())\n")
}

/// Progress for people, on stderr.
func progress(_ text: String) {
    writeAll(2, "[buildd-bench] \(text)\n")
}

private func writeAll(_ descriptor: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written <= 0 { return }
        offset += written
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// Polls `condition` every `interval` until it holds or `timeout` passes, printing `label` progress.
func waitFor(_ label: String, timeout: Double, interval: Duration = .milliseconds(50),
             _ condition: () async throws -> (done: Bool, status: String)) async throws {
    let start = now()
    var lastReport = start
    while true {
        let (done, status) = try await condition()
        if done { return }
        if now() - start > timeout { throw BenchError("\(label): timed out after \(Int(timeout)) s (\(status))") }
        if now() - lastReport >= 2 {
            progress("\(label): \(status)")
            lastReport = now()
        }
        try await Task.sleep(for: interval)
    }
}
