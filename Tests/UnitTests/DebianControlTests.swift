import BuilddShared
import Testing

@Suite(.timeLimit(.minutes(1))) struct DebianControlTests {
    static let dsc = """
        -----BEGIN PGP SIGNED MESSAGE-----
        Hash: SHA256

        Format: 3.0 (quilt)
        Source: tiny
        Binary: tiny
        Architecture: any
        Version: 1.2-3
        Build-Depends: debhelper-compat (= 13),
         libfoo-dev (>= 2.0)
        Checksums-Sha1:
         1111111111111111111111111111111111111111 10 tiny_1.2.orig.tar.gz
        Checksums-Sha256:
         aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 725946 tiny_1.2.orig.tar.gz
         bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb 6132 tiny_1.2-3.debian.tar.xz
        Files:
         cccccccccccccccccccccccccccccccc 725946 tiny_1.2.orig.tar.gz

        -----BEGIN PGP SIGNATURE-----

        iQIzBAEBCAAdFiEE
        =abcd
        -----END PGP SIGNATURE-----
        """

    @Test func aSignedDscGivesItsFilesWithTheirSHA256() throws {
        let package = try DebianControl.sourcePackage(dsc: Self.dsc)
        #expect(package.name == "tiny")
        #expect(package.version == "1.2-3")
        #expect(package.files == [
            FileDigest(name: "tiny_1.2.orig.tar.gz", sha256: String(repeating: "a", count: 64), size: 725946),
            FileDigest(name: "tiny_1.2-3.debian.tar.xz", sha256: String(repeating: "b", count: 64), size: 6132),
        ])
        #expect(DebianControl.fields(Self.dsc)["build-depends"] == "debhelper-compat (= 13),\nlibfoo-dev (>= 2.0)")
    }

    @Test(arguments: [
        ("Source: x\nVersion: 1\n", "no Checksums-Sha256"),
        ("Version: 1\nChecksums-Sha256:\n \(String(repeating: "a", count: 64)) 1 x.tar.gz\n", "no Source"),
        ("Source: x\nVersion: 1\nChecksums-Sha256:\n abc 1 x.tar.gz\n", "unreadable"),
        ("Source: x\nVersion: 1\nChecksums-Sha256:\n \(String(repeating: "a", count: 64)) 1 ../etc/passwd\n", "not a plain name"),
        ("Source: x\nVersion: 1\nChecksums-Sha256:\n", "lists no files"),
    ])
    func aDscThatCannotBeTrustedIsRefusedWithTheReason(text: String, reason: String) {
        #expect(throws: DebianControl.Invalid.self) { try DebianControl.sourcePackage(dsc: text) }
        do { _ = try DebianControl.sourcePackage(dsc: text) } catch {
            #expect("\(error)".contains(reason), "\(error)")
        }
    }

    @Test func aptsUnmetDependenciesGiveTheMissingRelations() {
        // apt-get build-dep's account, as a build log holds it (bookworm's apt 2.6).
        let log = """
            binarypackage: installing build dependencies
            Reading package lists...
            Some packages could not be installed. This may mean that you have
            requested an impossible situation or if you are using the unstable
            distribution that some required packages have not yet been created
            or been moved out of Incoming.
            The following information may help to resolve the situation:

            The following packages have unmet dependencies:
             builddeps:/build/x_1.0.dsc : Depends: libfoo-dev (>= 2.0) but it is not installable
                                          Depends: libbar-dev but 1.0-1 is to be installed
                                          Depends: virtual-thing which is a virtual package
            E: Unable to correct problems, you have held broken packages.
            """
        #expect(DebianControl.unmetBuildDependencies(inLog: log)
                == "libfoo-dev (>= 2.0), libbar-dev, virtual-thing")
    }

    @Test func aLogWithoutAptsAccountNamesNoDependencies() {
        #expect(DebianControl.unmetBuildDependencies(inLog: "make: *** [build] Error 1\nE: Failed to fetch x\n") == nil)
        #expect(DebianControl.unmetBuildDependencies(inLog: "The following packages have unmet dependencies:\nE: x\n") == nil)
    }
}
