//! A Confluent schema registry client.
//!
//! The registry maps integer schema ids (the 4 bytes after the magic byte of every message in
//! the Confluent wire format) to schemas, and subjects (usually `<topic>-value`) to versions of
//! a schema. [`SchemaRegistry`] speaks its HTTP API (plain HTTP, optional basic auth) and caches
//! what never changes: the schema of an id, and the id of a schema registered under a subject.
//!
//! ```no_run
//! use sabot::kafka::registry::SchemaRegistry;
//!
//! let registry = SchemaRegistry::new("http://localhost:8081");
//! let schema = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
//! let id = registry.register("orders-value", schema)?;
//! assert_eq!(registry.latest("orders-value")?.0, id);
//! assert!(registry.schema_by_id(id)?.contains("Order"));
//! # Ok::<(), sabot::SabotError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;

use crate::{Result, SabotError};

/// The content type of the registry's API; the `Accept` header also allows plain JSON.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json";
/// The registry's `error_code` for "schema not found" (HTTP 404).
const SCHEMA_NOT_FOUND: i64 = 40403;
/// Longest part of an error response quoted in an error message.
const MAX_QUOTED_BODY: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the Confluent Schema Registry HTTP API.
///
/// Cloning is cheap and clones share the caches: the schema of every id is fetched once per
/// client (ids are immutable in the registry), and registering the same schema under the same
/// subject again answers from the cache. Calls block (they are made from decoders and encoders,
/// which run on worker threads).
///
/// ```no_run
/// use sabot::kafka::registry::SchemaRegistry;
///
/// let registry = SchemaRegistry::new("http://registry:8081").with_basic_auth("sabot", "secret");
/// let (id, schema) = registry.latest("orders-value")?;
/// assert_eq!(registry.schema_by_id(id)?, schema); // answered from the cache
/// # Ok::<(), sabot::SabotError>(())
/// ```
#[derive(Clone)]
pub struct SchemaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL, without a trailing slash.
    url: String,
    /// The base URL with any `user:password@` replaced, for messages.
    shown_url: String,
    /// `(user, "Basic <base64>")`; the header value holds the password.
    auth: Option<(String, String)>,
    agent: ureq::Agent,
    /// Schema id → schema text. Locked across a fetch, so each id is fetched once.
    schemas: Mutex<HashMap<u32, String>>,
    /// (subject, schema text) → id, for schemas this client registered or looked up.
    registered: Mutex<HashMap<(String, String), u32>>,
}

/// The body of `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/latest`.
#[derive(Deserialize)]
struct SchemaReply {
    schema: String,
    #[serde(default)]
    id: Option<u32>,
}

/// The body of `POST /subjects/{subject}/versions`.
#[derive(Deserialize)]
struct RegisterReply {
    id: u32,
}

/// The body of an error response.
#[derive(Deserialize)]
struct ErrorReply {
    error_code: i64,
}

/// A response: its status and body.
struct Reply {
    status: u16,
    body: String,
}

