//! Curve25519 keys as libsignal serializes them, X25519 agreement and XEdDSA signatures.
//!
//! Every public key on the wire is 33 bytes: the type byte `0x05` followed by the 32-byte
//! Montgomery u-coordinate (docs/protocol.md §6.2). Identity keys sign with XEdDSA (Signal's
//! specification), so one Curve25519 key pair serves both agreement and signatures.

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::error::{Error, KeyError};
use crate::secret::{Secret, random_bytes};

/// libsignal's type byte for Curve25519 ("DJB") keys.
pub const DJB_TYPE: u8 = 0x05;
/// Length of a serialized public key.
pub const PUBLIC_KEY_LEN: usize = 33;
/// Length of an XEdDSA signature.
pub const SIGNATURE_LEN: usize = 64;

/// A Curve25519 public key (Montgomery u-coordinate).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// An identity public key; the same type, named for what it is.
pub type IdentityKey = PublicKey;

impl PublicKey {
    /// Parses libsignal's 33-byte form; `field` names the key in errors.
    pub fn from_bytes(field: &'static str, bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(KeyError::WrongLength {
                field,
                expected: PUBLIC_KEY_LEN,
                got: bytes.len(),
            });
        }
        let (ty, rest) = bytes.split_at(1);
        if ty != [DJB_TYPE] {
            return Err(KeyError::WrongType {
                field,
                got: ty.first().copied().unwrap_or(0),
            });
        }
        let mut u = [0u8; 32];
        u.copy_from_slice(rest);
        Ok(Self(u))
    }

    /// From the raw 32-byte u-coordinate.
    pub fn from_montgomery(u: [u8; 32]) -> Self {
        Self(u)
    }

    /// The 33-byte serialization (`0x05` ‖ u).
    pub fn serialize(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out[0] = DJB_TYPE;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// The raw u-coordinate.
    pub fn montgomery(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex of the 33-byte form (Conversations' internal fingerprint string).
    pub fn to_hex(&self) -> String {
        hex(&self.serialize())
    }

    /// Verifies an XEdDSA signature made by the owner of this key, strictly: the key must be a
    /// canonical u-coordinate of a point of large order, `s` canonical, and `R` must match
    /// byte for byte (cofactorless, as libsignal's `xed25519_verify`).
    pub fn verify(
        &self,
        what: &'static str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), KeyError> {
        let bad = KeyError::BadSignature { what };
        let sig: &[u8; SIGNATURE_LEN] =
            signature.try_into().map_err(|_| KeyError::WrongLength {
                field: "signature",
                expected: SIGNATURE_LEN,
                got: signature.len(),
            })?;
        if !is_canonical_field_element(&self.0) {
            return Err(bad);
        }
        let (r_bytes, s_bytes) = sig.split_at(32);
        let mut s_arr = [0u8; 32];
        s_arr.copy_from_slice(s_bytes);
        // libsignal's curve25519 signatures (still made by python-oldmemo and older libsignal
        // builds) carry the Edwards key's sign bit in the top bit of the last byte; XEdDSA
        // signatures leave it 0 (s < ℓ < 2²⁵³). libsignal's verifier reads it, and so do we.
        let sign = s_arr[31] >> 7;
        s_arr[31] &= 0x7F;
        let a = MontgomeryPoint(self.0)
            .to_edwards(sign)
            .ok_or(bad.clone())?;
        if a.is_small_order() {
            return Err(bad);
        }
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_arr)).ok_or(bad.clone())?;
        let r_point = CompressedEdwardsY::from_slice(r_bytes).map_err(|_| bad.clone())?;
        let r_dec = r_point.decompress().ok_or(bad.clone())?;
        if r_dec.is_small_order() {
            return Err(bad);
        }
        let a_bytes = a.compress();
        let h = hash_to_scalar(&[r_bytes, a_bytes.as_bytes(), message], None);
        let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(-h), &a, &s);
        if r_check.compress().as_bytes() == r_bytes {
            Ok(())
        } else {
            Err(bad)
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex(&self.0))
    }
}

