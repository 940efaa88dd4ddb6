#!/usr/bin/env python3
"""The mutation check (`deploy/localfarm mutate`): breaks each headline rule on purpose, one at a time, and
runs the tests that claim to guard it. Every mutant must be caught (some test fails); the run prints which
test caught which, writes the table to .localfarm/mutate/results.md and exits 1 if any mutant survived.

    mutate.py CHECKOUT OUTDIR [NAME...]     every mutant, or only those named
    mutate.py CHECKOUT OUTDIR --ci          CI's bounded form: see select_for_ci()
    mutate.py CHECKOUT OUTDIR --plan        prints what --ci would run, and why, and runs nothing

Each caught mutant's fingerprint (a digest of its table row, the file it breaks and the test files that
guard it) is written to deploy/mutants-verified.tsv, with the date and the tests that caught it: commit
that file after a run, so that CI knows which mutants were verified on exactly the code they break.

Each mutant replaces one exact piece of code, which must occur exactly once (a mutant whose code moved is
an error, not a pass). The file is restored afterwards, also on failure or Ctrl-C. The services the tests
need must be running and their settings exported (deploy/localfarm does both).
"""
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time

# name, rule, file, the code, its broken form, the tests that claim to guard it (a swift test --filter regex)
MUTANTS = [
    ("join-token-once", "a join token enrols one machine: a used one is refused",
     "Sources/Core/BuilddCore/Enrolment.swift",
     "if let usedBy { return .used(by: usedBy) }",
     "if let usedBy, usedBy.isEmpty { return .used(by: usedBy) }",
     "EnrolmentRuleTests|EnrolmentTests"),
    ("join-token-expiry", "an expired join token is refused",
     "Sources/Core/BuilddCore/Enrolment.swift",
     "return now < expiresAt ? .valid : .expired",
     "return now < expiresAt + 1_000_000 ? .valid : .expired",
     "EnrolmentRuleTests|EnrolmentTests"),
    ("enrolled-permissions", "an enrolled machine's broker user reads only its own processors' job queues and its control queue",
     "Sources/Shared/AMQP/AgentPermissions.swift",
     '"^buildd\\\\.(\\((queues + [own]).joined(separator: "|")))$"',
     '"^buildd\\\\.(jobs\\\\..*|\\((queues + [own]).joined(separator: "|")))$"',
     "EnrolmentRuleTests|EnrolmentTests"),
    ("join-token-api-admin", "only an admin token makes join tokens over the API",
     "Sources/Master/BuilddMaster/HTTPAPI+Enrol.swift",
     "let caller = try await self.authorize(request, .manageTokens)\n"
     "            let body = try await Self.body(request, as: JoinTokenRequest.self,",
     "let caller = try await self.authorize(request, .changeBuilder)\n"
     "            let body = try await Self.body(request, as: JoinTokenRequest.self,",
     "JoinTokenAPITests"),
    ("enrol-broker-patience", "an enrolment's transaction outlives the broker's calls it waits on",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Enrolment.swift",
     "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
     "SELECT set_config('application_name', $1, true)",
     "EnrolmentFaultTests"),
    ("enrol-undo-broker-user", "a failed enrolment takes back the broker user it made",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Enrolment.swift",
     "            removeBrokerUser(name)\n            throw error",
     "            throw error",
     "EnrolmentFaultTests"),
    ("enrol-commit-lost", "an enrolment whose COMMIT got through is an enrolment, though its answer was lost",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Enrolment.swift",
     "if let processors = await committedEnrolment(digest: digest, name: name, within: .seconds(15)) {",
     "if let processors = await committedEnrolment(digest: digest, name: name, within: .seconds(15)), name.isEmpty {",
     "EnrolmentFaultTests"),
    ("step-down-hold-down", "a master that keeps stepping down holds down longer each time before it consumes again",
     "Sources/Master/BuilddMaster/StatusShardIntake.swift",
     "downs.inARow = flapped ? downs.inARow + 1 : 1",
     "downs.inARow = 1",
     "TakeoverTimingTests|FullDiskTests"),
    ("schema-servable", "a master refuses a newer schema unless every change since its own is servable from it",
     "Sources/Master/BuilddMaster/Store/Migrations.swift",
     "guard servableFrom <= binary else {",
     "guard servableFrom <= binary + 1 else {",
     "MigrationTests|StoreIntegrationTests"),
    ("builders-short", "the queue is short of a builder for each waiting build no idle builder can start",
     "Sources/Core/BuilddCore/Enrolment.swift",
     "public var short: Int { max(0, waiting - idleBuilders) }",
     "public var short: Int { max(0, waiting - idleBuilders - 1) }",
     "EnrolmentRuleTests|EnrolmentTests"),
    ("one-shot", "a one-shot agent stops after the build it took",
     "Sources/SlaveAgent/BuilddAgent/Agent.swift",
     "if oneShot { state.stopping = true }",
     "if oneShot && state.stopping { state.stopping = true }",
     "EnrolmentTests"),
    ("hello-announcement", "a hello's release and capabilities are kept for its builder",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "if case .hello = report.event, let announcement = report.announcement { builder.announced = announcement }",
     "if case .heartbeat = report.event, let announcement = report.announcement { builder.announced = announcement }",
     "FarmIntegrationTests|EnrolmentTests"),
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
    ("broker-up-for-a-lease", "a master judges no lease while its broker connection is down or young (a broker outage requeues nothing)",
     "Sources/Master/BuilddMaster/Scanner/BuilddMaster.swift",
     "let leasesJudgeable = !waitForBrokerBeforeLeases",
     "let leasesJudgeable = true || !waitForBrokerBeforeLeases",
     "BrokerRestartTests"),
    ("reconnect-wait", "leases are judged again only after a lease plus an agent's longest reconnect wait",
     "Sources/Core/BuilddCore/LeaseJudgement.swift",
     "        lease + reconnectWait\n",
     "        lease\n",
     "LeaseJudgementTests"),
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
    ("upload-token", "a result upload needs the key the attempt's builder declared",
     "Sources/Master/BuilddMaster/HTTPAPI.swift",
     "guard let key = Self.bearer(request) else {\n"
     "            throw refuse(.unauthorized, route: route, reason: \"missing_token\", \"missing upload key\", about)\n"
     "        }\n"
     "        try await admit(key, buildID: buildID, attempt: attempt, route: route, about)\n",
     "guard let key = Self.bearer(request) else {\n"
     "            throw refuse(.unauthorized, route: route, reason: \"missing_token\", \"missing upload key\", about)\n"
     "        }\n"
     "        _ = key\n",
     "RefusalTests|FarmIntegrationTests"),
    ("source-token", "a source download needs the key the attempt's builder declared",
     "Sources/Master/BuilddMaster/HTTPAPI.swift",
     "guard let key = Self.token(request) else {\n"
     "            throw refuse(.unauthorized, route: route, reason: \"missing_token\", \"missing upload key\", about)\n"
     "        }\n"
     "        try await admit(key, buildID: buildID, attempt: attempt, route: route, about)\n",
     "guard let key = Self.token(request) else {\n"
     "            throw refuse(.unauthorized, route: route, reason: \"missing_token\", \"missing upload key\", about)\n"
     "        }\n"
     "        _ = key\n",
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
    ("dsc-checksums", "a source package whose files do not match its .dsc is refused before anything is queued (CLI and API)",
     "Sources/Shared/BuilddShared/DebianControl.swift",
     "guard file.sha256 == listed.sha256, file.size == listed.size else {",
     "guard file.sha256 == listed.sha256 || true, file.size == listed.size else {",
     "anAgentBuildsHelloFromTheArchiveAndRealFailuresEndAsLaunchpadSays|theFilesOfADscMustBeExactlyTheOnesItLists"),
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
    ("step-down", "a master that cannot apply events (database unreachable or refusing writes) hands its status shards to the other masters",
     "Sources/Master/BuilddMaster/StatusShardIntake.swift",
     "guard on.withLock({ was in defer { was = false }; return was }) else { return false }",
     "guard on.withLock({ _ in false }) else { return false }",
     "aMasterCutOffFromTheDatabaseHandsItsStatusShardsOnTwentyTimesOver|aDatabaseThatRefusesWritesLosesNoEvent"),
    ("session-guard", "no database session a cut left on the server holds the locks other masters need for longer than a third of the lease",
     "Sources/Master/BuilddMaster/Store/BuilddStore.swift",
     "return [(\"idle_in_transaction_session_timeout\", third), (\"lock_timeout\", third),",
     "return [(\"application_name\", \"buildd-master\"),",
     "aMasterCutOffFromTheDatabaseHandsItsStatusShardsOnTwentyTimesOver"),
    ("outbox-xmin", "a build event is published only once no transaction still running can commit an earlier one",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Outbox.swift",
     "                   AND e.xid < pg_snapshot_xmin(pg_current_snapshot())\n",
     "\n",
     "aLineOfARunningTransactionHoldsTheCursorAndABuildsLinesStayInOrder"),
    ("outbox-build-order", "a build's events are published in the order of its history, whatever order their transactions took ids in",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Outbox.swift",
     "                if !ahead.isEmpty {",
     "                if false, !ahead.isEmpty {",
     "aLineOfARunningTransactionHoldsTheCursorAndABuildsLinesStayInOrder"),
    ("idempotency-scope", "a submit's Idempotency-Key is its token's own: another token's key of the same name makes its own build",
     "Sources/Master/BuilddMaster/HTTPAPI+Submit.swift",
     "let scoped = BuilddStore.SubmitKey(caller: caller.name ?? \"-\", key: key,",
     "let scoped = BuilddStore.SubmitKey(caller: \"-\", key: key,",
     "aSubmitRetriedWithItsKeyMakesOneBuildAlsoThroughAnotherMaster"),
    ("upload-digest", "an uploaded file (a submitter's source, a builder's result) is stored only under the digest its bytes hash to",
     "Sources/Master/BuilddMaster/HTTPAPI.swift",
     "_ = try upload.commit(expectedSHA256: sha256)",
     "_ = try upload.commit(expectedSHA256: nil)",
     "uploadsAreCheckedStoredOnceAndLeaveNothingWhenRefusedOrBrokenOff"),
    ("live-log-offset", "a live log's chunk is appended only at the end of what the masters hold (else 416 with that offset)",
     "Sources/Master/BuilddMaster/ArtifactStore+Live.swift",
     "guard offset == held else { throw LiveOffsetMismatch(held: held) }",
     "guard offset >= 0 else { throw LiveOffsetMismatch(held: held) }",
     "theLiveLogTakesOnlyItsAgentsAppendsAndHidesPrivateBuilds"),
    ("webhook-private", "a private archive's build events reach only webhooks allowed to see them",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Webhooks.swift",
     "&& (message.archive != ArchivePurpose.private.rawValue || `private`)",
     "&& (message.archive != ArchivePurpose.private.rawValue || true)",
     "aReceiverDownForThirtySecondsGetsEveryEventSignedAndInOrder"),
    ("webhook-cursor", "a webhook's cursor moves only past what its receiver took (2xx): a receiver that was down gets every event",
     "Sources/Master/BuilddMaster/WebhookDeliverer.swift",
     "if let status = attempt.httpStatus, (200..<300).contains(status) {",
     "if attempt.httpStatus != 0 {",
     "aReceiverDownForThirtySecondsGetsEveryEventSignedAndInOrder"),
    ("store-full", "an artifact store with no room left refuses uploads with 507 and says why, so the build is retried",
     "Sources/Master/BuilddMaster/ArtifactStore.swift",
     "isFull: code == ENOSPC || code == EDQUOT)",
     "isFull: false)",
     "FullDiskTests"),
    ("full-work-folder", "a build that failed on a full work folder is the builder's failure (BUILDERFAIL), not the package's",
     "Sources/Core/BuilddCore/BuildStatus.swift",
     "              Self.isFull(freeBytes: freeBytes, totalBytes: totalBytes) else { return self }",
     "              Self.isFull(freeBytes: freeBytes, totalBytes: totalBytes) && false else { return self }",
     "BuildStatusTests|FullDiskTests"),
    ("batch-ack", "a batch ack never covers an older delivery still being worked on",
     "Sources/Shared/AMQP/AMQPClient.swift",
     "channel == Self.consumeChannel, !open.contains(where: { $0 < newest }) {",
     "channel == Self.consumeChannel {",
     "AMQPIntegrationTests"),
    ("private-visible", "a private archive's build exists only for callers who may read private builds",
     "Sources/Core/BuilddCore/Access.swift",
     "case .private: return allows(role, .readPrivate, anonymousRead: true)",
     "case .private: return true",
     "AccessRulesTests|AccessTests"),
    ("role-unchecked", "a token may do only what its role allows",
     "Sources/Core/BuilddCore/Access.swift",
     "        return role >= least\n",
     "        return role >= least || true\n",
     "AccessRulesTests|AccessTests"),
    ("expired-token", "an expired token is refused",
     "Sources/Core/BuilddCore/Access.swift",
     "return now < expiresAt",
     "return now < expiresAt || true",
     "AccessRulesTests|AccessTests"),
    ('build-pid-namespace', 'nothing a build started outlives it: each build runs in a PID namespace of its own',
     'Sources/SlaveAgent/BuilddAgent/Agent.swift',
     'runAs: user, isolated: isolated && !privileged)',
     'runAs: user, isolated: false && !privileged)',
     'AgentIsolationTests'),
    ('link-followed', "a build's results are read only as regular files, never through a link",
     'Sources/SlaveAgent/BuilddAgent/BuildProcess.swift',
     'if lstat(path + "/" + name, &entry) == 0, (entry.st_mode & S_IFMT) == S_IFREG { files.append(name) } else {',
     'if stat(path + "/" + name, &entry) == 0, (entry.st_mode & S_IFMT) == S_IFREG { files.append(name) } else {',
     'AgentIsolationTests'),
    ('foreign-bind', "an agent's broker user may not bind its queue to other builders' jobs",
     'deploy/rabbitmq/enrol-agent',
     '"{\\"configure\\":\\"^\\$\\",\\"write\\":\\"^buildd\\\\\\\\.status\\$\\",\\"read\\":\\"$read\\"}"',
     '"{\\"configure\\":\\"^\\$\\",\\"write\\":\\"^buildd\\\\\\\\.(status|$own)\\$\\",\\"read\\":\\"^buildd\\\\\\\\.(jobs|control|$queues|$own)\\$\\"}"',
     'BrokerPermissionTests|PlacementTests'),
    ('cookie-for-changes', 'the sign-in cookie counts for reads only: a change needs the Authorization header',
     'Sources/Master/BuilddMaster/HTTPAPI+Access.swift',
     '(request.method == .get ? Self.cookie(request, Self.sessionCookie) : nil)',
     'Self.cookie(request, Self.sessionCookie)',
     'AccessTests'),
    ('page-form-token', "a change from a page needs the form token of the session's own API token",
     'Sources/Master/BuilddMaster/Pages/PageKit.swift',
     'return difference == 0',
     'return difference == 0 || true',
     'OperatorPagesTests|OperatorUITests'),
    ('page-cross-origin', 'a page form posted from another origin changes nothing',
     'Sources/Master/BuilddMaster/Pages/HTTPAPI+Pages.swift',
     'guard let from, from == request.head.authority else {',
     'guard let from, from == request.head.authority || true else {',
     'OperatorUITests'),
    ('page-private-build', 'the builds page lists private builds only to those who may view them',
     'Sources/Master/BuilddMaster/Pages/HTTPAPI+Pages.swift',
     'visible: Access.visibleArchives(to: caller.role))\n            : BuilddStore.BuildPage',
     'visible: ArchivePurpose.allCases)\n            : BuilddStore.BuildPage',
     'OperatorUITests'),
    ('reset-request', "an operator's reset request marks DIRTY only a builder the master resets",
     'Sources/Core/BuilddCore/BuilderReset.swift',
     'guard facts.plan.resets(virtualized: facts.virtualized) else {\n            return .refused',
     'guard facts.plan.resets(virtualized: facts.virtualized) || true else {\n            return .refused',
     'BuilderResetTests|OperatorUITests'),
    ('sample-window', 'each farm sample counts the builds that ended since the previous sample, once',
     'Sources/Master/BuilddMaster/Store/BuilddStore+Samples.swift',
     "WHERE e.at > to_timestamp($1) - interval '5 seconds' AND e.at <= now() - interval '5 seconds' AND e.status = ANY($2::text[])",
     "WHERE e.at > to_timestamp($1) - interval '1 hour' AND e.at <= now() - interval '5 seconds' AND e.status = ANY($2::text[])",
     'OperatorUITests'),
    ('noise-unbounded', 'refusals cost a bounded number of log lines per minute',
     'Sources/Core/BuilddCore/NoiseRule.swift',
     'let log = current.count <= linesPerMinute',
     'let log = current.count <= linesPerMinute || true',
     'NoiseRuleTests|BrokerPermissionTests'),
    ('key-rebound', "an attempt's sources and uploads open only to the key of the builder whose accept stood",
     'Sources/Core/BuilddCore/LifecycleCore.swift',
     'started on \\(builder.name)")\n        case let other:\n            return Self.unchanged(other, buildID: ref.build)',
     'started on \\(builder.name)")\n        case let other:\n            builds[ref.build]?.queue?.uploadKey = uploadKey\n'
     '            return Self.unchanged(other, buildID: ref.build)',
     'AttemptCredentialTests|BrokerPermissionTests|RefusalTests'),
    ('upload-overwrite', 'a result file is written once: other bytes under a stored name are refused',
     'Sources/Core/BuilddCore/Vocabulary.swift',
     'if existing.sha256 == sha256 && existing.size == size { return .alreadyStored }',
     'return .alreadyStored',
     'UploadDecisionTests'),
    ("build-network", "a package build has no network: it reaches no master, broker or database",
     "deploy/examples/binarypackage",
     "exec unshare --net /bin/sh -c '",
     "exec /bin/sh -c '",
     "RealBuildTests"),
    ("tls-chain-unchecked", "an HTTPS client checks the certificate chain against the CAs it trusts",
     "Sources/Shared/BuilddShared/TLSClient.swift",
     "SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)",
     "SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)",
     "TLSTests"),
    ("tls-host-unchecked", "an HTTPS client checks that the certificate names the host it connects to",
     "Sources/Shared/BuilddShared/TLSClient.swift",
     "guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {",
     "guard true || X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 else {",
     "TLSTests"),
    ("placement-virtualized", "a build that requires virtualization goes only to a virtualized builder, and one that does not only to a non-virtualized one",
     "Sources/Core/BuilddCore/Placement.swift",
     "if build.virtualized != builder.virtualized { return .virtualization(buildRequires: build.virtualized) }",
     "if false && build.virtualized != builder.virtualized { return .virtualization(buildRequires: build.virtualized) }",
     "PlacementRuleTests|PlacementTests|CoreRulesInSQLTests"),
    ("placement-subset", "a build's constraints are a subset of its builder's resources",
     "Sources/Core/BuilddCore/Placement.swift",
     "if !missing.isEmpty { return .missingResources(missing.sorted()) }",
     "if false && !missing.isEmpty { return .missingResources(missing.sorted()) }",
     "PlacementRuleTests|PlacementTests|CoreRulesInSQLTests"),
    ("placement-restricted", "a builder with restricted resources takes only builds that ask for all of them",
     "Sources/Core/BuilddCore/Placement.swift",
     "if !unasked.isEmpty { return .restrictedNotAsked(unasked.sorted()) }",
     "if false && !unasked.isEmpty { return .restrictedNotAsked(unasked.sorted()) }",
     "PlacementRuleTests|PlacementTests|CoreRulesInSQLTests"),
    ("placement-accept", "the core refuses an accept the placement forbids, whatever route the job took",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "refusal: Self.refusal(of: builder, for: build, busy: busy), now: now,",
     "refusal: nil, now: now,",
     "PlacementRuleTests|PlacementTests"),
    ("reset-dirty", "a virtualized builder the master resets is DIRTY after every build, not CLEAN",
     "Sources/Core/BuilddCore/BuilderReset.swift",
     "facts.plan.resets(virtualized: facts.virtualized) ? facts.clean : .clean",
     ".clean",
     "BuilderResetTests|BuilderResetFarmTests"),
    ("reset-deadline", "a reset that passes its deadline counts as a builder failure",
     "Sources/Core/BuilddCore/BuilderReset.swift",
     "guard let deadline = facts.deadline, now > deadline else { return .nothing }",
     "guard let deadline = facts.deadline, now > deadline + 1_000_000 else { return .nothing }",
     "BuilderResetTests|BuilderResetFarmTests"),
    ("reset-accept", "a builder that is not CLEAN may not accept a job, whatever route it took",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "if !busy, let unclean = BuilderReset.refusal(builder.cleanStatus) { return unclean }",
     "if false, let unclean = BuilderReset.refusal(builder.cleanStatus) { return unclean }",
     "BuilderResetTests|BuilderResetFarmTests"),
    ("reset-idle-sql", "the claims count only CLEAN builders as idle (the SQL of the availability rule)",
     "Sources/Core/BuilddCore/BuilderAvailability.swift",
     "AND \\(b).agent_state = 'IDLE' \\\n        AND \\(b).clean_status = '\\(CleanStatus.clean.rawValue)'",
     "AND \\(b).agent_state = 'IDLE'",
     "CoreRulesInSQLTests|BuilderResetFarmTests"),
    ("pocket-dependencies", "a build sees the pockets its pocket builds on (security adds release)",
     "Sources/Core/BuilddCore/ArchiveDependencies.swift",
     "case .security: [.release, .security]",
     "case .security: [.security]",
     "ArchiveDependencyTests|aSecurityPocketJobCarriesTheExpandedSources"),
    ("component-dependencies", "a build sees the components its component builds on (universe adds restricted and main)",
     "Sources/Core/BuilddCore/ArchiveDependencies.swift",
     "case .universe: [.main, .restricted, .universe]",
     "case .universe: [.universe]",
     "ArchiveDependencyTests|aSecurityPocketJobCarriesTheExpandedSources"),
    ("ppa-primary-default", "a PPA's builds draw on the primary archive in updates and every component",
     "Sources/Core/BuilddCore/ArchiveDependencies.swift",
     "add(main, pocket: .updates, components: components(for: .multiverse))",
     "add(main, pocket: build.pocket, components: components(for: build.component))",
     "ArchiveDependencyTests|aSecurityPocketJobCarriesTheExpandedSources"),
    ("depwait-satisfied", "a dependency wait is retried only when its archives satisfy every clause of what it misses",
     "Sources/Core/BuilddCore/DepWait.swift",
     "return missing.isEmpty ? .retry : .wait(missing: DebianDependency(clauses: missing).description)",
     "return .retry",
     "DepWaitTests|aDepWaitBuildIsRetriedWhenTheIndexGainsItsDependencyAndNotBefore"),
    ("private-virtualized", "a private archive's build always requires a virtualized builder",
     "Sources/Core/BuilddCore/Placement.swift",
     "BuildRequirements(virtualized: virtualized || archivePrivate, constraints: constraints)",
     "BuildRequirements(virtualized: virtualized, constraints: constraints)",
     "PlacementRuleTests|PlacementTests"),
    ("shared-queue-plain", "the shared job queues carry plain builds only (the rest go to builders that may take them)",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Dispatch.swift",
     "                   AND \\(Placement.sqlGoesToSharedQueue(build: \"q\"))\n",
     "\n",
     "PlacementTests"),
    ("legacy-share", "each live master follows its rendezvous share of the legacy builders, not all of them",
     "Sources/Master/BuilddMaster/Store/BuilddStore+Legacy.swift",
     "let mine = PostgresArray(LegacyShare.share(of: master, builders: names, among: live))",
     "let mine = PostgresArray(names)",
     "LegacyBuilderTests"),
    ("legacy-stream", "a legacy builder's result file streams into the store, never whole in memory",
     "Sources/Master/BuilddMaster/Legacy/LegacyHTTP.swift",
     "            if let sink, (200..<300).contains(response.status) {\n",
     "            if let sink, (200..<300).contains(response.status) {\n"
     "                response.body += buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []\n",
     "LegacyBuilderTests"),
    ("version-tilde", "a `~` sorts before anything in a Debian version, even its end (1.0~rc1 << 1.0)",
     "Sources/Core/BuilddCore/DebianVersion.swift",
     'if character == UInt8(ascii: "~") { return -1 }',
     'if character == UInt8(ascii: "~") { return 1 }',
     "DebianVersionTests|DebianRelationTests"),
    ("relation-alternatives", "a relation clause holds when one of its alternatives is satisfied",
     "Sources/Core/BuilddCore/DebianRelation.swift",
     "return applying.contains { index.satisfies($0, on: architecture) } ? nil : applying",
     "return applying.allSatisfy { index.satisfies($0, on: architecture) } ? nil : applying",
     "DebianRelationTests"),
    ("manual-never-started", "a builder in manual mode is never started, whatever job it accepts",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "public var mayStartBuilds: Bool { usable && !manual }",
     "public var mayStartBuilds: Bool { usable }",
     "LifecycleCoreTests|aBuilderInManualModeIsNeverStartedWhateverItAccepts"),
    ("release-attempt", "releasing an unpublished claim applies only to the attempt it names",
     "Sources/Core/BuilddCore/BuildLifecycle.swift",
     "guard case .dispatched(let current, _) = state, current == attempt else { return .ignore(\"not this claim\") }",
     "guard case .dispatched = state else { return .ignore(\"not this claim\") }",
     "LifecycleCoreTests|RefusalTests"),
    ("abort-resend", "a cancelling build's builder is told again only after the resend interval",
     "Sources/Core/BuilddCore/BuildLifecycle.swift",
     "return now - lastSent > Double(Self.abortResendSeconds)",
     "return now - lastSent >= 0",
     "LifecycleCoreTests|CoreRulesInSQLTests"),
    ("transition-graph", "a FULLYBUILT or SUPERSEDED build never changes again (the graph, in the core and the database)",
     "Sources/Core/BuilddCore/BuildStatus.swift",
     "if isTerminal { return false }",
     "if isTerminal { return next == .needsBuild }",
     "BuildStatusTests|CoreRulesInSQLTests"),
    ("forbidden-step", "a batch that takes a build along a step the graph forbids is named, and not written",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "if build.status != status, !build.status.canTransition(to: status) {",
     "if build.status != status, !build.status.canTransition(to: status), false {",
     "LifecycleCoreTests"),
    ("rescore-age", "clearing an operator's score gives back the base plus the age bonus earned",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "entry.last = score ?? entry.base + Scoring.ageScore(waited: now - entry.queuedAt)",
     "entry.last = score ?? entry.base",
     "LifecycleCoreTests|CoreRulesInSQLTests"),
    ("retry-score", "a retried build is queued with the score its urgency, pocket, component and archive give",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "let processor = scoring.processor, score = scoring.score",
     "let processor = scoring.processor, score = 0",
     "LifecycleCoreTests"),
    ("holds-builder", "a cancelling build still holds its builder (one definition, SQL generated from it)",
     "Sources/Core/BuilddCore/LifecycleCore.swift",
     "public var holdsBuilder: Bool { self == .running || self == .cancelling }",
     "public var holdsBuilder: Bool { self == .running }",
     "MigrationTests|LifecycleCoreTests"),
    ("legacy-stall-clock", "a legacy builder showing no progress is judged by the follower's clock",
     "Sources/Core/BuilddCore/LegacyPolicy.swift",
     "            return now - last.since\n",
     "            return 0\n",
     "LegacyPolicyTests|aBuilderWedgedInBuildingOrAbortingIsFailed"),
    ("idle-faults-forgiven", "a legacy builder's faults while idle are forgiven when it answers well, by any master",
     "Sources/Core/BuilddCore/FailureLedger.swift",
     "failures = max(failures - idleFaults, 0)",
     "failures = max(failures, 0)",
     "LifecycleCoreTests|faultsCountedByAKilledMaster"),
]


def run(argv, log, timeout):
    with open(log, "w") as out:
        try:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return None


VERIFIED = "deploy/mutants-verified.tsv"
SAMPLE = 5
SUBMISSION_HOURS = 4


def failed_tests(log):
    """The tests a `swift test` log says failed."""
    text = open(log, errors="replace").read() if os.path.exists(log) else ""
    return sorted(set(re.findall(r"✘ Test (\w+)\(.*?\) (?:recorded an issue|failed)", text)))


@functools.lru_cache(maxsize=None)
def test_files(tests):
    """The test files that declare a suite or test the mutant's filter (a swift test --filter regex) selects."""
    pattern = re.compile(tests)
    found = []
    for folder in ("Tests/UnitTests", "Tests/IntegrationTests"):
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".swift"):
                continue
            path = os.path.join(folder, name)
            text = open(path, errors="replace").read()
            if any(pattern.search(ident) for ident in re.findall(r"\b(?:struct|func)\s+(\w+)", text)):
                found.append(path)
    return found


