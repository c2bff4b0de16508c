//! The `host` interface of the WIT contract, implemented over a module's
//! store data. Thin glue: each function delegates to a service. Every
//! outbound effect is counted, and dropped while it is being replayed (see
//! `ModuleCtx::effect`).

use std::time::Duration;

use super::store::ModuleCtx;
use crate::bindings::liveswap::module::{host, types};
use crate::bindings::{Level, Message};
use crate::events::Event;

impl types::Host for ModuleCtx {}

impl host::Host for ModuleCtx {
    fn send(&mut self, to: String, msg: Message) -> Result<(), String> {
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let r = self.host.send(&self.name, &self.speaks, &to, msg);
        self.record(r)
    }

    fn publish(&mut self, event: String, body: Vec<u8>) -> Result<(), String> {
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let r = self.host.publish(&self.name, &self.speaks, &event, &body);
        self.record(r)
    }

    fn subscribe(&mut self, publisher: String, event: String) -> Result<(), String> {
        if !super::valid_name(&publisher) {
            return Err(format!("`{publisher}` is not a valid module name"));
        }
        if event.is_empty() {
            return Err("the event name is empty".into());
        }
        if !self.effect() {
            return Ok(());
        }
        self.host.subscribe(&self.name, &publisher, &event);
        Ok(())
    }

    fn unsubscribe(&mut self, publisher: String, event: String) {
        if !self.effect() {
            return;
        }
        self.host.unsubscribe(&self.name, &publisher, &event);
    }

    fn set_timer(&mut self, name: String, interval_ms: u32) {
        if !self.effect() {
            return;
        }
        self.host.set_timer(
            &self.name,
            &name,
            Duration::from_millis(u64::from(interval_ms.max(1))),
        );
    }

    fn cancel_timer(&mut self, name: String) {
        if !self.effect() {
            return;
        }
        self.host.cancel_timer(&self.name, &name);
    }

    fn log(&mut self, level: Level, line: String) {
        if !self.effect() {
            return;
        }
        self.events.emit(Event::Log {
            module: self.name.to_string(),
            version: self.version().to_string(),
            level,
            line,
        });
    }

    fn self_name(&mut self) -> String {
        self.name.to_string()
    }
}