impl SchemaRegistry {
    /// A client for the registry at `url` (e.g. `http://localhost:8081`; plain HTTP). Nothing is
    /// requested until a method needs it.
    ///
    /// ```
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let registry = SchemaRegistry::new("http://localhost:8081/");
    /// assert_eq!(registry.url(), "http://localhost:8081");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into().trim_end_matches('/').to_string();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build();
        SchemaRegistry {
            inner: Arc::new(Inner {
                shown_url: redact_userinfo(&url),
                url,
                auth: None,
                agent: config.into(),
                schemas: Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends HTTP basic auth with every request. The password is never logged nor shown by
    /// `Debug`.
    ///
    /// ```
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let registry = SchemaRegistry::new("http://localhost:8081").with_basic_auth("sabot", "hunter2");
    /// assert!(!format!("{registry:?}").contains("hunter2"));
    /// ```
    pub fn with_basic_auth(self, user: impl Into<String>, password: impl AsRef<str>) -> Self {
        let user = user.into();
        let header = format!("Basic {}", base64(format!("{user}:{}", password.as_ref()).as_bytes()));
        let inner = &self.inner;
        SchemaRegistry {
            inner: Arc::new(Inner {
                url: inner.url.clone(),
                shown_url: inner.shown_url.clone(),
                auth: Some((user, header)),
                agent: inner.agent.clone(),
                schemas: Mutex::new(lock(&inner.schemas).clone()),
                registered: Mutex::new(lock(&inner.registered).clone()),
            }),
        }
    }

    /// The registry's base URL (without a trailing slash).
    ///
    /// ```
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// assert_eq!(SchemaRegistry::new("http://registry:8081").url(), "http://registry:8081");
    /// ```
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The base URL with any password in it redacted, for messages and logs.
    pub(crate) fn shown_url(&self) -> &str {
        &self.inner.shown_url
    }

    /// The schema registered under `id` (`GET /schemas/ids/{id}`), fetched once and then
    /// answered from the cache.
    ///
    /// ```no_run
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let registry = SchemaRegistry::new("http://localhost:8081");
    /// let schema = registry.schema_by_id(1)?;
    /// assert!(schema.starts_with('{') || schema.starts_with('"'));
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn schema_by_id(&self, id: u32) -> Result<String> {
        self.find_schema_by_id(id)?.ok_or_else(|| {
            SabotError::Execution(format!(
                "schema registry {}: schema id {id} not found (HTTP 404)",
                self.inner.shown_url
            ))
        })
    }

    /// Like [`SchemaRegistry::schema_by_id`], but `Ok(None)` when the registry answers that the
    /// id does not exist (so a decoder can reject just the messages that name it). Ids that do
    /// not exist are not cached: they may be registered later.
    pub(crate) fn find_schema_by_id(&self, id: u32) -> Result<Option<String>> {
        let mut schemas = lock(&self.inner.schemas);
        if let Some(schema) = schemas.get(&id) {
            return Ok(Some(schema.clone()));
        }
        let path = format!("/schemas/ids/{id}");
        let what = || format!("schema id {id}");
        let reply = self.send("GET", &path, None, &what)?;
        if reply.status == 404 && error_code(&reply.body) == Some(SCHEMA_NOT_FOUND) {
            tracing::debug!(registry = %self.inner.shown_url, id, "schema id not found in the registry");
            return Ok(None);
        }
        let parsed: SchemaReply = self.parse(&reply, "GET", &path, &what)?;
        tracing::debug!(registry = %self.inner.shown_url, id, "fetched schema");
        schemas.insert(id, parsed.schema.clone());
        Ok(Some(parsed.schema))
    }

    /// Registers `schema` (an Avro schema as JSON) under `subject`
    /// (`POST /subjects/{subject}/versions`) and returns its id. Registering a schema the subject
    /// already has returns the existing id; the registry refuses a schema that breaks the
    /// subject's compatibility rule (the error quotes its answer).
    ///
    /// ```no_run
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let registry = SchemaRegistry::new("http://localhost:8081");
    /// let schema = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
    /// let id = registry.register("orders-value", schema)?;
    /// assert_eq!(registry.register("orders-value", schema)?, id);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(&id) = lock(&self.inner.registered).get(&key) {
            return Ok(id);
        }
        let path = format!("/subjects/{}/versions", encode_path_segment(subject));
        let what = || format!("registering a schema under subject '{subject}'");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let reply = self.send("POST", &path, Some(body), &what)?;
        let RegisterReply { id } = self.parse(&reply, "POST", &path, &what)?;
        tracing::info!(registry = %self.inner.shown_url, subject, id, "registered schema");
        lock(&self.inner.registered).insert(key, id);
        lock(&self.inner.schemas).entry(id).or_insert_with(|| schema.to_string());
        Ok(id)
    }

    /// The latest version of `subject` (`GET /subjects/{subject}/versions/latest`): its schema
    /// id and schema. Not cached (a subject gets new versions), but the id's schema is.
    ///
    /// ```no_run
    /// use sabot::kafka::registry::SchemaRegistry;
    ///
    /// let registry = SchemaRegistry::new("http://localhost:8081");
    /// let (id, schema) = registry.latest("orders-value")?;
    /// assert_eq!(registry.schema_by_id(id)?, schema);
    /// # Ok::<(), sabot::SabotError>(())
    /// ```
    pub fn latest(&self, subject: &str) -> Result<(u32, String)> {
        let path = format!("/subjects/{}/versions/latest", encode_path_segment(subject));
        let what = || format!("latest version of subject '{subject}'");
        let reply = self.send("GET", &path, None, &what)?;
        let parsed: SchemaReply = self.parse(&reply, "GET", &path, &what)?;
        let id = parsed.id.ok_or_else(|| {
            SabotError::Execution(format!(
                "schema registry {}: GET {path} ({}): the answer has no schema id: {}",
                self.inner.shown_url,
                what(),
                quote(&reply.body)
            ))
        })?;
        lock(&self.inner.schemas).entry(id).or_insert_with(|| parsed.schema.clone());
        lock(&self.inner.registered).entry((subject.to_string(), parsed.schema.clone())).or_insert(id);
        Ok((id, parsed.schema))
    }

    /// Sends one request; an error only when no answer came (any status is an answer).
    fn send(&self, method: &str, path: &str, body: Option<String>, what: &dyn Fn() -> String) -> Result<Reply> {
        let inner = &self.inner;
        let url = format!("{}{path}", inner.url);
        let auth = inner.auth.as_ref().map(|(_, header)| header.as_str());
        let response = match body {
            None => {
                let mut request = inner.agent.get(&url).header("Accept", ACCEPT);
                if let Some(auth) = auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            Some(body) => {
                let mut request = inner.agent.post(&url).header("Accept", ACCEPT).content_type(CONTENT_TYPE);
                if let Some(auth) = auth {
                    request = request.header("Authorization", auth);
                }
                request.send(body)
            }
        };
        let unreachable = |e: ureq::Error| {
            SabotError::Execution(format!(
                "schema registry {} unreachable: {method} {path} ({}): {e}",
                inner.shown_url,
                what()
            ))
        };
        let mut response = response.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(unreachable)?;
        Ok(Reply { status, body })
    }

    /// Parses a successful answer; any other status becomes an error quoting the answer.
    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        reply: &Reply,
        method: &str,
        path: &str,
        what: &dyn Fn() -> String,
    ) -> Result<T> {
        let shown_url = &self.inner.shown_url;
        if !(200..300).contains(&reply.status) {
            return Err(SabotError::Execution(format!(
                "schema registry {shown_url}: {method} {path} ({}) failed with HTTP {}: {}",
                what(),
                reply.status,
                quote(&reply.body)
            )));
        }
        serde_json::from_str(&reply.body).map_err(|e| {
            SabotError::Execution(format!(
                "schema registry {shown_url}: {method} {path} ({}): unexpected answer ({e}): {}",
                what(),
                quote(&reply.body)
            ))
        })
    }
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("SchemaRegistry");
        s.field("url", &self.inner.shown_url);
        if let Some((user, _)) = &self.inner.auth {
            s.field("user", user).field("password", &"<redacted>");
        }
        s.finish()
    }
}

