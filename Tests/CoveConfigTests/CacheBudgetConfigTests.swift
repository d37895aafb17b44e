import CoveConfig
import Mirror
import Testing

/// `cache.max_size` and `cache.min_free`.
@Suite("Cache budget configuration")
struct CacheBudgetConfigTests {
    @Test func defaultsAreNoMaxSizeAndFivePercentFree() throws {
        let c = try CoveConfiguration.parse(yaml: "")
        #expect(c.cache.maxSize == nil)
        #expect(c.cache.minFree == .fraction(0.05))
        #expect(c.cache.lowWatermark == 0.9)
        #expect(c.cache.minFree.bytes(ofTotal: 1000) == 50)
    }

    @Test(arguments: [
        ("cache:\n  max_size: 200GiB\n  min_free: 5%\n", Int64(200) << 30, FreeSpace.fraction(0.05)),
        ("cache:\n  max_size: 1.5TB\n  min_free: 20GiB\n", Int64(1_500_000_000_000), FreeSpace.bytes(20 << 30)),
        ("cache:\n  max_size: 0\n  min_free: 0\n", nil, FreeSpace.bytes(0)),
        ("cache:\n  max_size: none\n  min_free: 12.5%\n", nil, FreeSpace.fraction(0.125)),
    ] as [(String, Int64?, FreeSpace)])
    func parses(_ yaml: String, _ maxSize: Int64?, _ minFree: FreeSpace) throws {
        let c = try CoveConfiguration.parse(yaml: yaml)
        #expect(c.cache.maxSize == maxSize)
        #expect(c.cache.minFree == minFree)
    }

    @Test func evictionGraceIsADuration() throws {
        #expect(try CoveConfiguration.parse(yaml: "").cache.evictionGrace == 120)
        #expect(try CoveConfiguration.parse(yaml: "cache:\n  eviction_grace: 0s\n").cache.evictionGrace == 0)
        #expect(try CoveConfiguration.parse(yaml: "cache:\n  eviction_grace: 10m\n").cache.evictionGrace == 600)
        #expect(throws: ConfigError.self) { try CoveConfiguration.parse(yaml: "cache:\n  eviction_grace: soon\n") }
    }

    @Test func freeSpaceUnits() {
        #expect(Units.freeSpace("5%") == .fraction(0.05))
        #expect(Units.freeSpace(" 10GiB ") == .bytes(10 << 30))
        #expect(Units.freeSpace("%") == nil)
        #expect(Units.freeSpace("50%") == .fraction(0.5))
    }
}
