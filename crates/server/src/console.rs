//! The web console (`console.enable=true`, served on `http.listener` at `/`; issue #17):
//! server-rendered HTML pages, no scripts.
//!
//! | path | page |
//! |---|---|
//! | `/` | the cluster: id, controller, brokers and their state, partition health |
//! | `/topics` | topics: partitions, replication factor, under-replicated partitions, size |
//! | `/topics/NAME` | a topic's partitions: leader, replicas, ISR, size; its configs |
//! | `/topics/NAME/messages?partition=P&from=earliest\|last\|offset\|time&offset=N&time=T&limit=N&format=text\|json\|hex` | the message browser |
//! | `/groups` | consumer groups: state, members, total lag |
//! | `/groups/NAME` | a group: members, lag per partition, and its total lag over time (SVG chart) |
//! | `/quorum` | the metadata quorum: leader, epoch, high watermark, voters' lag |
//!
//! The console reads the cluster as an admin client does, over the Kafka protocol through
//! `strata-cli`'s API, from this node's inter-broker listener with the inter-broker
//! credentials: whoever reaches `http.listener` reads everything, so it is off by default.
//! Every `console.lag.sample.ms` a task records each group's total lag, [`HISTORY`] samples
//! per group, for the lag charts. At most [`PAGES_AT_ONCE`] pages are built at a time, each
//! within [`PAGE_TIMEOUT`], so console visitors cannot take the listener's connection slots
//! from `/health` and `/metrics` for long; the message browser reads at most 16 MiB per batch
//! and shows at most [`MAX_SHOWN`] bytes of a key, value or header.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use strata_cli::api::{self, BrowseFrom, BytesFormat};
use strata_cli::Cluster;
use tokio::sync::watch;

/// Lag samples kept per group (an hour at the default 5 s interval).
pub const HISTORY: usize = 720;
/// Records the message browser shows at most per page.
pub const MAX_MESSAGES: usize = 500;
/// Pages built at once; more wait (within the page timeout).
pub const PAGES_AT_ONCE: usize = 4;
/// How long a page may take to build; then it is a 504 page.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes of one key, value or header shown by the message browser; the rest is cut.
pub const MAX_SHOWN: usize = 64 << 10;

/// The console's state: its client of the cluster and the groups' lag history.
pub struct Console {
    cluster: Cluster,
    pages: tokio::sync::Semaphore,
    /// Group -> (milliseconds since the epoch, total lag), oldest first.
    history: Mutex<HashMap<String, VecDeque<(i64, i64)>>>,
}

