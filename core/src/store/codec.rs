//! The store's byte format: little-endian integers and length-prefixed
//! bytes, written by hand so that a journal entry costs a few copies, not a
//! serializer's walk. A reader that runs short says so, never panics: a
//! torn or corrupted record is an error naming what was being read.

use std::sync::Arc;

use crate::bindings::Message;

/// Append-only encoder.
#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn bool(&mut self, b: bool) {
        self.u8(u8::from(b));
    }
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    pub fn message(&mut self, m: &Message) {
        self.str(&m.from);
        self.str(&m.kind);
        self.u32(m.proto);
        self.bytes(&m.body);
    }
    pub fn failures(&mut self, f: &[(u64, String)]) {
        self.u64(f.len() as u64);
        for (i, e) in f {
            self.u64(*i);
            self.str(e);
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("a stored record is damaged: {0}")]
pub struct Damaged(pub String);

/// Reader over one record.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, at: 0 }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Damaged> {
        if self.buf.len() - self.at < n {
            return Err(Damaged(format!(
                "{what} runs past the end ({n} bytes wanted at offset {} of {})",
                self.at,
                self.buf.len()
            )));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, Damaged> {
        Ok(self.take(1, "a tag")?[0])
    }
    /// Whether everything has been read.
    pub fn at_end(&self) -> bool {
        self.at == self.buf.len()
    }
    pub fn u32(&mut self) -> Result<u32, Damaged> {
        let b = self.take(4, "a number")?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> Result<u64, Damaged> {
        let b = self.take(8, "a number")?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, Damaged> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| Damaged(format!("a length of {n}")))?;
        Ok(self.take(n, "a byte string")?.to_vec())
    }
    pub fn str(&mut self) -> Result<String, Damaged> {
        String::from_utf8(self.bytes()?).map_err(|_| Damaged("a name is not UTF-8".into()))
    }
    pub fn name(&mut self) -> Result<Arc<str>, Damaged> {
        Ok(Arc::from(self.str()?))
    }
    pub fn bool(&mut self) -> Result<bool, Damaged> {
        Ok(self.u8()? != 0)
    }
    pub fn opt_u64(&mut self) -> Result<Option<u64>, Damaged> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.u64()?),
        })
    }
    pub fn message(&mut self) -> Result<Message, Damaged> {
        Ok(Message {
            from: self.str()?,
            kind: self.str()?,
            proto: self.u32()?,
            body: self.bytes()?,
        })
    }
    pub fn failures(&mut self) -> Result<Vec<(u64, String)>, Damaged> {
        let n = self.u64()?;
        let mut v = Vec::new();
        for _ in 0..n {
            v.push((self.u64()?, self.str()?));
        }
        Ok(v)
    }
}
