/// What a line of a builder's history records (`builder history NAME`).
public enum BuilderEventKind: String, Codable, Sendable, CaseIterable {
    /// Operators' changes, each with its actor.
    case added, enabled, disabled, manual, automatic, removed
    /// An operator changed what it offers builds (``BuilderPlacement``).
    case placement
    /// A reset started or ended (``BuilderReset``); a failed one is a `failure`.
    case reset
    /// The farm counted a failure against the builder (with the reason).
    case failure
    /// The farm marked the builder not ok (with the reason): it gets no more work until enabled.
    case failed
}

/// One line of a builder's history.
public struct BuilderHistoryEntry: Equatable, Sendable {
    public let builder: String
    public let kind: BuilderEventKind
    public let actor: String?
    public let reason: String?

    public init(builder: String, kind: BuilderEventKind, actor: String?, reason: String?) {
        self.builder = builder
        self.kind = kind
        self.actor = actor
        self.reason = reason
    }

    /// The lines the farm's own change of a builder's standing adds (not an operator's: those say what
    /// the operator did): a counted failure, and being marked not ok. A forgiven fault and a success are
    /// not history.
    public static func farmChange(of builder: String, from old: BuilderStanding,
                                  to new: BuilderStanding) -> [BuilderHistoryEntry] {
        var lines: [BuilderHistoryEntry] = []
        if new.failures > old.failures {
            lines.append(BuilderHistoryEntry(builder: builder, kind: .failure, actor: nil,
                                             reason: "\(new.failures) in a row: \(new.lastFailure ?? "unknown")"))
        }
        if old.ok && !new.ok {
            lines.append(BuilderHistoryEntry(builder: builder, kind: .failed, actor: nil, reason: new.notes))
        }
        return lines
    }
}
