//! Standard Webhooks signing (https://www.standardwebhooks.com/, the scheme
//! Svix uses): `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64-decoded
//! part of a `whsec_` secret.

use std::fmt;
use std::io::Write;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// Bytes of randomness in a generated secret (what Svix issues).
const GENERATED_KEY_BYTES: usize = 24;

/// Accepted key sizes: the Standard Webhooks spec asks for 24 to 64 bytes.
/// Shorter keys are guessable offline from one signed request; longer ones are
/// almost certainly a pasted value that is not a key.
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;

/// Secrets from other systems are not always padded; the bytes are what matter.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What is wrong with a signing secret. Messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    MissingPrefix,
    NotBase64(String),
    WrongLength(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::MissingPrefix => f.write_str(
                "signing secret must start with \"whsec_\" followed by the base64-encoded key; \
                 omit the secret to have one generated",
            ),
            SecretError::NotBase64(reason) => write!(
                f,
                "signing secret after \"whsec_\" is not standard base64 ({reason})"
            ),
            SecretError::WrongLength(n) => write!(
                f,
                "signing secret decodes to {n} bytes; it must be {MIN_KEY_BYTES} to \
                 {MAX_KEY_BYTES} random bytes"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// A fresh secret: `whsec_` + base64 of 24 bytes from the OS random source.
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    // The kernel's CSPRNG does not fail on a running Linux system; if it ever
    // did, handing out a predictable secret would be far worse than an error.
    getrandom::fill(&mut key).expect("OS random number generator unavailable");
    let mut secret = String::with_capacity(PREFIX.len() + GENERATED_KEY_BYTES * 4 / 3);
    secret.push_str(PREFIX);
    STANDARD.encode_string(key, &mut secret);
    secret
}

/// The HMAC key inside a `whsec_` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    let key = LENIENT_BASE64
        .decode(encoded)
        .map_err(|e| SecretError::NotBase64(e.to_string()))?;
    if (MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        Ok(key)
    } else {
        Err(SecretError::WrongLength(key.len()))
    }
}

/// Checks a caller-supplied secret before it is stored.
pub fn validate_secret(secret: &str) -> Result<(), SecretError> {
    decode_secret(secret).map(drop)
}

/// The `webhook-signature` header value for one attempt.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // An i64 has at most 20 characters; format it without allocating.
    let mut digits = [0u8; 20];
    let mut cursor = &mut digits[..];
    let _ = write!(cursor, "{timestamp}"); // cannot overflow 20 bytes
    let ts_len = 20 - cursor.len();

    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(&digits[..ts_len]);
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();

    let mut out = String::with_capacity(3 + 44);
    out.push_str("v1,");
    STANDARD.encode_string(tag, &mut out);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha2::Digest;

    /// HMAC-SHA256 written out from RFC 2104 over the bare hash, so the tests do
    /// not trust the `hmac` crate wiring they are checking.
    pub(crate) fn reference_signature(key: &[u8], msg_id: &str, ts: &str, body: &[u8]) -> String {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(format!("{msg_id}.{ts}.").as_bytes())
            .chain_update(body)
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        format!("v1,{}", STANDARD.encode(outer))
    }

    #[test]
    fn matches_the_published_standard_webhooks_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            sig,
            reference_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body)
        );
    }

    #[test]
    fn agrees_with_reference_hmac_for_many_inputs() {
        let long_key = [7u8; 64];
        let keys: [&[u8]; 3] = [&[1u8; 24], &[0xab; 32], &long_key];
        let timestamps = [0i64, 1, -1, 1_700_000_000, i64::MAX, i64::MIN];
        let bodies: [&[u8]; 3] = [b"", b"{}", "{\"ünïcode\": \"✓\"}".as_bytes()];
        for key in keys {
            for ts in timestamps {
                for body in bodies {
                    assert_eq!(
                        sign(key, "msg_1", ts, body),
                        reference_signature(key, "msg_1", &ts.to_string(), body),
                        "ts {ts}"
                    );
                }
            }
        }
    }

    #[test]
    fn generated_secrets_decode_to_24_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 32, "{a}");
        assert_ne!(a, b);
        assert_eq!(decode_secret(&a).unwrap().len(), 24);
        assert_eq!(validate_secret(&a), Ok(()));
    }

    #[test]
    fn secret_validation() {
        let b64 = |n: usize| format!("whsec_{}", STANDARD.encode(vec![9u8; n]));
        let unpadded = format!("whsec_{}", STANDARD.encode([9u8; 25]).trim_end_matches('='));
        assert_eq!(decode_secret(&unpadded).unwrap(), vec![9u8; 25]);
        assert!(validate_secret(&b64(24)).is_ok());
        assert!(validate_secret(&b64(64)).is_ok());
        assert_eq!(validate_secret(&b64(23)), Err(SecretError::WrongLength(23)));
        assert_eq!(validate_secret(&b64(65)), Err(SecretError::WrongLength(65)));
        assert_eq!(validate_secret("whsec_"), Err(SecretError::WrongLength(0)));
        assert_eq!(
            validate_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        // URL-safe alphabet and stray characters are not the standard encoding.
        for bad in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa_w",
            "whsec_not base64!",
        ] {
            let err = validate_secret(bad).unwrap_err();
            assert!(matches!(err, SecretError::NotBase64(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("LaLa"), "secret echoed: {err}");
        }
        assert!(SecretError::WrongLength(8)
            .to_string()
            .contains("must be 24 to 64 random bytes"));
        assert!(SecretError::MissingPrefix
            .to_string()
            .contains("must start with \"whsec_\""));
    }
}
