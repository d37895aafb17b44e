import Foundation
import Logging
import OCI
import Synchronization
import Upstream

/// A small OCI image on a `FaultUpstream`: a config blob, layer blobs and a manifest naming them.
struct TestImage: Sendable {
    var manifest: [UInt8]
    var digest: Digest
    var config: [UInt8]
    var configDigest: Digest
    var layers: [[UInt8]]
    var layerDigests: [Digest]

    /// Every blob digest → bytes.
    var blobs: [(Digest, [UInt8])] { [(configDigest, config)] + Array(zip(layerDigests, layers)) }
}

extension FaultUpstream {
    /// Adds an image under `name:tag` (blobs, manifest by tag and by digest). Random layer bytes, so two calls
    /// give two different images.
    @discardableResult
    func addImage(_ name: String, tag: String, layers: Int = 1, layerSize: Int = 20_000, blobFault: Fault = .none) -> TestImage {
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"nonce":"\#(UUID().uuidString)"}"#.utf8)
        let configDigest = addBlob(config)
        var layerBytes: [[UInt8]] = []
        var layerDigests: [Digest] = []
        for _ in 0..<layers {
            let bytes = FaultUpstream.randomBytes(layerSize)
            layerBytes.append(bytes)
            layerDigests.append(addBlob(bytes, fault: blobFault))
        }
        let layerJSON = zip(layerDigests, layerBytes).map {
            #"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\#($0.0)","size":\#($0.1.count)}"#
        }.joined(separator: ",")
        let manifest = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(configDigest)","size":\#(config.count)},"layers":[\#(layerJSON)]}"#.utf8)
        let digest = addManifest(name, tag: tag, body: manifest)
        return TestImage(manifest: manifest, digest: digest, config: config, configDigest: configDigest, layers: layerBytes, layerDigests: layerDigests)
    }

    /// Adds the same image (identical bytes and digests) under `name:tag` here too.
    func add(_ image: TestImage, as name: String, tag: String, blobFault: Fault = .none) {
        addBlob(image.config)
        for layer in image.layers { addBlob(layer, fault: blobFault) }
        addManifest(name, tag: tag, body: image.manifest)
    }
}

/// What a client pulling `repository:tag` through Cove got.
struct PullResult: Sendable {
    var manifest: CurlResult
    /// Blob responses in manifest order (config first).
    var blobs: [CurlResult]
    /// The manifest answered 200, every blob answered 200, and each blob's bytes hash to its digest.
    var ok: Bool
}

/// Pulls like a registry client: GET the manifest by tag, then every blob it names by digest, checking each
/// blob against its digest. `repository` may carry a registry prefix (`ghcr.io/org/app`); `query` is appended
/// to every request (containerd's `ns=`).
func pull(_ cove: InProcessCove, _ repository: String, tag: String, query: String = "", maxTime: Double = 20) async throws -> PullResult {
    let suffix = query.isEmpty ? "" : "?" + query
    let m = try await curl("\(cove.url)/v2/\(repository)/manifests/\(tag)\(suffix)", maxTime: maxTime)
    guard m.status == 200,
          let json = try? JSONSerialization.jsonObject(with: Data(m.body)) as? [String: Any],
          let config = (json["config"] as? [String: Any])?["digest"] as? String else {
        return PullResult(manifest: m, blobs: [], ok: false)
    }
    let layers = ((json["layers"] as? [[String: Any]]) ?? []).compactMap { $0["digest"] as? String }
    var results: [CurlResult] = []
    var ok = true
    for digest in [config] + layers {
        let r = try await curl("\(cove.url)/v2/\(repository)/blobs/\(digest)\(suffix)", maxTime: maxTime)
        results.append(r)
        if r.status != 200 || r.exitCode != 0 || Digest.sha256(of: r.body).description != digest { ok = false }
    }
    return PullResult(manifest: m, blobs: results, ok: ok)
}

/// Collects log records of the loggers it makes (level, message, metadata rendered as strings).
final class LogCapture: Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
        /// Message and metadata in one string, for "never appears anywhere" checks.
        var text: String { message + " " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
    }

    let records = Mutex<[Record]>([])

    var all: [Record] { records.withLock { $0 } }

    func handler(label: String) -> any LogHandler { Handler(capture: self) }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var merged: [String: String] = [:]
            for (k, v) in metadata { merged[k] = "\(v)" }
            for (k, v) in event.metadata ?? [:] { merged[k] = "\(v)" }
            let record = Record(level: event.level, message: event.message.description, metadata: merged)
            capture.records.withLock { $0.append(record) }
            if ProcessInfo.processInfo.environment["COVE_TEST_LOG"] != nil {
                FileHandle.standardError.write(Data("[\(event.level)] \(record.text)\n".utf8))
            }
        }
    }
}

/// Seconds elapsed while running `body`.
func timed<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let start = ContinuousClock.now
    let value = try await body()
    let d = ContinuousClock.now - start
    return (value, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
}

extension CurlResult {
    var text: String { String(decoding: body, as: UTF8.self) }
    /// The first error code of a registry JSON error envelope.
    var errorCode: String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let errors = json["errors"] as? [[String: Any]] else { return nil }
        return errors.first?["code"] as? String
    }
}
