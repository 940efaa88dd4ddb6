import BuilddAgent
import Testing

/// A job's upload URL against the agent's configured masters (the trap of issue 11: the unit file published
/// `http://%H:8080`, the agent listed `http://master.example.org:8080`, and every build failed).
@Suite(.timeLimit(.minutes(1))) struct MasterOriginTests {
    /// A stand-in for this machine's resolver: pure logic only, no DNS.
    static let hosts: [String: Set<String>] = [
        "master1": ["192.0.2.10"], "master1.example.org": ["192.0.2.10", "2001:db8::10"],
        "master2.example.org": ["192.0.2.20"], "localhost": ["127.0.0.1", "::1"], "127.0.0.1": ["127.0.0.1"],
    ]
    static let resolve: MasterOrigin.Resolver = { hosts[$0] ?? [] }
    static let upload = "/v1/builds/7/attempts/2/files/"

    func find(_ uploadURL: String, _ masters: [String]) -> MasterOrigin? {
        MasterOrigin.find(uploadURL: uploadURL, masters: masters, resolve: Self.resolve)
    }

    @Test func shortHostNameMatchesTheConfiguredFullName() {
        let origin = find("http://master1:8080" + Self.upload,
                          ["http://master2.example.org:8080", "http://master1.example.org:8080"])
        #expect(origin == MasterOrigin(master: "http://master1.example.org:8080", resource: Self.upload))
    }

    @Test func namesAreComparedWithoutCaseAndWithoutResolving() {
        let origin = MasterOrigin.find(uploadURL: "http://MASTER9.example.org:8080" + Self.upload,
                                       masters: ["http://master9.example.org:8080/"], resolve: { _ in [] })
        #expect(origin == MasterOrigin(master: "http://master9.example.org:8080", resource: Self.upload))
    }

    @Test func anAddressMatchesItsName() {
        #expect(find("http://127.0.0.1:58080" + Self.upload, ["http://localhost:58080"])?.master
                == "http://localhost:58080")
    }

    @Test func thePortAndTheSchemeMustAgree() {
        #expect(find("http://master1:8081" + Self.upload, ["http://master1.example.org:8080"]) == nil)
        #expect(find("https://master1:8080" + Self.upload, ["http://master1.example.org:8080"]) == nil)
        // The default port is the same port written out.
        #expect(find("http://master1" + Self.upload, ["http://master1.example.org:80"]) != nil)
    }

    @Test func anotherHostIsRefused() {
        #expect(find("http://master2.example.org:8080" + Self.upload, ["http://master1.example.org:8080"]) == nil)
        #expect(find("http://attacker.example.net:8080" + Self.upload, ["http://master1.example.org:8080"]) == nil)
        // Two names that resolve to nothing are not "the same" host.
        #expect(find("http://nowhere-a:8080" + Self.upload, ["http://nowhere-b:8080"]) == nil)
    }

    @Test func aMasterBehindAPathPrefixKeepsIt() {
        let origin = find("http://master1:8080/buildd" + Self.upload, ["http://master1.example.org:8080/buildd"])
        #expect(origin == MasterOrigin(master: "http://master1.example.org:8080/buildd", resource: Self.upload))
        #expect(find("http://master1:8080/other" + Self.upload, ["http://master1.example.org:8080/buildd"]) == nil)
        // A prefix must end at a path segment.
        #expect(find("http://master1:8080/builddx" + Self.upload, ["http://master1:8080/buildd"]) == nil)
    }

    @Test func unreadableURLsMatchNothing() {
        #expect(find("not a url", ["http://master1:8080"]) == nil)
        #expect(find("http://master1:8080" + Self.upload + "?x=1", ["http://master1:8080"]) == nil)
    }

    @Test func theRealResolverKnowsLocalhost() {
        #expect(MasterOrigin.resolve("localhost").contains("127.0.0.1"))
        #expect(MasterOrigin.resolve("no-such-host.invalid").isEmpty)
    }
}
