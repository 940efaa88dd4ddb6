@testable import BuilddMasterKit
@testable import BuilddShared
import Postgres
import Testing

/// Which failures to apply an event are worth a retry, and which make it a poison event (dead-lettered).
@Suite(.timeLimit(.minutes(1))) struct ApplyFailureTests {
    @Test(arguments: [
        (PostgresError(.connection, message: "server closed the connection unexpectedly"), true),
        (PostgresError(.server, sqlState: "40001", message: "could not serialize access"), true),
        (PostgresError(.server, sqlState: "40P01", message: "deadlock detected"), true),
        (PostgresError(.server, sqlState: "57P01", message: "terminating connection due to administrator command"), true),
        (PostgresError(.server, sqlState: "57014", message: "canceling statement due to statement timeout"), true),
        (PostgresError(.server, sqlState: "53300", message: "too many connections"), true),
        (PostgresError(.server, sqlState: "58030", message: "could not write to file"), true),
        (PostgresError(.server, sqlState: "55P03", message: "could not obtain lock"), true),
        (PostgresError(.server, sqlState: "25006", message: "cannot execute UPDATE in a read-only transaction"), true),
        (PostgresError(.server, sqlState: "53100", message: "could not extend file: No space left on device"), true),
        (PostgresError(.server, sqlState: "23514", message: "new row violates check constraint"), false),
        (PostgresError(.server, sqlState: "23505", message: "duplicate key value"), false),
        (PostgresError(.server, sqlState: "22P02", message: "invalid input syntax"), false),
        (PostgresError(.server, sqlState: "P0001", message: "raised by a trigger"), false),
        (PostgresError(.decoding, message: "column n is not an integer"), false),
    ])
    func postgresErrors(error: PostgresError, retry: Bool) {
        #expect(EventConsumer.mayPassOnRetry(error) == retry, "\(error)")
    }

    @Test func stoppingIsTransientAndOtherErrorsAreNot() {
        #expect(EventConsumer.mayPassOnRetry(CancellationError()))
        #expect(EventConsumer.mayPassOnRetry(WorkerStoppedError(name: "db")))
        #expect(!EventConsumer.mayPassOnRetry(StoreError(.invalid, "no such build")))
    }
}
