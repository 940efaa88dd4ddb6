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

    var seconds: Double { Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18 }

    public func run() async {
        while !Task.isCancelled {
            do {
                // A little under the interval, so masters a moment apart do not both skip a period.
                try await store.recordSample(minimumGap: seconds * 0.9)
            } catch {
                logger.warning("farm sample failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}
