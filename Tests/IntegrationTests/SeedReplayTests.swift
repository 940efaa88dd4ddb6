import BuilddMasterKit
import BuilddShared
import Foundation
import Logging
import Testing

/// `shared/seed/000_f3ad7593042374b7.txt`, Launchpad's buildd-master doctest, step by step on a real
/// database (DistroArchRelease is DistroArchSeries here).
@Suite(.timeLimit(.minutes(5))) struct SeedReplayTests {
    struct Fault: Error, CustomStringConvertible {
        var description: String { "<Fault 8002: 'error'>" }
    }

    /// `class BrokenSlave: def status(self): raise xmlrpclib.Fault`
    struct BrokenSlave: BuilderSlave {
        func status() async throws -> SlaveStatus { throw Fault() }
    }

    /// `class OkSlave: def status(self): return ('BuilderStatus.IDLE',)`
    struct OkSlave: BuilderSlave {
        func status() async throws -> SlaveStatus { SlaveStatus(state: .idle) }
    }

    @Test func theDoctestGivesTheSameResults() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let store = try await database.store()
        defer { store.shutdown() }
        // The sample data: ubuntu warty and hoary on i386, and no builder for i386.
        try await store.addProcessor("i386")
        try await store.addArchSeries(distribution: "ubuntu", series: "warty", archTag: "i386", processor: "i386")
        try await store.addArchSeries(distribution: "ubuntu", series: "hoary", archTag: "i386", processor: "i386")
        // The mock builders exist in the database too, so their state is observable there.
        try await store.addProcessor("amd64")
        try await store.addBuilder(name: "builder1", processors: ["amd64"], url: "http://fake:0000")
        try await store.addBuilder(name: "builder2", processors: ["amd64"], url: "http://fake:0000")

        // buildergroup = BuilderGroup(logging.getLogger(), transaction)
        let buildergroup = BuilderGroup(logger: Logger(label: "seed"), store: store)
        let builder1 = ScannedBuilder(name: "builder1", slave: BrokenSlave())
        let builder2 = ScannedBuilder(name: "builder2", slave: OkSlave())
        buildergroup.builders = [builder1, builder2]

        // assert buildergroup.firstAvailable() is builder2
        #expect(await buildergroup.firstAvailable() === builder2)
        // assert buildergroup.countAvailable() is 1
        #expect(await buildergroup.countAvailable() == 1)
        // The broken builder was marked so, with the reason; the ok one was not.
        #expect(!builder1.builderok && builder2.builderok)
        let stored = Dictionary(uniqueKeysWithValues: try await store.builders().map { ($0.name, $0) })
        #expect(stored["builder1"]?.builderok == false)
        #expect(stored["builder1"]?.failnotes?.contains("Fault 8002") == true)
        #expect(stored["builder2"]?.builderok == true)

        // bm = BuilddMaster(logging.getLogger(), transaction)
        let bm = BuilddMaster(store: store, broker: nil,
                              configuration: MasterConfiguration(databaseURL: database.url, brokerURL: ""),
                              logger: Logger(label: "seed"))
        var printed: [String] = []
        for dar in try await store.archSeries() {
            bm.addDistroArchRelease(dar)
            do {
                try await bm.setupBuilders(dar)
            } catch let error as NoBuildersError {
                printed.append("Unable to setup builder for \(error.archSeries.distribution)/"
                               + "\(error.archSeries.series)/\(error.archSeries.archTag).")
            }
        }
        #expect(printed == ["Unable to setup builder for ubuntu/warty/i386.",
                            "Unable to setup builder for ubuntu/hoary/i386."])
        // bm._archreleases == {}
        #expect(bm.archReleases.isEmpty)
        #expect(bm.archSeries.count == 2)

        // bm.scanActiveBuilders()
        #expect(try await bm.scanActiveBuilders() == ScanReport())

        // byproc = bm.sortAndSplitByProcessor(); for proc, queueItems: bm.dispatchByProcessor(proc, queueItems)
        let byproc = try await bm.sortAndSplitByProcessor()
        for (proc, queueItems) in byproc { try await bm.dispatchByProcessor(proc, queueItems) }
        #expect(byproc.isEmpty)

        // The same cycle from the command line.
        let (status, output, _) = try await FarmHarness.run(try TestEnvironment.binDirectory + "/buildd-master",
                                                            ["scan", "--once", "--database", database.url],
                                                            environment: ["PATH": "/usr/bin:/bin"])
        #expect(status == 0)
        #expect(output.contains("Unable to setup builder for ubuntu/warty/i386.\nUnable to setup builder for ubuntu/hoary/i386."),
                "scan --once printed:\n\(output)")
    }
}
