#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Postgres

/// CPU seconds spent so far by each part of the farm on this machine, read from /proc: the database
/// (every `postgres` process, and the backends that already exited), the broker (the Erlang VM and its
/// helpers), the masters and this process (the simulated agents).
struct ComponentCPU {
    static let groups: [String: String] = [
        "postgres": "database", "beam.smp": "broker", "erl_child_setup": "broker", "inet_gethost": "broker",
        "epmd": "broker", "buildd-master": "masters",
    ]

    private(set) var seconds: [String: Double] = [:]

    static func now() -> ComponentCPU {
        var cpu = ComponentCPU()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let own = getpid()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let name = String(stat[stat.index(after: open)..<close])
            let group = pid == own ? "agents" : groups[name]
            guard let group else { continue }
            // Fields after the name: state is the 3rd field; utime, stime, cutime, cstime the 14th to 17th.
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 14 else { continue }
            let used = (11...14).compactMap { Double(fields[$0]) }.reduce(0, +) / ticks
            cpu.seconds[group, default: 0] += used
        }
        return cpu
    }

    /// Milliseconds per build of each part between `earlier` and now.
    func millisecondsPerBuild(since earlier: ComponentCPU, builds: Int) -> [String: Double] {
        var result: [String: Double] = [:]
        for (group, total) in seconds {
            result[group] = (total - (earlier.seconds[group] ?? 0)) * 1000 / Double(max(builds, 1))
        }
        return result
    }
}

/// PostgreSQL's own account of its time (`pg_stat_statements`), when the server loads the extension
/// (`deploy/localfarm` starts it so). The benchmark's own progress queries are left out.
struct StatementTime {
    static func reset(_ database: PostgresDatabase) async -> Bool {
        do {
            _ = try await database.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            _ = try await database.query("SELECT pg_stat_statements_reset()")
            return true
        } catch {
            progress("pg_stat_statements is not loaded: no PostgreSQL time per build (\(error))")
            return false
        }
    }

    /// Total execution time in ms and the statements that took most, with calls and ms each.
    static func read(_ database: PostgresDatabase) async throws -> (total: Double, top: [(String, Int, Double)]) {
        let filter = """
            query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE 'SELECT count(*) AS n FROM build WHERE%'
            AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            """
        let total = try await database.query("""
            SELECT coalesce(sum(total_exec_time), 0) AS ms FROM pg_stat_statements WHERE \(filter)
            """).first?.double("ms") ?? 0
        let top = try await database.query("""
            SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q, calls, total_exec_time AS ms
              FROM pg_stat_statements WHERE \(filter) ORDER BY total_exec_time DESC LIMIT 8
            """).rows.map { (($0["q"] ?? ""), (try? $0.int("calls")) ?? 0, (try? $0.double("ms")) ?? 0) }
        return (total, top)
    }
}
