/// Build command lines with placeholders, e.g. `sbuild --dist={series} --arch={arch} {dsc}`.
///
/// Each `{name}` is replaced by the value, shell-quoted, so a value can never inject shell syntax;
/// `{{` and `}}` stand for literal braces. The same values are also in the environment as
/// `BUILDD_<NAME>` (upper case).
public enum CommandTemplate {
    public static let placeholders = ["build_id", "attempt", "build_type", "source", "version", "distribution",
                                      "series", "arch", "processor", "results", "dsc", "chroot", "build_user"]

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Quotes a value for `/bin/sh`.
    public static func shellQuote(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Fills the template. Throws on an unknown placeholder or an unclosed brace.
    public static func render(_ template: String, values: [String: String]) throws -> String {
        var output = ""
        var index = template.startIndex
        while index < template.endIndex {
            let character = template[index]
            let next = template.index(after: index)
            if character == "{", next < template.endIndex, template[next] == "{" {
                output.append("{")
                index = template.index(after: next)
            } else if character == "}", next < template.endIndex, template[next] == "}" {
                output.append("}")
                index = template.index(after: next)
            } else if character == "{" {
                guard let close = template[next...].firstIndex(of: "}") else {
                    throw Invalid(description: "unclosed { in command")
                }
                let name = String(template[next..<close])
                guard placeholders.contains(name) else {
                    throw Invalid(description: "unknown placeholder {\(name)} (known: \(placeholders.joined(separator: ", ")))")
                }
                output += shellQuote(values[name] ?? "")
                index = template.index(after: close)
            } else {
                output.append(character)
                index = next
            }
        }
        return output
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
