//! The probe's state on the wire: shape 1 and shape 2, both one CBOR map.
//!
//! Both directions are on an upgrade's pause, so they are written by
//! hand and make one pass: `encode` writes from the live state (nothing
//! is cloned first), `decode` walks the map once and copies the ballast
//! straight into a vector of its length. The bytes are those serde and
//! ciborium write for the same fields (a test checks it); a value in any
//! other valid CBOR form is read through ciborium, with a small scratch
//! buffer (its default one is 4 KiB on the stack, which a fresh instance
//! pays for in page faults).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::de::DeserializeOwned;

use crate::State;

/// The ballast: its own bytes, or a window of the state it came in, kept
/// as it is (taking a 16 MiB ballast over then copies nothing).
#[derive(Default)]
pub(crate) struct Ballast {
    buf: Vec<u8>,
    at: Range<usize>,
}

impl Ballast {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.at.clone()]
    }

    pub(crate) fn len(&self) -> usize {
        self.at.len()
    }
}

impl From<Vec<u8>> for Ballast {
    fn from(buf: Vec<u8>) -> Self {
        let at = 0..buf.len();
        Ballast { buf, at }
    }
}

impl PartialEq for Ballast {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for Ballast {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Ballast({} bytes)", self.len())
    }
}

/// Where a ballast was found: a definite byte string at a place in the
/// state, or one in another form, read into bytes of its own.
enum PadAt {
    At(Range<usize>),
    Own(Vec<u8>),
}

#[derive(serde::Deserialize)]
struct TicksOwned {
    send: BTreeSet<String>,
    publish: BTreeSet<String>,
}

/// `s` in shape `shape` (1 or 2), naming `writer` as its author, in a
/// vector of its exact length (measured first: the bindings would
/// otherwise shrink a larger one on the pause).
pub(crate) fn encode(s: &State, shape: u32, writer: &str) -> Vec<u8> {
    let mut len = Count(0);
    write(&mut len, s, shape, writer);
    let mut out = Vec::with_capacity(len.0);
    write(&mut out, s, shape, writer);
    out
}

/// Where encoded bytes go: a vector, or a count of them.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct Count(usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn write<O: Sink>(o: &mut O, s: &State, shape: u32, writer: &str) {
    if shape == 1 {
        put_head(o, MAP, 9);
        put_field(o, "seq", |o| put_counts(o, &s.sent));
        put_field(o, "seen", |o| put_counts(o, &s.seen));
        put_field(o, "on_tick_send", |o| put_names(o, &s.tick_send));
        put_field(o, "on_tick_publish", |o| put_names(o, &s.tick_publish));
        put_field(o, "flags", |o| put_names(o, &s.flags));
        put_field(o, "pad", |o| put_bytes(o, s.pad.as_slice()));
    } else {
        put_head(o, MAP, 10);
        put_field(o, "shape", |o| put_head(o, UINT, 2));
        put_field(o, "outgoing", |o| put_counts(o, &s.sent));
        put_field(o, "incoming", |o| put_counts(o, &s.seen));
        put_field(o, "tick", |o| {
            put_head(o, MAP, 2);
            put_field(o, "send", |o| put_names(o, &s.tick_send));
            put_field(o, "publish", |o| put_names(o, &s.tick_publish));
        });
        put_field(o, "flags", |o| put_names(o, &s.flags));
        put_field(o, "ballast", |o| put_bytes(o, s.pad.as_slice()));
        put_field(o, "served", |o| put_head(o, UINT, s.served));
    }
    put_field(o, "work_us", |o| put_head(o, UINT, s.work_us));
    put_field(o, "quiet", |o| o.put(&[if s.quiet { TRUE } else { FALSE }]));
    put_field(o, "writer", |o| put_text(o, writer));
}

pub(crate) const UINT: u8 = 0;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;

/// A CBOR head in its shortest form.
pub(crate) fn put_head(o: &mut impl Sink, major: u8, n: u64) {
    let m = major << 5;
    let b = n.to_be_bytes();
    match n {
        0..=23 => o.put(&[m | n as u8]),
        24..=0xff => o.put(&[m | 24, n as u8]),
        0x100..=0xffff => o.put(&[m | 25, b[6], b[7]]),
        0x1_0000..=0xffff_ffff => o.put(&[m | 26, b[4], b[5], b[6], b[7]]),
        _ => {
            o.put(&[m | 27]);
            o.put(&b);
        }
    }
}