/// A Curve25519 private key, stored clamped (as libsignal stores it). Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Secret<32>);

impl PrivateKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let bytes = Secret::<32>::random()?;
        Ok(Self::from_bytes(*bytes.expose()))
    }

    /// From 32 bytes (clamped here).
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let s = Secret::new(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Self(s)
    }

    /// The clamped scalar bytes (for storage).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0.expose())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(MontgomeryPoint::mul_base_clamped(*self.0.expose()).to_bytes())
    }

    /// X25519 with `their` key; an all-zero result (low-order peer key) is refused.
    ///
    /// Computed by aws-lc (assembly, about twice as fast as curve25519-dalek's portable ladder);
    /// `tests::x25519_agrees_with_dalek_and_rfc7748` checks both against RFC 7748.
    pub fn agree(&self, their: &PublicKey) -> Result<Secret<32>, KeyError> {
        use aws_lc_rs::agreement::{PrivateKey as AwsKey, UnparsedPublicKey, X25519, agree};
        let key = AwsKey::from_private_key(&X25519, self.0.expose())
            .map_err(|_| KeyError::NonContributory)?;
        let mut out = [0u8; 32];
        // aws-lc itself refuses an all-zero result; the check below holds either way.
        agree(
            &key,
            UnparsedPublicKey::new(&X25519, &their.0),
            KeyError::NonContributory,
            |k| {
                if k.len() == out.len() {
                    out.copy_from_slice(k);
                }
                Ok(())
            },
        )?;
        let shared = Secret::new(out);
        zeroize::Zeroize::zeroize(&mut out);
        if shared == Secret::new([0u8; 32]) {
            return Err(KeyError::NonContributory);
        }
        Ok(shared)
    }

    /// The same agreement with curve25519-dalek's ladder (kept to cross-check aws-lc in tests).
    #[cfg(test)]
    fn agree_dalek(&self, their: &PublicKey) -> [u8; 32] {
        MontgomeryPoint(their.0)
            .mul_clamped(*self.0.expose())
            .to_bytes()
    }

    /// XEdDSA signature of `message` (Signal's XEdDSA specification, 64 random bytes of nonce).
    pub fn sign(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN], Error> {
        let k = Scalar::from_bytes_mod_order(*self.0.expose());
        let e = &k * ED25519_BASEPOINT_TABLE;
        let mut a_bytes = e.compress().to_bytes();
        // Normalise to the Edwards key with sign bit 0, negating the scalar where needed.
        let a = Zeroizing::new(if a_bytes[31] & 0x80 != 0 {
            a_bytes = (-e).compress().to_bytes();
            -k
        } else {
            k
        });
        let nonce = Zeroizing::new(random_bytes::<64>()?);
        let r = Zeroizing::new(hash_to_scalar(
            &[a.as_bytes(), message, nonce.as_ref()],
            Some(1),
        ));
        let r_point = (&*r * ED25519_BASEPOINT_TABLE).compress().to_bytes();
        let h = hash_to_scalar(&[&r_point, &a_bytes, message], None);
        let s = *r + h * *a;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[..32].copy_from_slice(&r_point);
        sig[32..].copy_from_slice(s.as_bytes());
        Ok(sig)
    }
}

// Its only field is a `Secret`, which zeroizes itself on drop.
impl zeroize::ZeroizeOnDrop for PrivateKey {}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(redacted)")
    }
}

/// A key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    /// Public half.
    pub public: PublicKey,
    /// Private half.
    pub private: PrivateKey,
}

impl KeyPair {
    /// A fresh random pair.
    pub fn generate() -> Result<Self, Error> {
        let private = PrivateKey::generate()?;
        Ok(Self {
            public: private.public_key(),
            private,
        })
    }

    /// From a stored private key.
    pub fn from_private(private: PrivateKey) -> Self {
        Self {
            public: private.public_key(),
            private,
        }
    }
}

