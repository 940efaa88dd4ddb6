import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// A poison event - one whose application fails the same way every time - is dead-lettered with its reason,
/// and the builders that share its lane keep building (before, the lane retried it forever).
@Suite(.serialized, .timeLimit(.minutes(5))) struct PoisonEventTests {
    @Test func aPoisonEventIsDeadLetteredAndItsLaneGoesOn() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            for name in ["lane-a1", "lane-a2", "poison-1"] {
                try await farm.store.addBuilder(name: name, processors: ["amd64"])
            }
            // Every event of poison-1 violates a check the database enforces (a trigger stands for a bug or a
            // constraint an event breaks): the same failure on every try.
            let url = farm.database.url
            try await runBlocking {
                try PostgresConnection(url: url).executeScript("""
                    CREATE FUNCTION poison_builder() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF NEW.name = 'poison-1' THEN
                            RAISE EXCEPTION 'poisoned event of %', NEW.name USING ERRCODE = 'check_violation';
                        END IF;
                        RETURN NEW;
                    END $$;
                    CREATE TRIGGER poison BEFORE UPDATE ON builder FOR EACH ROW EXECUTE FUNCTION poison_builder();
                    """)
            }
            // One lane: every builder's events go through the lane the poison event is in.
            try await farm.startMaster(acceptTimeout: 4, arguments: ["--event-lanes", "1"])
            try farm.startAgent("poison-1", processors: ["amd64"], sampleSeconds: 0.2)
            try farm.startAgent("lane-a1", processors: ["amd64"], sampleSeconds: 0.2)
            try farm.startAgent("lane-a2", processors: ["amd64"], sampleSeconds: 0.2)
            var ids: [Int64] = []
            for index in 0..<6 {
                ids.append(try await farm.store.submit(BuildRequest(
                    distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: "lane\(index)",
                    sourceVersion: "1.0")))
            }
            let built = try await eventually(timeout: .seconds(120), interval: .milliseconds(250)) {
                var done = 0
                for id in ids where try await farm.store.build(id).build.status == .fullyBuilt { done += 1 }
                return done == ids.count
            }
            #expect(built, "the lane's other builders kept building; master log:\n\(farm.log("master").suffix(3000))")
            for id in ids {
                let builder = try await farm.store.build(id).build.builder
                #expect(builder == "lane-a1" || builder == "lane-a2", "build \(id) built by \(builder ?? "-")")
            }
            // Dead-lettered with the reason, counted, and kept in buildd.dead for an operator.
            let log = farm.log("master")
            #expect(log.contains("event dead-lettered") && log.contains("poisoned event of poison-1"))
            let metrics = try await farm.metricsText()
            let rejected = metricSample(metrics, "buildd_messages_rejected_total", ["reason": "apply_failed"])
            #expect((rejected ?? 0) >= 1, "\(metrics)")
            #expect(try await farm.vhost.messageCount(queue: "buildd.dead") >= 1)
        }
    }
}
