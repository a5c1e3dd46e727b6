//! The default capture and playback devices through cpal (ALSA on Linux).
//!
//! cpal streams are not `Send`, so each lives on its own thread and exchanges samples with the
//! driver through a bounded queue. Devices may be absent (CI, servers): opening then fails with
//! [`AudioError::Device`] and the caller picks another source or sink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::sink::AudioSink;
use super::source::AudioSource;
use super::{AudioError, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Most samples queued between device and driver (200 ms); older ones are dropped.
pub const DEVICE_QUEUE_SAMPLES: usize = FRAME_SAMPLES * 10;

type Queue = Arc<Mutex<VecDeque<i16>>>;

struct DeviceThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn push_bounded(q: &Queue, samples: impl Iterator<Item = i16>) {
    if let Ok(mut q) = q.lock() {
        q.extend(samples);
        while q.len() > DEVICE_QUEUE_SAMPLES {
            q.pop_front();
        }
    }
}

fn spawn_device(capture: bool, queue: Queue) -> Result<DeviceThread, AudioError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let stop_thread = stop.clone();
    let handle = std::thread::spawn(move || {
        let run = || -> Result<cpal::Stream, String> {
            let host = cpal::default_host();
            let device = if capture {
                host.default_input_device()
            } else {
                host.default_output_device()
            }
            .ok_or("no default device")?;
            let config = cpal::StreamConfig {
                channels: 1,
                sample_rate: cpal::SampleRate(SAMPLE_RATE),
                buffer_size: cpal::BufferSize::Default,
            };
            let on_err = |e| tracing::warn!(%e, "audio device error");
            let q = queue.clone();
            let stream = if capture {
                device.build_input_stream(
                    &config,
                    move |data: &[f32], _: &_| {
                        push_bounded(&q, data.iter().map(|s| (s * 32767.0) as i16))
                    },
                    on_err,
                    None,
                )
            } else {
                device.build_output_stream(
                    &config,
                    move |data: &mut [f32], _: &_| {
                        let mut q = q.lock().ok();
                        for out in data.iter_mut() {
                            let s = q.as_mut().and_then(|q| q.pop_front()).unwrap_or(0);
                            *out = f32::from(s) / 32768.0;
                        }
                    },
                    on_err,
                    None,
                )
            }
            .map_err(|e| e.to_string())?;
            stream.play().map_err(|e| e.to_string())?;
            Ok(stream)
        };
        match run() {
            Ok(stream) => {
                let _ = ready_tx.send(Ok(()));
                while !stop_thread.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                drop(stream);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        }
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(DeviceThread {
            stop,
            handle: Some(handle),
        }),
        Ok(Err(e)) => Err(AudioError::Device(e)),
        Err(_) => Err(AudioError::Device("device thread ended".into())),
    }
}

/// The default capture device (microphone).
pub struct CaptureSource {
    queue: Queue,
    _thread: DeviceThread,
}

impl CaptureSource {
    /// Opens the default input device at 48 kHz mono.
    pub fn open_default() -> Result<Self, AudioError> {
        let queue = Queue::default();
        let thread = spawn_device(true, queue.clone())?;
        Ok(Self {
            queue,
            _thread: thread,
        })
    }
}

impl AudioSource for CaptureSource {
    fn next_frame(&mut self, out: &mut Frame) -> Result<bool, AudioError> {
        out.fill(0);
        if let Ok(mut q) = self.queue.lock() {
            for slot in out.iter_mut() {
                match q.pop_front() {
                    Some(s) => *slot = s,
                    None => break,
                }
            }
        }
        Ok(true)
    }
}

/// The default playback device (speaker).
pub struct PlaybackSink {
    queue: Queue,
    _thread: DeviceThread,
}

impl PlaybackSink {
    /// Opens the default output device at 48 kHz mono.
    pub fn open_default() -> Result<Self, AudioError> {
        let queue = Queue::default();
        let thread = spawn_device(false, queue.clone())?;
        Ok(Self {
            queue,
            _thread: thread,
        })
    }
}

impl AudioSink for PlaybackSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        push_bounded(&self.queue, frame.iter().copied());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
