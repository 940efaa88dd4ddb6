import AMQP
import BuilddShared
import Foundation

/// The RabbitMQ management API, for the one thing masters do with it: make an enrolling machine's broker
/// user with exactly ``AgentPermissions`` (what `deploy/rabbitmq/enrol-agent` does by hand). Blocking: it
/// runs inside the enrolment's transaction, so a broker that refuses leaves nothing enrolled.
public struct BrokerManagement: Sendable {
    /// `http(s)://ADMIN:PASSWORD@host:15672`: a management user that may create users and set permissions
    /// on the farm's vhost (the tag `administrator`). It lives in master.env, never on a command line.
    public let url: String
    public let vhost: String

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The broker has a user of that name already (the masters' own, the enrolling user, another machine's
    /// made by hand): an enrolment never takes it over.
    public struct UserExists: Error, CustomStringConvertible {
        public let name: String
        public var description: String {
            "the broker has a user named \(name) already: enrol this machine under another name (--name)"
        }
    }

    /// The longest one request to the management API waits for an answer.
    public static let requestTimeoutSeconds = 10

    /// The longest ``createAgentUser(name:password:processors:)`` takes: its four requests, and the delete of
    /// the user it made when a later one fails.
    public static let longestAgentUserSeconds = 5 * requestTimeoutSeconds

    public init(url: String, vhost: String) {
        self.url = url.trimmed("/")
        self.vhost = vhost
    }

    /// Creates the user `name` with `password` and the permissions of a build machine of `processors` on the
    /// vhost. Refuses (``UserExists``) when the broker has such a user already: an enrolling machine names
    /// itself, and must not be able to reset the password or rights of a user it does not own.
    public func createAgentUser(name: String, password: String, processors: [String]) throws {
        let permissions = AgentPermissions(builder: name, processors: processors)
        let vhostPath = ServiceURL.percentEncode(vhost)
        let user = ServiceURL.percentEncode(name)
        let existing = try call("GET", "/api/users/\(user)")
        switch existing.status {
        case 404: break
        case 200: throw UserExists(name: name)
        default: throw Failure(description: "the broker's management API answered \(existing.status) to GET /api/users")
        }
        try put("/api/users/\(user)", ["password": password, "tags": ""])
        do {
            try put("/api/permissions/\(vhostPath)/\(user)",
                    ["configure": permissions.configure, "write": permissions.write, "read": permissions.read])
            try put("/api/topic-permissions/\(vhostPath)/\(user)",
                    ["exchange": permissions.topicExchange, "write": permissions.topicWrite, "read": permissions.topicRead])
        } catch {
            // Nothing is enrolled (the transaction rolls back): the user made a moment ago goes too.
            removeUser(name: name)
            throw error
        }
    }

    /// Deletes the user `name`, made by an enrolment that did not happen. Returns what went wrong when the
    /// broker did not delete it (it holds no builder, and its password was never given out, but its name is
    /// taken until an operator removes it).
    @discardableResult
    public func removeUser(name: String) -> String? {
        do {
            let response = try call("DELETE", "/api/users/\(ServiceURL.percentEncode(name))")
            guard (200..<300).contains(response.status) || response.status == 404 else {
                return "the broker's management API answered \(response.status) to DELETE /api/users: \(response.text.prefix(200))"
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// A PUT of `fields` as JSON that must succeed (2xx).
    func put(_ path: String, _ fields: [String: String]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let response = try call("PUT", path, body: Array(try encoder.encode(fields)))
        guard (200..<300).contains(response.status) else {
            throw Failure(description: "the broker's management API answered \(response.status) to PUT "
                + "\(path.split(separator: "/").prefix(3).joined(separator: "/")): \(response.text.prefix(200))")
        }
    }

    /// One request to the management API; a broker that does not answer is a ``Failure``.
    func call(_ method: String, _ path: String, body: [UInt8]? = nil) throws -> SimpleHTTPClient.Response {
        do {
            return try SimpleHTTPClient.send(method: method, url: url + path,
                                             headers: body == nil ? [:] : ["content-type": "application/json"],
                                             body: body.map { .bytes($0) } ?? .none, timeoutSeconds: Self.requestTimeoutSeconds)
        } catch {
            throw Failure(description: "the broker's management API did not answer: \(error)")
        }
    }
}
