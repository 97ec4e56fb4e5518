//! Command-line flags and the TOML config file, merged into a `BrokerConfig`.
//! Precedence: `--set` over the dedicated flags over the file over defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use strata_broker::BrokerConfig;

#[derive(clap::Args, Debug, Default)]
pub struct ServerArgs {
    /// TOML config file with Kafka config names (see config/strata.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directories (log.dirs): one, or several separated by commas. Default ./data.
    #[arg(long, value_name = "DIR[,DIR...]")]
    pub data_dir: Option<String>,
    /// Address to listen on (listeners), HOST:PORT or PLAINTEXT://HOST:PORT. Default 127.0.0.1:9092.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address clients are told to connect to (advertised.listeners); required when listening on 0.0.0.0.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// This node's id (node.id). Default 1.
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Sets any config key, e.g. --set log.segment.bytes=1048576. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Reads config keys from environment variables that start with PREFIX, as Apache Kafka's
    /// container image does with `KAFKA_`: the rest of the name, lower-cased, with `___` for
    /// `-`, `__` for `_` and `_` for `.` (KAFKA_NODE_ID=1 is node.id=1). They go over the file
    /// and under the flags. With it, a CLUSTER_ID variable formats an unformatted node on start.
    #[arg(long, value_name = "PREFIX")]
    pub env_prefix: Option<String>,
}

/// Reads the file (if any), applies flags, and validates every key.
pub fn load(args: &ServerArgs) -> anyhow::Result<BrokerConfig> {
    let mut map = BTreeMap::new();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "properties") {
            // Kafka's own format (server.properties): `key=value` lines.
            parse_properties(&text, &mut map).with_context(|| format!("in config file {}", path.display()))?;
        } else {
            let table: toml::Table =
                text.parse().with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            flatten("", &toml::Value::Table(table), &mut map)
                .with_context(|| format!("in config file {}", path.display()))?;
        }
    }
    let mut from_env = std::collections::BTreeSet::new();
    if let Some(prefix) = args.env_prefix.as_deref() {
        for (k, v) in env_settings(prefix, std::env::vars()) {
            from_env.insert(k.clone());
            map.insert(k, v);
        }
    }
    if let Some(d) = &args.data_dir {
        map.insert("log.dirs".into(), d.clone());
    }
    if let Some(l) = &args.listen {
        map.insert("listeners".into(), listener(l));
    }
    if let Some(a) = &args.advertise {
        map.insert("advertised.listeners".into(), listener(a));
    }
    if let Some(n) = args.node_id {
        map.insert("node.id".into(), n.to_string());
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--set takes NAME=VALUE, got '{kv}'");
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    // A variable that merely shares the prefix (Kubernetes sets KAFKA_PORT, KAFKA_SERVICE_HOST,
    // ... for a Service named kafka) is not a config key: skipped with a warning, as Kafka's
    // image passes it on and Kafka warns about unknown keys. Keys from the file and flags stay
    // strict.
    loop {
        match BrokerConfig::from_map(map.clone()) {
            Err(strata_broker::config::ConfigError::UnknownKey(key)) if from_env.remove(&key) => {
                eprintln!("strata: ignoring environment variable for unknown config key '{key}'");
                map.remove(&key);
            }
            other => return Ok(other?),
        }
    }
}

/// The config keys named by environment variables starting with `prefix` (Apache Kafka's image
/// rules: strip the prefix, lower-case, `___` → `-`, `__` → `_`, `_` → `.`). The launcher's own
/// variables of Kafka's images (every `*_OPTS`, `KAFKA_LOG4J_*`, `KAFKA_JMX_*`,
/// `KAFKA_TOOLS_*`, `KAFKA_GC_*`, `KAFKA_VERSION`, `KAFKA_HOME`) are not config keys and are
/// left out.
pub fn env_settings(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(prefix).filter(|r| !r.is_empty()) else { continue };
        // The launcher's own settings in Kafka's images, not broker configs.
        let launcher = ["LOG4J_", "JMX_", "TOOLS_", "GC_"].iter().any(|p| rest.starts_with(p));
        if launcher || rest.ends_with("_OPTS") || rest == "VERSION" || rest == "HOME" {
            continue;
        }
        let key =
            rest.to_ascii_lowercase().replace("___", "-").replace("__", "\0").replace('_', ".").replace('\0', "_");
        out.insert(key, value);
    }
    out
}

/// A listener flag: `HOST:PORT` is a PLAINTEXT listener; one that names its listener
/// (`NAME://HOST:PORT`) is passed on as it is, to be checked like the config key.
fn listener(flag: &str) -> String {
    if flag.contains("://") {
        flag.to_string()
    } else {
        format!("PLAINTEXT://{flag}")
    }
}

