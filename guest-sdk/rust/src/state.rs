//! How a module's state travels between versions.
//!
//! A typed state is one CBOR map, `{"liveswap-state": V, "state": S}`: `V`
//! is the writer's [`Module::STATE_VERSION`](crate::Module::STATE_VERSION)
//! and `S` the module itself, serialized with serde. A reader of the same
//! `V` deserializes `S`; a newer reader migrates it; an older one refuses.

use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Module, RawState, Value};

#[derive(Serialize)]
struct Outgoing<'a, T> {
    #[serde(rename = "liveswap-state")]
    version: u32,
    state: &'a T,
}

/// What the map held under `state`: the module itself when the version
/// came first and is the reader's own (one pass, nothing in between), or
/// the value to migrate or check.
enum Held<M> {
    Mine(Result<M, String>),
    Other(Value),
}

/// Reads `{"liveswap-state": V, "state": S}` in one pass.
struct Incoming<M> {
    version: Option<u32>,
    state: Option<Held<M>>,
}

impl<'de, M: Module + DeserializeOwned> Deserialize<'de> for Incoming<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Fields(PhantomData))
    }
}

struct Fields<M>(PhantomData<M>);

impl<'de, M: Module + DeserializeOwned> Visitor<'de> for Fields<M> {
    type Value = Incoming<M>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map with `liveswap-state` and `state`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut got = Incoming {
            version: None,
            state: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "liveswap-state" => got.version = Some(map.next_value()?),
                "state" if got.version == Some(M::STATE_VERSION) => {
                    // A module that does not read stops the walk here: the
                    // rest of the input is not where the map expects it.
                    let m = map.next_value_seed(Own::<M>(PhantomData))?;
                    let failed = m.is_err();
                    got.state = Some(Held::Mine(m));
                    if failed {
                        return Ok(got);
                    }
                }
                "state" => got.state = Some(Held::Other(map.next_value()?)),
                _ => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        Ok(got)
    }
}

/// The module, or why it did not read (kept, to be told as such).
struct Own<M>(PhantomData<M>);

impl<'de, M: DeserializeOwned> DeserializeSeed<'de> for Own<M> {
    type Value = Result<M, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(M::deserialize(d).map_err(|e| e.to_string()))
    }
}

/// The typed state codec (`export!(T)`).
pub struct Typed;

impl Typed {
    /// `m` with its state version.
    pub fn save<M: Module + Serialize>(m: &M) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        ciborium::into_writer(
            &Outgoing {
                version: M::STATE_VERSION,
                state: m,
            },
            &mut out,
        )
        .map_err(|e| format!("{} could not encode its state: {e}", M::VERSION))?;
        Ok(out)
    }

    /// A module from a state some version saved: a state of its own
    /// version is read in one pass straight into the module.
    pub fn restore<M: Module + DeserializeOwned>(bytes: &[u8]) -> Result<M, String> {
        let not_typed = |e: &dyn std::fmt::Display| {
            format!(
                "{} cannot read this state: it is not a typed liveswap state \
                 (a map with `liveswap-state` and `state`): {e}",
                M::VERSION
            )
        };
        let mut scratch = [0u8; 256];
        let got: Incoming<M> = ciborium::de::from_reader_with_buffer(bytes, &mut scratch)
            .map_err(|e| not_typed(&e))?;
        let (Some(v), Some(state)) = (got.version, got.state) else {
            return Err(not_typed(&"a key is missing"));
        };
        let ours = M::STATE_VERSION;
        let own = |e: &dyn std::fmt::Display| {
            format!(
                "{} cannot read state version {v} although it is its own: {e}",
                M::VERSION
            )
        };
        match state {
            Held::Mine(m) => m.map_err(|e| own(&e)),
            Held::Other(value) if v == ours => value.deserialized().map_err(|e| own(&e)),
            Held::Other(_) if v > ours => Err(format!(
                "{} reads state version {ours} and older; this state is version {v}, \
                 written by a newer version: use a version that knows it",
                M::VERSION
            )),
            Held::Other(value) => M::migrate(v, value),
        }
    }

    /// [`restore`](Typed::restore), from the bytes the host handed over.
    pub fn take<M: Module + DeserializeOwned>(bytes: Vec<u8>) -> Result<M, String> {
        Self::restore(&bytes)
    }
}

/// The codec of a [`RawState`] (`export!(T, state Raw)`): its own bytes.
pub struct Raw;

impl Raw {
    /// `m`'s bytes.
    pub fn save<M: RawState>(m: &M) -> Result<Vec<u8>, String> {
        m.save()
    }

    /// A module from bytes.
    pub fn restore<M: RawState>(bytes: &[u8]) -> Result<M, String> {
        M::restore(bytes)
    }

