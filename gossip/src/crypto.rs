//! Sealing of gossip datagrams with the federation's gossip key.
//!
//! Wire format, version 1: `[version: 1 byte][nonce: 24 bytes][ciphertext + tag]`,
//! XChaCha20-Poly1305 with a random nonce (24 bytes make random nonces safe for any
//! realistic number of datagrams). The associated data is a label plus the version
//! byte, so a datagram cannot be replayed under another format version or protocol.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The only format version so far.
pub const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
const AAD_LABEL: &[u8] = b"hansa-gossip";

/// The federation's 32-byte gossip key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key (for `hansa` to mint one).
    pub fn generate() -> Self {
        Self(Key::generate().into())
    }

    /// The key as standard base64, the form configuration files use.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("gossip key: expected 32 bytes written as base64 (44 characters) or hex (64 characters), got {len} characters that decode to {decoded}; make one with `openssl rand -base64 32`")]
pub struct InvalidKey {
    len: usize,
    decoded: String,
}

impl FromStr for GossipKey {
    type Err = InvalidKey;

    /// Accepts 64 hex digits or standard base64 (padded or not); surrounding
    /// whitespace is ignored, as keys are often pasted from files.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let decoded = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|e| e.to_string())
        };
        let invalid = |decoded: String| InvalidKey {
            len: text.len(),
            decoded,
        };
        let bytes = decoded.map_err(invalid)?;
        let len = bytes.len();
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid(format!("{len} bytes")))?;
        Ok(Self(key))
    }
}

/// Why a datagram was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("datagram of {0} bytes is too short to be sealed")]
    TooShort(usize),
    #[error("datagram format version {0} is not supported (expected {VERSION})")]
    UnknownVersion(u8),
    #[error("datagram failed authentication (wrong gossip key or tampered)")]
    Unauthenticated,
}

/// Seals and opens datagrams with one gossip key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer")
    }
}

fn aad(version: u8) -> [u8; AAD_LABEL.len() + 1] {
    let mut aad = [0u8; AAD_LABEL.len() + 1];
    aad[..AAD_LABEL.len()].copy_from_slice(AAD_LABEL);
    aad[AAD_LABEL.len()] = version;
    aad
}

impl Sealer {
    pub fn new(key: &GossipKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(key.0)),
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = XNonce::generate();
        let aad = aad(VERSION);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only fails for plaintexts beyond 256 GiB.
            .expect("XChaCha20-Poly1305 seals any datagram-sized plaintext");
        let mut datagram = Vec::with_capacity(OVERHEAD + plaintext.len());
        datagram.push(VERSION);
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(&ciphertext);
        datagram
    }

    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        if datagram.len() < OVERHEAD {
            return Err(OpenError::TooShort(datagram.len()));
        }
        let version = datagram[0];
        if version != VERSION {
            return Err(OpenError::UnknownVersion(version));
        }
        let (nonce, ciphertext) = datagram[1..].split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::TooShort(datagram.len()))?;
        let aad = aad(version);
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes([byte; 32])
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_key_only() {
        let (ours, theirs) = (Sealer::new(&key(1)), Sealer::new(&key(2)));
        let sealed = ours.seal(b"ping");
        assert_eq!(sealed.len(), 4 + OVERHEAD);
        assert_eq!(ours.open(&sealed).unwrap(), b"ping");
        assert_eq!(theirs.open(&sealed), Err(OpenError::Unauthenticated));
    }

    #[test]
    fn same_plaintext_seals_differently_each_time() {
        let sealer = Sealer::new(&key(1));
        assert_ne!(sealer.seal(b"x"), sealer.seal(b"x"));
    }

    #[test]
    fn the_version_byte_is_authenticated() {
        let sealer = Sealer::new(&key(1));
        let mut sealed = sealer.seal(b"hello");
        sealed[0] = 2;
        assert_eq!(sealer.open(&sealed), Err(OpenError::UnknownVersion(2)));
        assert_eq!(sealer.open(&sealed[..10]), Err(OpenError::TooShort(10)));
    }

    #[test]
    fn keys_parse_from_base64_and_hex_and_never_print() {
        let generated = GossipKey::generate();
        let text = generated.to_base64();
        assert_eq!(text.parse::<GossipKey>(), Ok(generated.clone()));
        assert_eq!(
            format!(" {} \n", text.trim_end_matches('=')).parse::<GossipKey>(),
            Ok(generated.clone())
        );
        let hex_text = "ab".repeat(32);
        assert_eq!(hex_text.parse::<GossipKey>(), Ok(key(0xab)));
        assert_eq!(format!("{generated:?}"), "GossipKey(<redacted>)");

        let short = "c2hvcnQ=".parse::<GossipKey>().expect_err("5 bytes");
        assert!(short.to_string().contains("decode to 5 bytes"), "{short}");
        assert!("not a key!".parse::<GossipKey>().is_err());
    }

    proptest! {
        #[test]
        fn round_trip_and_any_bit_flip_is_detected(
            plaintext in prop::collection::vec(any::<u8>(), 0..1400),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let sealer = Sealer::new(&key(7));
            let sealed = sealer.seal(&plaintext);
            prop_assert_eq!(sealer.open(&sealed).unwrap(), plaintext);
            let mut tampered = sealed.clone();
            let at = flip.index(tampered.len());
            tampered[at] ^= 1 << bit;
            prop_assert!(sealer.open(&tampered).is_err());
        }
    }
}
