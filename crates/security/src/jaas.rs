//! Kafka's `sasl.jaas.config` values: `LoginModuleClass flag key="value" ...;`.
//!
//! A broker reads its SASL credentials from `listener.name.NAME.MECHANISM.sasl.jaas.config`
//! or from a JAAS file ([`parse_file`], Kafka's `java.security.auth.login.config`). For PLAIN, every `user_NAME="password"`
//! option is a user the broker accepts (Kafka's `PlainServerCallbackHandler`); `username` and
//! `password` are the broker's own credentials when it is the client.

use std::collections::BTreeMap;

use crate::SecurityError;

/// One parsed JAAS login module entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasEntry {
    pub login_module: String,
    /// `required`, `requisite`, `sufficient` or `optional`.
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

impl JaasEntry {
    /// The users of a PLAIN server: each `user_NAME` option with its password.
    pub fn plain_users(&self) -> BTreeMap<String, String> {
        self.options.iter().filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v.clone()))).collect()
    }
}

/// Parses one entry (Kafka allows exactly one login module in `sasl.jaas.config`).
pub fn parse(value: &str) -> Result<JaasEntry, SecurityError> {
    let bad = |why: &str| SecurityError::Config(format!("sasl.jaas.config: {why}"));
    let mut tokens = Tokens { rest: value.trim() };
    let login_module = tokens.word().ok_or_else(|| bad("expected a login module class"))?;
    let flag = tokens.word().ok_or_else(|| bad("expected a control flag (required)"))?;
    if !matches!(flag.as_str(), "required" | "requisite" | "sufficient" | "optional") {
        return Err(bad(&format!("'{flag}' is not a control flag (required, requisite, sufficient, optional)")));
    }
    let mut options = BTreeMap::new();
    loop {
        tokens.skip_ws();
        if let Some(after) = tokens.rest.strip_prefix(';') {
            if !after.trim().is_empty() {
                return Err(bad("exactly one login module is allowed"));
            }
            break;
        }
        if tokens.rest.is_empty() {
            return Err(bad("the entry must end with ';'"));
        }
        let key = tokens.key().ok_or_else(|| bad("expected key=value"))?;
        tokens.skip_ws();
        tokens.rest = tokens.rest.strip_prefix('=').ok_or_else(|| bad(&format!("expected '=' after {key}")))?;
        tokens.skip_ws();
        let value = tokens.value().ok_or_else(|| bad(&format!("bad value of {key}")))?;
        options.insert(key, value);
    }
    Ok(JaasEntry { login_module, flag, options })
}

/// A JAAS file (`java.security.auth.login.config`): each section's name with the text of its
/// login module entries, each as a `sasl.jaas.config` value (`Module flag options;`).
///
/// ```text
/// sasl_ssl.KafkaServer {
///     org.apache.kafka.common.security.plain.PlainLoginModule required
///         username="admin" password="admin-secret" user_admin="admin-secret";
/// };
/// ```
///
/// `//` and `/* */` comments are skipped; quoted values may hold `;`, `{` and `}`.
pub fn parse_file(text: &str) -> Result<BTreeMap<String, Vec<String>>, SecurityError> {
    let bad = |why: String| SecurityError::Config(format!("JAAS file: {why}"));
    // Without comments, keeping quoted text as it is.
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                clean.push(c);
            }
            '\\' if quoted => {
                clean.push(c);
                if let Some(n) = chars.next() {
                    clean.push(n);
                }
            }
            '/' if !quoted && chars.peek() == Some(&'/') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        clean.push('\n');
                        break;
                    }
                }
            }
            '/' if !quoted && chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                clean.push(' ');
            }
            _ => clean.push(c),
        }
    }
    if quoted {
        return Err(bad("a quoted value is not closed".into()));
    }
    let mut sections = BTreeMap::new();
    let mut rest = clean.as_str();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let open =
            rest.find('{').ok_or_else(|| bad(format!("expected 'Name {{' at line {}", line_of(&clean, rest))))?;
        let name = rest[..open].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad(format!("bad section name at line {}", line_of(&clean, rest))));
        }
        rest = &rest[open + 1..];
        let mut entries = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after
                    .trim_start()
                    .strip_prefix(';')
                    .ok_or_else(|| bad(format!("section {name}: expected '}};'")))?;
                break;
            }
            // One entry: up to the first ';' outside quotes.
            let mut in_quotes = false;
            let mut escaped = false;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    if escaped {
                        escaped = false;
                        return false;
                    }
                    match c {
                        '\\' if in_quotes => escaped = true,
                        '"' => in_quotes = !in_quotes,
                        ';' | '}' if !in_quotes => return true,
                        _ => {}
                    }
                    false
                })
                .map(|(i, _)| i)
                .ok_or_else(|| bad(format!("section {name}: an entry does not end with ';'")))?;
            if rest[end..].starts_with('}') {
                return Err(bad(format!("section {name}: an entry does not end with ';'")));
            }
            let entry = format!("{};", rest[..end].trim());
            parse(&entry)?;
            entries.push(entry);
            rest = &rest[end + 1..];
        }
        if sections.insert(name.to_string(), entries).is_some() {
            return Err(bad(format!("section {name} appears twice")));
        }
    }
    Ok(sections)
}

