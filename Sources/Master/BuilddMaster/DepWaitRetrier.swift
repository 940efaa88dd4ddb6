#if canImport(Glibc)
import Glibc
#endif
import BuilddShared
import Foundation
import Logging
import Synchronization

/// The dep-wait pass (Launchpad's dep-wait retry job): every `interval`, reads the `Packages` indexes of the
/// archives each MANUALDEPWAIT build draws from and retries the builds whose missing relation they satisfy
/// now (``DepWait/decide(dependencies:architecture:index:)``). Indexes are fetched with conditional requests
/// (`If-None-Match`, `If-Modified-Since`): an unchanged index costs a 304 and is not parsed again. Several
/// masters may pass at once: a build retried twice is refused the second time, and nothing else changes.
public final class DepWaitRetrier: Sendable {
    let store: BuilddStore
    let interval: Duration
    let logger: Logger

    struct CachedIndex {
        /// `""`, `.xz` or `.gz`: the form of the index the archive serves.
        var suffix: String
        var etag: String?
        var lastModified: String?
        var entries: [PackageIndex.Entry]
    }
    private let cache = Mutex<[String: CachedIndex]>([:])
    /// What the last pass fetched: 200s and 304s (for tests and the log).
    let fetches = Mutex<(full: Int, notModified: Int)>((0, 0))

    public init(store: BuilddStore, interval: Duration, logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            do {
                let retried = try await passOnce()
                if !retried.isEmpty { logger.info("dep-wait pass retried builds", metadata: ["builds": "\(retried)"]) }
            } catch {
                logger.warning("dep-wait pass failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One pass; returns the builds it retried.
    @discardableResult
    public func passOnce() async throws -> [Int64] {
        let waiting = try await store.depWaitingBuilds()
        guard !waiting.isEmpty else { return [] }
        let snapshot = try await store.archiveSnapshot(fresh: true)
        var retried: [Int64] = []
        var indexes: [String: [PackageIndex.Entry]] = [:]
        var combined: [String: (index: PackageIndex, complete: Bool)] = [:]
        for build in waiting {
            guard let sources = try? snapshot.sources(distribution: build.distribution, archive: build.archive,
                                                      series: build.series, pocket: build.pocket, component: build.component),
                  !sources.isEmpty else { continue }
            // Every archive of its sources together, as apt sees them; builds with the same sources share one.
            let urls = sources.flatMap { DepWait.indexURLs(of: $0, architecture: build.architecture) }
            let key = urls.joined(separator: "\n")
            let view: (index: PackageIndex, complete: Bool)
            if let known = combined[key] {
                view = known
            } else {
                view = await combinedIndex(urls, fetched: &indexes)
                combined[key] = view
            }
            // An index that could not be read may hold what is missing: only a complete view retries.
            if case .retry = DepWait.decide(dependencies: build.dependencies, architecture: build.architecture,
                                            index: view.index), view.complete {
                if try await retry(build.id) { retried.append(build.id) }
            }
        }
        return retried
    }

    /// Every index of `urls` together, as apt sees them, each fetched once per pass (`fetched`); not complete
    /// when one could not be read.
    private func combinedIndex(_ urls: [String], fetched indexes: inout [String: [PackageIndex.Entry]]) async
        -> (index: PackageIndex, complete: Bool) {
        var index = PackageIndex()
        var complete = true
        for url in urls {
            if indexes[url] == nil {
                do {
                    indexes[url] = try await fetch(url)
                } catch {
                    logger.warning("dep-wait pass: index not read",
                                   metadata: ["url": "\(ServiceURL.withoutCredentials(url))", "error": "\(error)"])
                    complete = false
                    continue
                }
            }
            for entry in indexes[url]! { index.add(entry) }
        }
        return (index, complete)
    }

    /// Retries a build as the dep-wait job; false when another master retried it first.
    private func retry(_ buildID: Int64) async throws -> Bool {
        do {
            try await store.retry(buildID, actor: "dep-wait")
            return true
        } catch let error as StoreError where error.code == .conflict {
            return false
        }
    }

    /// One index, conditionally: the cached one when the archive says it has not changed. `Packages` is
    /// tried first, then `Packages.xz` and `Packages.gz` (what Debian's and Ubuntu's mirrors serve), each
    /// decompressed by the system's `xz` or `gzip`; the form that answered is asked for first next time.
    func fetch(_ url: String) async throws -> [PackageIndex.Entry] {
        let cached = cache.withLock { $0[url] }
        let forms = [cached?.suffix].compactMap { $0 } + ["", ".xz", ".gz"].filter { $0 != cached?.suffix }
        for suffix in forms {
            var headers = ["User-Agent": "buildd-master dep-wait"]
            if let cached, cached.suffix == suffix {
                if let etag = cached.etag { headers["If-None-Match"] = etag }
                if let modified = cached.lastModified { headers["If-Modified-Since"] = modified }
            }
            let sent = headers
            let response = try await runBlocking(name: "dep-wait") {
                try SimpleHTTPClient.send(method: "GET", url: url + suffix, headers: sent, timeoutSeconds: 60,
                                          maxResponseBytes: 256 << 20)
            }
            if response.status == 304, let cached, cached.suffix == suffix {
                fetches.withLock { $0.notModified += 1 }
                return cached.entries
            }
            if response.status == 404 { continue }
            guard response.status == 200 else { throw SimpleHTTPClient.Failure(description: "HTTP \(response.status)") }
            fetches.withLock { $0.full += 1 }
            let text = suffix.isEmpty ? response.text
                : try await runBlocking(name: "dep-wait") { try Self.decompress(response.body, with: suffix == ".xz" ? "xz" : "gzip") }
            let entries = PackageIndex.entries(inPackagesFile: text)
            let header = { (name: String) in response.headers.first { $0.key.lowercased() == name }?.value }
            let entry = CachedIndex(suffix: suffix, etag: header("etag"), lastModified: header("last-modified"), entries: entries)
            cache.withLock { $0[url] = entry }
            return entries
        }
        throw SimpleHTTPClient.Failure(description: "no Packages, Packages.xz or Packages.gz (HTTP 404)")
    }

    /// The text of a compressed index, through `xz -dc` or `gzip -dc`.
    static func decompress(_ bytes: [UInt8], with tool: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("buildd-index-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
        defer { unlink(path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool, "-dc", path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SimpleHTTPClient.Failure(description: "\(tool) -dc failed (exit \(process.terminationStatus))")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
