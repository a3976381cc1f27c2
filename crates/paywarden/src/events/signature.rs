//! Authenticating provider events.
//!
//! - Stripe: the `Stripe-Signature` header, exactly as Stripe documents it (docs.stripe.com,
//!   "Webhooks" → "Check the webhook signatures"; stripe-python `stripe/_webhook.py`,
//!   `WebhookSignature.verify_header`): the header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`
//!   (other schemes such as `v0` are ignored); the expected signature is
//!   `hex(HMAC-SHA256(key = the endpoint secret "whsec_..." as UTF-8 bytes, "{t}.{raw body}"))`;
//!   the event is authentic when any `v1` equals it (compared in constant time), and fresh when
//!   `t` is not older than the tolerance (default 300 s, stripe-python's `DEFAULT_TOLERANCE`).
//! - OPP: the encrypted notification (OPP docs "Webhooks" → "Decryption"; OPP's published PHP
//!   example decrypts with `sodium_crypto_aead_aes256gcm_decrypt(hex2bin(body . tag), "", iv,
//!   hex2bin(key))`): the body is the hex of the AES-256-GCM ciphertext, the headers
//!   `X-Initialization-Vector` and `X-Authentication-Tag` carry the hex IV (12 bytes) and tag
//!   (16 bytes), and the key is the hex secret (32 bytes) of the merchant's webhook
//!   configuration. A notification that fails to authenticate is never read.

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why an event was not authenticated. Messages name no secret and no signature value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one without `t=` or any `v1=`.
    #[error("the Stripe-Signature header is missing or malformed (t=...,v1=... expected)")]
    Malformed,
    /// No `v1` signature matches the payload under the endpoint secret.
    #[error("no v1 signature matches the payload under the configured endpoint secret")]
    Mismatch,
    /// The signature's timestamp is older than the tolerance.
    #[error("the signature's timestamp is outside the tolerance window ({tolerance_secs} s)")]
    Stale {
        /// The tolerance in seconds.
        tolerance_secs: u64,
    },
    /// The OPP notification's IV, tag, body or key is not the hex OPP sends.
    #[error("the OPP notification is not hex-encoded as OPP sends it ({0})")]
    Encoding(&'static str),
    /// AES-256-GCM refused the OPP notification: wrong key, or a changed body, IV or tag.
    #[error("the OPP notification did not authenticate under the configured webhook key")]
    Decrypt,
}

