/// How urgent an upload is (the changes file's `Urgency:`).
public enum Urgency: String, Codable, Sendable, CaseIterable {
    case low, medium, high, emergency
}

/// The pocket a build targets.
public enum Pocket: String, Codable, Sendable, CaseIterable {
    case release, security, updates, proposed, backports
}

/// The archive component of the source.
public enum Component: String, Codable, Sendable, CaseIterable {
    case main, restricted, universe, multiverse, partner
}

/// The kind of archive the build is for.
public enum ArchivePurpose: String, Codable, Sendable, CaseIterable {
    case primary, `private`, copy
}

/// Launchpad's binary-build scoring: higher goes first, ties by age.
public enum Scoring {
    public static func urgencyScore(_ urgency: Urgency) -> Int {
        switch urgency {
        case .low: return 5
        case .medium: return 10
        case .high: return 15
        case .emergency: return 20
        }
    }

    public static func pocketScore(_ pocket: Pocket) -> Int {
        switch pocket {
        case .backports: return 0
        case .release: return 1500
        case .proposed, .updates: return 3000
        case .security: return 4500
        }
    }

    public static func componentScore(_ component: Component) -> Int {
        switch component {
        case .multiverse: return 0
        case .universe: return 250
        case .restricted: return 750
        case .main: return 1000
        case .partner: return 1250
        }
    }

    public static func archiveScore(_ purpose: ArchivePurpose) -> Int {
        switch purpose {
        case .primary: return 0
        case .private: return 10_000
        case .copy: return -2600
        }
    }

    /// Seconds waited, and the bonus once a build has waited longer than that.
    public static let ageBonuses: [(seconds: Int, bonus: Int)] = [
        (14400, 100), (7200, 50), (3600, 20), (1800, 15), (900, 10), (300, 5),
    ]

    /// The age bonus as SQL over a `timestamptz` column, generated from ``ageBonuses`` so the two agree.
    public static func ageScoreSQL(queuedColumn column: String) -> String {
        "(CASE " + ageBonuses.map { "WHEN \(column) < now() - interval '\($0.seconds) seconds' THEN \($0.bonus)" }
            .joined(separator: " ") + " ELSE 0 END)"
    }

    public static func ageScore(waitedSeconds: Int) -> Int {
        ageScore(waited: Double(waitedSeconds))
    }

    /// The bonus of a build that has waited `waited` seconds: the first of ``ageBonuses`` it waited longer than.
    public static func ageScore(waited: Double) -> Int {
        ageBonuses.first { waited > Double($0.seconds) }?.bonus ?? 0
    }

    /// The score of a waiting build.
    public static func score(urgency: Urgency, pocket: Pocket, component: Component,
                             archive: ArchivePurpose = .primary, waitedSeconds: Int = 0) -> Int {
        urgencyScore(urgency) + pocketScore(pocket) + componentScore(component) + archiveScore(archive)
            + ageScore(waitedSeconds: waitedSeconds)
    }
}
