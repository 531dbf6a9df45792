//! Standard Webhooks signatures (<https://www.standardwebhooks.com>) of `type: webhook`
//! deliveries (SPEC §5, README "Webhook payload"). Pure: parsing the Secret's `signingKey`
//! into HMAC keys, and signing one attempt.
//!
//! `signingKey` holds one or more keys separated by whitespace and/or commas (rotation: the
//! operator signs with every key, receivers verify with any one of them). Each key is either
//! `whsec_<base64>` (the Standard Webhooks form: the HMAC key is the base64-decoded bytes;
//! padding optional) or a raw key string (the HMAC key is the string's UTF-8 bytes as
//! they are, never base64-decoded). Every key must be at least [`MIN_KEY_BYTES`] bytes.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{KeyInit, Mac};

/// The delivery id: the same across retries and restarts, so a receiver drops duplicates.
pub const ID_HEADER: &str = "webhook-id";
/// Unix seconds when the attempt was signed.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64 HMAC-SHA256>` per key, space-separated.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix of a Standard Webhooks secret; base64 follows.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest HMAC key accepted (SPEC §5).
pub const MIN_KEY_BYTES: usize = 32;

/// Standard alphabet, padding optional (as the reference libraries accept).
const BASE64_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One HMAC key. Its `Debug` shows the length only, never the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} bytes)", self.0.len())
    }
}

/// Why `signingKey` gives no usable keys. The message never contains key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Nothing but separators.
    Empty,
    /// Key `index` (1-based) of `count` starts with `whsec_` but the rest is not base64.
    NotBase64 { index: usize, count: usize },
    /// Key `index` (1-based) of `count` gives an HMAC key of `bytes` bytes.
    TooShort {
        index: usize,
        count: usize,
        bytes: usize,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => write!(f, "holds no key"),
            KeyError::NotBase64 { index, count } => write!(
                f,
                "key {index} of {count}: after {SECRET_PREFIX:?} comes no valid base64 (standard alphabet)"
            ),
            KeyError::TooShort {
                index,
                count,
                bytes,
            } => write!(
                f,
                "key {index} of {count} is {bytes} bytes long; at least {MIN_KEY_BYTES} are required \
                 (a {SECRET_PREFIX} key counts its base64-decoded bytes)"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// The keys of a `signingKey` value, in the order written; a key written twice counts once.
pub fn parse_keys(text: &str) -> Result<Vec<SigningKey>, KeyError> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Err(KeyError::Empty);
    }
    let count = words.len();
    let mut keys: Vec<SigningKey> = Vec::with_capacity(count);
    for (i, word) in words.into_iter().enumerate() {
        let index = i + 1;
        let bytes = match word.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => BASE64_ANY_PADDING
                .decode(encoded)
                .map_err(|_| KeyError::NotBase64 { index, count })?,
            None => word.as_bytes().to_vec(),
        };
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                index,
                count,
                bytes: bytes.len(),
            });
        }
        let key = SigningKey(bytes);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// `v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>">` with one key.