/// The line of `text` (1-based) where its suffix `rest` starts, for messages (which never
/// quote the file: it holds passwords).
fn line_of(text: &str, rest: &str) -> usize {
    let offset = text.len().saturating_sub(rest.len());
    text[..offset].matches('\n').count() + 1
}

/// The entry a broker's listener uses for the login module `module` (its class's simple name,
/// e.g. `PlainLoginModule`) in a JAAS file's sections: `LISTENER.KafkaServer` (listener name in
/// lower case), else `KafkaServer`, as Kafka.
pub fn file_entry<'a>(sections: &'a BTreeMap<String, Vec<String>>, listener: &str, module: &str) -> Option<&'a str> {
    let named = format!("{}.KafkaServer", listener.to_ascii_lowercase());
    let section = sections.get(&named).or_else(|| sections.get("KafkaServer"))?;
    section
        .iter()
        .map(String::as_str)
        .find(|e| parse(e).is_ok_and(|p| p.login_module.rsplit('.').next().is_some_and(|simple| simple == module)))
}

struct Tokens<'a> {
    rest: &'a str,
}

impl Tokens<'_> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> Option<String> {
        self.skip_ws();
        let end = self.rest.find(|c: char| !f(c)).unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (w, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(w.to_string())
    }

    fn word(&mut self) -> Option<String> {
        self.take_while(|c| !c.is_whitespace() && c != ';' && c != '=')
    }

    fn key(&mut self) -> Option<String> {
        self.take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    /// A double-quoted string (`\"` and `\\` escaped) or a bare word.
    fn value(&mut self) -> Option<String> {
        let Some(quoted) = self.rest.strip_prefix('"') else { return self.word() };
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '"' => {
                    self.rest = &quoted[i + 1..];
                    return Some(out);
                }
                other => out.push(other),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_files_by_section_and_module() {
        let text = r#"
            // the SASL_SSL listener's own section
            sasl_ssl.KafkaServer {
                org.apache.kafka.common.security.plain.PlainLoginModule required
                    username="admin" password="a;b}c" /* a comment; with a ; */
                    user_admin="a;b}c" user_alice="alice-secret";
                org.apache.kafka.common.security.scram.ScramLoginModule required;
            };
            KafkaServer {
                org.apache.kafka.common.security.plain.PlainLoginModule required user_bob="bob-secret";
            };
        "#;
        let sections = parse_file(text).unwrap_or_else(|e| panic!("{e}"));
        let plain = file_entry(&sections, "SASL_SSL", "PlainLoginModule").unwrap_or_default();
        let users = parse(plain).map(|e| e.plain_users()).unwrap_or_default();
        assert_eq!(users.get("admin").map(String::as_str), Some("a;b}c"));
        assert_eq!(users.get("alice").map(String::as_str), Some("alice-secret"));
        assert!(file_entry(&sections, "SASL_SSL", "ScramLoginModule").is_some());
        // Another listener falls back to KafkaServer.
        let other = file_entry(&sections, "INTERNAL", "PlainLoginModule").unwrap_or_default();
        assert!(other.contains("user_bob"), "{other}");
        assert!(file_entry(&sections, "INTERNAL", "OAuthBearerLoginModule").is_none());
        for bad in ["KafkaServer { x required a=\"1\" };", "KafkaServer { }", "K { a required b=\"x ; };", "{ };"] {
            assert!(parse_file(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kafka_plain_example() {
        let e = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice \"q\" secret";"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.flag, "required");
        assert_eq!(e.options["username"], "admin");
        let users = e.plain_users();
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "alice \"q\" secret");
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in
            ["", "X", "X required", "X required a=\"b\"", "X maybe;", "X required a=\"b;", "X required; Y required;"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("X required;").is_ok());
    }
}
