//! Standard Webhooks signing (https://www.standardwebhooks.com/, the scheme
//! Svix uses), over `"{webhook-id}.{webhook-timestamp}.{body}"`:
//! `v1,<base64 HMAC-SHA256>` keyed with the base64-decoded part of a `whsec_`
//! secret, or `v1a,<base64 ed25519 signature>` with a `whsk_` secret key,
//! which receivers verify with its `whpk_` public key. During a secret
//! rotation a request carries one signature per key, space-separated.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
const ED25519_PREFIX: &str = "whsk_";
const PUBLIC_PREFIX: &str = "whpk_";
/// An ed25519 secret key: its 32-byte seed, or the seed and the public key.
const ED25519_SEED_BYTES: usize = 32;

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
    WrongEd25519Length(usize),
    Ed25519Mismatch,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::MissingPrefix => f.write_str(
                "signing secret must start with \"whsec_\" (HMAC) or \"whsk_\" (ed25519) followed by \
                 the base64-encoded key; omit the secret to have one generated",
            ),
            SecretError::NotBase64(reason) => write!(
                f,
                "signing secret after its prefix is not standard base64 ({reason})"
            ),
            SecretError::WrongLength(n) => write!(
                f,
                "signing secret decodes to {n} bytes; it must be {MIN_KEY_BYTES} to \
                 {MAX_KEY_BYTES} random bytes"
            ),
            SecretError::WrongEd25519Length(n) => write!(
                f,
                "ed25519 secret key decodes to {n} bytes; it must be the 32-byte seed, \
                 or the seed and its 32-byte public key"
            ),
            SecretError::Ed25519Mismatch => f.write_str(
                "ed25519 secret key: its last 32 bytes are not the public key of its seed",
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

/// A fresh ed25519 secret key: `whsk_` + base64 of a 32-byte seed from the
/// OS random source.
pub fn generate_ed25519_secret() -> String {
    let mut seed = [0u8; ED25519_SEED_BYTES];
    getrandom::fill(&mut seed).expect("OS random number generator unavailable");
    format!("{ED25519_PREFIX}{}", STANDARD.encode(seed))
}

/// A fresh secret of the same kind as `secret` (by its prefix): what a
/// rotation that is given no new secret signs with.
pub fn generate_secret_like(secret: &str) -> String {
    if secret.starts_with(ED25519_PREFIX) {
        generate_ed25519_secret()
    } else {
        generate_secret()
    }
}

/// A decoded signing secret, cheap to clone. Its `Debug` never shows the key.
#[derive(Clone)]
pub enum SigningKey {
    /// `whsec_`: HMAC-SHA256, signatures `v1,…`.
    Hmac(Arc<[u8]>),
    /// `whsk_`: ed25519, signatures `v1a,…`.
    Ed25519(Arc<Ed25519KeyPair>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::Hmac(_) => f.write_str("SigningKey::Hmac(<redacted>)"),
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(<redacted>)"),
        }
    }
}

impl SigningKey {
    /// The signature scheme, as `webhook-signature` names it: `v1` (HMAC)
    /// or `v1a` (ed25519).
    pub fn scheme(&self) -> &'static str {
        match self {
            SigningKey::Hmac(_) => "v1",
            SigningKey::Ed25519(_) => "v1a",
        }
    }

    /// This key's signature of one attempt: `v1,…` or `v1a,…`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // An i64 has at most 20 characters; format it without allocating.
        let mut digits = [0u8; 20];
        let mut cursor = &mut digits[..];
        let _ = write!(cursor, "{timestamp}"); // cannot overflow 20 bytes
        let len = 20 - cursor.len();
        let ts = &digits[..len];
        let parts = [msg_id.as_bytes(), b".", ts, b".", body];
        let signature = match self {
            SigningKey::Hmac(key) => {
                // HMAC accepts keys of any length; new_from_slice cannot fail for it.
                let mut mac =
                    <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
                for part in parts {
                    mac.update(part);
                }
                STANDARD.encode(mac.finalize().into_bytes())
            }
            SigningKey::Ed25519(pair) => STANDARD.encode(pair.sign(&parts.concat())),
        };
        format!("{},{signature}", self.scheme())
    }

    /// `whpk_` + base64 of the public key, for an ed25519 key; `None` for
    /// HMAC, whose secret is all a receiver has.
    pub fn public_key(&self) -> Option<String> {
        match self {
            SigningKey::Hmac(_) => None,
            SigningKey::Ed25519(pair) => Some(format!(
                "{PUBLIC_PREFIX}{}",
                STANDARD.encode(pair.public_key().as_ref())
            )),
        }
    }
}

