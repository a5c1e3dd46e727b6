//! Capture and playback devices through cpal (ALSA on Linux, also ALSA's `pulse` plugin in front
//! of PulseAudio or PipeWire on a desktop).
//!
//! What a sound server makes hard, and what this module does about it:
//! * **Periods.** Devices are opened with small fixed periods ([`PERIOD`], 10 ms) where they
//!   allow, else with whatever they offer; either way the samples go through a queue that only
//!   drops audio when the call cannot keep up.
//! * **Latency bounded, not loss.** A queue between device and driver grows when one side
//!   delivers in bursts and shrinks again; nothing is dropped for that. (PulseAudio's
//!   `module-sine-source`, a test microphone, hands over two seconds at a time whatever the
//!   client asks for; the old 200 ms queue kept a quarter second of each.) Only a queue that
//!   *stays* above its target for a whole window ([`CAPTURE`], [`PLAYBACK`]: a clock drifting
//!   against ours, audio captured before the call started) is trimmed back to the target, and
//!   one that reaches its bound (the other side stalled) loses its oldest samples. Both count as
//!   overruns in the [`DeviceReport`]; a queue found short counts as an underrun.
//! * **Formats.** 48 kHz mono is asked for; a device that will not open that way is opened at
//!   its own rate and channels and converted (downmix/upmix, linear resampling).
//! * **Threads.** cpal streams are not `Send`, so each lives on its own thread; errors it reports
//!   are counted and the last one kept for the report.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, SupportedBufferSize};

use super::sink::AudioSink;
use super::source::AudioSource;
use super::{AudioError, DeviceReport, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Device period asked for.
pub const PERIOD: Duration = Duration::from_millis(10);
/// Samples (48 kHz) a queue keeps as a cushion when it is trimmed, and the playback queue
/// fills before it starts: one frame.
pub const TARGET_QUEUE: usize = FRAME_SAMPLES;

/// How a queue between a device and the driver is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most samples (48 kHz) it holds; beyond, the oldest are dropped.
    pub max: usize,
    /// A queue above its target (plus a frame) at every look for this long is trimmed.
    pub trim_window: Duration,
}

/// Capture: room for a sound server's two-second bursts (and a window longer than them, so
/// they are never trimmed), which a steady microphone never fills.
pub const CAPTURE: QueueLimits = QueueLimits {
    max: SAMPLE_RATE as usize * 3,
    trim_window: Duration::from_secs(3),
};
/// Playback: fed in steady 20 ms frames by the driver; a quarter second is plenty.
pub const PLAYBACK: QueueLimits = QueueLimits {
    max: SAMPLE_RATE as usize / 4,
    trim_window: Duration::from_secs(1),
};

/// Which device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The system's default (on a desktop: the sound server's current device).
    #[default]
    Default,
    /// The device of this name, as [`list_devices`] shows it.
    Named(String),
}

/// One device as [`list_devices`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its name (give it to [`DeviceChoice::Named`]).
    pub name: String,
    /// It can capture.
    pub input: bool,
    /// It can play.
    pub output: bool,
    /// It is the default capture device.
    pub default_input: bool,
    /// It is the default playback device.
    pub default_output: bool,
}

