//! The OMEMO 0.3 payload layer (docs/protocol.md §3.2): AES-128-GCM with a fresh 16-byte key and a
//! 12-byte IV; the ciphertext goes into `<payload>` without its tag, and key ‖ tag (32 bytes) is
//! what each recipient device's Signal session transports. Receiving also accepts 16-byte IVs
//! (older clients) and, like Conversations, needs at least 32 bytes of key material.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce, Tag};

use crate::error::Error;
use crate::secret::{Secret, random_bytes};

/// IV length we send.
pub const IV_LEN: usize = 12;
/// AES-128 key length.
pub const KEY_LEN: usize = 16;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Key material carried per device: key ‖ tag.
pub const KEY_MATERIAL_LEN: usize = KEY_LEN + TAG_LEN;

/// A payload encrypted once for any number of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    /// AES-GCM ciphertext without the tag.
    pub ciphertext: Vec<u8>,
    /// The 12-byte IV.
    pub iv: [u8; IV_LEN],
    /// key ‖ tag, to be Signal-encrypted per device.
    pub key_material: Secret<KEY_MATERIAL_LEN>,
}

/// Encrypts `plaintext` under a fresh key and IV.
pub fn encrypt_payload(plaintext: &[u8]) -> Result<EncryptedPayload, Error> {
    let key = Secret::<KEY_LEN>::random()?;
    let iv = random_bytes::<IV_LEN>()?;
    let cipher = AesGcm::<Aes128, U12>::new(key.expose().into());
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&Nonce::<U12>::from(iv), &[], buf.as_mut_slice().into())
        .map_err(|_| Error::PayloadAuthentication)?;
    let mut km = [0u8; KEY_MATERIAL_LEN];
    km[..KEY_LEN].copy_from_slice(key.expose());
    km[KEY_LEN..].copy_from_slice(&tag);
    let key_material = Secret::new(km);
    zeroize::Zeroize::zeroize(&mut km);
    Ok(EncryptedPayload {
        ciphertext: buf,
        iv,
        key_material,
    })
}

/// Key material for an empty (key-transport) message: random, carries no payload.
pub fn key_transport_material() -> Result<Secret<KEY_MATERIAL_LEN>, Error> {
    Secret::random()
}

/// Decrypts a payload with the key material one Signal session delivered.
pub fn decrypt_payload(
    key_material: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    if key_material.len() < KEY_MATERIAL_LEN {
        return Err(Error::KeyMaterialTooShort(key_material.len()));
    }
    let (key, rest) = key_material.split_at(KEY_LEN);
    let tag_bytes = rest
        .get(..TAG_LEN)
        .ok_or(Error::KeyMaterialTooShort(key_material.len()))?;
    let tag = Tag::<U16>::try_from(tag_bytes)
        .map_err(|_| Error::KeyMaterialTooShort(key_material.len()))?;
    let mut buf = ciphertext.to_vec();
    let ok = match iv.len() {
        12 => {
            let nonce = Nonce::<U12>::try_from(iv).map_err(|_| Error::BadIvLength(iv.len()))?;
            AesGcm::<Aes128, U12>::new_from_slice(key)
                .map_err(|_| Error::KeyMaterialTooShort(key_material.len()))?
                .decrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into(), &tag)
        }
        16 => {
            let nonce = Nonce::<U16>::try_from(iv).map_err(|_| Error::BadIvLength(iv.len()))?;
            AesGcm::<Aes128, U16>::new_from_slice(key)
                .map_err(|_| Error::KeyMaterialTooShort(key_material.len()))?
                .decrypt_inout_detached(&nonce, &[], buf.as_mut_slice().into(), &tag)
        }
        n => return Err(Error::BadIvLength(n)),
    };
    ok.map_err(|_| Error::PayloadAuthentication)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_12_byte_iv() {
        let p = encrypt_payload(b"3A:9F").unwrap();
        assert_eq!(p.iv.len(), 12);
        assert_eq!(p.ciphertext.len(), 5, "payload carries no tag");
        assert_eq!(
            decrypt_payload(p.key_material.expose(), &p.iv, &p.ciphertext).unwrap(),
            b"3A:9F"
        );
    }

    /// docs/security-tests.md line 14: 16-byte IVs are accepted on receive.
    #[test]
    fn sixteen_byte_iv_is_accepted() {
        let key = [9u8; 16];
        let iv = [3u8; 16];
        let cipher = AesGcm::<Aes128, U16>::new((&key).into());
        let mut buf = b"old client".to_vec();
        let tag = cipher
            .encrypt_inout_detached(&Nonce::<U16>::from(iv), &[], buf.as_mut_slice().into())
            .unwrap();
        let mut km = key.to_vec();
        km.extend_from_slice(&tag);
        assert_eq!(decrypt_payload(&km, &iv, &buf).unwrap(), b"old client");
    }

    #[test]
    fn errors_are_precise() {
        let p = encrypt_payload(b"hello").unwrap();
        assert_eq!(
            decrypt_payload(&p.key_material.expose()[..16], &p.iv, &p.ciphertext),
            Err(Error::KeyMaterialTooShort(16))
        );
        assert_eq!(
            decrypt_payload(p.key_material.expose(), &[0u8; 8], &p.ciphertext),
            Err(Error::BadIvLength(8))
        );
        let mut ct = p.ciphertext.clone();
        ct[0] ^= 1;
        assert_eq!(
            decrypt_payload(p.key_material.expose(), &p.iv, &ct),
            Err(Error::PayloadAuthentication)
        );
    }
}
