/// Who may do what through the masters' HTTP API, and which builds exist for whom: the one statement of
/// the farm's access rules. The HTTP layer asks ``Access/allows(_:_:anonymousRead:)`` before every route
/// and ``Access/visibleArchives(to:)`` before every read; the SQL that filters private builds is generated
/// from the latter.

/// A token's role. Each role may do everything the roles below it may.
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    /// Reads everything, private builds too.
    case viewer
    /// Also submits builds.
    case submitter
    /// Also cancels, retries and rescores builds, and enables, disables and sets builders to manual.
    case `operator`
    /// Also manages tokens.
    case admin

    private var rank: Int { Role.allCases.firstIndex(of: self)! }

    public static func < (lhs: Role, rhs: Role) -> Bool { lhs.rank < rhs.rank }
}

/// What a request does, for the access check.
public enum Action: String, Sendable, CaseIterable {
    /// Reads builds, builders, queues and files of public archives, and the farm's status.
    case read
    /// Reads builds of private archives.
    case readPrivate
    case submit
    case cancel
    case retry
    case rescore
    /// Enable, disable, manual mode, reset.
    case changeBuilder
    case manageTokens
}

/// Who is asking: nobody (no token), or a token with its name and role.
public struct Caller: Equatable, Sendable {
    /// The token's name: the actor recorded for every change it makes.
    public let name: String?
    public let role: Role?

    public static let anonymous = Caller(name: nil, role: nil)

    public init(name: String?, role: Role?) {
        self.name = name
        self.role = role
    }
}

public enum Access {
    /// The least role an action needs; nil when anyone may (reading public builds, unless anonymous
    /// reading is off).
    public static func leastRole(for action: Action) -> Role? {
        switch action {
        case .read: return nil
        case .readPrivate: return .viewer
        case .submit: return .submitter
        case .cancel, .retry, .rescore, .changeBuilder: return .operator
        case .manageTokens: return .admin
        }
    }

    /// Whether a caller with `role` (nil: no token) may do `action`. With `anonymousRead` off, every
    /// action needs a token, reading public builds too.
    public static func allows(_ role: Role?, _ action: Action, anonymousRead: Bool) -> Bool {
        guard let least = leastRole(for: action) else { return role != nil || anonymousRead }
        guard let role else { return false }
        return role >= least
    }

    /// The archives whose builds exist for a caller with `role`: a private archive's builds only for
    /// those who may read private builds. Everyone else gets a 404 for them, and lists and pages leave
    /// them out.
    public static func visibleArchives(to role: Role?) -> [ArchivePurpose] {
        ArchivePurpose.allCases.filter { mayView(archive: $0, role: role) }
    }

    public static func mayView(archive: ArchivePurpose, role: Role?) -> Bool {
        switch archive {
        case .primary, .copy: return true
        case .private: return allows(role, .readPrivate, anonymousRead: true)
        }
    }

    /// Whether a token is still good at `now` (seconds since 1970): one with no expiry always is.
    public static func tokenIsLive(expiresAt: Double?, now: Double) -> Bool {
        guard let expiresAt else { return true }
        return now < expiresAt
    }
}
