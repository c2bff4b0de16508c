//! Batches: the packed form of the messages `service-batch` takes and
//! `send-batch` gives (WIT `module-batch`: every integer a little-endian
//! u32, every string and body its length then its bytes), and what the
//! host keeps of a `service-batch` call while it runs: where each message
//! ended among the call's effects, and its outcome.

use crate::bindings::Message;

/// Append `n` as a little-endian u32.
fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// Pack `msgs` for `service-batch` into `out` (cleared first).
pub(crate) fn pack<'a>(out: &mut Vec<u8>, msgs: impl ExactSizeIterator<Item = &'a Message>) {
    out.clear();
    put_u32(out, msgs.len() as u32);
    for m in msgs {
        put_bytes(out, m.from.as_bytes());
        put_bytes(out, m.kind.as_bytes());
        put_u32(out, m.proto);
        put_bytes(out, &m.body);
    }
}

/// One message of a `send-batch`, borrowed from the packed bytes.
pub(crate) struct Outgoing<'a> {
    pub to: &'a str,
    pub kind: &'a str,
    pub proto: u32,
    pub body: &'a [u8],
}

/// A reader over packed bytes; every error names the byte it stopped at.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let end = self.at + 4;
        let b = self.bytes.get(self.at..end).ok_or_else(|| self.short())?;
        self.at = end;
        Ok(u32::from_le_bytes(b.try_into().expect("four bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        let end = self.at.checked_add(n).ok_or_else(|| self.short())?;
        let b = self.bytes.get(self.at..end).ok_or_else(|| self.short())?;
        self.at = end;
        Ok(b)
    }

    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let at = self.at;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| format!("the {what} at byte {at} of the batch is not UTF-8"))
    }

    fn short(&self) -> String {
        format!(
            "the batch ends inside a message (at byte {} of {})",
            self.at,
            self.bytes.len()
        )
    }
}

/// The messages of a `send-batch`, all checked before any is sent.
pub(crate) fn unpack_sends(bytes: &[u8]) -> Result<Vec<Outgoing<'_>>, String> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    while r.at < bytes.len() {
        out.push(Outgoing {
            to: r.str("receiver name")?,
            kind: r.str("kind")?,
            proto: r.u32()?,
            body: r.bytes()?,
        });
    }
    Ok(out)
}

/// What a `service-batch` call reported, per message in order: the
/// effects the call had made by the end of it, and its outcome.
pub type Reported = Vec<(u64, Result<(), String>)>;

/// A `service-batch` call under way: for each message the guest reported
/// done, the number of effects the call had made by then and its outcome.
#[derive(Default)]
pub(crate) struct Progress {
    /// Set while a `service-batch` call runs.
    pub active: bool,
    /// Per message reported, in order: (effects so far, outcome).
    pub done: Reported,
    /// How many were reported when the deadline last fired: a batch that
    /// moved on since gets another deadline for its current message.
    pub seen_at_deadline: usize,
}

impl Progress {
    /// Start tracking a call.
    pub fn begin(&mut self) {
        self.active = true;
        self.done.clear();
        self.seen_at_deadline = 0;
    }

    /// Whether the call moved to a later message since the deadline last
    /// fired (and note that it did).
    pub fn moved_on(&mut self) -> bool {
        let moved = self.active && self.done.len() > self.seen_at_deadline;
        self.seen_at_deadline = self.done.len();
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_round_trip_and_malformed_batches_are_refused_whole() {
        let mut b = Vec::new();
        for (to, kind, body) in [("B", "num", &b"\x01"[..]), ("C", "x", &b""[..])] {
            put_bytes(&mut b, to.as_bytes());
            put_bytes(&mut b, kind.as_bytes());
            put_u32(&mut b, 7);
            put_bytes(&mut b, body);
        }
        let got = unpack_sends(&b).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].to, got[0].kind, got[0].proto), ("B", "num", 7));
        assert_eq!(got[0].body, b"\x01");
        assert_eq!((got[1].to, got[1].body.len()), ("C", 0));
        let e = unpack_sends(&b[..b.len() - 2]).err().unwrap();
        assert!(e.contains("ends inside a message"), "{e}");
        let mut bad = Vec::new();
        put_bytes(&mut bad, &[0xff, 0xfe]);
        let e = unpack_sends(&bad).err().unwrap();
        assert!(e.contains("receiver name at byte 0"), "{e}");
    }
}