/// Turns nested TOML tables back into Kafka's dotted names, so that both
/// `"log.segment.bytes" = 1` and `[log.segment] bytes = 1` work.
/// A Java properties file as Kafka's `server.properties` uses it: `key=value` (or `key: value`,
/// `key value`) per line, `#` and `!` comments, surrounding blanks trimmed. Line continuations
/// and escapes are not supported; a line that needs them is refused.
fn parse_properties(text: &str, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        if line.ends_with('\\') {
            bail!("line {}: continued lines are not supported", n + 1);
        }
        let split = line.find(['=', ':']).or_else(|| line.find(char::is_whitespace));
        let (key, value) = match split {
            Some(i) => (line[..i].trim(), line[i + 1..].trim()),
            None => (line, ""),
        };
        out.insert(key.to_string(), value.to_string());
    }
    Ok(())
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        toml::Value::Integer(i) => {
            out.insert(prefix.to_string(), i.to_string());
        }
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        toml::Value::Float(f) => {
            out.insert(prefix.to_string(), f.to_string());
        }
        toml::Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_string(), items.join(","));
        }
        toml::Value::Datetime(_) => bail!("config key '{prefix}': dates are not config values"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_map_to_kafka_keys_as_in_kafkas_image() {
        let vars = [
            ("KAFKA_NODE_ID", "3"),
            ("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "A:PLAINTEXT"),
            ("KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL___JAAS__CONFIG", "x"),
            ("KAFKA_HEAP_OPTS", "-Xmx1g"),
            ("KAFKA_LOG4J_ROOT_LOGLEVEL", "INFO"),
            ("KAFKA_JMX_PORT", "9101"),
            ("KAFKA_", "empty"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let map = env_settings("KAFKA_", vars);
        let expected: BTreeMap<String, String> = [
            ("node.id", "3"),
            ("listener.security.protocol.map", "A:PLAINTEXT"),
            ("listener.name.client.plain.sasl-jaas_config", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(map, expected);
    }

    #[test]
    fn kafka_properties_files_are_read() {
        let mut map = BTreeMap::new();
        parse_properties(
            "# a comment\n! another\n\nnode.id=2\nprocess.roles = broker,controller\nlisteners: PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\nlog.dirs /tmp/a\n",
            &mut map,
        )
        .unwrap();
        assert_eq!(map["node.id"], "2");
        assert_eq!(map["process.roles"], "broker,controller");
        assert_eq!(map["listeners"], "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093");
        assert_eq!(map["log.dirs"], "/tmp/a");
        assert!(parse_properties("a=b\\\n", &mut map).is_err());
    }

    #[test]
    fn file_flags_and_overrides_merge() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "\"num.partitions\" = 3\n[log.segment]\nbytes = 2048\n").unwrap();
        let args = ServerArgs {
            config: Some(file),
            listen: Some("127.0.0.1:9999".into()),
            set: vec!["num.partitions=5".into()],
            ..Default::default()
        };
        let c = load(&args).unwrap();
        assert_eq!(c.num_partitions(), 5);
        assert_eq!(c.get("log.segment.bytes"), Some("2048"));
        assert_eq!(c.listen_addr().unwrap().1, 9999);
    }

    #[test]
    fn flags_name_several_data_dirs_and_listener_protocols() {
        let args = ServerArgs {
            data_dir: Some("/d1,/d2".into()),
            listen: Some("SSL://127.0.0.1:9093".into()),
            ..Default::default()
        };
        let c = load(&args).unwrap();
        let specs = c.client_listeners().unwrap();
        assert_eq!(specs[0].protocol, strata_security::SecurityProtocol::Ssl);
        let args = ServerArgs { listen: Some("TLS://127.0.0.1:9093".into()), ..Default::default() };
        let e = load(&args).unwrap_err().to_string();
        assert!(e.contains("'listeners'") && e.contains("no security protocol is defined for listener TLS"), "{e}");
        let args = ServerArgs { data_dir: Some("/d1,/d2".into()), ..Default::default() };
        assert_eq!(load(&args).unwrap().log_dirs(), vec![PathBuf::from("/d1"), PathBuf::from("/d2")]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let args = ServerArgs { set: vec!["log.segmnt.bytes=5".into()], ..Default::default() };
        let e = load(&args).unwrap_err().to_string();
        assert!(e.contains("log.segmnt.bytes"), "{e}");
        let args = ServerArgs { set: vec!["oops".into()], ..Default::default() };
        assert!(load(&args).is_err());
    }
}
