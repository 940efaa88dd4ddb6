#!/usr/bin/env python3
"""The mutation check (`deploy/localfarm mutate`): breaks each headline rule on purpose, one at a time, and
runs the tests that claim to guard it. Every mutant must be caught (some test fails); the run prints which
test caught which, writes the table to .localfarm/mutate/results.md and exits 1 if any mutant survived.

    mutate.py CHECKOUT OUTDIR [NAME...]     (NAME: run only these mutants)

Each mutant replaces one exact piece of code, which must occur exactly once (a mutant whose code moved is
an error, not a pass). The file is restored afterwards, also on failure or Ctrl-C. The services the tests
need must be running and their settings exported (deploy/localfarm does both).
"""
import os
import re
import subprocess
import sys
import time

# name, rule, file, the code, its broken form, the tests that claim to guard it (a swift test --filter regex)
MUTANTS = [
    ("fencing", "an event of an old attempt is not applied (the attempt is the fencing token)",
     "Sources/Core/BuilddCore/BuildLifecycle.swift",
     "case .dispatched(let current, _) where current == attempt:",
     "case .dispatched(let current, _) where current == attempt || current != attempt:",
     "StoreIntegrationTests|BuildLifecycleTests|AgentFaultTests|LifecycleCoreTests"),
    ("lease-expiry", "a running build whose heartbeats stop is requeued when its lease runs out",
     "Sources/Core/BuilddCore/BuildLifecycle.swift",
     "case .running(_, _, let leaseUntil) where now > leaseUntil:",
     "case .running(_, _, let leaseUntil) where now > leaseUntil + 1_000_000:",
     "StoreIntegrationTests|BuildLifecycleTests|MasterBehaviourTests|LifecycleCoreTests"),
    ("broker-up-for-a-lease", "leases are judged only once the broker connection has been up for a whole lease",
     "Sources/Master/BuilddMaster/Scanner/BuilddMaster.swift",
     "let leasesJudgeable = !waitForBrokerBeforeLeases",
     "let leasesJudgeable = true || !waitForBrokerBeforeLeases",
     "BrokerRestartTests"),
    ("job-threshold-3", "a job that failed for infrastructure reasons 3 times ends FAILEDTOBUILD",
     "Sources/Core/BuilddCore/FailureLedger.swift",
     "public static let job = 3", "public static let job = 4",
     "FailureJudgementTests|StoreIntegrationTests|LegacyBuilderTests|LifecycleCoreTests"),
    ("builder-threshold-5", "a builder that failed 5 times in a row is marked not ok",
     "Sources/Core/BuilddCore/FailureLedger.swift",
     "public static let builder = 5", "public static let builder = 6",
     "FailureJudgementTests|StoreIntegrationTests|LegacyBuilderTests|LifecycleCoreTests"),
    ("cancel-deadline", "a cancel gives the builder its abort deadline (180 s) before it counts as failed",
     "Sources/Core/BuilddCore/BuildLifecycle.swift",
     "state = .cancelling(attempt: attempt, builder: builder, deadline: now + deadline)",
     "state = .cancelling(attempt: attempt, builder: builder, deadline: now)",
     "StoreIntegrationTests|BuildLifecycleTests|MasterBehaviourTests"),
    ("sender-check", "a master drops events whose AMQP user does not own the builder",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "if let owner = builder.brokerUser, owner != user {",
     "if let owner = builder.brokerUser, owner != user, owner == \"never\" {",
     "StoreIntegrationTests|OperationsTests|LifecycleCoreTests"),
    ("upload-token", "a result upload needs the running attempt's token",
     "Sources/Master/BuilddMaster/HTTPAPI.swift",
     "\"missing upload token\", about)\n        }\n"
     "        guard try await store.authorizeUpload(buildID: buildID, attempt: attempt, token: token) else {",
     "\"missing upload token\", about)\n        }\n"
     "        guard try await store.authorizeUpload(buildID: buildID, attempt: attempt, token: token) || true else {",
     "RefusalTests|FarmIntegrationTests"),
    ("source-token", "a source download needs the running attempt's token",
     "Sources/Master/BuilddMaster/HTTPAPI.swift",
     "\"missing source token\", about)\n        }\n"
     "        guard try await store.authorizeUpload(buildID: buildID, attempt: attempt, token: token) else {",
     "\"missing source token\", about)\n        }\n"
     "        guard try await store.authorizeUpload(buildID: buildID, attempt: attempt, token: token) || true else {",
     "RefusalTests|AgentFaultTests"),
    ("orphan-stop", "a restarted agent stops the build command that outlived it before giving the build back",
     "Sources/SlaveAgent/BuilddAgent/Agent.swift",
     "                kill(-group, SIGKILL)\n",
     "                _ = group\n",
     "AgentFaultTests"),
    ("takeover", "another master takes over a legacy builder whose follower's ownership lease lapsed",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Legacy.swift",
     "AND (legacy_master = $1 OR legacy_master IS NULL OR legacy_lease_until < now())",
     "AND (legacy_master = $1 OR legacy_master IS NULL)",
     "LegacyBuilderTests"),
    ("poison-event", "an event that fails for good is dead-lettered and its lane goes on",
     "Sources/Master/BuilddMaster/EventConsumer.swift",
     "} catch where !Self.mayPassOnRetry(error) {",
     "} catch where !Self.mayPassOnRetry(error) && false {",
     "PoisonEventTests"),
    ("quorum-prefetch", "agents consume from quorum queues (no channel-wide prefetch)",
     "Sources/SlaveAgent/BuilddAgent/Agent.swift",
     "try connection.qos(prefetch: 1, global: false, channel: AMQPClient.consumeChannel)",
     "try connection.qos(prefetch: 1, global: true, channel: AMQPClient.consumeChannel)",
     "FarmIntegrationTests"),
    ("upload-origin", "an agent sends files only to a configured master, matched by scheme, resolved host and port",
     "Sources/SlaveAgent/BuilddAgent/MasterOrigin.swift",
     "sameHost = !jobAddresses!.isDisjoint(with: resolve(configured.host))",
     "sameHost = true",
     "MasterOriginTests|FarmIntegrationTests"),
    ("idle-not-manual", "a builder in manual mode is not idle: it gets no work (one definition, SQL checked against it)",
     "Sources/Core/BuilddCore/BuilderAvailability.swift",
     "        if facts.manual { return .manual }\n",
     "",
     "CoreRulesInSQLTests|LifecycleCoreTests"),
    ("chroot-digest", "an agent never builds with a source file or chroot that fails its SHA-256 check",
     "Sources/SlaveAgent/BuilddAgent/Agent.swift",
     "guard got.sha256 == file.sha256, got.size == file.size else {",
     "guard got.sha256 == file.sha256 || true, got.size == file.size else {",
     "AgentFaultTests"),
    ("dsc-checksums", "a source package whose files do not match its .dsc is refused before anything is queued",
     "Sources/Master/buildd-master/SourceImport.swift",
     "guard digest.sha256 == file.sha256, digest.size == file.size else {",
     "guard digest.sha256 == file.sha256 || true, digest.size == file.size else {",
     "RealBuildTests"),
    ("depwait-relation", "a dependency wait records the missing relations from apt's account",
     "Sources/Shared/BuilddShared/DebianControl.swift",
     "$0.contains(\"The following packages have unmet dependencies:\")",
     "$0.contains(\"The following packages have unmet dependencies:\") && false",
     "DebianControlTests|RealBuildTests"),
    ("stop-timeout", "an agent cut off from its broker still stops within its stop timeout",
     "Sources/SlaveAgent/BuilddAgent/Agent.swift",
     "self.stopNow(reason: \"the stop timeout (\\(timeout) s) ran out\")",
     "_ = timeout",
     "BrokerRestartTests"),
    ("broker-failover", "a client whose broker node is down or lost connects to the next node of the cluster",
     "Sources/Shared/AMQP/AMQPClient.swift",
     "let target = configuration.node(nodeIndex)",
     "let target = configuration.node(0)",
     "AMQPIntegrationTests"),
    ("batch-ack", "a batch ack never covers an older delivery still being worked on",
     "Sources/Shared/AMQP/AMQPClient.swift",
     "channel == Self.consumeChannel, !open.contains(where: { $0 < newest }) {",
     "channel == Self.consumeChannel {",
     "AMQPIntegrationTests"),
]