impl Console {
    /// A console reading the cluster through `cluster` (this node's own listener).
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, pages: tokio::sync::Semaphore::new(PAGES_AT_ONCE), history: Mutex::new(HashMap::new()) }
    }

    fn record_lag(&self, group: &str, lag: i64) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let samples = history.entry(group.to_string()).or_default();
        samples.push_back((strata_broker::replica::now_ms(), lag));
        while samples.len() > HISTORY {
            samples.pop_front();
        }
    }

    fn lag_history(&self, group: &str) -> Vec<(i64, i64)> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.get(group).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Samples every group's total lag every `every` until `shutdown`.
    pub async fn sample_lag(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sample_once().await {
                tracing::debug!(error = %e, "console: cannot sample the groups' lag");
            }
        }
    }

    async fn sample_once(&self) -> Result<(), strata_cli::CliError> {
        let groups = api::groups(&self.cluster).await?;
        for g in groups.as_array().into_iter().flatten() {
            let Some(name) = g["group"].as_str() else { continue };
            if let Ok(d) = api::group(&self.cluster, name).await {
                self.record_lag(name, d["total_lag"].as_i64().unwrap_or(0));
            }
        }
        // Groups gone from the cluster leave the history.
        let live: std::collections::HashSet<&str> =
            groups.as_array().into_iter().flatten().filter_map(|g| g["group"].as_str()).collect();
        self.history.lock().unwrap_or_else(|p| p.into_inner()).retain(|g, _| live.contains(g.as_str()));
        Ok(())
    }

    /// The page for `path` and `query`: (status, HTML). 504 when it takes longer than
    /// [`PAGE_TIMEOUT`] (waiting for a turn included).
    pub async fn page(&self, path: &str, query: &str) -> (u16, String) {
        let built = tokio::time::timeout(PAGE_TIMEOUT, async {
            let _turn = self.pages.acquire().await;
            self.build(path, query).await
        });
        match built.await {
            Ok(page) => page,
            Err(_) => (
                504,
                layout(
                    "Too slow",
                    "<h1>Too slow</h1><p class=\"error\">The cluster did not answer in time; try again.</p>",
                ),
            ),
        }
    }

    async fn build(&self, path: &str, query: &str) -> (u16, String) {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let params = parse_query(query);
        let result = match segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] => self.overview().await,
            ["topics"] => self.topics().await,
            ["topics", name] => self.topic(name).await,
            ["topics", name, "messages"] => self.messages(name, &params).await,
            ["groups"] => self.groups().await,
            ["groups", name] => self.group(name).await,
            ["quorum"] => self.quorum().await,
            _ => return (404, layout("Not found", "<p>No such page.</p>")),
        };
        match result {
            Ok((title, body)) => (200, layout(&title, &body)),
            Err(e) => {
                let what = segments.join("/");
                let body = format!("<h1>{}</h1><p class=\"error\">{}</p>", esc(&what), esc(&e.to_string()));
                // What the visitor named does not exist (404) or was malformed (400); else the
                // cluster failed us (502).
                let status = match &e {
                    strata_cli::CliError::Kafka { code: 3 | 69 | 100, .. } => 404,
                    strata_cli::CliError::Usage(_) => 400,
                    _ => 502,
                };
                (status, layout("Error", &body))
            }
        }
    }

    async fn overview(&self) -> Result<(String, String), strata_cli::CliError> {
        let cluster = api::cluster(&self.cluster).await?;
        let topics = self.topic_details().await?;
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>Cluster</h1><dl><dt>Cluster id</dt><dd id=\"cluster-id\">{}</dd><dt>Active controller</dt><dd>{}</dd></dl>",
            esc(cluster["cluster_id"].as_str().unwrap_or("")),
            cluster["controller_id"]
        );
        body.push_str("<h2>Brokers</h2><table id=\"brokers\"><tr><th>Broker</th><th>Address</th><th>Rack</th><th>Health</th></tr>");
        for b in cluster["brokers"].as_array().into_iter().flatten() {
            let fenced = b["fenced"].as_bool().unwrap_or(false);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}:{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                b["id"],
                esc(b["host"].as_str().unwrap_or("")),
                b["port"],
                esc(b["rack"].as_str().unwrap_or("-")),
                if fenced { "bad" } else { "good" },
                if fenced { "fenced" } else { "serving" }
            );
        }
        body.push_str("</table>");
        let (mut partitions, mut under, mut offline) = (0, 0, 0);
        for t in topics.iter() {
            for p in t["partitions"].as_array().into_iter().flatten() {
                partitions += 1;
                let replicas = p["replicas"].as_array().map_or(0, Vec::len);
                let isr = p["isr"].as_array().map_or(0, Vec::len);
                if p["leader"].is_null() {
                    offline += 1;
                } else if isr < replicas {
                    under += 1;
                }
            }
        }
        let _ = write!(
            body,
            "<h2>Partitions</h2><table id=\"health\"><tr><th>Topics</th><th>Partitions</th><th>Under-replicated</th><th>Offline</th></tr><tr><td>{}</td><td>{partitions}</td><td class=\"{}\">{under}</td><td class=\"{}\">{offline}</td></tr></table>",
            topics.len(),
            if under > 0 { "bad" } else { "good" },
            if offline > 0 { "bad" } else { "good" }
        );
        Ok(("Cluster".into(), body))
    }

    /// Every topic with its partitions (one Metadata and one DescribeConfigs request).
    async fn topic_details(&self) -> Result<Vec<Value>, strata_cli::CliError> {
        api::all_topics(&self.cluster).await
    }

    /// (topic, partition) -> size in bytes of the largest replica (the leader's, usually).
    async fn sizes(&self) -> Result<BTreeMap<(String, i64), i64>, strata_cli::CliError> {
        let dirs = api::log_dirs(&self.cluster).await?;
        let mut out: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for broker in dirs.as_array().into_iter().flatten() {
            for dir in broker["log_dirs"].as_array().into_iter().flatten() {
                for p in dir["partitions"].as_array().into_iter().flatten() {
                    let key = (p["topic"].as_str().unwrap_or("").to_string(), p["partition"].as_i64().unwrap_or(-1));
                    let size = p["size"].as_i64().unwrap_or(0);
                    let e = out.entry(key).or_insert(0);
                    *e = (*e).max(size);
                }
            }
        }
        Ok(out)
    }

    async fn topics(&self) -> Result<(String, String), strata_cli::CliError> {
        let topics = self.topic_details().await?;
        let sizes = self.sizes().await?;
        let mut body = String::from(
            "<h1>Topics</h1><table id=\"topics\"><tr><th>Topic</th><th>Partitions</th><th>Replication factor</th><th>Under-replicated</th><th>Size</th></tr>",
        );
        for t in &topics {
            let name = t["name"].as_str().unwrap_or("");
            let parts = t["partitions"].as_array().cloned().unwrap_or_default();
            let under = parts
                .iter()
                .filter(|p| p["isr"].as_array().map_or(0, Vec::len) < p["replicas"].as_array().map_or(0, Vec::len))
                .count();
            let size: i64 = sizes.iter().filter(|((t, _), _)| t == name).map(|(_, s)| s).sum();
            let _ = write!(
                body,
                "<tr><td><a href=\"/topics/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"{}\">{under}</td><td>{}</td></tr>",
                enc(name),
                esc(name),
                parts.len(),
                t["replication_factor"],
                if under > 0 { "bad" } else { "good" },
                bytes(size)
            );
        }
        body.push_str("</table>");
        Ok(("Topics".into(), body))
    }

    async fn topic(&self, name: &str) -> Result<(String, String), strata_cli::CliError> {
        let t = api::topic(&self.cluster, name).await?;
        let sizes = self.sizes().await?;
        let mut body =
            format!("<h1>Topic {}</h1><p>Topic id {}</p>", esc(name), esc(t["topic_id"].as_str().unwrap_or("")));
        body.push_str("<table id=\"partitions\"><tr><th>Partition</th><th>Leader</th><th>Replicas</th><th>ISR</th><th>Size</th><th></th></tr>");
        for p in t["partitions"].as_array().into_iter().flatten() {
            let index = p["partition"].as_i64().unwrap_or(-1);
            let list = |v: &Value| {
                v.as_array().map(|a| a.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")).unwrap_or_default()
            };
            let in_sync = p["isr"].as_array().map_or(0, Vec::len) >= p["replicas"].as_array().map_or(0, Vec::len);
            let _ = write!(
                body,
                "<tr><td>{index}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><a href=\"/topics/{}/messages?partition={index}&amp;from=last\">messages</a></td></tr>",
                if p["leader"].is_null() { "none".to_string() } else { p["leader"].to_string() },
                list(&p["replicas"]),
                if in_sync { "good" } else { "bad" },
                list(&p["isr"]),
                bytes(sizes.get(&(name.to_string(), index)).copied().unwrap_or(0)),
                enc(name)
            );
        }
        body.push_str(
            "</table><h2>Configs set on the topic</h2><table id=\"configs\"><tr><th>Name</th><th>Value</th></tr>",
        );
        for (k, v) in t["configs"].as_object().into_iter().flatten() {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v.as_str().unwrap_or("[hidden]")));
        }
        body.push_str("</table>");
        Ok((format!("Topic {name}"), body))
    }

    async fn messages(
        &self,
        name: &str,
        params: &HashMap<String, String>,
    ) -> Result<(String, String), strata_cli::CliError> {
        let partition: i32 = params.get("partition").and_then(|p| p.parse().ok()).unwrap_or(0);
        let limit: usize = params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50).clamp(1, MAX_MESSAGES);
        let format = match params.get("format").map(String::as_str) {
            Some("json") => BytesFormat::Json,
            Some("hex") => BytesFormat::Hex,
            _ => BytesFormat::Text,
        };
        let from_kind = params.get("from").map_or("last", String::as_str);
        let offset: i64 = params.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        let time = params.get("time").cloned().unwrap_or_default();
        let from = match from_kind {
            "earliest" => BrowseFrom::Earliest,
            "offset" => BrowseFrom::Offset(offset),
            "time" => match strata_cli::parse_time_ms(&time) {
                Ok(ms) => BrowseFrom::Timestamp(ms),
                Err(e) => return Err(e),
            },
            _ => BrowseFrom::Last(limit as i64),
        };
        let records = api::messages(&self.cluster, name, partition, from, limit, format).await?;
        let selected = |v: &str, current: &str| if v == current { " selected" } else { "" };
        let format_name = match format {
            BytesFormat::Json => "json",
            BytesFormat::Hex => "hex",
            _ => "text",
        };
        let mut body = format!(
            "<h1>Messages of {0}-{partition}</h1><form id=\"browse\" method=\"get\" action=\"/topics/{1}/messages\">\
             <label>Partition <input name=\"partition\" value=\"{partition}\" size=\"4\"></label> \
             <label>From <select name=\"from\"><option value=\"last\"{2}>the last N</option><option value=\"earliest\"{3}>the beginning</option><option value=\"offset\"{4}>offset</option><option value=\"time\"{5}>time</option></select></label> \
             <label>Offset <input name=\"offset\" value=\"{offset}\" size=\"8\"></label> \
             <label>Time <input name=\"time\" value=\"{6}\" placeholder=\"2026-12-01T10:00:00\"></label> \
             <label>N <input name=\"limit\" value=\"{limit}\" size=\"4\"></label> \
             <label>Show as <select name=\"format\"><option value=\"text\"{7}>text</option><option value=\"json\"{8}>JSON</option><option value=\"hex\"{9}>hex</option></select></label> \
             <button type=\"submit\" id=\"go\">Show</button></form>",
            esc(name),
            enc(name),
            selected("last", from_kind),
            selected("earliest", from_kind),
            selected("offset", from_kind),
            selected("time", from_kind),
            esc(&time),
            selected("text", format_name),
            selected("json", format_name),
            selected("hex", format_name),
        );
        body.push_str("<table id=\"messages\"><tr><th>Offset</th><th>Timestamp</th><th>Key</th><th>Headers</th><th>Value</th></tr>");
        let show = |v: &Value| match v {
            Value::Null => "<i>null</i>".to_string(),
            Value::String(s) => esc(cut(s)),
            other => format!("<code>{}</code>", esc(cut(&serde_json::to_string_pretty(other).unwrap_or_default()))),
        };
        for r in &records {
            // [key, value] pairs, in order (a key may repeat).
            let headers: Vec<String> = r["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| format!("{}: {}", esc(pair[0].as_str().unwrap_or("")), show(&pair[1])))
                .collect();
            let _ = write!(
                body,
                "<tr class=\"record\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                r["offset"],
                strata_cli::format_time_ms(r["timestamp"].as_i64().unwrap_or(-1)),
                show(&r["key"]),
                headers.join("<br>"),
                show(&r["value"])
            );
        }
        body.push_str("</table>");
        if records.is_empty() {
            body.push_str("<p>No records there.</p>");
        }
        Ok((format!("Messages of {name}-{partition}"), body))
    }

    async fn groups(&self) -> Result<(String, String), strata_cli::CliError> {
        let groups = api::groups(&self.cluster).await?;
        let mut body = String::from(
            "<h1>Consumer groups</h1><table id=\"groups\"><tr><th>Group</th><th>State</th><th>Type</th><th>Members</th><th>Total lag</th></tr>",
        );
        for g in groups.as_array().into_iter().flatten() {
            let name = g["group"].as_str().unwrap_or("");
            // One group's trouble (its coordinator moving, offsets of a deleted topic) shows in
            // its row; the page goes on.
            let d = match api::group(&self.cluster, name).await {
                Ok(d) => d,
                Err(e) => {
                    let _ = write!(
                        body,
                        "<tr><td><a href=\"/groups/{}\">{}</a></td><td colspan=\"4\" class=\"error\">{}</td></tr>",
                        enc(name),
                        esc(name),
                        esc(&e.to_string())
                    );
                    continue;
                }
            };
            let lag = d["total_lag"].as_i64().unwrap_or(0);
            let _ = write!(
                body,
                "<tr><td><a href=\"/groups/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"lag\">{lag}</td></tr>",
                enc(name),
                esc(name),
                esc(d["state"].as_str().unwrap_or("")),
                esc(g["type"].as_str().unwrap_or("")),
                d["members"].as_array().map_or(0, Vec::len)
            );
        }
        body.push_str("</table>");
        Ok(("Consumer groups".into(), body))
    }

    async fn group(&self, name: &str) -> Result<(String, String), strata_cli::CliError> {
        let d = api::group(&self.cluster, name).await?;
        let lag = d["total_lag"].as_i64().unwrap_or(0);
        let mut body = format!(
            "<h1>Group {}</h1><dl><dt>State</dt><dd id=\"state\">{}</dd><dt>Coordinator</dt><dd>{}</dd><dt>Total lag</dt><dd id=\"total-lag\">{lag}</dd></dl>",
            esc(name),
            esc(d["state"].as_str().unwrap_or("")),
            esc(d["coordinator"].as_str().unwrap_or(""))
        );
        body.push_str("<h2>Lag over time</h2>");
        body.push_str(&lag_chart(&self.lag_history(name)));
        body.push_str("<h2>Members</h2><table id=\"members\"><tr><th>Member</th><th>Client id</th><th>Host</th><th>Partitions</th></tr>");
        for m in d["members"].as_array().into_iter().flatten() {
            let parts: Vec<String> = m["assignment"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{}-{}", a["topic"].as_str().unwrap_or(""), a["partition"]))
                .collect();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(m["member_id"].as_str().unwrap_or("")),
                esc(m["client_id"].as_str().unwrap_or("")),
                esc(m["host"].as_str().unwrap_or("")),
                esc(&parts.join(", "))
            );
        }
        body.push_str("</table><h2>Offsets</h2><table id=\"offsets\"><tr><th>Topic</th><th>Partition</th><th>Committed</th><th>Log end</th><th>Lag</th></tr>");
        for o in d["offsets"].as_array().into_iter().flatten() {
            let dash = |v: &Value| if v.is_null() { "-".to_string() } else { v.to_string() };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(o["topic"].as_str().unwrap_or("")),
                o["partition"],
                dash(&o["current_offset"]),
                dash(&o["log_end_offset"]),
                dash(&o["lag"])
            );
        }
        body.push_str("</table>");
        Ok((format!("Group {name}"), body))
    }

    async fn quorum(&self) -> Result<(String, String), strata_cli::CliError> {
        let q = api::quorum(&self.cluster).await?;
        let mut body = format!(
            "<h1>Metadata quorum</h1><dl><dt>Leader</dt><dd id=\"leader\">{}</dd><dt>Epoch</dt><dd>{}</dd><dt>High watermark</dt><dd>{}</dd><dt>Largest follower lag</dt><dd>{}</dd></dl>",
            q["leader_id"], q["leader_epoch"], q["high_watermark"], q["max_follower_lag"]
        );
        body.push_str("<table id=\"replicas\"><tr><th>Node</th><th>Role</th><th>Log end offset</th><th>Lag</th><th>Last fetch</th></tr>");
        for r in q["replicas"].as_array().into_iter().flatten() {
            let fetch = r["last_fetch_timestamp"]
                .as_i64()
                .filter(|t| *t >= 0)
                .map_or_else(|| "-".to_string(), strata_cli::format_time_ms);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r["node_id"],
                esc(r["status"].as_str().unwrap_or("")),
                r["log_end_offset"],
                r["lag"],
                fetch
            );
        }
        body.push_str("</table>");
        Ok(("Metadata quorum".into(), body))
    }
}

