//! Write liveswap modules in Rust.
//!
//! A module is a type that implements [`Module`]; [`export!`] makes the
//! crate a component of the world `module-imp` of `liveswap:module@0.1.0`
//! (this crate's version follows that package's). The type is the
//! module's state: the host moves it from one version to the next as CBOR
//! with a state version, so a new version can read an old one
//! ([`Module::migrate`]) and an old version refuses a newer one with an
//! error that says so.
//!
//! ```ignore
//! use liveswap_guest::{Message, Module, info};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     count: u64,
//! }
//!
//! impl Module for Counter {
//!     const VERSION: &'static str = "1.0";
//!
//!     fn init(_config: &[u8]) -> Result<Self, String> {
//!         Ok(Counter::default())
//!     }
//!
//!     fn service(&mut self, msg: Message) -> Result<(), String> {
//!         self.count += 1;
//!         info!("{} from {}: count {}", msg.kind, msg.from, self.count);
//!         Ok(())
//!     }
//! }
//!
//! liveswap_guest::export!(Counter);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (a project
//! made by `liveswap new` has the target configured, and `liveswap build`
//! says where the component went).
//!
//! A module whose state has its own encoding implements [`RawState`] and
//! is exported with `export!(Type, state Raw)`.
//!
//! The host hands a module every message waiting in its mailbox in one
//! call (`service-batch`), and [`Module::service`] is called for each in
//! turn: nothing to write for it. Many messages go out in one host call
//! through an [`Outbox`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod batch;
pub mod state;

pub use batch::Outbox;

/// The bindings of the world `module-batch` (`module-imp` that also takes
/// its messages in batches), generated from the WIT this crate ships
/// (`wit/module.wit`).
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "module-batch",
        pub_export_macro: true,
        default_bindings_module: "liveswap_guest::bindings",
    });
}

pub use bindings::liveswap::module::host;
pub use bindings::liveswap::module::types::{Level, Message, ModuleInfo};
pub use ciborium::Value;

/// What a module is. Every method but [`init`](Module::init) and
/// [`service`](Module::service) has a default.
pub trait Module: Sized + 'static {
    /// The version label (`info().version`), shown as `NAME v<VERSION>`.
    const VERSION: &'static str;
    /// Message-protocol versions it sends; [`send`] uses the highest.
    const SPEAKS: &'static [u32] = &[1];
    /// Message-protocol versions it understands.
    const ACCEPTS: &'static [u32] = &[1];
    /// The version of its state's shape. A version reads states of its own
    /// shape, older ones through [`migrate`](Module::migrate), and refuses
    /// newer ones.
    const STATE_VERSION: u32 = 1;

    /// What the host is told about this version (from the constants).
    fn info() -> ModuleInfo {
        ModuleInfo {
            version: Self::VERSION.to_string(),
            speaks: Self::SPEAKS.to_vec(),
            accepts: Self::ACCEPTS.to_vec(),
        }
    }

    /// A new module, on `Load`, from its `config` bytes (empty if none).
    /// An error refuses the `Load`.
    fn init(config: &[u8]) -> Result<Self, String>;

    /// Handle one message. An error is logged against the module and the
    /// next message is served.
    fn service(&mut self, msg: Message) -> Result<(), String>;

    /// The module may run (after `init`, `Enable`, or a committed upgrade).
    fn enable(&mut self) {}

    /// The module is about to be held (`Disable`, `Unload`, an upgrade).
    fn disable(&mut self) {}

    /// Read a state an older version wrote, of shape `from` (less than
    /// [`STATE_VERSION`](Module::STATE_VERSION)), given as a CBOR value.
    /// By default there is no migration: the upgrade is refused, and the
    /// old version carries on.
    fn migrate(from: u32, old: Value) -> Result<Self, String> {
        let _ = old;
        Err(format!(
            "{} reads state version {} and has no migration from state version {from}",
            Self::VERSION,
            Self::STATE_VERSION
        ))
    }
}

/// A state with an encoding of its own, for `export!(Type, state Raw)`.
pub trait RawState: Sized {
    /// The state as bytes (the host's `put-state`).
    fn save(&self) -> Result<Vec<u8>, String>;
    /// A module from bytes another version saved (the host's `get-state`).
    fn restore(bytes: &[u8]) -> Result<Self, String>;
    /// The same, given the bytes to keep: a state that holds a large part
    /// of them as they are can keep that part without a copy on the
    /// upgrade's pause. By default, [`restore`](RawState::restore).
    fn restore_owned(bytes: Vec<u8>) -> Result<Self, String> {
        Self::restore(&bytes)
    }
}

/// What a guest calls before `init` or `get-state` gave it a module.
pub const NOT_READY: &str = "the module has no state yet: neither init nor get-state ran";

/// The protocol [`send`] and [`publish`] use: the highest in `SPEAKS`.
static PROTO: AtomicU32 = AtomicU32::new(1);

/// `M`'s info, remembering its protocol for [`send`] (the export calls it).
#[doc(hidden)]
pub fn info_of<M: Module>() -> ModuleInfo {
    let info = M::info();
    PROTO.store(
        info.speaks.iter().copied().max().unwrap_or(1),
        Ordering::Relaxed,
    );
    info
}

