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
