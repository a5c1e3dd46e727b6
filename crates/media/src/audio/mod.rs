//! Audio at 48 kHz mono in 20 ms frames: Opus coding, sources, sinks, jitter buffer.

pub mod analysis;
pub mod jitter;
#[cfg(feature = "live-audio")]
pub mod live;
pub mod opus;
pub mod sink;
pub mod source;

/// Sample rate of everything inside the engine (Opus' native rate).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one 20 ms frame at 48 kHz mono.
pub const FRAME_SAMPLES: usize = 960;

/// Duration of one frame.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

/// One 20 ms frame of 16-bit mono PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// What a device did during a call (in the call's statistics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// The device's name.
    pub name: String,
    /// The rate it ran at (resampled to and from 48 kHz when not 48 kHz).
    pub sample_rate: u32,
    /// Its channels (mixed down or up to mono).
    pub channels: u16,
    /// Its period in frames, when a fixed one was set (else the device's own).
    pub period_frames: Option<u32>,
    /// Samples (48 kHz) dropped: the queue stayed above its target or reached its bound.
    pub overrun_samples: u64,
    /// Times the queue had less than was needed (silence filled in).
    pub underruns: u64,
    /// Errors the device reported.
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
}

/// Errors from audio sources, sinks and the codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// Opening, reading or writing a WAV file failed.
    #[error("WAV file: {0}")]
    Wav(#[from] hound::Error),
    /// A WAV file is not 16-bit PCM at 48 kHz with 1 or 2 channels.
    #[error("unsupported WAV format: {0}")]
    UnsupportedWav(String),
    /// libopus refused an operation.
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    /// A live audio device could not be opened or failed.
    #[error("audio device: {0}")]
    Device(String),
}
