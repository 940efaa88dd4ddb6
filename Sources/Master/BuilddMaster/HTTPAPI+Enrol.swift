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
                    try await self.store.enrol(token: token, name: body.name, processors: body.processors) { name, processors in
                        try settings.management.createAgentUser(name: name, password: password, processors: processors)
                    }
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