pub fn sign(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value: one signature per key, space-separated, in key order.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks headers of one attempt.
pub fn headers(
    keys: &[SigningKey],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (ID_HEADER, id.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (
            SIGNATURE_HEADER,
            signature_header(keys, id, timestamp, body),
        ),
    ]
}

#[cfg(test)]
mod tests {
    //! Known answers computed with the reference implementation, PyPI `standardwebhooks`
    //! 1.3.0 (`Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, timezone.utc),
    //! body)`; a raw key string `s` as `Webhook(s.encode())`), when these tests were written;
    //! the first vector is also the example of the Standard Webhooks specification.
    use super::*;

    const ID: &str = "6c1f0e2a-9d4b-4c1e-8f5a-2b7d3e9a1c40:started";
    const TS: i64 = 1_795_000_000;
    const BODY: &[u8] = br#"{"apiVersion":"rollguard.dev/v1alpha1","kind":"RollguardNotification","id":"6c1f0e2a-9d4b-4c1e-8f5a-2b7d3e9a1c40:started","event":"started"}"#;
    /// base64 of the bytes 0, 1, …, 31.
    const WHSEC: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const WHSEC_SIG: &str = "v1,Qn44bKYpSdjJcgXZUznlTSSPYtNlmKqIB83mVVhcolM=";
    /// 36 bytes, used as they are.
    const RAW: &str = "rollguard-raw-signing-key-0123456789";
    /// Also what `Webhook("whsec_" + base64(RAW))` gives.
    const RAW_SIG: &str = "v1,+CALy/x/iaeKy9CfHvqTLlTBESoMn5E8KCdZ3wIK5dQ=";
    /// base64 of the bytes 100, …, 133 without its `=` padding.
    const WHSEC_UNPADDED: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhQ";
    const WHSEC_UNPADDED_SIG: &str = "v1,V49g6wax4Fm9wsdF2Hb7QsFnUSGsdWi03M5xE8KgdMU=";

    fn key(text: &str) -> SigningKey {
        let mut keys = parse_keys(text).unwrap();
        assert_eq!(keys.len(), 1);
        keys.remove(0)
    }

    #[test]
    fn the_specification_example_signs_as_the_reference_library() {
        // The example secret is 24 bytes: below our minimum, so built directly.
        let key = SigningKey(
            BASE64_ANY_PADDING
                .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap(),
        );
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_whsec_key_is_its_base64_decoded_bytes() {
        let k = key(WHSEC);
        assert_eq!(k.0, (0u8..32).collect::<Vec<_>>());
        assert_eq!(sign(&k, ID, TS, BODY), WHSEC_SIG);
        assert_eq!(sign(&key(WHSEC_UNPADDED), ID, TS, BODY), WHSEC_UNPADDED_SIG);
    }

    #[test]
    fn a_raw_key_is_its_bytes_as_written() {
        let k = key(RAW);
        assert_eq!(k.0, RAW.as_bytes());
        assert_eq!(sign(&k, ID, TS, BODY), RAW_SIG);
        // The same key written in the whsec_ form signs the same.
        let as_whsec = format!("{SECRET_PREFIX}{}", STANDARD.encode(RAW));
        assert_eq!(key(&as_whsec), k);
    }

    #[test]
    fn id_timestamp_and_body_are_all_signed() {
        let k = key(WHSEC);
        assert_ne!(sign(&k, "other:started", TS, BODY), WHSEC_SIG);
        assert_ne!(sign(&k, ID, TS + 1, BODY), WHSEC_SIG);
        assert_ne!(sign(&k, ID, TS, b"{}"), WHSEC_SIG);
    }

    #[test]
    fn several_keys_give_space_separated_signatures_in_key_order() {
        for text in [
            format!("{WHSEC} {RAW}"),
            format!("{WHSEC},{RAW}"),
            format!("  {WHSEC} ,\n\t{RAW},\n"),
        ] {
            let keys = parse_keys(&text).unwrap();
            assert_eq!(keys.len(), 2, "{text:?}");
            assert_eq!(
                signature_header(&keys, ID, TS, BODY),
                format!("{WHSEC_SIG} {RAW_SIG}")
            );
        }
        // Written twice, signed once.
        assert_eq!(parse_keys(&format!("{RAW} {RAW}")).unwrap().len(), 1);
    }

    #[test]
    fn the_headers_are_the_standard_webhooks_ones() {
        let keys = parse_keys(WHSEC).unwrap();
        assert_eq!(
            headers(&keys, ID, TS, BODY),
            [
                ("webhook-id", ID.to_string()),
                ("webhook-timestamp", "1795000000".to_string()),
                ("webhook-signature", WHSEC_SIG.to_string()),
            ]
        );
    }

    #[test]
    fn short_empty_or_malformed_keys_are_refused_without_showing_them() {
        let short = "short-key-of-31-bytes-012345678";
        assert_eq!(short.len(), 31);
        let e = parse_keys(&format!("{RAW}, {short}")).unwrap_err();
        assert_eq!(
            e,
            KeyError::TooShort {
                index: 2,
                count: 2,
                bytes: 31
            }
        );
        let message = e.to_string();
        assert!(message.contains("31 bytes"), "{message}");
        assert!(!message.contains(short), "{message}");
        // Exactly 32 is enough.
        assert!(parse_keys(&"k".repeat(32)).is_ok());
        // A whsec_ key counts decoded bytes: 31 decoded bytes are too few even though the
        // text is longer than 32.
        let whsec31 = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 31]));
        assert_eq!(
            parse_keys(&whsec31),
            Err(KeyError::TooShort {
                index: 1,
                count: 1,
                bytes: 31
            })
        );
        assert_eq!(parse_keys(" ,\n"), Err(KeyError::Empty));
        let bad = format!("{SECRET_PREFIX}not*base64*at*all*but*long*enough*");
        let e = parse_keys(&bad).unwrap_err();
        assert_eq!(e, KeyError::NotBase64 { index: 1, count: 1 });
        assert!(!e.to_string().contains("not*base64"), "{e}");
        assert_eq!(format!("{:?}", key(RAW)), "SigningKey(36 bytes)");
    }
}
