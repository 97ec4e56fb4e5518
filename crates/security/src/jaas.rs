//! Kafka's `sasl.jaas.config` values: `LoginModuleClass flag key="value" ...;`.
//!
//! A broker reads its SASL credentials from `listener.name.NAME.MECHANISM.sasl.jaas.config`
//! (Kafka's only broker-side form besides a JAAS file). For PLAIN, every `user_NAME="password"`
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