/// The devices of the default host, each once, in the host's order.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = cpal::default_host();
    let dev = |e: &dyn std::fmt::Display| AudioError::Device(e.to_string());
    let default_in = host.default_input_device().and_then(|d| d.name().ok());
    let default_out = host.default_output_device().and_then(|d| d.name().ok());
    let mut out: Vec<DeviceInfo> = Vec::new();
    for (input, devices) in [
        (
            true,
            host.input_devices()
                .map_err(|e| dev(&e))?
                .collect::<Vec<_>>(),
        ),
        (
            false,
            host.output_devices()
                .map_err(|e| dev(&e))?
                .collect::<Vec<_>>(),
        ),
    ] {
        for d in devices {
            let Ok(name) = d.name() else { continue };
            let entry = match out.iter_mut().position(|i| i.name == name) {
                Some(i) => &mut out[i],
                None => {
                    out.push(DeviceInfo {
                        default_input: Some(&name) == default_in.as_ref(),
                        default_output: Some(&name) == default_out.as_ref(),
                        name,
                        input: false,
                        output: false,
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            if input {
                entry.input = true;
            } else {
                entry.output = true;
            }
        }
    }
    Ok(out)
}

/// The queue between a device thread and the driver, and what happened to it.
struct Shared {
    limits: QueueLimits,
    queue: Mutex<VecDeque<i16>>,
    overrun_samples: AtomicU64,
    underruns: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(limits: QueueLimits) -> Self {
        Self {
            limits,
            queue: Mutex::default(),
            overrun_samples: AtomicU64::default(),
            underruns: AtomicU64::default(),
            errors: AtomicU64::default(),
            last_error: Mutex::default(),
        }
    }

    /// Appends, dropping the oldest beyond the bound.
    fn push(&self, samples: impl Iterator<Item = i16>) {
        if let Ok(mut q) = self.queue.lock() {
            q.extend(samples);
            let excess = q.len().saturating_sub(self.limits.max);
            if excess > 0 {
                q.drain(..excess);
                self.overrun_samples
                    .fetch_add(excess as u64, Ordering::Relaxed);
            }
        }
    }

    fn error(&self, e: String) {
        tracing::warn!(%e, "audio device error");
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

/// Trims a queue that stayed above its target for a whole window: the smallest depth seen at
/// each look over the window is what the queue could lose without ever running dry.
#[derive(Debug)]
struct Trimmer {
    looks_per_window: u32,
    looks: u32,
    min_depth: usize,
}

impl Trimmer {
    fn new(window: Duration, look_interval: Duration) -> Self {
        let per = window.as_micros() / look_interval.as_micros().max(1);
        Self {
            looks_per_window: u32::try_from(per).unwrap_or(u32::MAX).max(1),
            looks: 0,
            min_depth: usize::MAX,
        }
    }

    /// Called at each look with the depth before taking; returns how many samples to drop.
    fn look(&mut self, depth: usize) -> usize {
        self.min_depth = self.min_depth.min(depth);
        self.looks += 1;
        if self.looks < self.looks_per_window {
            return 0;
        }
        let excess = self.min_depth.saturating_sub(TARGET_QUEUE + FRAME_SAMPLES);
        self.looks = 0;
        self.min_depth = usize::MAX;
        if excess > 0 {
            excess + FRAME_SAMPLES
        } else {
            0
        }
    }
}

/// Linear-interpolation resampler for one mono stream, continuous across calls.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, in input samples after `last`.
    pos: f64,
    last: f32,
}

impl Resampler {
    /// From `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        Self {
            step: f64::from(from) / f64::from(to.max(1)),
            pos: 0.0,
            last: 0.0,
        }
    }

    /// Resamples `input`, appending to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if (self.step - 1.0).abs() < f64::EPSILON {
            out.extend_from_slice(input);
            return;
        }
        // Sample i of the stream "last, input…" is at position i - 1.
        let at = |i: isize| -> f32 {
            if i < 0 {
                self.last
            } else {
                input.get(i as usize).copied().unwrap_or(0.0)
            }
        };
        let n = input.len() as f64;
        while self.pos < n - 1.0 + 1.0 {
            let i = self.pos.floor();
            let frac = (self.pos - i) as f32;
            let (a, b) = (at(i as isize - 1), at(i as isize));
            out.push(a + (b - a) * frac);
            self.pos += self.step;
        }
        self.pos -= n;
        if let Some(l) = input.last() {
            self.last = *l;
        }
    }
}

fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0) as i16
}

