//! Messages in batches: the host's `service-batch` call unpacked into one
//! [`Module::service`](crate::Module::service) call per message, and the
//! [`Outbox`] that sends many messages in one host call. Both use the
//! packed form of the WIT world `module-batch`: every integer a
//! little-endian u32, every string and body its length then its bytes.

use serde::Serialize;

use crate::bindings::liveswap::module::types::BatchRefusal;
use crate::{Message, host};

fn u32_at(b: &[u8], at: &mut usize) -> u32 {
    let v = u32::from_le_bytes(b[*at..*at + 4].try_into().expect("four bytes"));
    *at += 4;
    v
}

fn bytes_at<'a>(b: &'a [u8], at: &mut usize) -> &'a [u8] {
    let n = u32_at(b, at) as usize;
    let v = &b[*at..*at + n];
    *at += n;
    v
}

fn string_at(b: &[u8], at: &mut usize) -> String {
    let raw = bytes_at(b, at);
    String::from_utf8(raw.to_vec()).unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
}

/// Serve every message packed in `batch` with `service`, in order,
/// reporting each one's outcome to the host as it is done.
#[doc(hidden)]
pub fn serve(batch: &[u8], mut service: impl FnMut(Message) -> Result<(), String>) {
    let mut at = 0;
    let count = u32_at(batch, &mut at);
    for _ in 0..count {
        let from = string_at(batch, &mut at);
        let kind = string_at(batch, &mut at);
        let proto = u32_at(batch, &mut at);
        let body = bytes_at(batch, &mut at).to_vec();
        let outcome = service(Message {
            from,
            kind,
            proto,
            body,
        });
        host::batch_served(outcome.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

/// Messages collected to go out in one host call ([`Outbox::flush`]),
/// each exactly as [`send`](crate::send) would send it, in order.
///
/// ```ignore
/// let mut out = Outbox::new();
/// for n in 1..=1000u64 {
///     out.push("B", "num", &n)?;
/// }
/// out.flush().map_err(|r| r.reason)?;
/// ```
#[derive(Default)]
pub struct Outbox {
    packed: Vec<u8>,
    len: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Add a message of `kind` with `body` as CBOR for `to`, in the
    /// highest protocol this version speaks.
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        to: &str,
        kind: &str,
        body: &T,
    ) -> Result<(), String> {
        let proto = crate::PROTO.load(std::sync::atomic::Ordering::Relaxed);
        self.push_bytes(to, kind, proto, &crate::encode(body)?);
        Ok(())
    }

    /// Add a message whose body is already bytes, in protocol `proto`.
    pub fn push_bytes(&mut self, to: &str, kind: &str, proto: u32, body: &[u8]) {
        let p = &mut self.packed;
        p.reserve(16 + to.len() + kind.len() + body.len());
        for part in [to.as_bytes(), kind.as_bytes()] {
            p.extend_from_slice(&(part.len() as u32).to_le_bytes());
            p.extend_from_slice(part);
        }
        p.extend_from_slice(&proto.to_le_bytes());
        p.extend_from_slice(&(body.len() as u32).to_le_bytes());
        p.extend_from_slice(body);
        self.len += 1;
    }

    /// Messages waiting to be flushed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Send everything pushed, in order, in one host call, and empty the
    /// outbox. Ok: every message was accepted. Err: the first `accepted`
    /// were, the next was refused for `reason`, the rest were not sent.
    pub fn flush(&mut self) -> Result<usize, BatchRefusal> {
        let n = self.len;
        self.len = 0;
        if n == 0 {
            return Ok(0);
        }
        let r = host::send_batch(&self.packed);
        self.packed.clear();
        r.map(|()| n)
    }
}
