//! Opus encoder and decoder (libopus through audiopus) for 20 ms mono frames.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bitrate, Channels, SampleRate};

use super::{AudioError, FRAME_SAMPLES, Frame};

/// Largest Opus packet we produce; RFC 6716 allows 1275 bytes per frame.
pub const MAX_OPUS_PACKET: usize = 1275;

/// Bitrate for voice; wideband speech is transparent well below this.
pub const VOICE_BITRATE: i32 = 32_000;

/// Encoder complexity (0-10). 5 is libwebrtc's setting on mobile: cheaper than libopus'
/// default 10, with no audible difference for voice at 32 kbit/s.
pub const ENCODER_COMPLEXITY: u8 = 5;

/// Encodes 20 ms mono frames.
pub struct OpusEncoder {
    inner: Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// A VoIP encoder at 48 kHz mono with in-band FEC (the peers announce `useinbandfec=1`).
    pub fn new() -> Result<Self, AudioError> {
        let mut inner = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)?;
        inner.set_bitrate(Bitrate::BitsPerSecond(VOICE_BITRATE))?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(5)?;
        inner.set_complexity(ENCODER_COMPLEXITY)?;
        Ok(Self {
            inner,
            out: vec![0; MAX_OPUS_PACKET],
        })
    }

    /// Encodes one frame into an Opus packet.
    pub fn encode(&mut self, frame: &Frame) -> Result<&[u8], AudioError> {
        let n = self.inner.encode(frame, &mut self.out)?;
        Ok(&self.out[..n.min(self.out.len())])
    }
}

/// Decodes Opus packets of any frame size up to 20 ms into mono frames; conceals losses.
pub struct OpusDecoder {
    inner: Decoder,
}

impl OpusDecoder {
    /// A 48 kHz mono decoder (stereo packets are downmixed by libopus).
    pub fn new() -> Result<Self, AudioError> {
        Ok(Self {
            inner: Decoder::new(SampleRate::Hz48000, Channels::Mono)?,
        })
    }

    /// Decodes one packet from the peer into `out`. A packet that does not decode (peer input)
    /// yields an error and leaves `out` as concealment would; never panics.
    pub fn decode(&mut self, packet: &[u8], out: &mut Frame) -> Result<(), AudioError> {
        if packet.is_empty() {
            return self.conceal(out);
        }
        let n = self.inner.decode(Some(packet), &mut out[..], false)?;
        // A peer sending 10 ms frames gives fewer samples: pad with silence rather than fail.
        out[n.min(FRAME_SAMPLES)..].fill(0);
        Ok(())
    }

    /// Recovers a lost frame from the in-band FEC data of the packet that follows it.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut Frame) -> Result<(), AudioError> {
        if next_packet.is_empty() {
            return self.conceal(out);
        }
        let n = self.inner.decode(Some(next_packet), &mut out[..], true)?;
        out[n.min(FRAME_SAMPLES)..].fill(0);
        Ok(())
    }

    /// Opus packet loss concealment for one missing frame.
    pub fn conceal(&mut self, out: &mut Frame) -> Result<(), AudioError> {
        let n = self.inner.decode(None::<&[u8]>, &mut out[..], false)?;
        out[n.min(FRAME_SAMPLES)..].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::source::{AudioSource, ToneSource};

    #[test]
    fn tone_survives_encode_decode() {
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut tone = ToneSource::new(440.0, 0.5);
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut out = [0i16; FRAME_SAMPLES];
        let mut decoded = Vec::new();
        for _ in 0..50 {
            tone.next_frame(&mut frame).unwrap();
            let pkt = enc.encode(&frame).unwrap().to_vec();
            assert!(pkt.len() < 200);
            dec.decode(&pkt, &mut out).unwrap();
            decoded.extend_from_slice(&out);
        }
        let f = crate::audio::analysis::dominant_frequency(&decoded[9600..], 48_000);
        assert!((f - 440.0).abs() < 5.0, "{f}");
    }

    #[test]
    fn garbage_from_peer_is_an_error_not_a_panic() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        // A TOC byte announcing code 3 with an impossible frame count.
        let r = dec.decode(&[0xff, 0xff, 0xff], &mut out);
        assert!(r.is_err());
        dec.conceal(&mut out).unwrap();
        dec.decode(&[], &mut out).unwrap();
    }
}
