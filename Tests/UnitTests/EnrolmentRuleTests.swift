import AMQP
import BuilddCore
import BuilddShared
import Testing

/// The rules of self-enrolment: join tokens, the broker permissions an enrolled machine gets, and how many
/// builders the queue is short of.
@Suite(.timeLimit(.minutes(1))) struct EnrolmentRuleTests {
    @Test func aJoinTokenIsGoodOnceAndUntilItExpires() {
        #expect(JoinToken.judge(expiresAt: 100, usedBy: nil, now: 99) == .valid)
        #expect(JoinToken.judge(expiresAt: 100, usedBy: nil, now: 100) == .expired)
        #expect(JoinToken.judge(expiresAt: 100, usedBy: "bld-1", now: 50) == .used(by: "bld-1"))
        // A spent token says it was used, even after it expired.
        #expect(JoinToken.judge(expiresAt: 100, usedBy: "bld-1", now: 500) == .used(by: "bld-1"))
        #expect(JoinToken.processorsProblem(asked: ["amd64"], allowed: ["amd64", "arm64"]) == nil)
        #expect(JoinToken.processorsProblem(asked: ["amd64", "riscv64"], allowed: ["amd64"])
                == "the join token is not for riscv64 (it is for amd64)")
    }

    /// What `deploy/rabbitmq/enrol-agent` writes, in the form the management API stores it (the
    /// integration test compares the two on a real broker).
    @Test func anEnrolledMachineGetsOnlyItsOwnQueues() {
        let shared = AgentPermissions(builder: "bld-7", processors: ["amd64", "arm64"])
        #expect(shared.configure == "^$")
        #expect(shared.write == #"^buildd\.status$"#)
        #expect(shared.read == #"^buildd\.(jobs\.amd64|jobs\.arm64|control\.bld-7)$"#)
        #expect(shared.topicExchange == "buildd.status")
        #expect(shared.topicWrite == #"^bld-7\."#)
        #expect(shared.topicRead == "^$")
        let addressed = AgentPermissions(builder: "gpu.1", processors: ["amd64"], addressed: true)
        #expect(addressed.read == #"^buildd\.control\.gpu\.1$"#)
        #expect(addressed.topicWrite == #"^gpu\.1\."#)
    }

    @Test func theGrantedBrokerURLCarriesTheMachinesUserAndNoPassword() {
        #expect(EnrolmentGrant.brokerURL("amqps://buildd-master:s3cret@b1.example.org:5671/buildd?cacert=/etc/buildd/ca.pem, "
                                         + "amqps://buildd-master:s3cret@b2.example.org:5671/buildd?cacert=/etc/buildd/ca.pem",
                                         forUser: "bld-7")
                == "amqps://bld-7@b1.example.org:5671/buildd?cacert=/etc/buildd/ca.pem, "
                + "amqps://bld-7@b2.example.org:5671/buildd?cacert=/etc/buildd/ca.pem")
        #expect(EnrolmentGrant.brokerURL("amqp://127.0.0.1:5672/v", forUser: "b") == "amqp://b@127.0.0.1:5672/v")
        // An @ in the query is not taken for the end of credentials.
        #expect(EnrolmentGrant.brokerURL("amqp://u:p@h:1/v?x=a@b", forUser: "b") == "amqp://b@h:1/v?x=a@b")
    }

    @Test func theQueueIsShortOfBuildersNoIdleBuilderCanServe() {
        let gpu = BuildRequirements(virtualized: true, constraints: ["gpu"])
        let waiting = [
            BuilderDemand.Waiting(processor: "amd64", requirements: .plain, count: 3),
            BuilderDemand.Waiting(processor: "amd64", requirements: gpu, count: 2),
            BuilderDemand.Waiting(processor: "arm64", requirements: .plain, count: 1),
            BuilderDemand.Waiting(processor: "riscv64", requirements: .plain, count: 0),
        ]
        let plain = BuilderDemand.Idle(processors: ["amd64"], placement: .plain)
        // Offers gpu openly: it could take the plain builds too, but only it can take a gpu one.
        let gpuBox = BuilderDemand.Idle(processors: ["amd64"], placement: BuilderPlacement(openResources: ["gpu"]))
        let shortfall = BuilderDemand.shortfall(waiting: waiting, idle: [gpuBox, plain, plain])
        let byGroup = Dictionary(uniqueKeysWithValues: shortfall.map { ("\($0.processor) \(BuilderDemand.label($0.requirements))", $0) })
        #expect(byGroup.count == 3, "a group with nothing waiting is left out")
        #expect(byGroup["amd64 virtualized+gpu"]?.idleBuilders == 1)
        #expect(byGroup["amd64 virtualized+gpu"]?.short == 1)
        #expect(byGroup["amd64 virtualized"]?.idleBuilders == 2, "the gpu builder is counted once, for gpu")
        #expect(byGroup["amd64 virtualized"]?.short == 1)
        #expect(byGroup["arm64 virtualized"]?.short == 1, "no arm64 builder")
        // Enough idle builders: short of none, and never below zero.
        let many = BuilderDemand.shortfall(waiting: [waiting[2]], idle: Array(repeating: .init(processors: ["arm64"], placement: .plain), count: 4))
        #expect(many.map(\.short) == [0])
        #expect(BuilderDemand.label(BuildRequirements(virtualized: false, constraints: ["large", "gpu"])) == "not-virtualized+gpu+large")
    }
}