def fingerprint(mutant):
    """A digest of what decides whether the mutant is caught: its row, the file it breaks, its test files."""
    name, rule, path, code, broken, tests = mutant
    digest = hashlib.sha256(json.dumps(list(mutant)).encode())
    for file in [path] + test_files(tests):
        digest.update(file.encode() + b"\0")
        digest.update(open(file, "rb").read())
    return digest.hexdigest()[:16]


def read_verified():
    verified = {}
    if os.path.exists(VERIFIED):
        for line in open(VERIFIED):
            if line.startswith("#") or not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            verified[fields[0]] = fields
    return verified


def write_verified(verified):
    with open(VERIFIED, "w") as out:
        out.write("# Written by deploy/mutate.py: each mutant caught, on the code and tests with this fingerprint.\n")
        out.write("# mutant\tfingerprint\tverified (UTC)\tcaught by\n")
        for name in sorted(verified):
            out.write("\t".join(verified[name]) + "\n")


def git(*argv):
    return subprocess.run(["git"] + list(argv), capture_output=True, text=True, check=True).stdout.strip()


def files_of_submission():
    """The files the submission under test changed: a session lasts at most three hours, so its commits are
    those of the SUBMISSION_HOURS before HEAD's (an earlier session's that close count too, which only runs
    more). Returns (base commit, set of paths), or (None, None) when the history does not tell."""
    try:
        head_time = int(git("log", "-1", "--format=%ct", "HEAD"))
        base = git("rev-list", "-1", "--before=%d" % (head_time - SUBMISSION_HOURS * 3600), "HEAD")
        if not base:
            return None, None
        return base, set(git("diff", "--name-only", base, "HEAD").splitlines())
    except (subprocess.CalledProcessError, ValueError, OSError):
        return None, None


