//! The byte layout of state values outside memory (RocksDB values, snapshots): serde with
//! `postcard`, behind an 8-byte little-endian expiry (milliseconds since the epoch; `u64::MAX`
//! for never).

#[cfg(feature = "rocksdb")]
use serde::Serialize;
#[cfg(feature = "rocksdb")]
use serde::de::DeserializeOwned;

use crate::SabotError;

/// Length of the expiry header in front of every stored value.
#[cfg(feature = "rocksdb")]
pub(super) const HEADER: usize = 8;

/// A codec failure on `state`.
pub(super) fn error(state: &str, what: &str, err: postcard::Error) -> SabotError {
    SabotError::State { state: state.to_string(), message: format!("{what}: {err}") }
}

/// Appends the encoding of `value` to `buf`.
#[cfg(feature = "rocksdb")]
pub(super) fn encode_into<T: Serialize>(state: &str, value: &T, buf: &mut Vec<u8>) -> Result<(), SabotError> {
    let out = std::mem::take(buf);
    *buf = postcard::to_extend(value, out).map_err(|e| error(state, "encode", e))?;
    Ok(())
}

/// Decodes one value that fills `bytes`.
#[cfg(feature = "rocksdb")]
pub(super) fn decode<T: DeserializeOwned>(state: &str, bytes: &[u8]) -> Result<T, SabotError> {
    postcard::from_bytes(bytes).map_err(|e| error(state, "decode", e))
}

/// Decodes one value from the front of `bytes`, returning the rest.
#[cfg(feature = "rocksdb")]
pub(super) fn decode_prefix<'a, T: DeserializeOwned>(
    state: &str,
    bytes: &'a [u8],
) -> Result<(T, &'a [u8]), SabotError> {
    postcard::take_from_bytes(bytes).map_err(|e| error(state, "decode", e))
}

/// The expiry in the header of a stored value (values too short to carry one never expire).
#[cfg(feature = "rocksdb")]
#[inline]
pub(super) fn expires_at(stored: &[u8]) -> u64 {
    stored.get(..HEADER).map_or(u64::MAX, |h| u64::from_le_bytes(h.try_into().expect("8 bytes")))
}

/// Starts a stored value: clears `buf` and writes the expiry header.
#[cfg(feature = "rocksdb")]
#[inline]
pub(super) fn start(buf: &mut Vec<u8>, expires_at: u64) {
    buf.clear();
    buf.extend_from_slice(&expires_at.to_le_bytes());
}
