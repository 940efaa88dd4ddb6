import AMQP
import BuilddShared
import Testing

@Suite(.timeLimit(.minutes(1))) struct ServiceURLTests {
    @Test func parsesBrokerURLWithVhost() throws {
        let url = try ServiceURL(parsing: "amqp://agent%2Done:s3cr%40t@broker.example:5673/buildd%2Fprod")
        #expect(url.scheme == "amqp")
        #expect(url.user == "agent-one")
        #expect(url.password == "s3cr@t")
        #expect(url.host == "broker.example")
        #expect(url.port == 5673)
        #expect(try AMQPConfiguration(url: url).vhost == "buildd/prod")
    }

    @Test func defaultsPortAndVhost() throws {
        let url = try ServiceURL(parsing: "amqp://guest@localhost")
        #expect(url.port == 5672)
        #expect(try AMQPConfiguration(url: url).vhost == "/")
    }

    @Test func descriptionHidesThePassword() throws {
        let url = try ServiceURL(parsing: "amqp://user:topsecret@host:1/v")
        #expect(!url.description.contains("topsecret"))
        #expect(url.description == "amqp://user:***@host:1/v")
    }

    @Test(arguments: ["localhost:5672", "amqp://", "amqp://host:99999", "amqp://host:x", "amqp://u@host/%zz"])
    func rejectsBrokenURLs(text: String) {
        #expect(throws: ServiceURL.ParseError.self) { try ServiceURL(parsing: text) }
    }

    @Test func oddQueryStringsParse() throws {
        // "=" alone once crashed the parser (found by fuzzing the agent's configuration).
        let url = try ServiceURL(parsing: "amqps://host/v?=&cacert=%2Fetc%2Fca.pem&verify&=x")
        #expect(url.query == ["": "x", "cacert": "/etc/ca.pem", "verify": ""])
    }

    @Test func aClustersNodesAreTriedInTurnAndMustBeOneCluster() throws {
        let configuration = try AMQPConfiguration(url: "amqps://u:p@rmq1:5671/buildd, amqps://u:p@rmq2:5671/buildd,amqps://u:p@rmq3/buildd")
        #expect(configuration.nodes.map(\.host) == ["rmq1", "rmq2", "rmq3"])
        #expect(configuration.url.host == "rmq1")
        #expect(configuration.node(1).url.host == "rmq2")
        #expect(configuration.node(5).url.host == "rmq3")
        #expect(configuration.node(5).vhost == "buildd")
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://u:p@rmq1/buildd,amqp://u:p@rmq2/other") }
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://u:p@rmq1/buildd,amqp://v:p@rmq2/buildd") }
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://u:p@rmq1/buildd,amqps://u:p@rmq2/buildd") }
    }

    @Test func refusesOtherSchemesForTheBroker() {
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "http://host:80/") }
    }

    @Test func base64() {
        #expect(SimpleHTTPClient.base64(Array("guest:guest".utf8)) == "Z3Vlc3Q6Z3Vlc3Q=")
        #expect(SimpleHTTPClient.base64(Array("a".utf8)) == "YQ==")
        #expect(SimpleHTTPClient.base64([]) == "")
    }
}