/// `hex(HMAC-SHA256(secret, "{timestamp}.{payload}"))`: Stripe's `v1` signature.
pub fn stripe_signature(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a `Stripe-Signature` header for `payload` (the raw body) at `now` (unix seconds).
/// Returns the signature's timestamp.
///
/// # Errors
/// [`SignatureError::Malformed`], [`SignatureError::Mismatch`], [`SignatureError::Stale`]
/// (checked after the signature, as stripe-python does; a `t` in the future is accepted, as
/// there).
pub fn verify_stripe(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    tolerance_secs: u64,
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = stripe_signature(secret, timestamp, payload);
    let matched = signatures.iter().fold(false, |any, s| {
        any | bool::from(expected.as_bytes().ct_eq(s.as_bytes()))
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if tolerance > 0 && timestamp < now.saturating_sub(tolerance) {
        return Err(SignatureError::Stale { tolerance_secs });
    }
    Ok(timestamp)
}

/// Decrypts an OPP notification: `body_hex` (the HTTP body), `iv_hex`
/// (`X-Initialization-Vector`), `tag_hex` (`X-Authentication-Tag`) under `key_hex`.
/// Returns the plaintext (JSON).
///
/// # Errors
/// [`SignatureError::Encoding`] for non-hex input or wrong lengths, [`SignatureError::Decrypt`]
/// when the notification does not authenticate.
pub fn decrypt_opp(
    body_hex: &[u8],
    iv_hex: Option<&str>,
    tag_hex: Option<&str>,
    key_hex: &str,
) -> Result<Vec<u8>, SignatureError> {
    let key = hex::decode(key_hex.trim()).map_err(|_| SignatureError::Encoding("key"))?;
    if key.len() != 32 {
        return Err(SignatureError::Encoding("key"));
    }
    let iv = hex::decode(
        iv_hex
            .ok_or(SignatureError::Encoding("X-Initialization-Vector"))?
            .trim(),
    )
    .map_err(|_| SignatureError::Encoding("X-Initialization-Vector"))?;
    if iv.len() != 12 {
        return Err(SignatureError::Encoding("X-Initialization-Vector"));
    }
    let tag = hex::decode(
        tag_hex
            .ok_or(SignatureError::Encoding("X-Authentication-Tag"))?
            .trim(),
    )
    .map_err(|_| SignatureError::Encoding("X-Authentication-Tag"))?;
    if tag.len() != 16 {
        return Err(SignatureError::Encoding("X-Authentication-Tag"));
    }
    let body = std::str::from_utf8(body_hex).map_err(|_| SignatureError::Encoding("body"))?;
    let mut sealed = hex::decode(body.trim()).map_err(|_| SignatureError::Encoding("body"))?;
    sealed.extend_from_slice(&tag);
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| SignatureError::Encoding("key"))?;
    cipher
        .decrypt(
            Nonce::from_slice(&iv),
            Payload {
                msg: &sealed,
                aad: b"",
            },
        )
        .map_err(|_| SignatureError::Decrypt)
}

/// Encrypts `plaintext` as OPP sends a notification: `(body_hex, iv_hex, tag_hex)`. For the
/// emulator's twin and tests; `iv` must be 12 random bytes, never reused under one key.
///
/// # Errors
/// [`SignatureError::Encoding`] for a key that is not 64 hex characters.
pub fn encrypt_opp(
    plaintext: &[u8],
    key_hex: &str,
    iv: [u8; 12],
) -> Result<(String, String, String), SignatureError> {
    let key = hex::decode(key_hex.trim()).map_err(|_| SignatureError::Encoding("key"))?;
    let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| SignatureError::Encoding("key"))?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&iv), plaintext)
        .map_err(|_| SignatureError::Decrypt)?;
    let (body, tag) = sealed.split_at(sealed.len().saturating_sub(16));
    Ok((hex::encode(body), hex::encode(iv), hex::encode(tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn stripe_signatures_verify_as_stripe_documents() {
        let payload = br#"{"id":"evt_1","type":"refund.updated"}"#;
        let t = 1_700_000_000;
        let good = stripe_signature(SECRET, t, payload);
        let header = format!("t={t},v1={good}");
        assert_eq!(
            verify_stripe(Some(&header), payload, SECRET, 300, t + 10),
            Ok(t)
        );
        // Several v1 (a secret being rolled): any one matching is enough; v0 is ignored.
        let header = format!("t={t},v0=abc,v1={},v1={good}", "0".repeat(64));
        assert_eq!(verify_stripe(Some(&header), payload, SECRET, 300, t), Ok(t));
        // Another secret, a changed body, a changed timestamp: refused.
        let header = format!("t={t},v1={good}");
        assert_eq!(
            verify_stripe(Some(&header), payload, "whsec_other", 300, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe(Some(&header), b"{}", SECRET, 300, t),
            Err(SignatureError::Mismatch)
        );
        let header = format!("t={},v1={good}", t + 1);
        assert_eq!(
            verify_stripe(Some(&header), payload, SECRET, 300, t),
            Err(SignatureError::Mismatch)
        );
        // Too old: stale. No header, no v1, no t: malformed.
        let header = format!("t={t},v1={good}");
        assert_eq!(
            verify_stripe(Some(&header), payload, SECRET, 300, t + 301),
            Err(SignatureError::Stale {
                tolerance_secs: 300
            })
        );
        for bad in [
            None,
            Some("t=1"),
            Some(&format!("v1={good}") as &str),
            Some(""),
        ] {
            assert_eq!(
                verify_stripe(bad, payload, SECRET, 300, t),
                Err(SignatureError::Malformed)
            );
        }
    }

    #[test]
    fn opp_notifications_round_trip_and_tampering_is_refused() {
        let key = "a".repeat(64);
        let (body, iv, tag) = encrypt_opp(br#"{"type":"PAYMENT"}"#, &key, [7; 12]).unwrap();
        let plain = decrypt_opp(body.as_bytes(), Some(&iv), Some(&tag), &key).unwrap();
        assert_eq!(plain, br#"{"type":"PAYMENT"}"#);
        let other = "b".repeat(64);
        assert_eq!(
            decrypt_opp(body.as_bytes(), Some(&iv), Some(&tag), &other),
            Err(SignatureError::Decrypt)
        );
        let mut flipped = body.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            decrypt_opp(&flipped, Some(&iv), Some(&tag), &key),
            Err(SignatureError::Decrypt)
        );
        assert_eq!(
            decrypt_opp(body.as_bytes(), Some(&iv), Some(&"0".repeat(32)), &key),
            Err(SignatureError::Decrypt)
        );
        assert!(matches!(
            decrypt_opp(body.as_bytes(), None, Some(&tag), &key),
            Err(SignatureError::Encoding(_))
        ));
    }
}
