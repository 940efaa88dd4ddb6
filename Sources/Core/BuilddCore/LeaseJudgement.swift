/// When a master may judge leases at all.
///
/// A lease runs out when no heartbeat arrives, but heartbeats reach a master only through its broker
/// connection: while that connection is down, or only just back, a lease that ran out says nothing about
/// the agent. After the connection comes back every agent must first reconnect itself, which takes up to
/// its client's longest reconnect wait (the backoff has grown while the broker was away), and then gets
/// the whole lease to speak, as any live agent does. So a master judges leases only once its broker
/// connection has been up for the lease plus that wait; before, a broker restart or a broker outage of any
/// length would requeue every running build.
public enum LeaseJudgement {
    /// Whether leases may be judged now.
    /// - Parameters:
    ///   - brokerConnectedFor: seconds the master's broker connection has been up, nil while it is down.
    ///   - lease: the lease, in seconds.
    ///   - reconnectWait: the longest an agent's client waits between two connection attempts, in seconds.
    public static func judgeable(brokerConnectedFor: Double?, lease: Double, reconnectWait: Double) -> Bool {
        guard let up = brokerConnectedFor else { return false }
        return up >= window(lease: lease, reconnectWait: reconnectWait)
    }

    /// How long after the broker connection came up leases are judged again.
    public static func window(lease: Double, reconnectWait: Double) -> Double {
        lease + reconnectWait
    }
}
