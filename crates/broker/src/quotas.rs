//! Client quotas (KIP-13 byte rates, KIP-55 user quotas, KIP-124 request percentage), as
//! Kafka's `ClientQuotaManager` and `ClientRequestQuotaManager` enforce them.
//!
//! The quotas live in the metadata image (`client_quotas`, set by AlterClientQuotas). For a
//! request from user U with client id C, the quota of a kind is the first of these entities
//! that sets its key, in Kafka's order: (U, C), (U, default client), (U), (default user, C),
//! (default user, default client), (default user), (C), (default client). Clients that
//! resolve to the same entity share one rate: a quota set for user U alone is shared by all
//! of U's client ids, while a default-user quota gives each user a rate of its own.
//!
//! A rate is measured as Kafka's `Rate` over `quota.window.num` samples of
//! `quota.window.size.seconds` each (the window counted as at least `samples - 1` full
//! windows). When a recorded value takes the rate above the quota, the throttle time is what
//! brings it back: `(rate - quota) / quota * window` (KIP-219), bounded by one window for
//! request percentage as in Kafka. The broker returns that time in the response's
//! `throttle_time_ms` and reads nothing more from the connection until it has passed.
//!
//! Units: `producer_byte_rate` and `consumer_byte_rate` in bytes per second (a produce counts
//! its request's size, a fetch its response's); `request_percentage` in percent of one
//! thread's time per second, counted here as the time the broker's workers spend running the
//! request's handler (waits for replication, long polls and the disk threads not included).
//! Follower fetches and requests on the CONTROLLER listener are never throttled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_metadata::MetadataImage;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `producer_byte_rate`: bytes of produce requests per second.
    Produce,
    /// `consumer_byte_rate`: bytes of fetch responses per second.
    Fetch,
    /// `request_percentage`: handler time, in percent of one thread per second.
    Request,
}

impl QuotaKind {
    /// The quota's key in AlterClientQuotas and the metadata image.
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::Request => "request_percentage",
        }
    }
}

/// Which parts of (user, client id) a resolved quota's rate is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SensorKey {
    kind: QuotaKind,
    /// Empty when the quota does not depend on the user.
    user: String,
    /// Empty when the quota does not depend on the client id.
    client: String,
}

/// The quota of `kind` for `user` and `client` in `image`: the sensor it is measured by and
/// its bound, or `None` when no entity sets it.
fn resolve(image: &MetadataImage, kind: QuotaKind, user: &str, client: &str) -> Option<(SensorKey, f64)> {
    if image.client_quotas.is_empty() {
        return None;
    }
    let u = || Some(user.to_string());
    let c = || Some(client.to_string());
    // (user part, client part, rate per user, rate per client id): a part `None` is not in
    // the entity, `Some(None)` is the default.
    type Part = Option<Option<String>>;
    let levels: [(Part, Part, bool, bool); 8] = [
        (Some(u()), Some(c()), true, true),
        (Some(u()), Some(None), true, true),
        (Some(u()), None, true, false),
        (Some(None), Some(c()), true, true),
        (Some(None), Some(None), true, true),
        (Some(None), None, true, false),
        (None, Some(c()), false, true),
        (None, Some(None), false, true),
    ];
    for (user_part, client_part, by_user, by_client) in levels {
        let mut entity = Vec::with_capacity(2);
        if let Some(name) = client_part {
            entity.push(("client-id".to_string(), name));
        }
        if let Some(name) = user_part {
            entity.push(("user".to_string(), name));
        }
        if let Some(value) = image.client_quotas.get(&entity).and_then(|q| q.get(kind.key())) {
            let key = SensorKey {
                kind,
                user: if by_user { user.to_string() } else { String::new() },
                client: if by_client { client.to_string() } else { String::new() },
            };
            return Some((key, value.0));
        }
    }
    None
}

/// One sample window of a [`Rate`] (Kafka's `SampledStat.Sample`); times in ms.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: u64,
    last_event: u64,
    value: f64,
}

impl Sample {
    fn new(now: u64) -> Self {
        Self { start: now, last_event: now, value: 0.0 }
    }
}

/// A rate per second over sampled windows (Kafka's `Rate` over a `SampledStat`).
#[derive(Debug)]
struct Rate {
    /// At most `samples + 1` (one extra for the window overlapping the monitored span).
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    fn new(now: u64) -> Self {
        Self { samples: vec![Sample::new(now)], current: 0 }
    }

