//! Where incoming audio goes: WAV file, memory, nothing (live playback: `live.rs`).

use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{AudioError, Frame, SAMPLE_RATE};

/// A consumer of 20 ms frames, fed once per frame by the driver (only after verification).
pub trait AudioSink: Send {
    /// Plays or records one frame.
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError>;
    /// Flushes and closes (a WAV header gets its final length here).
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
    /// What the playback device behind it did (live devices only).
    fn device_report(&self) -> Option<super::DeviceReport> {
        None
    }
}

/// Records to a 48 kHz mono 16-bit WAV file.
pub struct WavSink {
    writer: Option<hound::WavWriter<BufWriter<std::fs::File>>>,
}

impl WavSink {
    /// Creates (truncates) the file. An empty recording is a valid WAV with no samples.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Ok(Self {
            writer: Some(hound::WavWriter::create(path, spec)?),
        })
    }
}

impl AudioSink for WavSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        if let Some(w) = self.writer.as_mut() {
            let mut w16 = w.get_i16_writer(frame.len() as u32);
            for s in frame {
                w16.write_sample(*s);
            }
            w16.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        if let Some(w) = self.writer.take() {
            w.finalize()?;
        }
        Ok(())
    }
}

/// Discards audio, counting frames.
#[derive(Debug, Default)]
pub struct NullSink {
    /// Frames written so far.
    pub frames: u64,
}

impl AudioSink for NullSink {
    fn write_frame(&mut self, _frame: &Frame) -> Result<(), AudioError> {
        self.frames += 1;
        Ok(())
    }
}

/// Keeps all samples in memory behind a shared handle (for tests and analysis).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    samples: Arc<Mutex<Vec<i16>>>,
}

impl MemorySink {
    /// An empty recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything recorded so far.
    pub fn samples(&self) -> Vec<i16> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl AudioSink for MemorySink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        if let Ok(mut s) = self.samples.lock() {
            s.extend_from_slice(frame);
        }
        Ok(())
    }
}
