/// How many builds of a processor one claim may take.
///
/// Idle builders plus the look-ahead (jobs published ahead, so a builder that frees up finds its next
/// one already queued), less the jobs already published and not yet accepted; none while no builder is
/// idle. The claim statement counts idle builders and jobs in flight in SQL and takes its limit from
/// ``sqlExpression(idle:lookahead:inFlight:)``, generated from this rule; a test runs both on one table.
public enum DispatchWindow {
    public static func size(idle: Int, lookahead: Int, inFlight: Int) -> Int {
        idle == 0 ? 0 : max(0, idle + lookahead - inFlight)
    }

    /// ``size(idle:lookahead:inFlight:)`` as a SQL expression over the given SQL terms.
    public static func sqlExpression(idle: String, lookahead: String, inFlight: String) -> String {
        "CASE WHEN \(idle) = 0 THEN 0 ELSE greatest(0, \(idle) + \(lookahead) - \(inFlight)) END"
    }
}