/// Locks a cache; a poisoned lock still holds a consistent map (inserts are single calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The registry's `error_code` in an error answer, if it has one.
fn error_code(body: &str) -> Option<i64> {
    serde_json::from_str::<ErrorReply>(body).ok().map(|e| e.error_code)
}

/// An answer's body for an error message: trimmed, and cut if long.
fn quote(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return "(empty answer)".to_string();
    }
    match body.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_string(),
    }
}

/// `url` with the password of any `user:password@` replaced, for messages and `Debug`.
fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[start..start + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:<redacted>{}", &url[..start], &url[start + at..])
        }
        None => url.to_string(),
    }
}

/// Percent-encodes a path segment (subjects may hold any character).
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for &b in segment.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the basic auth header; a dependency for these
/// few lines is not worth it.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(b"martin:secret"), "bWFydGluOnNlY3JldA==");
    }

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_path_segment("orders-value"), "orders-value");
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_userinfo("http://u:pw@host:8081/x"), "http://u:<redacted>@host:8081/x");
        assert_eq!(redact_userinfo("http://host:8081"), "http://host:8081");
        assert_eq!(redact_userinfo("http://host/a@b"), "http://host/a@b");
    }

    #[test]
    fn debug_hides_the_password() {
        let registry = SchemaRegistry::new("http://localhost:8081").with_basic_auth("alice", "hunter2");
        let shown = format!("{registry:?}");
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&base64(b"alice:hunter2")), "{shown}");
    }

    #[test]
    fn long_answers_are_cut() {
        let long = "x".repeat(2 * MAX_QUOTED_BODY);
        assert_eq!(quote(&long).chars().count(), MAX_QUOTED_BODY + 1);
        assert_eq!(quote("  "), "(empty answer)");
    }
}
