//! Signal checks used by tests and the benchmark: which tone is this recording?

use std::f64::consts::TAU;

/// Lowest and highest frequency searched by [`dominant_frequency`].
pub const SEARCH_RANGE_HZ: (f64, f64) = (50.0, 4000.0);

/// The frequency (Hz, 1 Hz resolution) with the most energy, by a Goertzel scan.
///
/// At most one second of samples from the middle of `samples` is used, which bounds the work.
pub fn dominant_frequency(samples: &[i16], sample_rate: u32) -> f64 {
    let rate = f64::from(sample_rate);
    let len = samples.len().min(sample_rate as usize);
    let start = (samples.len() - len) / 2;
    let window = &samples[start..start + len];
    if window.is_empty() {
        return 0.0;
    }
    // Coarse scan at 10 Hz, then refine at 1 Hz around the best bin.
    let coarse = best_in(window, rate, SEARCH_RANGE_HZ.0, SEARCH_RANGE_HZ.1, 10.0);
    best_in(window, rate, (coarse - 10.0).max(1.0), coarse + 10.0, 1.0)
}

fn best_in(window: &[i16], rate: f64, from: f64, to: f64, step: f64) -> f64 {
    let mut best = (from, f64::MIN);
    let mut f = from;
    while f <= to {
        let p = goertzel_power(window, rate, f);
        if p > best.1 {
            best = (f, p);
        }
        f += step;
    }
    best.0
}

/// Energy of `samples` at `freq` (Goertzel algorithm).
pub fn goertzel_power(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let coeff = 2.0 * (TAU * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// Root-mean-square level of `samples` relative to full scale (0..=1).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    (sum / samples.len() as f64).sqrt() / f64::from(i16::MAX)
}

/// Whether one frame at 48 kHz is audibly `hz`: louder than 2 % of full scale, and more than
/// half of its energy at that frequency (what a tone test counts as "heard").
pub fn carries_tone(frame: &[i16], hz: f64) -> bool {
    if frame.is_empty() {
        return false;
    }
    let energy: f64 = frame.iter().map(|s| f64::from(*s).powi(2)).sum();
    let at = goertzel_power(frame, 48_000.0, hz);
    rms(frame) > 0.02 && at / (energy * frame.len() as f64 / 2.0) > 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_pure_tone() {
        let s: Vec<i16> = (0..48_000)
            .map(|i| ((TAU * 880.0 * i as f64 / 48_000.0).sin() * 10_000.0) as i16)
            .collect();
        assert_eq!(dominant_frequency(&s, 48_000), 880.0);
        assert!(rms(&s) > 0.2);
        assert_eq!(dominant_frequency(&[], 48_000), 0.0);
        assert!(carries_tone(&s[..960], 880.0));
        assert!(!carries_tone(&s[..960], 440.0));
        assert!(!carries_tone(&[0; 960], 880.0));
        assert!(!carries_tone(&[], 880.0));
    }
}
