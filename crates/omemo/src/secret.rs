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

    /// Fresh random bytes from the operating system.
    pub fn random() -> Result<Self, crate::error::Error> {
        let mut s = Self([0u8; N]);
        getrandom::fill(&mut s.0).map_err(|_| crate::error::Error::Rng)?;
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

/// Random bytes that are not secret (IVs, ids).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], crate::error::Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| crate::error::Error::Rng)?;
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