/// The key inside a `whsec_` or `whsk_` secret.
pub fn decode_secret(secret: &str) -> Result<SigningKey, SecretError> {
    if let Some(encoded) = secret.strip_prefix(ED25519_PREFIX) {
        let bytes = LENIENT_BASE64
            .decode(encoded)
            .map_err(|e| SecretError::NotBase64(e.to_string()))?;
        let pair = match bytes.len() {
            ED25519_SEED_BYTES => Ed25519KeyPair::from_seed_unchecked(&bytes),
            64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
            n => return Err(SecretError::WrongEd25519Length(n)),
        }
        .map_err(|_| SecretError::Ed25519Mismatch)?;
        return Ok(SigningKey::Ed25519(Arc::new(pair)));
    }
    let encoded = secret
        .strip_prefix(PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    let key = LENIENT_BASE64
        .decode(encoded)
        .map_err(|e| SecretError::NotBase64(e.to_string()))?;
    if (MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        Ok(SigningKey::Hmac(key.into()))
    } else {
        Err(SecretError::WrongLength(key.len()))
    }
}

/// Checks a caller-supplied secret before it is stored.
pub fn validate_secret(secret: &str) -> Result<(), SecretError> {
    decode_secret(secret).map(drop)
}

/// The `webhook-signature` header value for one attempt: one signature per
/// key, the current key first, separated by spaces.
pub fn sign(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha2::Digest;

    pub(crate) fn hmac_bytes(key: &SigningKey) -> Vec<u8> {
        match key {
            SigningKey::Hmac(bytes) => bytes.to_vec(),
            SigningKey::Ed25519(_) => panic!("not an HMAC key"),
        }
    }

    /// The RFC 8032 test vector 1: its seed, public key, and the signature of
    /// the empty message.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn ed25519_keys_sign_v1a_and_show_their_public_key() {
        let secret = format!("whsk_{}", STANDARD.encode(hex(RFC8032_SEED)));
        let key = decode_secret(&secret).unwrap();
        assert_eq!(
            key.public_key(),
            Some(format!("whpk_{}", STANDARD.encode(hex(RFC8032_PUBLIC))))
        );
        let sig = key.sign("msg_1", 1614265330, b"{}");
        let raw = STANDARD
            .decode(sig.strip_prefix("v1a,").expect("v1a"))
            .unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, hex(RFC8032_PUBLIC))
            .verify(b"msg_1.1614265330.{}", &raw)
            .expect("verifies over {id}.{timestamp}.{body}");
        // Seed and public key together; a mismatched pair is refused.
        let both = format!(
            "whsk_{}",
            STANDARD.encode([hex(RFC8032_SEED), hex(RFC8032_PUBLIC)].concat())
        );
        assert_eq!(decode_secret(&both).unwrap().public_key(), key.public_key());
        let wrong = format!(
            "whsk_{}",
            STANDARD.encode([hex(RFC8032_SEED), vec![1; 32]].concat())
        );
        assert_eq!(validate_secret(&wrong), Err(SecretError::Ed25519Mismatch));
        assert_eq!(
            validate_secret(&format!("whsk_{}", STANDARD.encode([1u8; 31]))),
            Err(SecretError::WrongEd25519Length(31))
        );
        let generated = generate_ed25519_secret();
        assert!(
            decode_secret(&generated).unwrap().public_key().is_some(),
            "{generated}"
        );
        // A rotation without a new secret keeps the kind of key.
        let like = |secret: &str| {
            decode_secret(&generate_secret_like(secret))
                .unwrap()
                .scheme()
        };
        assert_eq!((key.scheme(), like(&secret)), ("v1a", "v1a"));
        assert_eq!(like(&generate_secret()), "v1");
        assert_ne!(generated, generate_ed25519_secret());
        assert_eq!(
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .public_key(),
            None
        );
        assert!(!format!("{key:?}").contains(&secret[5..15]));
    }

    #[test]
    fn every_key_signs_the_header_current_first() {
        let old = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = decode_secret(&format!("whsk_{}", STANDARD.encode(hex(RFC8032_SEED)))).unwrap();
        let header = sign(&[new.clone(), old.clone()], "msg_1", 7, b"x");
        assert_eq!(
            header,
            format!(
                "{} {}",
                new.sign("msg_1", 7, b"x"),
                old.sign("msg_1", 7, b"x")
            )
        );
        assert!(
            header.starts_with("v1a,") && header.contains(" v1,"),
            "{header}"
        );
    }

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
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            sig,
            reference_signature(
                &hmac_bytes(&key),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                body
            )
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
                        SigningKey::Hmac(key.into()).sign("msg_1", ts, body),
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
        assert_eq!(hmac_bytes(&decode_secret(&a).unwrap()).len(), 24);
        assert_eq!(validate_secret(&a), Ok(()));
    }

    #[test]
    fn secret_validation() {
        let b64 = |n: usize| format!("whsec_{}", STANDARD.encode(vec![9u8; n]));
        let unpadded = format!("whsec_{}", STANDARD.encode([9u8; 25]).trim_end_matches('='));
        assert_eq!(
            hmac_bytes(&decode_secret(&unpadded).unwrap()),
            vec![9u8; 25]
        );
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