fn put_text(o: &mut impl Sink, t: &str) {
    put_head(o, TEXT, t.len() as u64);
    o.put(t.as_bytes());
}

fn put_bytes(o: &mut impl Sink, b: &[u8]) {
    put_head(o, BYTES, b.len() as u64);
    o.put(b);
}

fn put_field<O: Sink>(o: &mut O, key: &str, value: impl FnOnce(&mut O)) {
    put_text(o, key);
    value(o);
}

fn put_counts(o: &mut impl Sink, m: &BTreeMap<String, u64>) {
    put_head(o, MAP, m.len() as u64);
    for (k, v) in m {
        put_text(o, k);
        put_head(o, UINT, *v);
    }
}

fn put_names(o: &mut impl Sink, s: &BTreeSet<String>) {
    put_head(o, ARRAY, s.len() as u64);
    for k in s {
        put_text(o, k);
    }
}

/// A decoded state: its shape (1 when it carries none), its writer and
/// what it holds, still to be checked against its shape.
pub(crate) struct Decoded {
    pub shape: u32,
    pub writer: Option<String>,
    fields: Found,
    bytes: Vec<u8>,
}

/// Every key either shape has, as found.
#[derive(Default)]
struct Found {
    sent: [Option<BTreeMap<String, u64>>; 2],
    seen: [Option<BTreeMap<String, u64>>; 2],
    tick_send: Option<BTreeSet<String>>,
    tick_publish: Option<BTreeSet<String>>,
    tick: Option<TicksOwned>,
    flags: Option<BTreeSet<String>>,
    pad: [Option<PadAt>; 2],
    served: Option<u64>,
    work_us: Option<u64>,
    quiet: Option<bool>,
}

/// Read a state of either shape, in one pass over its map.
pub(crate) fn decode(bytes: Vec<u8>) -> Result<Decoded, String> {
    let mut rest = &bytes[..];
    let entries = match head(&mut rest) {
        Some((MAP, Some(n))) => n,
        _ => return Err("state is not a CBOR map (of definite length)".into()),
    };
    let (mut f, mut shape, mut writer) = (Found::default(), None, None);
    let mut scratch = [0u8; 128];
    let sc = &mut scratch[..];
    for _ in 0..entries {
        let key = match head(&mut rest) {
            Some((TEXT, Some(n))) if rest.len() as u64 >= n => {
                let (k, r) = rest.split_at(n as usize);
                rest = r;
                k
            }
            _ => return Err("state is not a CBOR map with text keys".into()),
        };
        let r = &mut rest;
        match key {
            b"shape" => shape = Some(read(r, sc, uint)? as u32),
            b"writer" => writer = Some(read(r, sc, |r| text(r).map(str::to_string))?),
            b"seq" => f.sent[0] = Some(read(r, sc, counts)?),
            b"outgoing" => f.sent[1] = Some(read(r, sc, counts)?),
            b"seen" => f.seen[0] = Some(read(r, sc, counts)?),
            b"incoming" => f.seen[1] = Some(read(r, sc, counts)?),
            b"on_tick_send" => f.tick_send = Some(read(r, sc, names)?),
            b"on_tick_publish" => f.tick_publish = Some(read(r, sc, names)?),
            b"tick" => f.tick = Some(read(r, sc, ticks)?),
            b"flags" => f.flags = Some(read(r, sc, names)?),
            b"pad" => f.pad[0] = Some(byte_string(r, sc, bytes.len())?),
            b"ballast" => f.pad[1] = Some(byte_string(r, sc, bytes.len())?),
            b"served" => f.served = Some(read(r, sc, uint)?),
            b"work_us" => f.work_us = Some(read(r, sc, uint)?),
            b"quiet" => f.quiet = Some(read(r, sc, boolean)?),
            _ => drop(value::<ciborium::Value>(r, sc)?),
        }
    }
    Ok(Decoded {
        shape: shape.unwrap_or(1),
        writer,
        fields: f,
        bytes,
    })
}