/// SHA-512 over the parts, reduced mod ℓ; `Some(i)` prefixes XEdDSA's hashᵢ padding
/// (2²⁵⁶ − 1 − i, little-endian: `0xFF − i` then 31 × `0xFF`).
fn hash_to_scalar(parts: &[&[u8]], domain: Option<u8>) -> Scalar {
    let mut h = Sha512::new();
    if let Some(i) = domain {
        let mut pad = [0xFFu8; 32];
        pad[0] = 0xFF - i;
        h.update(pad);
    }
    for p in parts {
        h.update(p);
    }
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    let s = Scalar::from_bytes_mod_order_wide(&wide);
    zeroize::Zeroize::zeroize(&mut wide);
    s
}

/// True when the little-endian 255-bit value (top bit ignored by X25519, refused here) is < 2²⁵⁵ − 19.
fn is_canonical_field_element(u: &[u8; 32]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    // p = 2^255 - 19 = 0x7fff…ffed; u >= p only if u[31]==0x7f, u[1..31]==0xff, u[0]>=0xed.
    !(u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses hex (either case) into bytes.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_has_type_byte_and_round_trips() {
        let kp = KeyPair::generate().unwrap();
        let ser = kp.public.serialize();
        assert_eq!(ser[0], 0x05);
        assert_eq!(PublicKey::from_bytes("k", &ser).unwrap(), kp.public);
    }

    #[test]
    fn parse_errors_name_the_rule() {
        assert_eq!(
            PublicKey::from_bytes("identityKey", &[5u8; 32]),
            Err(KeyError::WrongLength {
                field: "identityKey",
                expected: 33,
                got: 32
            })
        );
        let mut b = [1u8; 33];
        b[0] = 0x06;
        assert_eq!(
            PublicKey::from_bytes("identityKey", &b),
            Err(KeyError::WrongType {
                field: "identityKey",
                got: 6
            })
        );
    }

    #[test]
    fn agreement_is_symmetric() {
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        assert_eq!(
            a.private.agree(&b.public).unwrap(),
            b.private.agree(&a.public).unwrap()
        );
    }

    fn h32(s: &str) -> [u8; 32] {
        unhex(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748 §6.1 Diffie-Hellman vectors, through both implementations.
    #[test]
    fn x25519_agrees_with_dalek_and_rfc7748() {
        let a = PrivateKey::from_bytes(h32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let b = PrivateKey::from_bytes(h32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            a.public_key().montgomery(),
            &h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b.public_key().montgomery(),
            &h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(a.agree(&b.public_key()).unwrap().expose(), &shared);
        assert_eq!(b.agree(&a.public_key()).unwrap().expose(), &shared);
        assert_eq!(a.agree_dalek(&b.public_key()), shared);
        // And on random keys, including public keys with the (ignored) top bit set.
        for _ in 0..50 {
            let k = KeyPair::generate().unwrap();
            let mut u = *KeyPair::generate().unwrap().public.montgomery();
            u[31] |= 0x80;
            let p = PublicKey::from_montgomery(u);
            assert_eq!(
                k.private.agree(&p).unwrap().expose(),
                &k.private.agree_dalek(&p)
            );
        }
    }

    /// docs/security-tests.md line 11: low-order and identity public keys give an all-zero secret.
    #[test]
    fn non_contributory_agreement_is_rejected() {
        let me = KeyPair::generate().unwrap();
        // u = 0 (the point of order 4 / identity image), u = 1 (order 4), and a known order-8 point.
        let low_order: [[u8; 32]; 3] = [
            [0; 32],
            {
                let mut u = [0u8; 32];
                u[0] = 1;
                u
            },
            [
                0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
                0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
                0x5f, 0x49, 0xb8, 0x00,
            ],
        ];
        for u in low_order {
            assert_eq!(
                me.private.agree(&PublicKey::from_montgomery(u)),
                Err(KeyError::NonContributory)
            );
        }
    }

    #[test]
    fn xeddsa_sign_verify_and_tamper() {
        let kp = KeyPair::generate().unwrap();
        let msg = b"signed prekey bytes";
        let sig = kp.private.sign(msg).unwrap();
        kp.public.verify("spk", msg, &sig).unwrap();
        let mut bad = sig;
        bad[5] ^= 1;
        assert_eq!(
            kp.public.verify("spk", msg, &bad),
            Err(KeyError::BadSignature { what: "spk" })
        );
        assert!(kp.public.verify("spk", b"other", &sig).is_err());
        let other = KeyPair::generate().unwrap();
        assert!(other.public.verify("spk", msg, &sig).is_err());
        assert!(kp.public.verify("spk", msg, &sig[..63]).is_err());
    }

    /// Non-canonical s (s + ℓ) must be refused even though it is "the same" scalar.
    #[test]
    fn xeddsa_rejects_non_canonical_s() {
        let kp = KeyPair::generate().unwrap();
        let msg = b"m";
        let mut sig = kp.private.sign(msg).unwrap();
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig[32..]);
        // ℓ little-endian.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(l[i]) + carry;
            s[i] = v as u8;
            carry = v >> 8;
        }
        sig[32..].copy_from_slice(&s);
        assert!(kp.public.verify("x", msg, &sig).is_err());
    }

    /// A libsignal-style curve25519 signature: plain Ed25519 with the key's sign bit carried in
    /// the top bit of byte 63 (python-oldmemo signs this way). Made here from an Ed25519 key
    /// whose public key has sign bit 1, so the bit matters.
    #[test]
    fn accepts_sign_bit_signatures_as_libsignal_does() {
        for _ in 0..64 {
            let kp = KeyPair::generate().unwrap();
            let k = Scalar::from_bytes_mod_order(*kp.private.to_bytes());
            let e = (&k * ED25519_BASEPOINT_TABLE).compress().to_bytes();
            if e[31] & 0x80 == 0 {
                continue;
            }
            // Ed25519-style signature with the un-normalised key (deterministic nonce is fine here).
            let msg = b"signed prekey";
            let r = hash_to_scalar(&[b"nonce", msg], None);
            let r_point = (&r * ED25519_BASEPOINT_TABLE).compress().to_bytes();
            let h = hash_to_scalar(&[&r_point, &e, msg], None);
            let s = r + h * k;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_point);
            sig[32..].copy_from_slice(s.as_bytes());
            sig[63] |= 0x80;
            kp.public.verify("spk", msg, &sig).unwrap();
            sig[63] &= 0x7F;
            assert!(
                kp.public.verify("spk", msg, &sig).is_err(),
                "the sign bit must matter"
            );
            return;
        }
        panic!("no key with sign bit 1 in 64 tries");
    }

    /// Cross-check with the independent `xeddsa` crate in both directions.
    #[test]
    fn xeddsa_matches_the_xeddsa_crate() {
        use xeddsa::{Verify, xed25519};
        let kp = KeyPair::generate().unwrap();
        let msg = b"\x05 some signed prekey";
        let sig = kp.private.sign(msg).unwrap();
        let their_pub = xed25519::PublicKey(*kp.public.montgomery());
        Verify::<[u8; 64], [u8; 32]>::verify(&their_pub, msg, &sig).unwrap();
        // And a signature made by the crate verifies with ours.
        use xeddsa::Sign;
        let priv_bytes = kp.private.to_bytes();
        let their_priv = xed25519::PrivateKey(*priv_bytes);
        let sig2: [u8; 64] = their_priv.sign(msg, rand::rng());
        kp.public.verify("x", msg, &sig2).unwrap();
    }

    #[test]
    fn private_key_debug_prints_no_bytes() {
        let kp = KeyPair::generate().unwrap();
        let dbg = format!("{:?}", kp);
        assert!(dbg.contains("redacted"));
        let hex_priv = hex(&*kp.private.to_bytes());
        assert!(!dbg.contains(&hex_priv[..16]));
    }
}
