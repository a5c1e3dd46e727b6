//! Fixed-size secret byte strings: zeroized on drop, compared in constant time, never printed.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes (a root, chain, message or private key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps bytes; the caller's copy should be a temporary.
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies from a slice of exactly `N` bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; N] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    /// Fresh random bytes (see [`random_bytes`]).
    pub fn random() -> Result<Self, crate::error::Error> {
        let mut s = Self([0u8; N]);
        fill(&mut s.0)?;
        Ok(s)
    }

    /// The bytes, for feeding a primitive.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl<const N: usize> Eq for Secret<N> {}

impl<const N: usize> std::fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret<{N}>(redacted)")
    }
}

/// Fills `buf` from the thread's CSPRNG (rand's `ThreadRng`: ChaCha seeded from the operating
/// system and reseeded periodically), which costs no system call per message. The first use on a
/// thread checks the operating system's generator, so a broken one is an error, not a panic.
pub fn fill(buf: &mut [u8]) -> Result<(), crate::error::Error> {
    thread_local! {
        static OS_RNG_OK: bool = getrandom::fill(&mut [0u8; 1]).is_ok();
    }
    if !OS_RNG_OK.with(|ok| *ok) {
        return Err(crate::error::Error::Rng);
    }
    rand::Rng::fill_bytes(&mut rand::rng(), buf);
    Ok(())
}

/// Random bytes (IVs, ids, nonces).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], crate::error::Error> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// A random `u32` in `lo..=hi`, by rejection sampling (no modulo bias).
pub fn random_in(lo: u32, hi: u32) -> Result<u32, crate::error::Error> {
    let span = u64::from(hi - lo) + 1;
    let zone = (u64::from(u32::MAX) + 1) / span * span;
    loop {
        let v = u64::from(u32::from_le_bytes(random_bytes::<4>()?));
        if v < zone {
            // `v % span < span <= 2^32`, so the sum stays within `lo..=hi`.
            return Ok(lo + (v % span) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn zeroized_on_drop<T: ZeroizeOnDrop>() {}

    /// Every secret type zeroizes on drop (compile-time proof through the marker trait, whose
    /// derive on `Secret` wipes the bytes in `Drop`), and zeroizing really clears the bytes.
    #[test]
    fn secrets_zeroize() {
        zeroized_on_drop::<Secret<16>>();
        zeroized_on_drop::<Secret<32>>();
        zeroized_on_drop::<Secret<80>>();
        zeroized_on_drop::<PrivateKey>();
        let mut s = Secret::new([7u8; 32]);
        s.zeroize();
        assert_eq!(s.expose(), &[0u8; 32]);
    }

    #[test]
    fn debug_prints_no_bytes() {
        let s = Secret::new([0x5Au8; 32]);
        let d = format!("{s:?}");
        assert_eq!(d, "Secret<32>(redacted)");
    }

    #[test]
    fn random_in_stays_in_range() {
        for _ in 0..1000 {
            let v = random_in(1, 3).unwrap();
            assert!((1..=3).contains(&v));
        }
        assert_eq!(random_in(5, 5).unwrap(), 5);
    }
}