/// The body as CBOR.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| format!("encoding: {e}"))?;
    Ok(out)
}

/// A message's CBOR body as a `T`; the error names the message.
pub fn decode<T: DeserializeOwned>(msg: &Message) -> Result<T, String> {
    ciborium::from_reader(msg.body.as_slice()).map_err(|e| {
        format!(
            "the body of `{}` from {} does not decode: {e}",
            msg.kind, msg.from
        )
    })
}

/// Send `body` (as CBOR) to the module `to` as a message of `kind`, in the
/// highest protocol this version speaks.
pub fn send<T: Serialize + ?Sized>(to: &str, kind: &str, body: &T) -> Result<(), String> {
    send_as(to, kind, PROTO.load(Ordering::Relaxed), body)
}

/// [`send`] in protocol `proto`.
pub fn send_as<T: Serialize + ?Sized>(
    to: &str,
    kind: &str,
    proto: u32,
    body: &T,
) -> Result<(), String> {
    send_bytes(to, kind, proto, encode(body)?)
}

/// Send a body that is already bytes.
pub fn send_bytes(to: &str, kind: &str, proto: u32, body: Vec<u8>) -> Result<(), String> {
    let msg = Message {
        from: String::new(),
        kind: kind.to_string(),
        proto,
        body,
    };
    host::send(to, &msg).map_err(|e| format!("send {kind} to {to}: {e}"))
}

/// Publish `body` (as CBOR) as `event` to this module's subscribers.
pub fn publish<T: Serialize + ?Sized>(event: &str, body: &T) -> Result<(), String> {
    host::publish(event, &encode(body)?).map_err(|e| format!("publish {event}: {e}"))
}

/// Receive `event` whenever `publisher` publishes it (kept across swaps).
pub fn subscribe(publisher: &str, event: &str) -> Result<(), String> {
    host::subscribe(publisher, event)
}

/// Stop receiving `event` from `publisher`.
pub fn unsubscribe(publisher: &str, event: &str) {
    host::unsubscribe(publisher, event)
}

/// A message of kind `name` from `$timer` every `every` (at least 1 ms).
pub fn set_timer(name: &str, every: Duration) {
    let ms = every.as_millis().clamp(1, u32::MAX as u128) as u32;
    host::set_timer(name, ms)
}

/// Stop the timer `name`.
pub fn cancel_timer(name: &str) {
    host::cancel_timer(name)
}

/// The name this module runs under.
pub fn self_name() -> String {
    host::self_name()
}

/// Write a line to the host's log (see [`info!`] and its siblings).
pub fn log(level: Level, line: &str) {
    host::log(level, line)
}

/// Log at `info`: `info!("count {}", n)`.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log($crate::Level::Info, &::std::format!($($t)*)) };
}

/// Log at `warn`.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log($crate::Level::Warn, &::std::format!($($t)*)) };
}

/// Log at `error`.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log($crate::Level::Error, &::std::format!($($t)*)) };
}

/// Log at `debug`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log($crate::Level::Debug, &::std::format!($($t)*)) };
}

/// Make the crate a liveswap component of the module type `T`:
/// `export!(T)` for a typed state (`T: Serialize + Deserialize`), or
/// `export!(T, state Raw)` for a [`RawState`].
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        $crate::export!($ty, state Typed);
    };
    ($ty:ty, state $codec:ident) => {
        const _: () = {
            struct Exports;
            ::std::thread_local! {
                static SLOT: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            fn with<R>(f: impl FnOnce(&mut $ty) -> R) -> ::core::option::Option<R> {
                SLOT.with(|s| s.borrow_mut().as_mut().map(f))
            }
            fn set(m: $ty) {
                SLOT.with(|s| *s.borrow_mut() = ::core::option::Option::Some(m));
            }
            impl $crate::bindings::Guest for Exports {
                fn info() -> $crate::ModuleInfo {
                    $crate::info_of::<$ty>()
                }
                fn init(config: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    set(<$ty as $crate::Module>::init(&config)?);
                    Ok(())
                }
                fn service(msg: $crate::Message) -> ::core::result::Result<(), ::std::string::String> {
                    with(|m| $crate::Module::service(m, msg))
                        .unwrap_or_else(|| Err($crate::NOT_READY.into()))
                }
                fn service_batch(batch: ::std::vec::Vec<u8>) {
                    $crate::batch::serve(&batch, |msg| {
                        with(|m| $crate::Module::service(m, msg))
                            .unwrap_or_else(|| Err($crate::NOT_READY.into()))
                    });
                }
                fn enable() {
                    with(|m| $crate::Module::enable(m));
                }
                fn disable() {
                    with(|m| $crate::Module::disable(m));
                }
                fn put_state() -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    SLOT.with(|s| match s.borrow().as_ref() {
                        Some(m) => $crate::state::$codec::save(m),
                        None => Err($crate::NOT_READY.into()),
                    })
                }
                fn get_state(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    set($crate::state::$codec::take::<$ty>(state)?);
                    Ok(())
                }
            }
            $crate::bindings::export!(Exports with_types_in $crate::bindings);
        };
    };
}
