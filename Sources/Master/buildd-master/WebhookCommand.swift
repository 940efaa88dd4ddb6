import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook", abstract: "Deliver build events to HTTP receivers, signed (HMAC-SHA256).",
        discussion: """
            Each webhook gets the build events of buildd.events (every status change, after its commit) by POST, \
            JSON as on the broker, in commit order, signed with `X-Buildd-Signature: t=UNIX,sha256=HEX`, HMAC-SHA256 \
            under its secret over `UNIX.BODY`; `Idempotency-Key` names the webhook and the event and stays the same \
            across retries. A failed delivery is retried with backoff (1 s doubling to an hour) until the webhook \
            has failed for `serve --webhook-give-up` (a day by default); then it is disabled until `webhook enable`.
            """,
        subcommands: [Add.self, List.self, Enable.self, Disable.self, Remove.self, Deliveries.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a webhook; it gets the events committed from now on.")
        @Argument(help: "A name for it.") var name: String
        @Argument(help: "The receiver's URL (https:// in production).") var url: String
        @Option(help: "The build statuses it gets, comma-separated (default: all), e.g. FULLYBUILT,FAILEDTOBUILD.")
        var events: String?
        @Option(help: "A file holding the shared secret (at least 16 bytes; its first line).") var secretFile: String
        @Flag(help: "Also private archives' builds (only for a receiver allowed to see them).") var `private` = false
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            guard let text = try? String(contentsOfFile: secretFile, encoding: .utf8),
                  let secret = text.split(separator: "\n").first.map(String.init), !secret.isEmpty else {
                throw ValidationError("--secret-file \(secretFile): cannot read a secret from it")
            }
            let statuses = (events ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() }
                .filter { !$0.isEmpty }
            let hook = try await withStore(connection) {
                try await $0.addWebhook(name: name, url: url, statuses: statuses, secret: secret, private: `private`)
            }
            if output.json { return printJSON(hook) }
            print("webhook \(hook.name) added: \(hook.url) gets \(statuses.isEmpty ? "every event" : statuses.joined(separator: ","))"
                  + (`private` ? ", private builds' too" : ""))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List webhooks and how their deliveries go (never the secrets).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let hooks = try await withStore(connection) { try await $0.webhooks() }
            if output.json { return printJSON(hooks) }
            printTable(["WEBHOOK", "URL", "EVENTS", "PRIVATE", "STATE", "FAILURES", "NEXT TRY"], hooks.map {
                [$0.name, $0.url, $0.statuses.isEmpty ? "all" : $0.statuses.joined(separator: ","), $0.private ? "yes" : "no",
                 $0.enabled ? ($0.failures > 0 ? "failing since \($0.failingSince ?? "?")" : "ok") : "DISABLED: \($0.disabledReason ?? "")",
                 "\($0.failures)", $0.failures > 0 && $0.enabled ? $0.nextAttempt : "-"]
            })
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a webhook: delivered at once, from where it stopped.")
        @Argument(help: "Webhook name.") var name: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { try await $0.setWebhook(name: name, enabled: true) }
            print("webhook \(name) enabled")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a webhook (its events wait for it).")
        @Argument(help: "Webhook name.") var name: String
        @Option(help: "Why (shown by `webhook list`).") var reason: String?
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { try await $0.setWebhook(name: name, enabled: false, reason: reason) }
            print("webhook \(name) disabled")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a webhook and its delivery log.")
        @Argument(help: "Webhook name.") var name: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { try await $0.removeWebhook(name: name) }
            print("webhook \(name) removed")
        }
    }

    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A webhook's latest delivery attempts, newest first.")
        @Argument(help: "Webhook name.") var name: String
        @Option(help: "How many (at most 1000).") var limit = 50
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let deliveries = try await withStore(connection) { try await $0.webhookDeliveries(name: name, limit: limit) }
            if output.json { return printJSON(deliveries) }
            printTable(["AT", "EVENT", "BUILD", "STATUS", "ANSWER", "MS", "ERROR"], deliveries.map {
                [$0.at, "\($0.event)", "\($0.build)", $0.status, $0.httpStatus.map { "\($0)" } ?? "none", "\($0.durationMs)",
                 $0.error ?? ""]
            })
        }
    }
}
