import BuilddShared
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Debian's Chromium, headless, driven through the Chrome DevTools Protocol over a WebSocket: it loads a
/// page, runs its scripts, and answers what the page shows (`document.body.innerText`) as a person sees it.
final class HeadlessBrowser: TestResource, @unchecked Sendable {
    // Used by one test at a time; `nextID` is touched only inside `command`, which runs one call at a time.
    let process: Process
    let profile: String
    let port: Int
    private var socket: Int32 = -1
    private var nextID = 0

    static var executable: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Starts Chromium and opens `url` in a tab.
    init(url: String) async throws {
        guard let executable = Self.executable else {
            throw SimpleHTTPClient.Failure(description: "Chromium is not installed: `deploy/localfarm test` installs it")
        }
        profile = NSTemporaryDirectory() + "chromium-\(randomHexToken(bytes: 6))"
        try FileManager.default.createDirectory(atPath: profile, withIntermediateDirectories: true)
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                             "--user-data-dir=\(profile)", "--window-size=1280,900", "about:blank"]
        FileManager.default.createFile(atPath: profile + "/chromium.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: profile + "/chromium.log"))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // Chromium writes the port it chose to DevToolsActivePort.
        var found: Int?
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while found == nil, clock.now < deadline, process.isRunning {
            if let text = try? String(contentsOfFile: profile + "/DevToolsActivePort", encoding: .utf8),
               let first = text.split(separator: "\n").first, let number = Int(first) {
                found = number
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        guard let found else {
            let log = (try? String(contentsOfFile: profile + "/chromium.log", encoding: .utf8)) ?? ""
            process.terminate()
            throw SimpleHTTPClient.Failure(description: "Chromium did not start:\n\(log.suffix(2000))")
        }
        port = found
        let page = try await runBlocking { [port] in
            try SimpleHTTPClient.send(method: "PUT", url: "http://127.0.0.1:\(port)/json/new?\(url)", timeoutSeconds: 10)
        }
        guard let target = try JSONSerialization.jsonObject(with: Data(page.body)) as? [String: Any],
              let debugger = target["webSocketDebuggerUrl"] as? String, let start = debugger.range(of: "/devtools/")
        else { throw SimpleHTTPClient.Failure(description: "no page target: \(String(decoding: page.body, as: UTF8.self))") }
        let path = String(debugger[start.lowerBound...])
        socket = try await runBlocking { [port] in try Self.openWebSocket(port: port, path: path) }
    }

    func close() async {
        if socket >= 0 { Glibc.close(socket) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: profile)
    }

    /// Runs `expression` in the page and returns its value (JSON-compatible).
    func evaluate(_ expression: String) async throws -> Any? {
        let answer = try await command("Runtime.evaluate", ["expression": expression, "returnByValue": true, "awaitPromise": true])
        return ((answer["result"] as? [String: Any])?["result"] as? [String: Any])?["value"]
    }

    /// The page's visible text.
    func text() async throws -> String { (try await evaluate("document.body.innerText") as? String) ?? "" }

    /// Waits until the visible text contains every string; returns the last text seen.
    func waitForText(_ needles: [String], timeout: Duration = .seconds(20)) async throws -> (Bool, String) {
        var last = ""
        let ok = try await eventually(timeout: timeout, interval: .milliseconds(250)) {
            last = try await self.text()
            return needles.allSatisfy { last.contains($0) }
        }
        return (ok, last)
    }

    /// Loads `url` in this tab and waits until it has loaded.
    func navigate(_ url: String) async throws {
        _ = try await evaluate("window.__loaded = false")
        _ = try await command("Page.navigate", ["url": url])
        let loaded = try await eventually(timeout: .seconds(20), interval: .milliseconds(100)) {
            (try? await self.evaluate("document.readyState === 'complete' && window.__loaded !== false")) as? Bool == true
        }
        if !loaded { throw SimpleHTTPClient.Failure(description: "\(url) did not load") }
    }

    /// Draws the page as a device `width` CSS pixels wide would (a phone: 390).
    func setViewport(width: Int, height: Int, mobile: Bool) async throws {
        _ = try await command("Emulation.setDeviceMetricsOverride",
                              ["width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile])
    }

    /// Turns the page's scripts off (or on again), as for a reader without JavaScript; it holds for the
    /// next page loaded.
    func setJavaScript(enabled: Bool) async throws {
        _ = try await command("Emulation.setScriptExecutionDisabled", ["value": !enabled])
    }

    /// Presses a key as a keyboard would (`Tab`, `Enter`), with `shift` held when asked.
    func press(_ key: String, shift: Bool = false) async throws {
        let codes = ["Tab": 9, "Enter": 13, "Escape": 27]
        for type in ["keyDown", "keyUp"] {
            var parameters: [String: Any] = ["type": type, "key": key, "code": key,
                                             "windowsVirtualKeyCode": codes[key] ?? 0, "modifiers": shift ? 8 : 0]
            if key == "Enter" && type == "keyDown" { parameters["text"] = "\r" }
            _ = try await command("Input.dispatchKeyEvent", parameters)
        }
    }

    /// Runs axe-core (`BUILDD_AXE_JS`, which `deploy/localfarm test` fetches) on the page and returns its
    /// violations, one line each: rule, impact, and the first elements it names.
    func accessibilityViolations() async throws -> [String] {
        guard let path = ProcessInfo.processInfo.environment["BUILDD_AXE_JS"],
              let script = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SimpleHTTPClient.Failure(description: "BUILDD_AXE_JS names no axe-core script: `deploy/localfarm test` fetches it")
        }
        _ = try await evaluate(script + "\n;true")
        let answer = try await evaluate("""
            axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v =>
              v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')))
            """)
        guard let lines = answer as? [String] else {
            throw SimpleHTTPClient.Failure(description: "axe-core gave no result: \(String(describing: answer))")
        }
        return lines
    }

    /// A PNG of the page as it is drawn.
    func screenshot() async throws -> Data {
        let answer = try await command("Page.captureScreenshot", ["format": "png"])
        guard let text = (answer["result"] as? [String: Any])?["data"] as? String, let data = Data(base64Encoded: text) else {
            throw SimpleHTTPClient.Failure(description: "no screenshot")
        }
        return data
    }

    /// Sends one DevTools command and waits for its answer (events in between are skipped).
    private func command(_ method: String, _ parameters: [String: Any]) async throws -> [String: Any] {
        nextID += 1
        let id = nextID
        let message = try JSONSerialization.data(withJSONObject: ["id": id, "method": method, "params": parameters])
        let socket = self.socket
        let bytes = Array(message)
        let answer = try await runBlocking { () -> [UInt8] in
            try Self.sendFrame(socket, bytes)
            while true {
                let frame = try Self.readFrame(socket)
                if let object = try? JSONSerialization.jsonObject(with: Data(frame)) as? [String: Any],
                   object["id"] as? Int == id { return frame }
            }
        }
        let object = (try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any]) ?? [:]
        if let error = object["error"] { throw SimpleHTTPClient.Failure(description: "\(method): \(error)") }
        return object
    }

    // MARK: A minimal WebSocket client (RFC 6455): text frames, client-masked, no extensions.

    private static func openWebSocket(port: Int, path: String) throws -> Int32 {
        // The connection's send and receive time out after 30 s (SO_RCVTIMEO), so a browser that stops
        // answering fails the command instead of hanging the test.
        let descriptor = try SimpleHTTPClient.connect(host: "127.0.0.1", port: port, timeoutSeconds: 30)
        let key = SimpleHTTPClient.base64((0..<16).map { _ in UInt8.random(in: 0...255) })
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try SimpleHTTPClient.sendAll(descriptor, Array(request.utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            head.append(try readExactly(descriptor, 1)[0])
        }
        guard String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 101") else {
            Glibc.close(descriptor)
            throw SimpleHTTPClient.Failure(description: "WebSocket upgrade refused: \(String(decoding: head, as: UTF8.self))")
        }
        return descriptor
    }

    private static func sendFrame(_ descriptor: Int32, _ payload: [UInt8]) throws {
        var frame: [UInt8] = [0x81]  // FIN, text
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count < 65_536 {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8(truncatingIfNeeded: payload.count >> shift)) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try SimpleHTTPClient.sendAll(descriptor, frame)
    }

    /// Reads one whole message (joining continuation frames); answers pings.
    private static func readFrame(_ descriptor: Int32) throws -> [UInt8] {
        var message: [UInt8] = []
        while true {
            let header = try readExactly(descriptor, 2)
            let opcode = header[0] & 0x0F
            var length = Int(header[1] & 0x7F)
            if length == 126 {
                let extended = try readExactly(descriptor, 2)
                length = Int(extended[0]) << 8 | Int(extended[1])
            } else if length == 127 {
                length = try readExactly(descriptor, 8).reduce(0) { $0 << 8 | Int($1) }
            }
            let payload = try readExactly(descriptor, length)  // the server does not mask
            switch opcode {
            case 0x8: throw SimpleHTTPClient.Failure(description: "the browser closed the DevTools connection")
            case 0x9: continue  // ping: Chromium does not need the pong for short sessions
            default: message += payload
            }
            if header[0] & 0x80 != 0 { return message }
        }
    }

    private static func readExactly(_ descriptor: Int32, _ count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, count - filled) }
            if got <= 0 { throw SimpleHTTPClient.Failure(description: "DevTools connection ended") }
            filled += got
        }
        return buffer
    }
}
