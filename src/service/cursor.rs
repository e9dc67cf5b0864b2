//! Opaque page cursors: the last post's position, signed so that only cursors this service
//! issued are accepted (a forged or corrupted one is a 400).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::DateTime;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::db::posts::PageKey;
use crate::error::ApiError;

const TAG_LEN: usize = 12;
const LEN: usize = 8 + 8 + TAG_LEN;

pub struct CursorCodec {
    mac: Hmac<Sha256>,
}

impl CursorCodec {
    /// `secret` is the token secret; cursors get a key of their own derived from it.
    pub fn new(secret: &[u8]) -> Self {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(b"post-rate page cursor v1");
        let key = derive.finalize().into_bytes();
        CursorCodec {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    pub fn encode(&self, key: PageKey) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.extend_from_slice(&key.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(&key.id.to_be_bytes());
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(&self, cursor: &str) -> Result<PageKey, ApiError> {
        let invalid = || ApiError::BadRequest("cursor is not one this service issued".into());
        // Longer input cannot be valid: refuse it before decoding anything.
        if cursor.len() > 64 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
        if bytes.len() != LEN {
            return Err(invalid());
        }
        let (payload, tag) = bytes.split_at(16);
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag).map_err(|_| invalid())?;
        let micros = i64::from_be_bytes(payload[..8].try_into().map_err(|_| invalid())?);
        let id = i64::from_be_bytes(payload[8..].try_into().map_err(|_| invalid())?);
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
        Ok(PageKey { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_forgeries() {
        let codec = CursorCodec::new(b"secret");
        let key = PageKey {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: 42,
        };
        let cursor = codec.encode(key);
        assert_eq!(codec.decode(&cursor).unwrap(), key);
        assert!(CursorCodec::new(b"other").decode(&cursor).is_err());
        let mut tampered = cursor.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        assert!(codec
            .decode(std::str::from_utf8(&tampered).unwrap())
            .is_err());
        for bad in ["", "abc", "!!!!", &"A".repeat(10_000)] {
            assert!(codec.decode(bad).is_err(), "{bad}");
        }
    }
}
