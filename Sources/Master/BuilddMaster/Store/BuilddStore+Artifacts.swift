import BuilddShared
import Postgres

extension BuilddStore {
    /// Whether `key` may upload (or fetch source) files for (build, attempt): the verdict of
    /// ``AttemptCredential/judge(requested:current:state:declared:presented:)`` on the key the builder that
    /// accepted the attempt declared (only its SHA-256 is stored).
    public func authorizeUpload(buildID: Int64, attempt: Int32, key: String) async throws -> AttemptCredential.Verdict {
        let row = try await database.query("""
            SELECT q.token_sha256, q.state, b.attempt FROM buildqueue q JOIN build b ON b.id = q.build_id
             WHERE q.build_id = $1
            """, [buildID]).first
        guard let row else { return .refused }
        return AttemptCredential.judge(requested: attempt, current: Int32(try row.int("attempt")),
                                       state: QueueRecord.State(rawValue: try row.string("state")),
                                       declared: row["token_sha256"], presented: SHA256.hex(of: key))
    }

    /// Records an uploaded file, written once (``UploadDecision``): the same bytes again succeed, other
    /// bytes under a stored name throw `conflict`.
    public func recordFile(buildID: Int64, attempt: Int32, name: String, kind: String, sha256: String, size: Int64) async throws {
        try await database.withConnection { connection in
            try Self.recordFile(connection, buildID: buildID, attempt: attempt, name: name, kind: kind, sha256: sha256,
                                size: size)
        }
    }

    static func recordFile(_ connection: PostgresConnection, buildID: Int64, attempt: Int32, name: String, kind: String,
                           sha256: String, size: Int64) throws {
        let inserted = try connection.query("""
            INSERT INTO build_file (build_id, attempt, name, kind, sha256, size) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (build_id, attempt, name) DO NOTHING RETURNING id
            """, [buildID, Int(attempt), name, kind, sha256, size])
        if inserted.first != nil { return }
        let existing = try connection.query("""
            SELECT name, sha256, size FROM build_file WHERE build_id = $1 AND attempt = $2 AND name = $3
            """, [buildID, Int(attempt), name]).first.map {
            FileDigest(name: try $0.string("name"), sha256: try $0.string("sha256"), size: try $0.int64("size"))
        }
        switch UploadDecision.of(name: name, sha256: sha256, size: size, existing: existing) {
        case .record, .alreadyStored: return
        case .refused(let reason): throw StoreError(.conflict, reason)
        }
    }

    /// A source file of a build by name.
    public func sourceFile(buildID: Int64, name: String) async throws -> FileDigest? {
        try await database.query("SELECT name, sha256, size FROM source_file WHERE build_id = $1 AND name = $2",
                                 [buildID, name]).first.map {
            FileDigest(name: try $0.string("name"), sha256: try $0.string("sha256"), size: try $0.int64("size"))
        }
    }

    /// A build's stored file (of its latest attempt that has one), when the build's archive is in `visible`.
    public func file(buildID: Int64, name: String,
                     visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> BuildFile? {
        try await database.query("""
            SELECT f.name, f.kind, f.sha256, f.size, f.attempt FROM build_file f JOIN build b ON b.id = f.build_id
             WHERE f.build_id = $1 AND f.name = $2 AND \(Self.visibleArchiveCondition(parameter: 3))
             ORDER BY f.attempt DESC LIMIT 1
            """, [buildID, name, Self.archiveNames(visible)]).first.map {
            BuildFile(name: try $0.string("name"), kind: try $0.string("kind"), sha256: try $0.string("sha256"),
                      size: try $0.int64("size"), attempt: try $0.int("attempt"))
        }
    }
}