/// The SVG line chart of a group's total lag: time across, lag up. Its `data-latest-lag` and
/// `data-max-lag` attributes carry the figures drawn.
fn lag_chart(samples: &[(i64, i64)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const PAD: f64 = 40.0;
    let latest = samples.last().map_or(0, |s| s.1);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg id=\"lag-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" data-latest-lag=\"{latest}\" data-max-lag=\"{max}\" data-samples=\"{}\">",
        samples.len()
    );
    let _ = write!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/><line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{PAD}\" y1=\"10\" x2=\"{PAD}\" y2=\"{}\" stroke=\"#888\"/>",
        H - PAD,
        W - 10.0,
        H - PAD,
        H - PAD
    );
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"16\" font-size=\"12\">{max}</text><text x=\"4\" y=\"{}\" font-size=\"12\">0</text>",
        H - PAD
    );
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let span = (last.0 - first.0).max(1) as f64;
        let x = |t: i64| PAD + (t - first.0) as f64 / span * (W - PAD - 10.0);
        let y = |v: i64| (H - PAD) - v as f64 / max as f64 * (H - PAD - 10.0);
        let points: Vec<String> = if samples.len() == 1 {
            vec![format!("{PAD:.1},{:.1}", y(first.1)), format!("{:.1},{:.1}", W - 10.0, y(first.1))]
        } else {
            samples.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect()
        };
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"3\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = write!(
            svg,
            "<text x=\"{PAD}\" y=\"{}\" font-size=\"12\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{} (lag {latest})</text>",
            H - PAD + 16.0,
            strata_cli::format_time_ms(first.0),
            W - 10.0,
            H - PAD + 16.0,
            strata_cli::format_time_ms(last.0)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page around `body`: title, navigation and style.
fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{} · Strata</title><style>\
         body{{font-family:sans-serif;margin:0;color:#222}}nav{{background:#1f3a5f;padding:10px 20px}}\
         nav a{{color:#fff;margin-right:18px;text-decoration:none;font-weight:bold}}main{{padding:10px 20px}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top}}\
         th{{background:#f0f3f7}}.good{{color:#1a7f37}}.bad{{color:#c62828;font-weight:bold}}.error{{color:#c62828}}\
         dt{{font-weight:bold;float:left;clear:left;width:170px}}dd{{margin-left:180px}}pre{{margin:0;white-space:pre-wrap}}\
         </style></head><body><nav><a href=\"/\">Cluster</a><a href=\"/topics\">Topics</a><a href=\"/groups\">Consumer groups</a><a href=\"/quorum\">Quorum</a></nav><main>{}</main></body></html>",
        esc(title),
        body
    )
}

/// At most [`MAX_SHOWN`] bytes of `s` (cut at a character boundary).
fn cut(s: &str) -> &str {
    if s.len() <= MAX_SHOWN {
        return s;
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Text as HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A name as a URL path segment.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `a=1&b=two%20words` as a map (`+` is a space, as forms send it).
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

/// Bytes for people: `1.5 MiB`.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_clients_named() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        let q = parse_query("partition=2&time=2026-12-01T10%3A00%3A00&name=a+b&flag");
        assert_eq!(q["partition"], "2");
        assert_eq!(q["time"], "2026-12-01T10:00:00");
        assert_eq!(q["name"], "a b");
        assert_eq!(q["flag"], "");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn the_lag_chart_carries_its_figures() {
        let svg = lag_chart(&[(1_000, 10), (2_000, 50), (3_000, 20)]);
        assert!(svg.contains("data-latest-lag=\"20\""), "{svg}");
        assert!(svg.contains("data-max-lag=\"50\""), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(lag_chart(&[]).contains("data-samples=\"0\""));
    }
}