    fn record(&mut self, window: Window, value: f64, now: u64) {
        if now.saturating_sub(self.samples[self.current].start) >= window.ms {
            let max = window.samples as usize + 1;
            self.current = (self.current + 1) % max;
            if self.current >= self.samples.len() {
                self.samples.push(Sample::new(now));
            } else {
                self.samples[self.current] = Sample::new(now);
            }
        }
        let sample = &mut self.samples[self.current];
        sample.value += value;
        sample.last_event = now;
    }

    /// The rate per second and the span it is measured over (ms).
    fn measure(&mut self, window: Window, now: u64) -> (f64, u64) {
        let expire = u64::from(window.samples) * window.ms;
        for s in &mut self.samples {
            if now.saturating_sub(s.last_event) >= expire {
                *s = Sample::new(now);
            }
        }
        let oldest = self.samples.iter().map(|s| s.start).min().unwrap_or(now);
        let mut span = now.saturating_sub(oldest);
        let full = span / window.ms;
        let min_full = u64::from(window.samples - 1);
        if full < min_full {
            span += (min_full - full) * window.ms;
        }
        let span = span.max(1);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        (total / (span as f64 / 1000.0), span)
    }

    fn idle_since(&self, now: u64, window: Window) -> bool {
        self.samples.iter().all(|s| now.saturating_sub(s.last_event) >= u64::from(window.samples) * window.ms)
    }
}

/// `quota.window.num` and `quota.window.size.seconds`.
#[derive(Debug, Clone, Copy)]
struct Window {
    samples: u32,
    ms: u64,
}

/// Sensors kept before idle ones are dropped (an idle rate has measured zero anyway); the
/// sweep runs at most once per quota span, so a flood of new client ids costs no scan per
/// request.
const SWEEP_AT: usize = 4096;

/// Most sensors kept: past this (many live client ids under a per-client default quota),
/// new ones share one overflow rate per kind and user rather than grow the map.
const MAX_SENSORS: usize = 65_536;

/// The client id the overflow sensors are kept under (not a valid entity name: names are
/// never empty, and this one is never set).
const OVERFLOW_CLIENT: &str = "\u{0}overflow";

/// The sensors and when idle ones were last dropped.
#[derive(Debug, Default)]
struct Sensors {
    rates: HashMap<SensorKey, Rate>,
    last_sweep: u64,
}

/// The broker's client quota rates (one owner: the broker; a short lock per request).
#[derive(Debug)]
pub struct ClientQuotas {
    window: Window,
    epoch: Instant,
    sensors: Mutex<Sensors>,
}

