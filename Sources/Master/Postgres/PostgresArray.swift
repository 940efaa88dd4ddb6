/// A one-dimensional array parameter in PostgreSQL's text form (`{"a",NULL,"b"}`), for statements that
/// take a whole batch at once through `unnest($1::text[], ...)`. Every element is quoted, so any text is
/// carried as it is; nil is NULL.
public struct PostgresArray: PostgresBindable {
    public let postgresText: String

    public init(_ values: [(any PostgresBindable)?]) {
        var text = "{"
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            guard let value else {
                text += "NULL"
                continue
            }
            text += "\""
            for character in value.postgresText.unicodeScalars {
                if character == "\"" || character == "\\" { text += "\\" }
                text.unicodeScalars.append(character)
            }
            text += "\""
        }
        postgresText = text + "}"
    }
}
