@testable import BuilddCore
import Testing

/// Rendezvous hashing of legacy builders over live masters: every master computes the same owner, the
/// shares are fair, and a master joining or leaving moves only the builders it wins or held.
@Suite(.timeLimit(.minutes(1))) struct LegacyShareTests {
    static let builders = (0..<2000).map { "lp-\($0)" }

    @Test func everyBuilderHasOneOwnerWhateverTheOrderOfTheMasters() {
        for builder in Self.builders.prefix(200) {
            let one = LegacyShare.owner(of: builder, among: ["m1", "m2", "m3"])
            #expect(one == LegacyShare.owner(of: builder, among: ["m3", "m1", "m2"]))
            #expect(one != nil)
        }
        #expect(LegacyShare.owner(of: "lp-1", among: [String]()) == nil)
        #expect(LegacyShare.owner(of: "lp-1", among: ["only"]) == "only")
    }

    /// Two masters follow about half each; three about a third each (within 5 % of 2,000).
    @Test func theSharesAreFair() {
        for masters in [["m1", "m2"], ["master-a", "master-b", "master-c"]] {
            let fair = Self.builders.count / masters.count
            for master in masters {
                let share = LegacyShare.share(of: master, builders: Self.builders, among: masters).count
                #expect(abs(share - fair) < Self.builders.count / 20, "\(master): \(share) of \(Self.builders.count)")
            }
        }
    }

    /// A master that joins takes only builders from others (about its share); one that leaves hands on
    /// only its own, and the rest stay where they were.
    @Test func joiningOrLeavingMovesOnlyWhatItMust() {
        let before = Dictionary(uniqueKeysWithValues: Self.builders.map { ($0, LegacyShare.owner(of: $0, among: ["m1", "m2"])!) })
        let joined = Dictionary(uniqueKeysWithValues: Self.builders.map { ($0, LegacyShare.owner(of: $0, among: ["m1", "m2", "m3"])!) })
        let moved = Self.builders.filter { before[$0] != joined[$0] }
        #expect(moved.allSatisfy { joined[$0] == "m3" }, "only to the master that joined")
        #expect(abs(moved.count - Self.builders.count / 3) < Self.builders.count / 20, "\(moved.count)")
        let left = Dictionary(uniqueKeysWithValues: Self.builders.map { ($0, LegacyShare.owner(of: $0, among: ["m2", "m3"])!) })
        for builder in Self.builders where joined[builder] != "m1" {
            #expect(left[builder] == joined[builder], "\(builder) stays with its master when m1 leaves")
        }
    }
}
