// swift-tools-version:6.0
// libFuzzer targets for buildd's decoders. Built apart from the main package because a fuzz target has no
// `main` (libFuzzer brings it): `deploy/localfarm fuzz` builds this with `-sanitize=fuzzer` and runs them.
import PackageDescription

let fuzzTarget: (String, [Target.Dependency]) -> Target = { name, dependencies in
    .executableTarget(name: name, dependencies: dependencies, path: "Sources/\(name)",
                      swiftSettings: [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "buildd-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "buildd", path: "..")],
    targets: [
        fuzzTarget("fuzz-event-decoder", [.product(name: "BuilddShared", package: "buildd")]),
        fuzzTarget("fuzz-xmlrpc", [.product(name: "BuilddShared", package: "buildd")]),
        fuzzTarget("fuzz-agent-config", [.product(name: "BuilddAgent", package: "buildd")]),
    ]
)
