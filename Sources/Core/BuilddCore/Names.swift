/// The one grammar of the farm's names: builders, processors, distributions, series, build types and
/// resources, `[a-z0-9][a-z0-9.+_-]{0,63}` (they end up in routing keys, queue names and file paths).
public enum Names {
    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        for (index, byte) in bytes.enumerated() {
            let alnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7a)
            if index == 0 { guard alnum else { return false }; continue }
            guard alnum || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
                || byte == UInt8(ascii: "_") else { return false }
        }
        return true
    }
}
