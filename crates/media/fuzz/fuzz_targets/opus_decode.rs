//! RTP payloads into the audio path, as `MediaSession::play_frame` handles them: the jitter
//! buffer (`JitterBuffer::insert` with peer sequence numbers, `pop`) and the Opus decoder
//! wrapper (`OpusDecoder::decode`, `decode_fec`, `conceal`) on arbitrary packets.
//! Input: records `[seq hi][seq lo][len][bytes…]`; every record is also decoded directly.
//! Asserted: no panic, and every decoded frame is exactly one 20 ms frame (the type says so).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shieldcall_media::audio::jitter::{JitterBuffer, Playout};
use shieldcall_media::audio::opus::OpusDecoder;
use shieldcall_media::audio::FRAME_SAMPLES;

fuzz_target!(|data: &[u8]| {
    let Ok(mut direct) = OpusDecoder::new() else {
        return;
    };
    let Ok(mut played) = OpusDecoder::new() else {
        return;
    };
    let mut jitter = JitterBuffer::new();
    let mut out = [0i16; FRAME_SAMPLES];
    let mut rest = data;
    let mut n = 0;
    while let [hi, lo, len, tail @ ..] = rest {
        if n == 64 {
            break;
        }
        n += 1;
        let len = usize::from(*len).min(tail.len());
        let (packet, r) = tail.split_at(len);
        rest = r;
        let _ = direct.decode(packet, &mut out);
        let _ = direct.decode_fec(packet, &mut out);
        jitter.insert(u64::from(u16::from(*hi) << 8 | u16::from(*lo)), packet);
        let _ = match jitter.pop() {
            Playout::Buffering => Ok(()),
            Playout::Packet(p) => played.decode(&p, &mut out),
            Playout::Lost { next: Some(p) } => played.decode_fec(&p, &mut out),
            Playout::Lost { next: None } => played.conceal(&mut out),
        };
    }
    // A whole input as one packet (up to Opus' maximum size and beyond).
    let _ = direct.decode(data, &mut out);
    let _ = direct.conceal(&mut out);
});
