import Foundation
import Mirror
import Upstream

/// `GET /`: a small HTML page for people. No script, no external resource, inline CSS; refreshes itself every
/// 10 s. Everything that comes from requests or upstreams (repository names, endpoint URLs, errors) is
/// HTML-escaped.
public enum StatusPage {
    /// Renders the page for `status`; `now` and `startedAt` give the uptime.
    public static func render(_ status: MirrorStatus, startedAt: Date, now: Date = Date()) -> String {
        var html = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Cove status</title>
        <style>
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f7fa;color:#1d2733}
        header{background:#12344d;color:#fff;padding:14px 28px;display:flex;align-items:baseline;gap:16px}
        header h1{font-size:20px;margin:0}header span{opacity:.8}
        main{padding:18px 28px;max-width:1200px}
        .cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:14px;margin-bottom:18px}
        .card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:12px 16px}
        .card h2{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6b7c;margin:0 0 6px}
        .big{font-size:24px;font-weight:600}.sub{color:#5b6b7c;font-size:12px}
        .bar{height:8px;background:#e6ebf0;border-radius:4px;overflow:hidden;margin-top:6px}
        .bar i{display:block;height:100%;background:#2a7ab0}
        section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:12px 16px;margin-bottom:16px}
        section h2{font-size:15px;margin:0 0 8px}
        table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eef1f4;vertical-align:top}
        th{font-size:12px;color:#5b6b7c;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
        code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
        .ok{color:#1a7f37;font-weight:600}.bad{color:#b42318;font-weight:600}.muted{color:#8795a1}
        </style></head><body>
        <header><h1>Cove</h1><span>pull-through registry cache</span>
        """
        html += "<span>up \(duration(now.timeIntervalSince(startedAt)))\(status.offline ? " · offline" : "")</span></header><main>\n"

        // Cards: cache size, disk, hit ratio, fills.
        html += "<div class=\"cards\">"
        var cache = "<div class=\"card\"><h2>Cache size</h2><div class=\"big\">\(bytes(status.cacheBytes))</div>"
        if let max = status.maxSize, max > 0 {
            let pct = min(100, Double(status.cacheBytes) * 100 / Double(max))
            cache += "<div class=\"sub\">of \(bytes(max)) limit (\(percent(pct)))</div><div class=\"bar\"><i style=\"width:\(Int(pct))%\"></i></div>"
        } else {
            cache += "<div class=\"sub\">no size limit (max_size)</div>"
        }
        html += cache + "</div>"
        html += "<div class=\"card\"><h2>Free disk</h2><div class=\"big\">\(status.freeBytes.map(bytes) ?? "unknown")</div>"
        html += "<div class=\"sub\">keeps at least \(status.minFreeBytes.map(bytes) ?? "-") free (min_free)</div></div>"
        let total = status.hits + status.misses
        html += "<div class=\"card\"><h2>Hit ratio</h2><div class=\"big\">\(total == 0 ? "–" : percent(Double(status.hits) * 100 / Double(total)))</div>"
        html += "<div class=\"sub\">\(status.hits) hits, \(status.misses) misses since start</div></div>"
        html += "<div class=\"card\"><h2>Fills in progress</h2><div class=\"big\">\(status.fills.count)</div>"
        html += "<div class=\"sub\">blob downloads from upstreams now</div></div></div>\n"

        // Upstreams.
        html += "<section><h2>Upstream registries</h2><table><tr><th>registry</th><th>endpoint</th><th>health</th><th>rate limit remaining</th></tr>"
        for registry in status.registries {
            for (i, e) in registry.endpoints.enumerated() {
                html += "<tr><td>\(i == 0 ? escape(registry.name) : "")</td><td><code>\(escape(e.url))</code></td><td>"
                if let cooling = e.coolingFor {
                    let until = now.addingTimeInterval(cooling)
                    html += "<span class=\"bad\">cooled down</span> until \(clock(until)) (\(duration(cooling)))"
                    if let error = e.lastError { html += "<br><span class=\"sub\">\(escape(String(error.prefix(300))))</span>" }
                } else if let error = e.lastError {
                    html += "<span class=\"ok\">ok</span><br><span class=\"sub\">last error: \(escape(String(error.prefix(300))))</span>"
                } else {
                    html += "<span class=\"ok\">ok</span>"
                }
                html += "</td><td>"
                if let limit = e.rateLimit, let remaining = limit.remaining {
                    html += "\(remaining)" + (limit.limit.map { " of \($0)" } ?? "") + (limit.window.map { " per \(duration(Double($0)))" } ?? "")
                } else {
                    html += "<span class=\"muted\">not reported</span>"
                }
                html += "</td></tr>"
            }
        }
        html += "</table></section>\n"

        // Fills.
        html += "<section><h2>Fills in progress</h2>"
        if status.fills.isEmpty {
            html += "<p class=\"muted\">No blob is being downloaded.</p>"
        } else {
            html += "<table><tr><th>digest</th><th>progress</th><th></th></tr>"
            for fill in status.fills {
                html += "<tr><td><code>\(escape(fill.digest))</code></td>"
                if let size = fill.size, size > 0 {
                    let pct = min(100, Double(fill.bytes) * 100 / Double(size))
                    html += "<td class=\"n\">\(bytes(fill.bytes)) / \(bytes(size)) (\(percent(pct)))</td>"
                    html += "<td style=\"width:30%\"><div class=\"bar\"><i style=\"width:\(Int(pct))%\"></i></div></td>"
                } else {
                    html += "<td class=\"n\">\(bytes(fill.bytes)) / size unknown</td><td></td>"
                }
                html += "</tr>"
            }
            html += "</table>"
        }
        html += "</section>\n"

        // Top repositories.
        html += "<section><h2>Most pulled repositories <span class=\"sub\">(manifest requests since start)</span></h2>"
        if status.topRepositories.isEmpty {
            html += "<p class=\"muted\">Nothing pulled yet.</p>"
        } else {
            html += "<table><tr><th>repository</th><th style=\"text-align:right\">pulls</th></tr>"
            for top in status.topRepositories {
                html += "<tr><td><code>\(escape(top.repository))</code></td><td class=\"n\">\(top.pulls)</td></tr>"
            }
            html += "</table>"
        }
        html += "</section>\n"
        html += "<p class=\"sub\">Prometheus metrics at <a href=\"/metrics\">/metrics</a>, readiness at <a href=\"/readyz\">/readyz</a>. Page as of \(clock(now)) UTC.</p>"
        html += "</main></body></html>\n"
        return html
    }

    /// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Bytes in binary units with one decimal: `1.5 GiB`.
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(n) B" : String(format: "%.1f", value) + " " + units[unit]
    }

    static func percent(_ p: Double) -> String { String(format: "%.1f%%", p) }

    /// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s >= 86_400 { return "\(s / 86_400)d \(s % 86_400 / 3600)h" }
        if s >= 3600 { return "\(s / 3600)h \(s % 3600 / 60)m" }
        if s >= 60 { return "\(s / 60)m \(s % 60)s" }
        return "\(s)s"
    }

    /// `HH:mm:ss` in UTC.
    static func clock(_ date: Date) -> String {
        let t = Int(date.timeIntervalSince1970) % 86_400
        return String(format: "%02d:%02d:%02d", t / 3600, t % 3600 / 60, t % 60)
    }
}