impl Decoded {
    /// The state, if it has every field of its shape (1, or 2 for any
    /// other).
    pub(crate) fn state(self) -> Result<State, String> {
        let (shape, f) = (self.shape, self.fields);
        let i = usize::from(shape != 1);
        let missing =
            |name: &str| format!("state shape {shape} unreadable: missing field `{name}`");
        let names = [["seq", "seen", "pad"], ["outgoing", "incoming", "ballast"]][i];
        let (sent, seen, pad) = (pick(f.sent, i), pick(f.seen, i), pick(f.pad, i));
        let (tick_send, tick_publish) = if shape == 1 {
            (f.tick_send, f.tick_publish)
        } else {
            let t = f.tick.ok_or_else(|| missing("tick"))?;
            (Some(t.send), Some(t.publish))
        };
        let state = State {
            sent: sent.ok_or_else(|| missing(names[0]))?,
            seen: seen.ok_or_else(|| missing(names[1]))?,
            tick_send: tick_send.ok_or_else(|| missing("on_tick_send"))?,
            tick_publish: tick_publish.ok_or_else(|| missing("on_tick_publish"))?,
            flags: f.flags.ok_or_else(|| missing("flags"))?,
            pad: match pad.ok_or_else(|| missing(names[2]))? {
                PadAt::Own(b) => b.into(),
                // A window of most of the state is kept as it is; a small
                // one is copied, not to hold the rest.
                PadAt::At(at) if at.len() * 2 >= self.bytes.len() => Ballast {
                    buf: self.bytes,
                    at,
                },
                PadAt::At(at) => self.bytes[at].to_vec().into(),
            },
            served: match shape {
                1 => 0,
                _ => f.served.ok_or_else(|| missing("served"))?,
            },
            work_us: f.work_us.ok_or_else(|| missing("work_us"))?,
            quiet: f.quiet.ok_or_else(|| missing("quiet"))?,
        };
        Ok(state)
    }
}

/// The first of a pair (shape 1's field) or the second (shape 2's).
fn pick<T>(pair: [Option<T>; 2], i: usize) -> Option<T> {
    let [a, b] = pair;
    if i == 0 { a } else { b }
}

/// One value from the front of `rest`, which moves past it: by `fast`
/// when it is in the form written here, else through ciborium.
fn read<T: DeserializeOwned>(
    rest: &mut &[u8],
    scratch: &mut [u8],
    fast: fn(&mut &[u8]) -> Option<T>,
) -> Result<T, String> {
    let mut r = *rest;
    match fast(&mut r) {
        Some(v) => {
            *rest = r;
            Ok(v)
        }
        None => value(rest, scratch),
    }
}

pub(crate) fn uint(r: &mut &[u8]) -> Option<u64> {
    match head(r)? {
        (UINT, Some(v)) => Some(v),
        _ => None,
    }
}

fn boolean(r: &mut &[u8]) -> Option<bool> {
    let (&b, tail) = r.split_first()?;
    *r = tail;
    match b {
        FALSE => Some(false),
        TRUE => Some(true),
        _ => None,
    }
}

fn text<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
    match head(r)? {
        (TEXT, Some(n)) if r.len() as u64 >= n => {
            let (t, tail) = r.split_at(n as usize);
            *r = tail;
            std::str::from_utf8(t).ok()
        }
        _ => None,
    }
}

fn counts(r: &mut &[u8]) -> Option<BTreeMap<String, u64>> {
    let (MAP, Some(n)) = head(r)? else {
        return None;
    };
    (0..n)
        .map(|_| Some((text(r)?.to_string(), uint(r)?)))
        .collect()
}

fn names(r: &mut &[u8]) -> Option<BTreeSet<String>> {
    let (ARRAY, Some(n)) = head(r)? else {
        return None;
    };
    (0..n).map(|_| Some(text(r)?.to_string())).collect()
}

fn ticks(r: &mut &[u8]) -> Option<TicksOwned> {
    let (MAP, Some(2)) = head(r)? else {
        return None;
    };
    let mut t = TicksOwned {
        send: BTreeSet::new(),
        publish: BTreeSet::new(),
    };
    for _ in 0..2 {
        match text(r)? {
            "send" => t.send = names(r)?,
            "publish" => t.publish = names(r)?,
            _ => return None,
        }
    }
    Some(t)
}

