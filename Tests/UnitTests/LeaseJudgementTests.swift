import AMQP
import BuilddCore
import BuilddShared
import Testing

/// A broker outage must not requeue a running build whose agent is alive: leases are judged only once the
/// master's broker connection has been up long enough for every agent to reconnect and speak.
@Suite(.timeLimit(.minutes(1))) struct LeaseJudgementTests {
    static let reconnectWait = AMQPClient.longestReconnectWait.inSeconds

    @Test func leasesAreNotJudgedWhileTheBrokerConnectionIsDownOrYoung() {
        #expect(Self.reconnectWait == 12, "the client's backoff is capped at 10 s with up to 20 % jitter")
        for lease in [5.0, 10, 30] {
            #expect(!LeaseJudgement.judgeable(brokerConnectedFor: nil, lease: lease, reconnectWait: Self.reconnectWait))
            for up in [0, 1, lease, lease + Self.reconnectWait - 0.001] {
                #expect(!LeaseJudgement.judgeable(brokerConnectedFor: up, lease: lease, reconnectWait: Self.reconnectWait),
                        "lease \(lease) s, connection up \(up) s")
            }
            for up in [lease + Self.reconnectWait, lease + Self.reconnectWait + 3600] {
                #expect(LeaseJudgement.judgeable(brokerConnectedFor: up, lease: lease, reconnectWait: Self.reconnectWait),
                        "lease \(lease) s, connection up \(up) s")
            }
        }
    }

    /// The clock driven through a broker outage of several leases. The agent's last heartbeat before the
    /// outage is at 0; the broker is away for `outage` seconds; then the master reconnects after `master`
    /// seconds and the agent after `agent` seconds (each anywhere in its client's reconnect wait), and the
    /// agent says hello at once and heartbeats every `heartbeat` seconds. Events the agent publishes before
    /// the master is back wait in the broker. At every second the master judges leases, the build's lease
    /// must still hold.
    @Test func aLiveAgentsBuildSurvivesAnOutageOfAnyLengthWhateverOrderTheClientsComeBackIn() {
        let heartbeat = 1.0
        for lease in [5.0, 10, 30] {
            for outage in [lease / 2, lease * 3, lease * 10] {
                for master in stride(from: 0.0, through: Self.reconnectWait, by: 1.5) {
                    for agent in stride(from: 0.0, through: Self.reconnectWait, by: 1.5) {
                        var build = BuildLifecycle(state: .running(attempt: 1, builder: 7, leaseUntil: lease))
                        let back = outage, masterUp = back + master, agentUp = back + agent
                        // The agent's events as the master applies them: none before the master is connected.
                        let spoke = stride(from: agentUp, through: masterUp + 3 * lease + Self.reconnectWait,
                                           by: heartbeat).map { max($0, masterUp) }
                        var applied = 0
                        var now = 0.0
                        while now <= masterUp + 2 * lease + Self.reconnectWait {
                            while applied < spoke.count, spoke[applied] <= now {
                                _ = build.heartbeat(attempt: 1, builder: 7, now: spoke[applied], lease: lease)
                                applied += 1
                            }
                            let connectedFor = now >= masterUp ? now - masterUp : nil
                            if LeaseJudgement.judgeable(brokerConnectedFor: connectedFor, lease: lease,
                                                        reconnectWait: Self.reconnectWait) {
                                let action = build.tick(now: now, acceptTimeout: 30)
                                #expect(action == .ignore("nothing due"), """
                                    lease \(lease) s, outage \(outage) s, master back after \(master) s, agent after \
                                    \(agent) s: at \(now) s the lease was judged and \(action)
                                    """)
                                if action != .ignore("nothing due") { return }
                            }
                            now += 0.5
                        }
                    }
                }
            }
        }
    }

    /// And the rule still ends a dead agent's build: once judged, a lease with no heartbeat runs out.
    @Test func aDeadAgentsBuildIsStillRequeuedOnceLeasesAreJudged() {
        let lease = 5.0
        var build = BuildLifecycle(state: .running(attempt: 1, builder: 7, leaseUntil: lease))
        let masterUp = 20.0
        var now = masterUp
        while !LeaseJudgement.judgeable(brokerConnectedFor: now - masterUp, lease: lease, reconnectWait: Self.reconnectWait) {
            now += 0.5
        }
        #expect(now == masterUp + lease + Self.reconnectWait)
        #expect(build.tick(now: now, acceptTimeout: 30) == .countFailure("lease expired: no heartbeat"))
    }
}
