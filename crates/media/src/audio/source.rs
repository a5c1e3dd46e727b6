//! Where outgoing audio comes from: WAV file, sine tone, silence (live capture: `live.rs`).

use std::f64::consts::TAU;
use std::io::BufReader;
use std::path::Path;

use super::{AudioError, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// A producer of 20 ms frames, pulled once per frame by the driver.
pub trait AudioSource: Send {
    /// Fills `out` with the next frame. Returns `false` once the source has ended
    /// (then `out` holds silence).
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError>;
    /// What the capture device behind it did (live devices only).
    fn device_report(&self) -> Option<super::DeviceReport> {
        None
    }
}

/// A sine tone, endless.
#[derive(Debug, Clone)]
pub struct ToneSource {
    step: f64,
    phase: f64,
    amplitude: f64,
}

impl ToneSource {
    /// A tone of `frequency` Hz at `amplitude` (0..=1 of full scale).
    pub fn new(frequency: f64, amplitude: f64) -> Self {
        Self {
            step: TAU * frequency / f64::from(SAMPLE_RATE),
            phase: 0.0,
            amplitude: amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX),
        }
    }
}

impl AudioSource for ToneSource {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError> {
        for s in out.iter_mut() {
            *s = (self.phase.sin() * self.amplitude) as i16;
            self.phase = (self.phase + self.step) % TAU;
        }
        Ok(true)
    }
}

/// Digital silence, endless.
#[derive(Debug, Clone, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError> {
        out.fill(0);
        Ok(true)
    }
}

/// A 16-bit PCM WAV file at 48 kHz, mono or stereo (downmixed).
pub struct WavSource {
    reader: hound::WavReader<BufReader<std::fs::File>>,
    channels: usize,
    ended: bool,
}

impl WavSource {
    /// Opens the file and checks its format.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let reader = hound::WavReader::open(path)?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
            || !(1..=2).contains(&spec.channels)
        {
            return Err(AudioError::UnsupportedWav(format!(
                "{} Hz, {} bit {:?}, {} channels (need 48000 Hz 16-bit PCM, 1-2 channels)",
                spec.sample_rate, spec.bits_per_sample, spec.sample_format, spec.channels
            )));
        }
        Ok(Self {
            reader,
            channels: usize::from(spec.channels),
            ended: false,
        })
    }
}

impl AudioSource for WavSource {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError> {
        out.fill(0);
        if self.ended {
            return Ok(false);
        }
        let mut samples = self.reader.samples::<i16>();
        for slot in out.iter_mut() {
            let mut sum = 0i32;
            for _ in 0..self.channels {
                match samples.next() {
                    Some(s) => sum += i32::from(s?),
                    None => {
                        self.ended = true;
                        return Ok(true);
                    }
                }
            }
            *slot = (sum / self.channels as i32) as i16;
        }
        Ok(true)
    }
}

/// Frames per second, for sizing buffers by duration.
pub const FRAMES_PER_SECOND: usize = SAMPLE_RATE as usize / FRAME_SAMPLES;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::sink::{AudioSink, WavSink};

    #[test]
    fn tone_is_continuous_across_frames() {
        let mut t = ToneSource::new(1000.0, 1.0);
        let mut a = [0i16; FRAME_SAMPLES];
        let mut all = Vec::new();
        for _ in 0..5 {
            t.next_frame(&mut a).unwrap();
            all.extend_from_slice(&a);
        }
        let f = crate::audio::analysis::dominant_frequency(&all, SAMPLE_RATE);
        assert!((f - 1000.0).abs() < 2.0);
    }

    #[test]
    fn wav_round_trip_and_end() {
        let dir = std::env::temp_dir().join(format!("shieldcall-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let mut sink = WavSink::create(&path).unwrap();
        let mut t = ToneSource::new(300.0, 0.3);
        let mut f = [0i16; FRAME_SAMPLES];
        t.next_frame(&mut f).unwrap();
        sink.write_frame(&f).unwrap();
        sink.write_frame(&f).unwrap();
        sink.finish().unwrap();
        let mut src = WavSource::open(&path).unwrap();
        let mut g = [0i16; FRAME_SAMPLES];
        assert!(src.next_frame(&mut g).unwrap());
        assert_eq!(f, g);
        assert!(src.next_frame(&mut g).unwrap());
        // Third frame: the file has ended part-way (here exactly at the boundary).
        let _ = src.next_frame(&mut g).unwrap();
        assert!(!src.next_frame(&mut g).unwrap());
        assert!(g.iter().all(|s| *s == 0));
    }

    #[test]
    fn wav_of_wrong_rate_is_refused() {
        let path = std::env::temp_dir().join(format!("shieldcall-8k-{}.wav", std::process::id()));
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        hound::WavWriter::create(&path, spec)
            .unwrap()
            .finalize()
            .unwrap();
        assert!(matches!(
            WavSource::open(&path),
            Err(AudioError::UnsupportedWav(_))
        ));
    }
}
