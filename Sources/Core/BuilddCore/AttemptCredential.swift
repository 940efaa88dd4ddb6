/// Who may fetch an attempt's sources and upload its results: the builder that accepted it, and nobody
/// else. A job message carries no secret (every builder of its processor may see it on the broker, and
/// one that is compromised may read and requeue it). The builder that takes the job makes a random
/// upload key and declares only its SHA-256 in `accepted`, which travels over the broker under the
/// builder's own authenticated name; when the core lets that accept stand, the digest is stored on the
/// queue entry. Every later request for the attempt must present the key itself.
public enum AttemptCredential {
    /// What a request for an attempt's sources or uploads comes to.
    public enum Verdict: Equatable, Sendable {
        /// The key is the one the attempt's builder declared.
        case admitted
        /// The attempt is the current one but no accept of it has been applied yet: a builder that just
        /// accepted it is early (it tries again); anyone else is refused all the same.
        case notAcceptedYet
        case refused
    }

    /// The verdict on a request for attempt `requested` of a build, presenting a key whose SHA-256 is
    /// `presented`: admitted only when the attempt is the build's current one, a builder accepted it (the
    /// entry is running or cancelling; a claim nobody accepted admits no one) and the key is the one that
    /// builder declared. The digests are compared in constant time.
    public static func judge(requested: Int32, current: Int32, state: QueueRecord.State?, declared: String?,
                             presented: String) -> Verdict {
        guard requested == current, let state else { return .refused }
        guard state.holdsBuilder else { return state == .dispatched ? .notAcceptedYet : .refused }
        guard let declared, constantTimeEquals(Array(declared.utf8), Array(presented.utf8)) else { return .refused }
        return .admitted
    }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
