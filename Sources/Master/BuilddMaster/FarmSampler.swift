import BuilddShared
import Foundation
import Logging

/// Samples the farm for the operator's plots every `interval` (``BuilddStore/recordSample(minimumGap:)``). Every
/// master runs one; the first to come in each interval takes the sample, the others find it taken and wait.
public final class FarmSampler: Sendable {
    let store: BuilddStore
    let interval: Duration
    let logger: Logger

    public init(store: BuilddStore, interval: Duration, logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public func run() async {
        while !Task.isCancelled {
            do {
                // A little under the interval, so masters a moment apart do not both skip a period.
                let clock = ContinuousClock()
                let started = clock.now
                let rows = try await store.recordSample(minimumGap: interval.inSeconds * 0.9)
                if rows > 0 {
                    let ms = (clock.now - started).inSeconds * 1000
                    logger.info("farm sample taken", metadata: ["sample.rows": "\(rows)",
                                                                "sample.ms": "\(String(format: "%.1f", ms))"])
                }
            } catch {
                logger.warning("farm sample failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}