def run(argv, log, timeout):
    with open(log, "w") as out:
        try:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return None


def main():
    checkout, outdir = sys.argv[1], sys.argv[2]
    only = set(sys.argv[3:])
    os.makedirs(outdir, exist_ok=True)
    os.chdir(checkout)
    rows, survivors, errors = [], [], []
    chosen = [m for m in MUTANTS if not only or m[0] in only]
    for index, (name, rule, path, code, broken, tests) in enumerate(chosen, 1):
        started = time.time()
        original = open(path).read()
        if original.count(code) != 1:
            errors.append(name)
            rows.append((name, rule, "-", "ERROR: the code to break occurs %d times in %s" % (original.count(code), path)))
            print("[mutate] %d/%d %s: ERROR, its code is not in %s once" % (index, len(chosen), name, path), flush=True)
            continue
        try:
            with open(path, "w") as mutated:
                mutated.write(original.replace(code, broken))
            build_log = os.path.join(outdir, name + ".build.log")
            if run(["swift", "build", "--build-tests"], build_log, 1200) != 0:
                errors.append(name)
                rows.append((name, rule, "-", "ERROR: the mutant does not build (%s)" % build_log))
                print("[mutate] %d/%d %s: ERROR, does not build" % (index, len(chosen), name), flush=True)
                continue
            test_log = os.path.join(outdir, name + ".test.log")
            status = run(["swift", "test", "--skip-build", "--filter", tests], test_log, 1500)
            text = open(test_log, errors="replace").read()
            failed = sorted(set(re.findall(r"✘ Test (\w+)\(.*?\) (?:recorded an issue|failed)", text)))
            ran = re.search(r"Test run with (\d+) tests?", text)
            if status == 0 or (status is not None and not failed):
                survivors.append(name)
                verdict = "SURVIVED (%s tests of %s passed)" % (ran.group(1) if ran else "?", tests)
                caught = "-"
            else:
                caught = ", ".join(failed) if failed else "(the run timed out)"
                verdict = "caught"
            rows.append((name, rule, caught, verdict))
            print("[mutate] %d/%d %s: %s in %.0f s by %s" % (index, len(chosen), name, verdict, time.time() - started,
                                                               caught), flush=True)
        finally:
            with open(path, "w") as restored:
                restored.write(original)
    # Leave the tree built as it is.
    run(["swift", "build", "--build-tests"], os.path.join(outdir, "restore.build.log"), 1200)
    table = ["| rule | mutant | caught by | result |", "|---|---|---|---|"]
    table += ["| %s | `%s` | %s | %s |" % (rule, name, caught, verdict) for name, rule, caught, verdict in rows]
    with open(os.path.join(outdir, "results.md"), "w") as out:
        out.write("\n".join(table) + "\n")
    print("\n".join(table))
    print("mutate: %d mutants, %d caught, %d survived, %d errors" % (
        len(rows), len(rows) - len(survivors) - len(errors), len(survivors), len(errors)))
    return 0 if not survivors and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
