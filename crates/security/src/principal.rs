//! Who a connection is: Kafka's `KafkaPrincipal` and how it is derived from a TLS client
//! certificate (`ssl.principal.mapping.rules`, Kafka's `SslPrincipalMapper`).

use std::fmt;

use regex::Regex;

use crate::SecurityError;

/// A principal as Kafka writes it: `TYPE:NAME`, e.g. `User:alice`. Connections that did not
/// authenticate (PLAINTEXT, or TLS without a client certificate) are `User:ANONYMOUS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPrincipal {
    /// `User` for every principal Strata derives (Kafka's `KafkaPrincipal.USER_TYPE`).
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    /// `User:NAME`.
    pub fn user(name: impl Into<String>) -> Self {
        Self { principal_type: "User".to_string(), name: name.into() }
    }

    /// `User:ANONYMOUS`, Kafka's principal of an unauthenticated connection.
    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// Parses `TYPE:NAME` (the name may hold further colons, as in Kafka).
    pub fn parse(s: &str) -> Result<Self, SecurityError> {
        match s.split_once(':') {
            Some((t, n)) if !t.is_empty() => Ok(Self { principal_type: t.to_string(), name: n.to_string() }),
            _ => Err(SecurityError::Config(format!("principal '{s}' is not TYPE:NAME (e.g. User:alice)"))),
        }
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// The subject of a DER certificate as RFC 2253 text, the form Java's
/// `X500Principal.getName()` gives and Kafka's mapping rules match: the relative names last to
/// first, `,` between them, `+` inside a multi-valued one, known attribute types by keyword
/// (CN, C, L, ST, O, OU, STREET, DC, UID), others as dotted OIDs, special characters escaped.
pub fn subject_rfc2253(cert_der: &[u8]) -> Result<String, SecurityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| SecurityError::Tls(format!("cannot parse the client certificate: {e}")))?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in cert.subject().iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let oid = attr.attr_type().to_id_string();
                let keyword = match oid.as_str() {
                    "2.5.4.3" => Some("CN"),
                    "2.5.4.6" => Some("C"),
                    "2.5.4.7" => Some("L"),
                    "2.5.4.8" => Some("ST"),
                    "2.5.4.10" => Some("O"),
                    "2.5.4.11" => Some("OU"),
                    "2.5.4.9" => Some("STREET"),
                    "0.9.2342.19200300.100.1.25" => Some("DC"),
                    "0.9.2342.19200300.100.1.1" => Some("UID"),
                    _ => None,
                };
                // As Java's `X500Principal.getName()`: a keyword's string value as text, anything
                // else (an attribute without a keyword, or a value that is not a string) as '#'
                // and the hex of its whole DER encoding, so that its text cannot pose as another
                // attribute to the mapping rules.
                let text = keyword.and_then(|_| attr.as_str().ok());
                let value = match text {
                    Some(s) => escape_rfc2253(s),
                    None => {
                        use x509_parser::asn1_rs::ToDer;
                        let der = attr.attr_value().to_der_vec().unwrap_or_default();
                        format!("#{}", hex(&der))
                    }
                };
                let key = keyword.map_or(oid, str::to_string);
                format!("{key}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 2253 section 2.4 escaping of an attribute value.
fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One rule of `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
enum Rule {
    /// The distinguished name as it is.
    Default,
    /// `RULE:pattern/replacement/[LU]`: applies when the pattern matches the whole name.
    Replace { pattern: Regex, replacement: String, case: Case },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// Kafka's `ssl.principal.mapping.rules`: a comma-separated list of `DEFAULT` and
/// `RULE:pattern/replacement/[L|U]`, tried in order on the certificate's RFC 2253 subject; the
/// first rule whose pattern matches the whole subject gives the principal's name. A subject
/// no rule matches is refused (Kafka's `NoMatchingRule`).
#[derive(Debug, Clone)]
pub struct PrincipalMappingRules {
    rules: Vec<Rule>,
}

impl Default for PrincipalMappingRules {
    fn default() -> Self {
        Self { rules: vec![Rule::Default] }
    }
}

impl PrincipalMappingRules {
    /// Parses the config value. The pattern and replacement end at an unescaped `/` (so a
    /// pattern may hold commas, as Kafka's parser allows).
    pub fn parse(value: &str) -> Result<Self, SecurityError> {
        let bad = |why: &str| SecurityError::Config(format!("ssl.principal.mapping.rules '{value}': {why}"));
        let mut rules = Vec::new();
        let mut rest = value.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after).ok_or_else(|| bad("a RULE needs pattern/replacement/"))?;
                let (replacement, after) =
                    until_slash(after).ok_or_else(|| bad("a RULE needs pattern/replacement/"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| bad(&format!("bad pattern '{pattern}': {e}")))?;
                rules.push(Rule::Replace { pattern, replacement, case });
                rest = after;
            } else {
                return Err(bad("each rule is DEFAULT or RULE:pattern/replacement/[LU]"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(bad("rules are separated by commas")),
            }
        }
        if rules.is_empty() {
            return Err(bad("no rule"));
        }
        Ok(Self { rules })
    }

    /// The principal name for subject `dn`, or `None` when no rule matches.
    pub fn apply(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Replace { pattern, replacement, case } => {
                    let Some(caps) = pattern.captures(dn) else { continue };
                    let name = java_replacement(&caps, replacement);
                    return Some(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        None
    }
}

/// Expands `replacement` as Java's `Matcher.appendReplacement` after Kafka's
/// `escapeLiteralBackReferences`: `$N` takes the longest run of digits that names an existing
/// group (`$12` with two groups is group 1 then "2"), a `$N` naming no group stays literal, a
/// group that did not take part is empty, and a backslash takes the next character as it is.
fn java_replacement(caps: &regex::Captures<'_>, replacement: &str) -> String {
    let groups = caps.len() - 1;
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let first = chars.peek().and_then(|d| d.to_digit(10)).unwrap_or(0) as usize;
                if first > groups {
                    out.push('$');
                    continue;
                }
                chars.next();
                let mut n = first;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    let longer = n * 10 + d as usize;
                    if longer > groups {
                        break;
                    }
                    n = longer;
                    chars.next();
                }
                out.push_str(caps.get(n).map_or("", |m| m.as_str()));
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits `s` at its first unescaped `/`: the part before (with `\/` unescaped) and after.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            other => out.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keeps_the_name() {
        let r = PrincipalMappingRules::default();
        assert_eq!(r.apply("CN=alice,OU=eng,O=Strata").as_deref(), Some("CN=alice,OU=eng,O=Strata"));
    }

    #[test]
    fn kafka_rule_examples() {
        // From Kafka's documentation of ssl.principal.mapping.rules.
        let r = PrincipalMappingRules::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L,DEFAULT",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.apply("CN=serviceuser,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").as_deref(),
            Some("serviceuser")
        );
        assert_eq!(
            r.apply("CN=adminUser,OU=Admin,O=Unknown,L=Unknown,ST=Unknown,C=Unknown").as_deref(),
            Some("adminuser@admin")
        );
        assert_eq!(r.apply("CN=Bob,O=X").as_deref(), Some("bob"));
        assert_eq!(r.apply("OU=none").as_deref(), Some("OU=none"));
        let upper = PrincipalMappingRules::parse("RULE:^CN=([a-z]+),.*$/$1/U").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(upper.apply("CN=alice,O=x").as_deref(), Some("ALICE"));
        assert_eq!(upper.apply("O=x"), None, "no rule matches: refused");
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in ["", "RULE:abc", "NOPE", "RULE:^(.*$/x/", "DEFAULT DEFAULT"] {
            assert!(PrincipalMappingRules::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn back_references_follow_java() {
        let r =
            PrincipalMappingRules::parse(r"RULE:^CN=(\w+),OU=(\w+)$/$1_$2 $12 $3/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.apply("CN=bob,OU=eng").as_deref(), Some("bob_eng bob2 $3"));
    }

    #[test]
    fn escaped_slash_in_a_pattern() {
        let r = PrincipalMappingRules::parse(r"RULE:^CN=a\/b(.*)$/x$1/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.apply("CN=a/b,O=1").as_deref(), Some("x,O=1"));
    }

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape_rfc2253("a,b"), r"a\,b");
        assert_eq!(escape_rfc2253(" x "), r"\ x\ ");
        assert_eq!(escape_rfc2253("#1"), r"\#1");
    }

    #[test]
    fn principals_parse_and_print() {
        let p = KafkaPrincipal::parse("User:CN=a:b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.name, "CN=a:b");
        assert_eq!(p.to_string(), "User:CN=a:b");
        assert!(KafkaPrincipal::parse("alice").is_err());
    }
}