/// One CBOR value from the front of `rest`, which moves past it.
fn value<T: DeserializeOwned>(rest: &mut &[u8], scratch: &mut [u8]) -> Result<T, String> {
    ciborium::de::from_reader_with_buffer(&mut *rest, scratch)
        .map_err(|e| format!("state unreadable: {e}"))
}

/// A byte string from the front of `rest`, the last `total` bytes of the
/// state: a definite one is found where it is (its range in the state);
/// any other form goes through ciborium.
fn byte_string(rest: &mut &[u8], scratch: &mut [u8], total: usize) -> Result<PadAt, String> {
    let mut probe = *rest;
    if let Some((BYTES, Some(n))) = head(&mut probe)
        && probe.len() as u64 >= n
    {
        let start = total - probe.len();
        *rest = &probe[n as usize..];
        return Ok(PadAt::At(start..start + n as usize));
    }
    let b: ciborium::Value = value(rest, scratch)?;
    match b {
        ciborium::Value::Bytes(b) => Ok(PadAt::Own(b)),
        ciborium::Value::Array(a) => a
            .into_iter()
            .map(|x| x.as_integer().and_then(|i| u8::try_from(i).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(PadAt::Own)
            .ok_or_else(|| "state unreadable: ballast is not bytes".into()),
        _ => Err("state unreadable: ballast is not bytes".into()),
    }
}

/// A CBOR item's head: its major type and its argument (`None` for an
/// indefinite length); `rest` moves past it.
fn head(rest: &mut &[u8]) -> Option<(u8, Option<u64>)> {
    let (&first, tail) = rest.split_first()?;
    let (major, info) = (first >> 5, first & 0x1f);
    let (arg, tail) = match info {
        0..=23 => (Some(u64::from(info)), tail),
        24..=27 => {
            let n = 1usize << (info - 24);
            let b = tail.get(..n)?;
            let v = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            (Some(v), &tail[n..])
        }
        31 => (None, tail),
        _ => return None,
    };
    *rest = tail;
    Some((major, arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State::default();
        s.sent.insert("B".into(), 7);
        s.seen.insert("A".into(), 9);
        s.tick_send.insert("C".into());
        s.tick_publish.insert("ev".into());
        s.flags.insert("trap-get".into());
        s.pad = (0..300u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        s.served = 12;
        s.work_us = 3;
        s.quiet = true;
        s
    }

    #[test]
    fn both_shapes_round_trip() {
        for shape in [1, 2] {
            let bytes = encode(&sample(), shape, "9.9");
            assert_eq!(bytes.capacity(), bytes.len(), "measured exactly");
            let d = decode(bytes).unwrap();
            assert_eq!(d.shape, shape);
            assert_eq!(d.writer.as_deref(), Some("9.9"));
            let (a, b) = (d.state().unwrap(), sample());
            assert_eq!((a.sent, a.seen, a.flags), (b.sent, b.seen, b.flags));
            assert_eq!((a.tick_send, a.tick_publish), (b.tick_send, b.tick_publish));
            assert_eq!((a.pad, a.work_us, a.quiet), (b.pad, b.work_us, b.quiet));
            assert_eq!(a.served, if shape == 1 { 0 } else { 12 });
        }
    }

    /// The shapes as serde derives them: what earlier builds wrote.
    #[derive(serde::Serialize)]
    struct SerdeV1 {
        seq: BTreeMap<String, u64>,
        seen: BTreeMap<String, u64>,
        on_tick_send: BTreeSet<String>,
        on_tick_publish: BTreeSet<String>,
        flags: BTreeSet<String>,
        pad: ciborium::Value,
        work_us: u64,
        quiet: bool,
        writer: String,
    }

    #[derive(serde::Serialize)]
    struct SerdeV2 {
        shape: u32,
        outgoing: BTreeMap<String, u64>,
        incoming: BTreeMap<String, u64>,
        tick: SerdeTicks,
        flags: BTreeSet<String>,
        ballast: ciborium::Value,
        served: u64,
        work_us: u64,
        quiet: bool,
        writer: String,
    }

    #[derive(serde::Serialize)]
    struct SerdeTicks {
        send: BTreeSet<String>,
        publish: BTreeSet<String>,
    }

    #[test]
    fn the_bytes_are_those_serde_writes() {
        let mut s = sample();
        s.sent.insert("far".into(), u64::MAX);
        s.seen.insert("x".repeat(300), 70_000);
        s.work_us = 1 << 33;
        let mut want = Vec::new();
        let v1 = SerdeV1 {
            seq: s.sent.clone(),
            seen: s.seen.clone(),
            on_tick_send: s.tick_send.clone(),
            on_tick_publish: s.tick_publish.clone(),
            flags: s.flags.clone(),
            pad: ciborium::Value::Bytes(s.pad.as_slice().to_vec()),
            work_us: s.work_us,
            quiet: s.quiet,
            writer: "1.0".into(),
        };
        ciborium::into_writer(&v1, &mut want).unwrap();
        assert_eq!(encode(&s, 1, "1.0"), want);
        let v2 = SerdeV2 {
            shape: 2,
            outgoing: s.sent.clone(),
            incoming: s.seen.clone(),
            tick: SerdeTicks {
                send: s.tick_send.clone(),
                publish: s.tick_publish.clone(),
            },
            flags: s.flags.clone(),
            ballast: ciborium::Value::Bytes(s.pad.as_slice().to_vec()),
            served: s.served,
            work_us: s.work_us,
            quiet: false,
            writer: "2.0".into(),
        };
        s.quiet = false;
        want.clear();
        ciborium::into_writer(&v2, &mut want).unwrap();
        assert_eq!(encode(&s, 2, "2.0"), want);
        let back = decode(want).unwrap().state().unwrap();
        assert_eq!((back.sent, back.seen), (s.sent, s.seen));
    }

    #[test]
    fn a_large_ballast_is_taken_over_where_it_lies_a_small_one_copied() {
        let mut s = sample();
        s.pad = vec![7u8; 10_000].into();
        let bytes = encode(&s, 2, "2.0");
        let within = bytes.as_ptr_range();
        let pad = decode(bytes).unwrap().state().unwrap().pad;
        assert_eq!(pad.as_slice(), vec![7u8; 10_000]);
        assert!(within.contains(&pad.as_slice().as_ptr()));
        s.pad = vec![7u8; 10].into();
        let small = decode(encode(&s, 2, "2.0")).unwrap().state().unwrap();
        assert_eq!((small.pad.buf.len(), small.pad.at.start), (10, 0));
    }

    #[test]
    fn message_numbers_are_cbor_in_their_shortest_form_and_read_back() {
        let cases = [
            (0, 1),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (65_536, 5),
            (u64::MAX, 9),
        ];
        for (n, len) in cases {
            let got = crate::encode_num(n);
            let mut want = Vec::new();
            ciborium::into_writer(&n, &mut want).unwrap();
            assert_eq!((got.as_slice(), got.len), (&want[..], len));
            assert_eq!(crate::decode_num(got.as_slice()), Some(n));
        }
        assert_eq!(crate::decode_num(&[0x18, 30, 0]), None, "a trailing byte");
        assert_eq!(crate::decode_num(b"\x61x"), None, "text, not a number");
    }

    #[test]
    fn a_missing_field_or_a_non_map_is_refused_by_name() {
        let bytes = encode(&sample(), 2, "2.0");
        let mut v: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            m.retain(|(k, _)| k.as_text() != Some("served"));
        }
        let mut cut = Vec::new();
        ciborium::into_writer(&v, &mut cut).unwrap();
        let err = decode(cut).unwrap().state().err().unwrap();
        assert_eq!(err, "state shape 2 unreadable: missing field `served`");
        assert!(decode(vec![0x01]).err().unwrap().contains("not a CBOR map"));
    }

    #[test]
    fn a_ballast_written_as_numbers_still_reads() {
        let mut v: ciborium::Value =
            ciborium::from_reader(encode(&sample(), 1, "1.0").as_slice()).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            for (k, x) in m.iter_mut() {
                if k.as_text() == Some("pad") {
                    *x = ciborium::Value::Array(vec![1u8.into(), 2u8.into()]);
                }
            }
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let pad = decode(bytes).unwrap().state().unwrap().pad;
        assert_eq!(pad.as_slice(), [1, 2]);
    }
}
