//! Recordings as the demo, the tests and the benchmarks judge them: which tone a 48 kHz mono
//! 16-bit WAV file holds, how long it is, whether it is silent, how many 20 ms frames carry a
//! tone. One reader and one set of judgements for all of them (the signal maths itself is
//! `shieldcall_media::audio::analysis`).

use std::path::Path;
use std::time::Duration;

use shieldcall_media::audio::analysis;

use crate::Error;

/// The sample rate of every recording shieldcall writes.
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;

/// One frame's duration.
const FRAME: Duration = Duration::from_millis(20);

/// The longest recording read; the rest is ignored (a stuck call cannot exhaust memory).
pub const MAX_LENGTH: Duration = Duration::from_secs(120);

/// Where a recording starts to count: the jitter buffer's start and concealment come first.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The samples of one recording.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    samples: Vec<i16>,
}

impl Recording {
    /// Reads `path`, which must be 48 kHz mono 16-bit PCM; at most [`MAX_LENGTH`] of it.
    pub fn read(path: &Path) -> Result<Recording, Error> {
        let what = || format!("cannot read the recording {}", path.display());
        let bad = |e: hound::Error| Error::io(what(), std::io::Error::other(e.to_string()));
        let reader = hound::WavReader::open(path).map_err(bad)?;
        let spec = reader.spec();
        if (spec.channels, spec.sample_rate, spec.bits_per_sample) != (1, SAMPLE_RATE, 16) {
            let text = format!(
                "{} channel(s), {} Hz, {} bits: not 48 kHz mono 16-bit",
                spec.channels, spec.sample_rate, spec.bits_per_sample
            );
            return Err(Error::io(what(), std::io::Error::other(text)));
        }
        let max = MAX_LENGTH.as_secs() as usize * SAMPLE_RATE as usize;
        let samples = reader
            .into_samples::<i16>()
            .take(max)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        Ok(Recording { samples })
    }

    /// As [`Recording::read`], with an empty recording for a file that is missing or not a
    /// complete WAV (a call that never played anything).
    pub fn read_or_empty(path: &Path) -> Recording {
        Self::read(path).unwrap_or_default()
    }

    /// A recording of these samples (48 kHz mono).
    pub fn from_samples(samples: Vec<i16>) -> Recording {
        Recording { samples }
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Its length in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(SAMPLE_RATE)
    }

    /// The dominant frequency in Hz after [`SETTLE`]; 0 when nothing follows it.
    pub fn dominant_frequency(&self) -> f64 {
        match self.samples.get(settle_samples()..) {
            Some(rest) if !rest.is_empty() => analysis::dominant_frequency(rest, SAMPLE_RATE),
            _ => 0.0,
        }
    }

    /// The RMS level (of full scale) of the whole recording.
    pub fn rms(&self) -> f64 {
        analysis::rms(&self.samples)
    }

    /// How many of its 20 ms frames after [`SETTLE`] carry a tone of `hz`, of how many.
    pub fn tone_frames(&self, hz: f64) -> (usize, usize) {
        let frames: Vec<&[i16]> = self
            .samples
            .chunks_exact(FRAME_SAMPLES)
            .skip(settle_samples() / FRAME_SAMPLES)
            .collect();
        let with = frames
            .iter()
            .filter(|f| analysis::carries_tone(f, hz))
            .count();
        (with, frames.len())
    }

    /// The longest run of 20 ms frames without a tone of `hz` between the first and the last
    /// frame that carries it (after [`SETTLE`]): how long the sound was gone in the middle.
    /// Zero when it never stopped (or never came).
    pub fn longest_gap(&self, hz: f64) -> Duration {
        let carries: Vec<bool> = self
            .samples
            .chunks_exact(FRAME_SAMPLES)
            .skip(settle_samples() / FRAME_SAMPLES)
            .map(|f| analysis::carries_tone(f, hz))
            .collect();
        let (Some(first), Some(last)) = (
            carries.iter().position(|c| *c),
            carries.iter().rposition(|c| *c),
        ) else {
            return Duration::ZERO;
        };
        let longest = carries[first..=last]
            .split(|c| *c)
            .map(<[bool]>::len)
            .max()
            .unwrap_or(0);
        FRAME * u32::try_from(longest).unwrap_or(u32::MAX)
    }
}

fn settle_samples() -> usize {
    (SETTLE.as_millis() as usize) * (SAMPLE_RATE as usize) / 1000
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tone(hz: f64, seconds: f64) -> Vec<i16> {
        let n = (seconds * f64::from(SAMPLE_RATE)) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                (8_000.0 * (std::f64::consts::TAU * hz * t).sin()) as i16
            })
            .collect()
    }

    fn write(path: &Path, samples: &[i16], rate: u32) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn a_tone_is_heard_and_counted_per_frame() {
        let dir = std::env::temp_dir().join(format!("sc-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tone.wav");
        let mut samples = tone(440.0, 1.0);
        samples.extend(std::iter::repeat_n(0, SAMPLE_RATE as usize));
        write(&path, &samples, SAMPLE_RATE);
        let r = Recording::read(&path).unwrap();
        assert!((r.seconds() - 2.0).abs() < 1e-9);
        assert!(
            (r.dominant_frequency() - 440.0).abs() <= 2.0,
            "{}",
            r.dominant_frequency()
        );
        let (with, of) = r.tone_frames(440.0);
        // 2 s = 100 frames, 10 skipped; the tone fills the first second.
        assert_eq!(of, 90);
        assert!((38..=40).contains(&with), "{with}");
        assert!(r.rms() > 0.05);

        write(&path, &samples, 44_100);
        let e = Recording::read(&path).unwrap_err().to_string();
        assert!(e.contains("not 48 kHz mono 16-bit"), "{e}");
        let missing = Recording::read_or_empty(&dir.join("missing.wav"));
        assert_eq!(
            (missing.seconds(), missing.dominant_frequency()),
            (0.0, 0.0)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_longest_gap_is_the_silence_between_two_stretches_of_tone() {
        let second = SAMPLE_RATE as usize;
        let mut samples = vec![0; second / 2]; // before the tone: not a gap
        samples.extend(tone(440.0, 1.0));
        samples.extend(std::iter::repeat_n(0, second * 3 / 10)); // 300 ms
        samples.extend(tone(440.0, 0.5));
        samples.extend(std::iter::repeat_n(0, second / 10)); // 100 ms
        samples.extend(tone(440.0, 0.5));
        samples.extend(std::iter::repeat_n(0, second)); // after the tone: not a gap
        let gap = Recording::from_samples(samples).longest_gap(440.0);
        // 15 frames of silence, give or take the frame on each edge that is half tone.
        assert!(
            (Duration::from_millis(280)..=Duration::from_millis(340)).contains(&gap),
            "{gap:?}"
        );
        let steady = Recording::from_samples(tone(440.0, 2.0));
        assert_eq!(steady.longest_gap(440.0), Duration::ZERO);
        assert_eq!(
            Recording::from_samples(vec![0; second]).longest_gap(440.0),
            Duration::ZERO
        );
    }
}
