import AMQP
import BuilddShared
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// What a master needs to enrol build machines (`serve --broker-management-url`).
public struct EnrolmentSettings: Sendable {
    public var management: BrokerManagement
    /// The farm's broker as the masters reach it (`BUILDD_BROKER_URL`): machines get it with their own user.
    public var brokerURL: String
    public var queueType: String
    /// What machines list under [master] url: this master's public URL, and any others given.
    public var masterURLs: [String]

    public init(management: BrokerManagement, brokerURL: String, queueType: String, masterURLs: [String]) {
        self.management = management
        self.brokerURL = brokerURL
        self.queueType = queueType
        self.masterURLs = masterURLs
    }
}

extension HTTPAPI {
    /// `POST /v1/enrol`: a build machine enrols itself with a join token (``JoinToken``). The token is the
    /// `Authorization: Bearer`; it is good once, and no other route takes it (it is no API token).
    func addEnrolRoute(to router: Router<BasicRequestContext>) {
        router.post("/v1/enrol") { request, _ in
            let about: Logger.Metadata = ["http.path": "\(request.uri.path)"]
            guard let token = Self.bearer(request) else {
                throw self.refuse(.unauthorized, route: "enrol", reason: "missing_token",
                                  "enrolling needs a join token: Authorization: Bearer <token>", about)
            }
            guard let settings = self.enrolment else {
                throw HTTPError(.serviceUnavailable, message: """
                    this master does not enrol build machines: it needs the broker's management API \
                    (BUILDD_BROKER_MANAGEMENT_URL in master.env)
                    """)
            }
            let body = try await Self.body(request, as: EnrolmentRequest.self,
                                           example: #"{"name": "bld-amd64-07", "processors": ["amd64"]}"#)
            let password = randomHexToken(bytes: 24)
            let processors: [String]
            do {
                processors = try await Self.mapped {
                    try await self.store.enrol(
                        token: token, name: body.name, processors: body.processors,
                        brokerSeconds: BrokerManagement.longestAgentUserSeconds + 5,
                        makeBrokerUser: { name, processors in
                            try settings.management.createAgentUser(name: name, password: password, processors: processors)
                        },
                        removeBrokerUser: { name in
                            guard let problem = settings.management.removeUser(name: name) else { return }
                            self.logger.error("a failed enrolment's broker user is left: delete it on the broker", metadata: [
                                "builder": "\(name)", "error": "\(problem)"])
                        })
                }
            } catch let refusal as BuilddStore.EnrolmentRefusal {
                let reason = switch refusal {
                case .unknownToken: "join_token_refused"
                case .refused(.expired): "join_token_expired"
                case .refused: "join_token_used"
                }
                BuilddMetrics.enrolment(outcome: reason)
                throw self.refuse(.forbidden, route: "enrol", reason: reason, refusal.description,
                                  about.merging(["builder": "\(body.name)"]) { $1 })
            } catch let exists as BrokerManagement.UserExists {
                BuilddMetrics.enrolment(outcome: "invalid")
                throw HTTPError(.conflict, message: "\(exists); nothing was enrolled and the join token is still good")
            } catch let failure as BrokerManagement.Failure {
                BuilddMetrics.enrolment(outcome: "broker_failed")
                self.logger.error("enrolment failed: nothing enrolled", metadata: ["builder": "\(body.name)",
                                                                                  "error": "\(failure)"])
                throw HTTPError(.badGateway, message: "\(failure); nothing was enrolled and the join token is still good")
            } catch let error as HTTPError {
                BuilddMetrics.enrolment(outcome: "invalid")
                throw error
            } catch {
                // The database failed (a lost link, an ended session, a lock not given in time): the store has
                // taken back any broker user it made, and the token was not spent.
                BuilddMetrics.enrolment(outcome: "database_failed")
                self.logger.error("enrolment failed: nothing enrolled", metadata: ["builder": "\(body.name)",
                                                                                  "error": "\(error)"])
                // The error itself is for the log: the caller may hold no valid token.
                throw HTTPError(.serviceUnavailable, message: """
                    this master's database failed (its log says how); nothing was enrolled and the join token is \
                    still good: try again, or another master
                    """)
            }
            BuilddMetrics.enrolment(outcome: "enrolled")
            self.logger.notice("build machine enrolled", metadata: [
                "builder": "\(body.name)", "processors": "\(processors.joined(separator: ","))"])
            return Self.json(EnrolmentGrant(
                name: body.name, processors: processors,
                brokerURL: EnrolmentGrant.brokerURL(settings.brokerURL, forUser: body.name), brokerPassword: password,
                queueType: settings.queueType, masterURLs: settings.masterURLs), status: .created)
        }
    }
}

extension HTTPAPI {
    /// Join tokens over the API, for whatever starts build machines (an autoscaler) and holds an admin token:
    /// `POST /v1/join-tokens` makes one and answers its secret once, `GET` lists them without secrets, and
    /// `DELETE /v1/join-tokens/{name}` takes one back. The same rules as `token add --role enrol`: the store
    /// checks the name, the processors and the lifetime (``JoinToken/maxLifetimeSeconds``).
    func addJoinTokenRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/join-tokens") { request, _ in
            let caller = try await self.authorize(request, .manageTokens)
            let body = try await Self.body(request, as: JoinTokenRequest.self,
                                           example: #"{"name": "autoscale-42", "processors": ["amd64"], "expires_in": 3600}"#)
            let made = try await Self.mapped {
                try await self.store.addJoinToken(name: body.name, processors: body.processors,
                                                  expiresInSeconds: body.expiresIn, createdBy: Self.actor(caller))
            }
            self.logger.notice("join token made", metadata: [
                "token.name": "\(body.name)", "processors": "\(body.processors.joined(separator: ","))",
                "actor": "\(Self.actor(caller) ?? "-")"])
            return Self.json(JoinTokenGrant(name: body.name, token: made.token, processors: made.processors,
                                            expiresAt: made.expiresAt), status: .created)
        }
        router.get("/v1/join-tokens") { request, _ in
            try await self.authorize(request, .manageTokens)
            return Self.json(try await self.store.joinTokens())
        }
        router.delete("/v1/join-tokens/:name") { request, context in
            let caller = try await self.authorize(request, .manageTokens)
            let name = try context.parameters.require("name")
            guard try await self.store.removeJoinToken(name: name) else {
                throw HTTPError(.notFound, message: "no join token '\(name)'")
            }
            self.logger.notice("join token removed", metadata: ["token.name": "\(name)", "actor": "\(Self.actor(caller) ?? "-")"])
            return Response(status: .noContent)
        }
    }
}

struct JoinTokenRequest: Decodable {
    let name: String
    let processors: [String]
    /// Seconds the token is good for, at most ``JoinToken/maxLifetimeSeconds``.
    let expiresIn: Int

    enum CodingKeys: String, CodingKey {
        case name, processors
        case expiresIn = "expires_in"
    }
}

/// A join token as made: the only answer that ever holds its secret.
struct JoinTokenGrant: Encodable {
    let name: String
    let token: String
    let processors: [String]
    let expiresAt: String

    enum CodingKeys: String, CodingKey {
        case name, token, processors
        case expiresAt = "expires_at"
    }
}