impl ClientQuotas {
    /// `samples`: `quota.window.num` (at least 1); `window_ms`: `quota.window.size.seconds`
    /// in ms (at least 1).
    pub fn new(samples: u32, window_ms: u64) -> Self {
        Self {
            window: Window { samples: samples.max(1), ms: window_ms.max(1) },
            epoch: Instant::now(),
            sensors: Mutex::new(Sensors::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records `value` (bytes, or percent-seconds for [`QuotaKind::Request`]) against the
    /// quota of `kind` for `user`/`client` and returns the throttle time it earns (zero
    /// within the quota or without one).
    pub fn record(&self, image: &MetadataImage, kind: QuotaKind, user: &str, client: &str, value: f64) -> Duration {
        let Some((key, bound)) = resolve(image, kind, user, client) else {
            return Duration::ZERO;
        };
        let now = self.now_ms();
        let window = self.window;
        let (rate, span) = {
            let mut guard = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
            let sensors = &mut *guard;
            let mut key = key;
            if !sensors.rates.contains_key(&key) {
                let span = u64::from(window.samples) * window.ms;
                if sensors.rates.len() >= SWEEP_AT && now.saturating_sub(sensors.last_sweep) >= span {
                    sensors.rates.retain(|_, r| !r.idle_since(now, window));
                    sensors.last_sweep = now;
                }
                if sensors.rates.len() >= MAX_SENSORS {
                    key.client = OVERFLOW_CLIENT.to_string();
                }
            }
            let sensor = sensors.rates.entry(key).or_insert_with(|| Rate::new(now));
            sensor.record(window, value, now);
            sensor.measure(window, now)
        };
        if rate <= bound {
            return Duration::ZERO;
        }
        let mut ms = (rate - bound) / bound * span as f64;
        if kind == QuotaKind::Request {
            ms = ms.min(window.ms as f64);
        }
        Duration::from_millis(ms.round().clamp(0.0, i32::MAX as f64) as u64)
    }

    /// Takes back a value [`record`](Self::record)ed (a throttled fetch sends no records, so
    /// its bytes do not count), as Kafka's `unrecordQuotaSensor`.
    pub fn unrecord(&self, image: &MetadataImage, kind: QuotaKind, user: &str, client: &str, value: f64) {
        let Some((key, _)) = resolve(image, kind, user, client) else {
            return;
        };
        let now = self.now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sensor) = sensors.rates.get_mut(&key) {
            sensor.record(self.window, -value, now);
        }
    }

    /// The most a fetch may return at once without being throttled for certain: the quota
    /// times `samples - 1` windows (Kafka's `getMaxValueInQuotaWindow`); `None` without a quota.
    pub fn max_fetch_bytes(&self, image: &MetadataImage, user: &str, client: &str) -> Option<i64> {
        let (_, bound) = resolve(image, QuotaKind::Fetch, user, client)?;
        // (Kafka's quota × (samples − 1) windows; at least one window, so that one sample
        // still lets a fetch through.)
        let windows = u64::from(self.window.samples.saturating_sub(1).max(1)) * self.window.ms;
        Some((bound * windows as f64 / 1000.0).clamp(1.0, i64::MAX as f64) as i64)
    }

    /// Whether any client quota is set (a request's handler time is only measured then).
    pub fn any(image: &MetadataImage) -> bool {
        !image.client_quotas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_metadata::image::QuotaValue;
    use strata_metadata::MetadataRecord;

    /// (entity as (type, name) pairs, key, value)
    type Quota<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, f64);

    fn with(quotas: &[Quota<'_>]) -> MetadataImage {
        let records: Vec<MetadataRecord> = quotas
            .iter()
            .map(|(entity, key, value)| {
                let mut entity: Vec<(String, Option<String>)> =
                    entity.iter().map(|(k, n)| (k.to_string(), n.map(str::to_string))).collect();
                entity.sort();
                MetadataRecord::ClientQuotaSet { entity, key: key.to_string(), value: Some(QuotaValue(*value)) }
            })
            .collect();
        MetadataImage::empty().apply(&records).expect("apply").0
    }

    #[test]
    fn the_most_specific_entity_wins_in_kafkas_order() {
        let image = with(&[
            (&[("user", Some("alice")), ("client-id", Some("app"))], "producer_byte_rate", 1.0),
            (&[("user", Some("alice"))], "producer_byte_rate", 2.0),
            (&[("user", None)], "producer_byte_rate", 3.0),
            (&[("client-id", Some("app"))], "producer_byte_rate", 4.0),
            (&[("client-id", None)], "consumer_byte_rate", 5.0),
        ]);
        let bound = |u: &str, c: &str, k| resolve(&image, k, u, c).map(|(key, b)| (key.user, key.client, b));
        assert_eq!(bound("alice", "app", QuotaKind::Produce), Some(("alice".into(), "app".into(), 1.0)));
        assert_eq!(bound("alice", "other", QuotaKind::Produce), Some(("alice".into(), "".into(), 2.0)));
        // The default user comes before a client-id quota.
        assert_eq!(bound("bob", "app", QuotaKind::Produce), Some(("bob".into(), "".into(), 3.0)));
        assert_eq!(bound("bob", "app", QuotaKind::Fetch), Some(("".into(), "app".into(), 5.0)));
        assert_eq!(bound("bob", "app", QuotaKind::Request), None);
    }

    #[test]
    fn a_rate_over_the_quota_earns_the_time_that_brings_it_back() {
        let image = with(&[(&[("user", None)], "producer_byte_rate", 1000.0)]);
        let q = ClientQuotas::new(11, 1000);
        // Within the quota: 10 windows' worth measured over the minimum 10 s span.
        assert_eq!(q.record(&image, QuotaKind::Produce, "u", "c", 5_000.0), Duration::ZERO);
        // 20,000 bytes over about 10 s is 2,000 B/s, twice the quota: throttled about 10 s.
        let t = q.record(&image, QuotaKind::Produce, "u", "c", 15_000.0);
        assert!(t >= Duration::from_millis(9_900) && t <= Duration::from_millis(10_100), "{t:?}");
        // Another user has a rate of its own.
        assert_eq!(q.record(&image, QuotaKind::Produce, "v", "c", 5_000.0), Duration::ZERO);
        // Unrecording brings the first user back under the quota.
        q.unrecord(&image, QuotaKind::Produce, "u", "c", 15_000.0);
        assert_eq!(q.record(&image, QuotaKind::Produce, "u", "c", 1.0), Duration::ZERO);
    }

    #[test]
    fn request_percentage_throttles_at_most_one_window_and_fetch_size_is_bounded() {
        let image = with(&[
            (&[("client-id", None)], "request_percentage", 10.0),
            (&[("client-id", None)], "consumer_byte_rate", 100.0),
        ]);
        let q = ClientQuotas::new(11, 1000);
        let t = q.record(&image, QuotaKind::Request, "u", "c", 1_000.0);
        assert_eq!(t, Duration::from_secs(1));
        assert_eq!(q.max_fetch_bytes(&image, "u", "c"), Some(1000));
        assert_eq!(q.max_fetch_bytes(&MetadataImage::empty(), "u", "c"), None);
    }

    #[test]
    fn a_flood_of_client_ids_is_bounded() {
        let image = with(&[(&[("client-id", None)], "request_percentage", 1.0)]);
        let q = ClientQuotas::new(11, 1000);
        for i in 0..MAX_SENSORS + 100 {
            q.record(&image, QuotaKind::Request, "u", &format!("c{i}"), 0.0001);
        }
        let sensors = q.sensors.lock().unwrap_or_else(|p| p.into_inner());
        assert!(sensors.rates.len() <= MAX_SENSORS + 1, "{}", sensors.rates.len());
        assert!(sensors.rates.keys().any(|k| k.client == OVERFLOW_CLIENT));
    }

    #[test]
    fn samples_roll_over_and_expire() {
        let window = Window { samples: 3, ms: 100 };
        let mut r = Rate::new(0);
        r.record(window, 100.0, 0);
        r.record(window, 100.0, 150);
        r.record(window, 100.0, 250);
        // 300 over a span of 250 ms (more than samples - 1 windows).
        let (rate, span) = r.measure(window, 250);
        assert_eq!(span, 250);
        assert!((rate - 1200.0).abs() < 1e-6, "{rate}");
        // Long idle: every sample expired, the rate is zero.
        let (rate, _) = r.measure(window, 10_000);
        assert_eq!(rate, 0.0);
        assert!(r.idle_since(10_000, window) || r.samples.iter().all(|s| s.value == 0.0));
    }
}

/// The time a request's handler has spent running on a worker (polled), for
/// `request_percentage`: the connection polls the handler through [`PollClock::poll`].
#[derive(Debug)]
pub struct PollClock {
    epoch: Instant,
    /// Nanoseconds spent in finished polls.
    spent: std::sync::atomic::AtomicU64,
    /// Nanoseconds after `epoch` the poll under way started; 0 between polls.
    since: std::sync::atomic::AtomicU64,
}

impl Default for PollClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PollClock {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            spent: std::sync::atomic::AtomicU64::new(0),
            since: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Polls `fut` once, counting the time the poll takes.
    pub fn poll<F: std::future::Future + ?Sized>(
        &self,
        fut: std::pin::Pin<&mut F>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        use std::sync::atomic::Ordering::Relaxed;
        let start = self.now_ns();
        self.since.store(start, Relaxed);
        let result = fut.poll(cx);
        self.since.store(0, Relaxed);
        self.spent.fetch_add(self.now_ns().saturating_sub(start), Relaxed);
        result
    }

    /// The time spent so far, the poll under way included.
    pub fn spent(&self) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let since = self.since.load(Relaxed);
        let running = if since == 0 { 0 } else { self.now_ns().saturating_sub(since) };
        Duration::from_nanos(self.spent.load(Relaxed).saturating_add(running))
    }
}

/// What the quotas of one request are judged by.
pub struct RequestQuota<'a> {
    /// Requests no client quota applies to (a follower's fetch, a controller's traffic).
    pub exempt: bool,
    /// The request frame's size in bytes (what a produce counts).
    pub frame_len: usize,
    pub clock: &'a PollClock,
}