    /// A module from the bytes the host handed over, which it may keep.
    pub fn take<M: RawState>(bytes: Vec<u8>) -> Result<M, String> {
        M::restore_owned(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        count: u64,
    }

    #[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        count: u64,
        senders: Vec<String>,
    }

    impl Module for V1 {
        const VERSION: &'static str = "1.0";
        fn init(_: &[u8]) -> Result<Self, String> {
            Ok(V1::default())
        }
        fn service(&mut self, _: Message) -> Result<(), String> {
            self.count += 1;
            Ok(())
        }
    }

    impl Module for V2 {
        const VERSION: &'static str = "2.0";
        const STATE_VERSION: u32 = 2;
        fn init(_: &[u8]) -> Result<Self, String> {
            Ok(V2::default())
        }
        fn service(&mut self, msg: Message) -> Result<(), String> {
            self.count += 1;
            self.senders.push(msg.from);
            Ok(())
        }
        fn migrate(from: u32, old: Value) -> Result<Self, String> {
            assert_eq!(from, 1);
            let v1: V1 = old.deserialized().map_err(|e| e.to_string())?;
            Ok(V2 {
                count: v1.count,
                senders: Vec::new(),
            })
        }
    }

    fn msg(from: &str) -> Message {
        Message {
            from: from.into(),
            kind: "tick".into(),
            proto: 1,
            body: Vec::new(),
        }
    }

    #[test]
    fn a_state_comes_back_as_it_left() {
        let mut m = V2::default();
        m.service(msg("a")).unwrap();
        m.service(msg("b")).unwrap();
        let back: V2 = Typed::restore(&Typed::save(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_newer_version_migrates_an_older_state() {
        let v1 = V1 { count: 41 };
        let v2: V2 = Typed::restore(&Typed::save(&v1).unwrap()).unwrap();
        assert_eq!(v2.count, 41);
    }

    #[test]
    fn an_older_version_refuses_a_newer_state_saying_why() {
        let v2 = V2 {
            count: 3,
            senders: vec!["a".into()],
        };
        let err = Typed::restore::<V1>(&Typed::save(&v2).unwrap()).unwrap_err();
        assert!(
            err.contains("1.0 reads state version 1") && err.contains("this state is version 2"),
            "{err}"
        );
    }

    #[test]
    fn no_migration_is_a_refusal_not_a_guess() {
        #[derive(Serialize, Deserialize)]
        struct V3 {
            count: u64,
        }
        impl Module for V3 {
            const VERSION: &'static str = "3.0";
            const STATE_VERSION: u32 = 3;
            fn init(_: &[u8]) -> Result<Self, String> {
                Ok(V3 { count: 0 })
            }
            fn service(&mut self, _: Message) -> Result<(), String> {
                Ok(())
            }
        }
        let err = Typed::restore::<V3>(&Typed::save(&V1 { count: 1 }).unwrap())
            .err()
            .unwrap();
        assert!(
            err.contains("3.0 reads state version 3 and has no migration from state version 1"),
            "{err}"
        );
    }

    #[test]
    fn its_own_version_unreadable_or_the_keys_in_another_order_are_told_apart() {
        // `state` before `liveswap-state` still reads (through a value).
        let mut bytes = Vec::new();
        let swapped = Value::Map(vec![
            (
                Value::Text("state".into()),
                Value::serialized(&V1 { count: 7 }).unwrap(),
            ),
            (
                Value::Text("liveswap-state".into()),
                Value::Integer(1.into()),
            ),
        ]);
        ciborium::into_writer(&swapped, &mut bytes).unwrap();
        assert_eq!(Typed::restore::<V1>(&bytes).unwrap(), V1 { count: 7 });
        // Its own version with a state of another shape: said as such.
        let wrong = Outgoing {
            version: 1,
            state: &"not a V1",
        };
        bytes.clear();
        ciborium::into_writer(&wrong, &mut bytes).unwrap();
        let err = Typed::restore::<V1>(&bytes).unwrap_err();
        assert!(
            err.contains("1.0 cannot read state version 1 although it is its own"),
            "{err}"
        );
        // A map without the version.
        bytes.clear();
        ciborium::into_writer(&Value::Map(Vec::new()), &mut bytes).unwrap();
        let err = Typed::restore::<V1>(&bytes).unwrap_err();
        assert!(err.contains("not a typed liveswap state"), "{err}");
    }

    #[test]
    fn bytes_that_are_not_a_typed_state_are_refused_by_name() {
        let err = Typed::restore::<V1>(b"\x01\x02garbage").unwrap_err();
        assert!(err.contains("not a typed liveswap state"), "{err}");
    }
}
