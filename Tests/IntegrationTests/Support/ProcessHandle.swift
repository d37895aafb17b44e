// Child processes for the integration tests: long-lived servers (ProcessHandle) and bounded one-shot commands
// (runCommand). Output goes to files, never pipes, so a chatty child can never block on a full pipe.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct IntegrationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// With COVE_IT_TRACE=1, prints a timestamped line (fixture steps, commands) to stderr.
func trace(_ message: @autoclosure () -> String) {
    guard ProcessInfo.processInfo.environment["COVE_IT_TRACE"] == "1" else { return }
    let line = String(format: "[cove-it %.3f] ", Date().timeIntervalSince1970) + message() + "\n"
    FileHandle.standardError.write(line.data(using: .utf8)!)
}

/// Looks an executable up on PATH (like `which`).
func which(_ name: String) -> String? {
    if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for dir in path.split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

private final class SpawnBox: @unchecked Sendable {
    let process: Process
    var error: Error?
    init(_ process: Process) { self.process = process }
}

/// Starts `process` from a fresh thread whose signal mask is empty. Foundation's Process hands the calling
/// thread's signal mask to the child, and Swift concurrency / Dispatch worker threads block most signals
/// (SIGTERM included): a child spawned from a test would then ignore `terminate()`. `timeout` never restores
/// the mask either, so without this every stop would wait out the grace period and end in SIGKILL.
func runWithCleanSignalMask(_ process: Process) throws {
    let box = SpawnBox(process)
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        var empty = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, nil)
        do { try box.process.run() } catch { box.error = error }
        done.signal()
    }
    thread.start()
    done.wait()
    if let error = box.error { throw error }
}

private func resolveExecutable(_ name: String) throws -> String {
    guard let exe = which(name) else { throw IntegrationError("executable not found on PATH: \(name)") }
    return exe
}

/// A long-lived child process (registry, token issuer, cove) with stdout/stderr captured to files.
///
/// Every child runs under coreutils `timeout -k 5 <maxLifetime>`: even if the test runner crashes before it
/// can stop its children, none outlives `maxLifetime`. `timeout` forwards SIGTERM to the child, so `stop()`
/// (SIGTERM, then SIGKILL after a grace period) ends both. `deinit` stops the process too.
final class ProcessHandle: @unchecked Sendable {
    let name: String
    let command: [String]
    let stdoutURL: URL
    let stderrURL: URL
    private let process: Process
    private let lock = NSLock()
    private var stopped = false

    init(
        name: String,
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        logDirectory: URL,
        maxLifetime: Int = 600
    ) throws {
        self.name = name
        let exe = try resolveExecutable(executable)
        let timeoutExe = try resolveExecutable("timeout")
        command = [exe] + arguments
        try FileManager.default.createDirectory(at: logDirectory, withIntermediateDirectories: true)
        stdoutURL = logDirectory.appendingPathComponent("\(name).stdout.log")
        stderrURL = logDirectory.appendingPathComponent("\(name).stderr.log")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: timeoutExe)
        p.arguments = ["-k", "5", String(maxLifetime), exe] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment ?? [:] { env[k] = v }
        p.environment = env
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        p.standardError = try FileHandle(forWritingTo: stderrURL)
        try runWithCleanSignalMask(p)
        process = p
        trace("started \(name) pid \(p.processIdentifier): \(command.joined(separator: " "))")
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    /// The exit status once the process ended (through `timeout`, which passes on its child's status), else nil.
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// Sends `signal` (e.g. SIGTERM) without waiting: `timeout` forwards it to the child.
    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// SIGTERM, wait up to `grace` seconds, then SIGKILL. Idempotent.
    func stop(grace: Double = 5) {
        let started = Date()
        defer { trace(String(format: "stopped %@ in %.3fs", name, Date().timeIntervalSince(started))) }
        lock.lock()
        defer { lock.unlock() }
        if stopped { return }
        stopped = true
        guard process.isRunning else { return }
        process.terminate()  // SIGTERM to `timeout`, which forwards it to the child
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            // `timeout` made itself a process group leader: this kills it and the child together.
            kill(-process.processIdentifier, SIGKILL)
            let hard = Date().addingTimeInterval(2)
            while process.isRunning && Date() < hard { usleep(20_000) }
        }
    }

    /// SIGKILL at once, like a crash or the OOM killer (the child and its `timeout` wrapper, which leads the
    /// process group), then waits until it is gone. Idempotent.
    func crash() {
        lock.lock()
        defer { lock.unlock() }
        if stopped { return }
        stopped = true
        guard process.isRunning else { return }
        kill(-process.processIdentifier, SIGKILL)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        trace("killed \(name) with SIGKILL")
    }

    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// The last `lines` lines of stdout and stderr, for failure messages.
    func logTail(_ lines: Int = 40) -> String {
        func tail(_ s: String) -> String { s.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n") }
        return "--- \(name) (pid \(pid), \(isRunning ? "running" : "exited \(process.terminationStatus)")) stdout:\n\(tail(stdout))\n--- \(name) stderr:\n\(tail(stderr))"
    }

    deinit { stop(grace: 2) }
}

struct CommandResult: Sendable {
    var command: [String]
    var status: Int32
    var timedOut: Bool
    var stdout: Data
    var stderr: Data
    var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    var succeeded: Bool { status == 0 && !timedOut }
    var summary: String {
        "$ \(command.joined(separator: " "))\nexit \(status)\(timedOut ? " (timed out)" : "")\nstdout: \(stdoutText.suffix(3000))\nstderr: \(stderrText.suffix(3000))"
    }
}

/// Runs a command to completion, bounded by `timeout` seconds (SIGTERM, then SIGKILL), with its output
/// captured. Never throws for a non-zero exit: look at `status`.
func runCommand(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String]? = nil,
    timeout: Double = 120
) async throws -> CommandResult {
    let exe = try resolveExecutable(executable)
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cove-cmd-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: tmp) }
    let outURL = tmp.appendingPathComponent("stdout")
    let errURL = tmp.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment ?? [:] { env[k] = v }
    p.environment = env
    p.standardInput = FileHandle.nullDevice
    let outHandle = try FileHandle(forWritingTo: outURL)
    let errHandle = try FileHandle(forWritingTo: errURL)
    p.standardOutput = outHandle
    p.standardError = errHandle
    let started = Date()
    try runWithCleanSignalMask(p)
    let deadline = Date().addingTimeInterval(timeout)
    var timedOut = false
    while p.isRunning {
        if Date() >= deadline {
            timedOut = true
            p.terminate()
            let hard = Date().addingTimeInterval(3)
            while p.isRunning && Date() < hard { try? await Task.sleep(nanoseconds: 20_000_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            break
        }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    p.waitUntilExit()
    trace(String(format: "%.3fs exit %d: %@", Date().timeIntervalSince(started), p.terminationStatus,
                 ([exe] + arguments).joined(separator: " ").prefix(200).description))
    try? outHandle.close()
    try? errHandle.close()
    return CommandResult(
        command: [exe] + arguments,
        status: p.terminationStatus,
        timedOut: timedOut,
        stdout: (try? Data(contentsOf: outURL)) ?? Data(),
        stderr: (try? Data(contentsOf: errURL)) ?? Data()
    )
}