fn pick_device(
    host: &cpal::Host,
    choice: &DeviceChoice,
    capture: bool,
) -> Result<cpal::Device, AudioError> {
    let found = match choice {
        DeviceChoice::Default if capture => host.default_input_device(),
        DeviceChoice::Default => host.default_output_device(),
        DeviceChoice::Named(name) => {
            let devices = if capture {
                host.input_devices()
            } else {
                host.output_devices()
            }
            .map_err(|e| AudioError::Device(e.to_string()))?;
            devices
                .into_iter()
                .find(|d| d.name().is_ok_and(|n| &n == name))
        }
    };
    found.ok_or_else(|| {
        AudioError::Device(match choice {
            DeviceChoice::Default => format!(
                "no default {} device",
                if capture { "capture" } else { "playback" }
            ),
            DeviceChoice::Named(n) => format!(
                "no {} device named {n:?} (see `shieldcall audio-devices`)",
                if capture { "capture" } else { "playback" }
            ),
        })
    })
}

/// The configuration to open: 48 kHz mono if offered, else the closest rate and fewest
/// channels; f32 or i16 samples (the formats converted here).
fn pick_config(
    device: &cpal::Device,
    capture: bool,
) -> Result<(cpal::StreamConfig, SampleFormat, Option<u32>), AudioError> {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = if capture {
        device.supported_input_configs().map(|c| c.collect())
    } else {
        device.supported_output_configs().map(|c| c.collect())
    }
    .map_err(|e| AudioError::Device(e.to_string()))?;
    let usable = ranges
        .iter()
        .filter(|r| matches!(r.sample_format(), SampleFormat::F32 | SampleFormat::I16));
    let mut best: Option<(u64, cpal::SupportedStreamConfig)> = None;
    for r in usable {
        let rate = SAMPLE_RATE.clamp(r.min_sample_rate().0, r.max_sample_rate().0);
        let cost = u64::from(rate.abs_diff(SAMPLE_RATE)) * 100
            + u64::from(r.channels().saturating_sub(1)) * 10
            + u64::from(r.sample_format() != SampleFormat::F32);
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, (*r).with_sample_rate(cpal::SampleRate(rate))));
        }
    }
    let (_, chosen) = best.ok_or_else(|| {
        AudioError::Device("the device offers no f32 or 16-bit configuration".into())
    })?;
    let rate = chosen.sample_rate().0;
    let period = (rate as u64 * PERIOD.as_micros() as u64 / 1_000_000) as u32;
    // cpal sets a fixed buffer of four periods (its `Fixed(n)`: period n/4, buffer n).
    let fixed = match chosen.buffer_size() {
        SupportedBufferSize::Range { min, max } => {
            let want = period * 4;
            (want >= *min && want <= *max).then_some(want)
        }
        SupportedBufferSize::Unknown => Some(period * 4),
    };
    let config = cpal::StreamConfig {
        channels: chosen.channels(),
        sample_rate: chosen.sample_rate(),
        buffer_size: fixed.map_or(cpal::BufferSize::Default, cpal::BufferSize::Fixed),
    };
    Ok((config, chosen.sample_format(), fixed.map(|f| f / 4)))
}

struct DeviceThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    report: DeviceReport,
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Playback state kept by the device callback.
struct PlaybackState {
    started: bool,
    trimmer: Trimmer,
    resampler: Resampler,
    /// Resampled samples at the device rate not played yet.
    ready: VecDeque<f32>,
}

