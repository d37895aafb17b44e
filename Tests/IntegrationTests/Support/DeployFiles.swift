// Reading the files under deploy/ for the deploy-artefact tests: structured files parsed by their consumers'
// parsers (PyYAML, tomllib, json; Fixtures/to_json.py), Cove configs judged by the real `cove check-config`,
// and Dockerfiles split into instructions.
import Foundation

/// The repository root, found from this source file's path.
func repositoryRoot() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
}

/// Parses repository files (paths relative to the root) with Fixtures/to_json.py. YAML files give the array of
/// their documents, TOML and JSON files their top-level object.
/// - Throws: `IntegrationError` with the parser's message when a file does not parse.
func parseDeployFiles(_ paths: [String]) async throws -> [String: Any] {
    let root = repositoryRoot()
    let script = fixturesDirectory().appendingPathComponent("to_json.py").path
    let r = try await runCommand("python3", [script] + paths.map { root.appendingPathComponent($0).path }, timeout: 60)
    guard r.succeeded, let all = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any] else {
        throw IntegrationError("to_json.py failed:\n\(r.summary)")
    }
    var out: [String: Any] = [:]
    for p in paths { out[p] = all[root.appendingPathComponent(p).path] }
    return out
}

/// What `cove check-config` makes of a configuration: the effective listen address and storage path.
struct CheckedConfig {
    var listenHost: String
    var listenPort: Int
    var storage: String
    var output: String
}

/// Runs the real `cove check-config --config FILE`.
/// - Throws: `IntegrationError` when it fails (its output attached) or prints no listen/storage line.
func checkConfig(file: String) async throws -> CheckedConfig {
    let r = try await runCommand(try coveBinary(), ["check-config", "--config", file], timeout: 60)
    guard r.succeeded else { throw IntegrationError("cove check-config rejected \(file):\n\(r.summary)") }
    var listen: String?
    var storage: String?
    for line in r.stdoutText.split(separator: "\n") {
        if line.hasPrefix("listen: ") { listen = String(line.dropFirst("listen: ".count)) }
        if line.hasPrefix("storage: ") { storage = String(line.dropFirst("storage: ".count)) }
    }
    guard let listen, let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), let storage else {
        throw IntegrationError("cove check-config printed no listen/storage:\n\(r.summary)")
    }
    return CheckedConfig(listenHost: String(listen[..<colon]), listenPort: port, storage: storage, output: r.stdoutText)
}

/// Writes `text` to a temp file and runs `checkConfig` on it (for configs embedded in other files).
func checkConfig(text: String) async throws -> CheckedConfig {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("cove-embedded-\(UUID().uuidString.prefix(8)).yml")
    try text.write(to: file, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    return try await checkConfig(file: file.path)
}

/// One Dockerfile instruction: the keyword (upper-cased) and its arguments, continuation lines joined.
struct DockerInstruction: Equatable {
    var keyword: String
    var arguments: String

    /// The arguments of an exec-form (JSON array) instruction, nil for the shell form.
    var execForm: [String]? {
        guard arguments.hasPrefix("["), let data = arguments.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String]
    }

    /// `--name=value` flags at the start of the arguments (`COPY --from=build`, `HEALTHCHECK --interval=30s`).
    var flags: [String: String] {
        var out: [String: String] = [:]
        for word in arguments.split(separator: " ") {
            guard word.hasPrefix("--"), let eq = word.firstIndex(of: "=") else { break }
            out[String(word[word.index(word.startIndex, offsetBy: 2)..<eq])] = String(word[word.index(after: eq)...])
        }
        return out
    }

    /// The arguments after the leading `--flag=value` words, split on spaces.
    var words: [String] {
        Array(arguments.split(separator: " ").map(String.init).drop { $0.hasPrefix("--") })
    }
}

/// A Dockerfile build stage: `FROM image [AS name]` and its instructions.
struct DockerStage {
    var image: String
    var name: String?
    var instructions: [DockerInstruction] = []

    func all(_ keyword: String) -> [DockerInstruction] { instructions.filter { $0.keyword == keyword } }
}

/// A parsed Dockerfile: global `ARG` defaults (before the first FROM) and the stages, `${ARG}` in FROM resolved.
struct Dockerfile {
    var globalArgs: [String: String] = [:]
    var stages: [DockerStage] = []

    init(_ text: String) {
        var logical: [String] = []
        var pending = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            // Comment lines are dropped, also inside a continued instruction (as BuildKit does).
            if line.hasPrefix("#") || (line.isEmpty && pending.isEmpty) { continue }
            if line.hasSuffix("\\") {
                pending += line.dropLast().trimmingCharacters(in: .whitespaces) + " "
            } else {
                logical.append(pending + line)
                pending = ""
            }
        }
        if !pending.isEmpty { logical.append(pending) }
        for line in logical where !line.isEmpty {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            let instruction = DockerInstruction(keyword: parts[0].uppercased(),
                                                arguments: parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")
            if instruction.keyword == "FROM" {
                let words = instruction.words
                var image = words.first ?? ""
                for (k, v) in globalArgs { image = image.replacingOccurrences(of: "${\(k)}", with: v) }
                let name = words.count >= 3 && words[1].uppercased() == "AS" ? words[2] : nil
                stages.append(DockerStage(image: image, name: name))
            } else if stages.isEmpty {
                if instruction.keyword == "ARG", let eq = instruction.arguments.firstIndex(of: "=") {
                    globalArgs[String(instruction.arguments[..<eq])] = String(instruction.arguments[instruction.arguments.index(after: eq)...])
                }
            } else {
                stages[stages.count - 1].instructions.append(instruction)
            }
        }
    }

    func stage(_ name: String) -> DockerStage? { stages.first { $0.name == name } }
}

/// Digs into parsed JSON: `dig(doc, "spec", "template", "spec")`; integers index arrays.
func dig(_ root: Any?, _ path: Any...) -> Any? {
    var cur = root
    for key in path {
        if let k = key as? String { cur = (cur as? [String: Any])?[k] }
        else if let i = key as? Int { cur = (cur as? [Any]).flatMap { i < $0.count ? $0[i] : nil } }
        else { return nil }
    }
    return cur
}
