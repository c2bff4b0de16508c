//! A guest's stdout and stderr, turned into log lines of the module
//! (stderr at warn level), so a Rust guest's panic message shows up next to
//! the trap it causes. Nothing is inherited from the host's own stdio.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::logs::LogGate;
use crate::bindings::Level;

/// A partial line longer than this is logged as it is (and then cut by
/// the gate to the log-line limit).
const MAX_LINE: usize = 4096;

/// Where one output stream of one instance goes.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<Inner>);

struct Inner {
    /// Set once the instance has answered `info`.
    version: Arc<OnceLock<Arc<str>>>,
    level: Level,
    /// The module's log gate.
    gate: Arc<LogGate>,
    /// Set while the instance replays messages whose output was already
    /// written the first time.
    replaying: Arc<AtomicBool>,
    // Bytes of an unfinished line. Written only by the instance's own
    // thread; the Mutex makes the type Sync, as wasmtime-wasi requires.
    partial: Mutex<Vec<u8>>,
}

impl GuestOutput {
    pub(crate) fn new(
        version: Arc<OnceLock<Arc<str>>>,
        level: Level,
        gate: Arc<LogGate>,
        replaying: Arc<AtomicBool>,
    ) -> Self {
        GuestOutput(Arc::new(Inner {
            version,
            level,
            gate,
            replaying,
            partial: Mutex::new(Vec::new()),
        }))
    }

    fn write_bytes(&self, bytes: &[u8]) {
        if self.0.replaying.load(Ordering::Relaxed) {
            return;
        }
        let mut partial = self.0.partial.lock().expect("stdio poisoned");
        partial.extend_from_slice(bytes);
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if partial.len() > MAX_LINE {
            let line = std::mem::take(&mut *partial);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        if line.trim().is_empty() {
            return;
        }
        let version = self.0.version.get().map_or("?", |v| &**v);
        self.0.gate.log(version, self.0.level, line);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