fn build_stream(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    format: SampleFormat,
    capture: bool,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, String> {
    let channels = usize::from(config.channels.max(1));
    let rate = config.sample_rate.0;
    let err_shared = shared.clone();
    let on_err = move |e: cpal::StreamError| err_shared.error(e.to_string());
    if capture {
        let mut resampler = Resampler::new(rate, SAMPLE_RATE);
        let (mut mono, mut out) = (Vec::new(), Vec::new());
        let mut take = move |samples: &mut dyn Iterator<Item = f32>, len: usize| {
            mono.clear();
            out.clear();
            let mut frame_sum = 0.0;
            for (i, s) in samples.enumerate().take(len) {
                frame_sum += s;
                if i % channels == channels - 1 {
                    mono.push(frame_sum / channels as f32);
                    frame_sum = 0.0;
                }
            }
            resampler.process(&mono, &mut out);
            shared.push(out.iter().map(|s| to_i16(*s)));
        };
        device
            .build_input_stream_raw(
                config,
                format,
                move |data: &cpal::Data, _: &cpal::InputCallbackInfo| {
                    if let Some(d) = data.as_slice::<f32>() {
                        take(&mut d.iter().copied(), d.len());
                    } else if let Some(d) = data.as_slice::<i16>() {
                        take(&mut d.iter().map(|s| f32::from(*s) / 32768.0), d.len());
                    }
                },
                on_err,
                None,
            )
            .map_err(|e| e.to_string())
    } else {
        let mut state = PlaybackState {
            started: false,
            trimmer: Trimmer::new(PLAYBACK.trim_window, PERIOD),
            resampler: Resampler::new(SAMPLE_RATE, rate),
            ready: VecDeque::new(),
        };
        let (mut mono, mut out) = (Vec::<f32>::new(), Vec::<f32>::new());
        let mut fill = move |len: usize, put: &mut dyn FnMut(usize, f32)| {
            let frames = len / channels;
            if let Ok(mut q) = shared.queue.lock() {
                if !state.started && q.len() >= TARGET_QUEUE {
                    state.started = true;
                }
                if state.started {
                    let drop = state.trimmer.look(q.len()).min(q.len());
                    if drop > 0 {
                        q.drain(..drop);
                        shared
                            .overrun_samples
                            .fetch_add(drop as u64, Ordering::Relaxed);
                    }
                    while state.ready.len() < frames {
                        // 48 kHz samples for what is missing, rounded up.
                        let missing = (frames - state.ready.len()) as f64;
                        let want = (missing * f64::from(SAMPLE_RATE) / f64::from(rate)).ceil();
                        let n = (want as usize).max(1).min(q.len());
                        if n == 0 {
                            shared.underruns.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        mono.clear();
                        mono.extend(q.drain(..n).map(|s| f32::from(s) / 32768.0));
                        out.clear();
                        state.resampler.process(&mono, &mut out);
                        state.ready.extend(out.iter().copied());
                    }
                }
            }
            for f in 0..frames {
                let s = state.ready.pop_front().unwrap_or(0.0);
                for c in 0..channels {
                    put(f * channels + c, s);
                }
            }
        };
        device
            .build_output_stream_raw(
                config,
                format,
                move |data: &mut cpal::Data, _: &cpal::OutputCallbackInfo| {
                    let len = data.len();
                    if let Some(d) = data.as_slice_mut::<f32>() {
                        fill(len, &mut |i, s| {
                            if let Some(o) = d.get_mut(i) {
                                *o = s;
                            }
                        });
                    } else if let Some(d) = data.as_slice_mut::<i16>() {
                        fill(len, &mut |i, s| {
                            if let Some(o) = d.get_mut(i) {
                                *o = to_i16(s);
                            }
                        });
                    }
                },
                on_err,
                None,
            )
            .map_err(|e| e.to_string())
    }
}

fn spawn_device(
    choice: &DeviceChoice,
    capture: bool,
    shared: Arc<Shared>,
) -> Result<DeviceThread, AudioError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<DeviceReport, String>>();
    let stop_thread = stop.clone();
    let choice = choice.clone();
    let handle = std::thread::spawn(move || {
        let run = || -> Result<(cpal::Stream, DeviceReport), String> {
            let host = cpal::default_host();
            let device = pick_device(&host, &choice, capture).map_err(|e| e.to_string())?;
            let name = device.name().unwrap_or_else(|_| "?".into());
            let (mut config, format, period) =
                pick_config(&device, capture).map_err(|e| e.to_string())?;
            let mut period = period;
            // A device that refuses the fixed period gets its own.
            let stream = match build_stream(&device, &config, format, capture, shared.clone()) {
                Ok(s) => s,
                Err(_) if config.buffer_size != cpal::BufferSize::Default => {
                    config.buffer_size = cpal::BufferSize::Default;
                    period = None;
                    build_stream(&device, &config, format, capture, shared.clone())?
                }
                Err(e) => return Err(e),
            };
            stream.play().map_err(|e| e.to_string())?;
            Ok((
                stream,
                DeviceReport {
                    name,
                    sample_rate: config.sample_rate.0,
                    channels: config.channels,
                    period_frames: period,
                    ..DeviceReport::default()
                },
            ))
        };
        match run() {
            Ok((stream, report)) => {
                let _ = ready_tx.send(Ok(report));
                while !stop_thread.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(stream);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    match ready_rx.recv() {
        Ok(Ok(report)) => Ok(DeviceThread {
            stop,
            handle: Some(handle),
            report,
        }),
        Ok(Err(e)) => Err(AudioError::Device(e)),
        Err(_) => Err(AudioError::Device("device thread ended".into())),
    }
}

fn report(thread: &DeviceThread, shared: &Shared) -> DeviceReport {
    DeviceReport {
        overrun_samples: shared.overrun_samples.load(Ordering::Relaxed),
        underruns: shared.underruns.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        last_error: shared.last_error.lock().ok().and_then(|l| l.clone()),
        ..thread.report.clone()
    }
}

/// A capture device (microphone).
pub struct CaptureSource {
    shared: Arc<Shared>,
    thread: DeviceThread,
    trimmer: Trimmer,
}

impl CaptureSource {
    /// Opens the default input device.
    pub fn open_default() -> Result<Self, AudioError> {
        Self::open(&DeviceChoice::Default)
    }

    /// Opens a capture device.
    pub fn open(choice: &DeviceChoice) -> Result<Self, AudioError> {
        let shared = Arc::new(Shared::new(CAPTURE));
        let thread = spawn_device(choice, true, shared.clone())?;
        Ok(Self {
            shared,
            thread,
            trimmer: Trimmer::new(CAPTURE.trim_window, super::FRAME_DURATION),
        })
    }
}

impl AudioSource for CaptureSource {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError> {
        out.fill(0);
        if let Ok(mut q) = self.shared.queue.lock() {
            // What was queued before the first frame (a steady microphone's last tens of
            // milliseconds, or a bursty source's audio ahead of time: the two cannot be told
            // apart here) is sent, not dropped; if it keeps the queue above its target, the
            // trimmer takes it away after a window.
            let drop = self.trimmer.look(q.len()).min(q.len());
            if drop > 0 {
                q.drain(..drop);
                self.shared
                    .overrun_samples
                    .fetch_add(drop as u64, Ordering::Relaxed);
            }
            if q.len() < FRAME_SAMPLES {
                self.shared.underruns.fetch_add(1, Ordering::Relaxed);
            }
            let n = q.len().min(FRAME_SAMPLES);
            for (slot, s) in out.iter_mut().zip(q.drain(..n)) {
                *slot = s;
            }
        }
        Ok(true)
    }

    fn device_report(&self) -> Option<DeviceReport> {
        Some(report(&self.thread, &self.shared))
    }
}

/// A playback device (speaker).
pub struct PlaybackSink {
    shared: Arc<Shared>,
    thread: DeviceThread,
}

impl PlaybackSink {
    /// Opens the default output device.
    pub fn open_default() -> Result<Self, AudioError> {
        Self::open(&DeviceChoice::Default)
    }

    /// Opens a playback device.
    pub fn open(choice: &DeviceChoice) -> Result<Self, AudioError> {
        let shared = Arc::new(Shared::new(PLAYBACK));
        let thread = spawn_device(choice, false, shared.clone())?;
        Ok(Self { shared, thread })
    }
}

impl AudioSink for PlaybackSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        self.shared.push(frame.iter().copied());
        Ok(())
    }

    fn device_report(&self) -> Option<DeviceReport> {
        Some(report(&self.thread, &self.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::dominant_frequency;

    /// Headless machines (CI) have no device: opening must fail cleanly, not panic or hang;
    /// where a device exists it opens and yields frames.
    #[test]
    fn default_devices_open_or_fail_cleanly() {
        match CaptureSource::open_default() {
            Ok(mut c) => {
                let mut f = [0i16; FRAME_SAMPLES];
                assert!(c.next_frame(&mut f).unwrap());
            }
            Err(e) => assert!(matches!(e, AudioError::Device(_)), "{e}"),
        }
        match PlaybackSink::open_default() {
            Ok(mut p) => p.write_frame(&[0i16; FRAME_SAMPLES]).unwrap(),
            Err(e) => assert!(matches!(e, AudioError::Device(_)), "{e}"),
        }
        assert!(matches!(
            CaptureSource::open(&DeviceChoice::Named("no such device".into())),
            Err(AudioError::Device(m)) if m.contains("no such device") || m.contains("no capture")
        ));
    }

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin() as f32 * 0.5)
            .collect()
    }

    #[test]
    fn resampling_keeps_the_pitch_and_the_length_in_chunks_of_any_size() {
        for (from, to) in [
            (44_100, 48_000),
            (48_000, 44_100),
            (16_000, 48_000),
            (48_000, 48_000),
        ] {
            let input = tone(from, 1000.0, from as usize);
            let mut r = Resampler::new(from, to);
            let mut out = Vec::new();
            for chunk in input.chunks(441) {
                r.process(chunk, &mut out);
            }
            let len = out.len() as i64;
            assert!(
                (len - i64::from(to)).abs() <= 2,
                "{from}->{to}: {len} samples"
            );
            let pcm: Vec<i16> = out.iter().map(|s| to_i16(*s)).collect();
            let f = dominant_frequency(&pcm, to);
            assert!((f - 1000.0).abs() <= 2.0, "{from}->{to}: {f} Hz");
        }
    }

    #[test]
    fn a_burst_is_kept_and_a_queue_that_stays_full_is_trimmed() {
        // A device that hands over 100 ms at once, read 20 ms at a time: never trimmed.
        let mut t = Trimmer::new(PLAYBACK.trim_window, crate::audio::FRAME_DURATION);
        let mut depth = 0usize;
        for tick in 0..500 {
            if tick % 5 == 0 {
                depth += 5 * FRAME_SAMPLES;
            }
            assert_eq!(t.look(depth), 0, "tick {tick}");
            depth -= FRAME_SAMPLES;
        }
        // Two seconds at a time, as module-sine-source delivers: never trimmed at capture.
        let mut t = Trimmer::new(CAPTURE.trim_window, crate::audio::FRAME_DURATION);
        let mut depth = 0usize;
        for tick in 0..1000 {
            if tick % 100 == 0 {
                depth += 100 * FRAME_SAMPLES;
            }
            assert_eq!(t.look(depth), 0, "tick {tick}");
            depth -= FRAME_SAMPLES;
        }
        // A queue that never drops below 100 ms for a second is brought back to the target.
        let mut t = Trimmer::new(PLAYBACK.trim_window, crate::audio::FRAME_DURATION);
        let mut dropped = 0;
        for _ in 0..50 {
            dropped += t.look(5 * FRAME_SAMPLES);
        }
        assert_eq!(dropped, 5 * FRAME_SAMPLES - TARGET_QUEUE);
    }

    #[test]
    fn the_queue_is_bounded() {
        let s = Shared::new(PLAYBACK);
        s.push(std::iter::repeat_n(1i16, PLAYBACK.max + 100));
        assert_eq!(s.queue.lock().unwrap().len(), PLAYBACK.max);
        assert_eq!(s.overrun_samples.load(Ordering::Relaxed), 100);
    }
}
