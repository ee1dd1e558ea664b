//! Client settings shared by Kafka sources, sinks and dead-letter producers.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

/// Bootstrap servers plus any librdkafka property (`security.protocol`, `sasl.mechanism`,
/// `sasl.password`, `ssl.ca.location`…), passed through as they are. Values of properties
/// that hold secrets never appear in `Debug` output or logs.
///
/// ```
/// use sabot::kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("broker-1:9092")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "PLAIN")
///     .set("sasl.username", "app")
///     .set("sasl.password", "hunter2");
/// let shown = format!("{config:?}");
/// assert!(shown.contains("SASL_SSL") && !shown.contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    brokers: String,
    properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Settings for the cluster at `brokers` (a comma-separated `host:port` list).
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig { brokers: brokers.into(), properties: BTreeMap::new() }
    }

    /// Sets a librdkafka property (see librdkafka's CONFIGURATION.md).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The value of a property set with [`KafkaConfig::set`].
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// A producer's configuration: as [`client_config`](Self::client_config), without the
    /// consumer-only properties a worker sets for all its clients (librdkafka warns on them).
    pub(crate) fn producer_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config(defaults);
        for key in self.properties.keys().filter(|k| is_consumer_only(k)) {
            config.remove(key);
        }
        config
    }

    /// A consumer's configuration: as [`client_config`](Self::client_config); a session
    /// timeout set without a heartbeat interval gets one of a third of it (librdkafka's 3 s
    /// default heartbeat would expire any session shorter than that).
    pub(crate) fn consumer_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config(defaults);
        if let Some(session) = self.get("session.timeout.ms").and_then(|s| s.parse::<u64>().ok())
            && self.get("heartbeat.interval.ms").is_none()
        {
            config.set("heartbeat.interval.ms", (session / 3).clamp(1, 3000).to_string());
        }
        config
    }

    /// A librdkafka configuration: Sabot's `defaults` first, then the user's properties,
    /// which win.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Whether a property only applies to consumers.
fn is_consumer_only(key: &str) -> bool {
    key.starts_with("group.")
        || key.starts_with("fetch.")
        || key.starts_with("enable.auto.")
        || key.starts_with("auto.")
        || key.starts_with("partition.assignment")
        || matches!(key, "session.timeout.ms" | "heartbeat.interval.ms" | "max.poll.interval.ms" | "isolation.level")
}

/// Whether a property's value is a secret (passwords, keys, tokens).
fn is_secret(key: &str) -> bool {
    ["password", "secret", "key", "token", "jaas"].iter().any(|marker| key.contains(marker))
        && !key.ends_with(".location")
        && !key.ends_with(".mechanism")
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<_, _> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig").field("brokers", &self.brokers).field("properties", &properties).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_locations_are_not() {
        let config = KafkaConfig::new("b:9092")
            .set("ssl.key.password", "k-pass")
            .set("ssl.key.location", "/etc/key.pem")
            .set("sasl.oauthbearer.client.secret", "s3cr3t")
            .set("sasl.jaas.config", "user=x password=y");
        let shown = format!("{config:?}");
        for secret in ["k-pass", "s3cr3t", "password=y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("/etc/key.pem"), "{shown}");
    }

    #[test]
    fn a_short_session_gets_a_heartbeat_that_keeps_it_alive() {
        let config = KafkaConfig::new("b:9092").set("session.timeout.ms", "2000").consumer_config(&[]);
        assert_eq!(config.get("heartbeat.interval.ms"), Some("666"));
        let config = KafkaConfig::new("b:9092")
            .set("session.timeout.ms", "2000")
            .set("heartbeat.interval.ms", "100")
            .consumer_config(&[]);
        assert_eq!(config.get("heartbeat.interval.ms"), Some("100"));
    }

    #[test]
    fn user_properties_override_defaults() {
        let config = KafkaConfig::new("b:9092").set("linger.ms", "50").client_config(&[("linger.ms", "5")]);
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }
}