def select_for_ci(mutants):
    """CI's bounded form. Every mutant the submission touched: the file it breaks or a test file that guards
    it changed in the submission's commits (files_of_submission), or its fingerprint differs from the one
    recorded when it was last caught (it changed since, or was never verified). Plus a rotating sample of the
    others: they are dealt, in name order, into groups of at least SAMPLE, and the commit's number
    (git rev-list --count HEAD) picks the group. A touched mutant already caught on exactly its current
    content, and the sample, are budgeted (``budgeted``): they come last and run while the budget lasts.
    Returns (chosen, reasons), the must-run mutants first."""
    verified = read_verified()
    base, changed = files_of_submission()
    touched, others, reasons = [], [], {}
    for mutant in mutants:
        name, path, tests = mutant[0], mutant[2], mutant[5]
        recorded = verified.get(name)
        files = [path] + test_files(tests)
        if changed is None:
            reasons[name] = "the history does not say what the submission changed"
        elif set(files) & changed:
            what = "the submission (since %s) changed %s" % (base[:10], ", ".join(sorted(set(files) & changed)))
            if recorded is not None and recorded[1] == fingerprint(mutant):
                # Caught on exactly this content (its row, its file, its tests) in a recorded run: it runs again
                # as time allows, after every mutant that was not.
                reasons[name] = "%s %s; %s" % (VERIFIED_HERE, recorded[2], what)
            else:
                reasons[name] = what
        elif recorded is None:
            reasons[name] = "never verified"
        elif recorded[1] != fingerprint(mutant):
            reasons[name] = "changed since it was verified on %s" % recorded[2]
        if name in reasons:
            touched.append(mutant)
        else:
            others.append(mutant)
    groups = max(1, len(others) // SAMPLE)
    try:
        number = int(git("rev-list", "--count", "HEAD"))
    except (subprocess.CalledProcessError, ValueError, OSError):
        number = 0
    group = number % groups
    sample = [m for index, m in enumerate(sorted(others)) if index % groups == group]
    for mutant in sample:
        reasons[mutant[0]] = "rotating sample (group %d of %d, commit number %d)" % (group + 1, groups, number)
    # What must run first: mutants never caught on their current content. Then the budgeted ones, the touched
    # before the sampled, each kind starting at a place the commit's number picks, so that when the budget
    # runs out first, the next submissions run the ones this one left.
    must = [m for m in mutants if m[0] in reasons and not budgeted(reasons[m[0]])]
    chosen = list(must)
    for kind in (VERIFIED_HERE, "rotating sample"):
        some = [m for m in mutants if m[0] in reasons and reasons[m[0]].startswith(kind)]
        if some:
            start = number % len(some)
            chosen += some[start:] + some[:start]
    return chosen, reasons


VERIFIED_HERE = "verified caught on this content on"


def budgeted(reason):
    """Whether CI runs a mutant only while its time budget lasts: a rotating sample, or one caught on exactly
    its current content in a recorded run (deploy/mutants-verified.tsv)."""
    return reason.startswith("rotating sample") or reason.startswith(VERIFIED_HERE)


def main():
    checkout, outdir = sys.argv[1], sys.argv[2]
    flags = [a for a in sys.argv[3:] if a.startswith("--")]
    only = set(a for a in sys.argv[3:] if not a.startswith("--"))
    unknown = [f for f in flags if f not in ("--ci", "--plan")] + sorted(only - set(m[0] for m in MUTANTS))
    if unknown:
        print("mutate: unknown mutant or flag: %s (mutants: %s)" % (", ".join(unknown), ", ".join(m[0] for m in MUTANTS)))
        return 2
    os.makedirs(outdir, exist_ok=True)
    os.chdir(checkout)
    if "--ci" in flags or "--plan" in flags:
        chosen, reasons = select_for_ci(MUTANTS)
        print("[mutate] CI's bounded form: %d of %d mutants" % (len(chosen), len(MUTANTS)), flush=True)
        for mutant in chosen:
            print("[mutate]   %s: %s" % (mutant[0], reasons[mutant[0]]), flush=True)
        if "--plan" in flags:
            return 0
    else:
        chosen, reasons = [m for m in MUTANTS if not only or m[0] in only], {}
    rows, survivors, errors, skipped = [], [], [], []
    verified = read_verified()
    begun = time.time()
    # A guarding test that fails without any mutant would "catch" every one. CI has just run the whole suite
    # and passed; elsewhere the guarding tests run first on the tree as it is, and must pass.
    if "--ci" not in flags and chosen:
        every = "|".join("(?:%s)" % m[5] for m in chosen)
        print("[mutate] baseline: the guarding tests on the tree as it is", flush=True)
        build_status = run(["swift", "build", "--build-tests"], os.path.join(outdir, "baseline.build.log"), 1200)
        log = os.path.join(outdir, "baseline.test.log")
        status = run(["swift", "test", "--skip-build", "--filter", every], log, 2400) if build_status == 0 else None
        if status != 0:
            failed = failed_tests(log)
            print("mutate: the guarding tests fail without any mutant (%s; see %s): fix them first" % (
                ", ".join(failed) or "build failed or timed out", log))
            return 1
        print("[mutate] baseline passed in %.0f s" % (time.time() - begun), flush=True)
    budget = float(os.environ.get("BUILDD_MUTATE_BUDGET", "2400"))
    for index, mutant in enumerate(chosen, 1):
        name, rule, path, code, broken, tests = mutant
        started = time.time()
        # CI's time is bounded: a sampled mutant, or one already caught on exactly its current content, is
        # left for a later commit once the budget is spent; every other mutant the submission touched runs.
        if budgeted(reasons.get(name, "")) and started - begun > budget:
            skipped.append(name)
            print("[mutate] %d/%d %s: not run, the budget of %.0f s is spent" % (index, len(chosen), name, budget), flush=True)
            continue
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
            failed = failed_tests(test_log)
            ran = re.search(r"Test run with (\d+) tests?", open(test_log, errors="replace").read())
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
        if verdict == "caught" and failed:
            verified[name] = [name, fingerprint(mutant), time.strftime("%Y-%m-%d %H:%M", time.gmtime()), caught]
        else:
            verified.pop(name, None)
    write_verified(verified)
    # Leave the tree built as it is.
    run(["swift", "build", "--build-tests"], os.path.join(outdir, "restore.build.log"), 1200)
    table = ["| rule | mutant | caught by | result |", "|---|---|---|---|"]
    table += ["| %s | `%s` | %s | %s |" % (rule, name, caught, verdict) for name, rule, caught, verdict in rows]
    with open(os.path.join(outdir, "results.md"), "w") as out:
        out.write("\n".join(table) + "\n")
    print("\n".join(table))
    print("mutate: %d mutants, %d caught, %d survived, %d errors in %.0f s%s" % (
        len(rows), len(rows) - len(survivors) - len(errors), len(survivors), len(errors), time.time() - begun,
        "; not run for the budget: " + ", ".join(skipped) if skipped else ""))
    return 0 if not survivors and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
