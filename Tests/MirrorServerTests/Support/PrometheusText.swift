import Foundation

/// A scrape of `/metrics` (Prometheus text format 0.0.4), read line by line.
struct PrometheusText {
    let text: String

    /// The sample of `name` whose labels include every pair of `labels` (the first such line), or nil.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard line.hasPrefix(name + "{") || line.hasPrefix(name + " ") else { continue }
            let series = line[..<(line.lastIndex(of: " ") ?? line.endIndex)]
            guard labels.allSatisfy({ series.contains("\($0.key)=\"\($0.value)\"") }) else { continue }
            return Double(line[line.index(after: line.lastIndex(of: " ")!)...])
        }
        return nil
    }

    /// Every sample line of `name` (for failure messages).
    func lines(_ name: String) -> String {
        text.split(separator: "\n").filter { $0.hasPrefix(name) }.joined(separator: "\n")
    }
}
