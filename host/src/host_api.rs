//! The `host` interface of the WIT contract, implemented over a module's
//! store data. Thin glue: each function delegates to a service. Every
//! outbound effect is counted, and dropped while it is being replayed (see
//! `ModuleCtx::effect`).

use std::time::Duration;

use crate::bindings::liveswap::module::{host, types};
use crate::bindings::{Level, Message};
use crate::context::ModuleCtx;
use crate::events::Event;

impl types::Host for ModuleCtx {}

impl host::Host for ModuleCtx {
    fn send(&mut self, to: String, msg: Message) -> Result<(), String> {
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let r = self
            .services
            .send(&self.name, &self.speaks, &to, msg)
            .map_err(|e| e.to_string());
        self.record(r)
    }

    fn publish(&mut self, event: String, body: Vec<u8>) -> Result<(), String> {
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let refused = self
            .services
            .publish(&self.name, &self.speaks, &event, &body);
        let r = if refused.is_empty() {
            Ok(())
        } else {
            let why: Vec<String> = refused.iter().map(|(_, e)| e.to_string()).collect();
            Err(format!(
                "{} subscriber(s) refused the event: {}",
                refused.len(),
                why.join("; ")
            ))
        };
        self.record(r)
    }

    fn subscribe(&mut self, publisher: String, event: String) -> Result<(), String> {
        if !crate::names::valid_name(&publisher) {
            return Err(format!("`{publisher}` is not a valid module name"));
        }
        if event.is_empty() {
            return Err("the event name is empty".into());
        }
        if !self.effect() {
            return Ok(());
        }
        self.services
            .pubsub
            .subscribe(&self.name, &publisher, &event);
        Ok(())
    }

    fn unsubscribe(&mut self, publisher: String, event: String) {
        if !self.effect() {
            return;
        }
        self.services
            .pubsub
            .unsubscribe(&self.name, &publisher, &event);
    }

    fn set_timer(&mut self, name: String, interval_ms: u32) {
        if !self.effect() {
            return;
        }
        self.services.timers.set(
            &self.name,
            &name,
            Duration::from_millis(u64::from(interval_ms.max(1))),
        );
    }

    fn cancel_timer(&mut self, name: String) {
        if !self.effect() {
            return;
        }
        self.services.timers.cancel(&self.name, &name);
    }

    fn log(&mut self, level: Level, line: String) {
        if !self.effect() {
            return;
        }
        self.services.events.emit(Event::Log {
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
