//! The `host` interface of the WIT contract, implemented over a module's
//! store data. Thin glue: each function delegates to a service. Every
//! outbound effect is counted, and dropped while it is being replayed (see
//! `ModuleCtx::effect`). Inside `info` the guest may not act on the host:
//! `send`, `publish` and `subscribe` fail, the others are ignored (a
//! version's declaration has no effects, and `info` runs again at every
//! recovery, where nothing would suppress them).

use std::time::Duration;

use super::store::ModuleCtx;
use super::tap::Effect;
use crate::bindings::liveswap::module::{host, types};
use crate::bindings::{Level, Message};

impl ModuleCtx {
    /// Send `msgs`, each run of messages to the same receiver in one
    /// delivery, counting one effect each: how many were accepted, and
    /// why the next was not.
    fn send_runs(&mut self, msgs: &[super::batch::Outgoing<'_>]) -> Result<(), (usize, String)> {
        let mut done = 0;
        for run in msgs.chunk_by(|a, b| a.to == b.to) {
            let mut each = run.iter().map(|o| Message {
                from: String::new(),
                kind: o.kind.to_string(),
                proto: o.proto,
                body: o.body.to_vec(),
            });
            let r = self
                .host
                .send_all(&self.name, &self.speaks, run[0].to, &mut each);
            // One entry a counted effect: the refused one too, not those
            // after it.
            if let Some(t) = &mut self.tap {
                let counted = match &r {
                    Ok(n) => *n,
                    Err((n, _)) => n + 1,
                };
                t.extend(run[..counted.min(run.len())].iter().map(sent));
            }
            match r {
                Ok(n) => {
                    self.effects += n as u64;
                    done += n;
                }
                Err((n, e)) => {
                    self.effects += n as u64 + 1;
                    self.failures.push((self.effects - 1, e.clone()));
                    return Err((done + n, e));
                }
            }
        }
        Ok(())
    }
}

/// A message of a `send-batch`, as the tap writes it down.
fn sent(o: &super::batch::Outgoing<'_>) -> Effect {
    Effect::Send {
        to: o.to.to_string(),
        kind: o.kind.to_string(),
        proto: o.proto,
        body: o.body.to_vec(),
    }
}

/// What a guest is told when it acts on the host inside `info`.
const IN_INFO: &str = "host calls are not allowed inside `info`";

impl types::Host for ModuleCtx {}

impl host::Host for ModuleCtx {
    fn send(&mut self, to: String, msg: Message) -> Result<(), String> {
        if self.declaring {
            return Err(IN_INFO.into());
        }
        self.tapped(|| Effect::Send {
            to: to.clone(),
            kind: msg.kind.clone(),
            proto: msg.proto,
            body: msg.body.clone(),
        });
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let r = self.host.send(&self.name, &self.speaks, &to, msg);
        self.record(r)
    }

    fn send_batch(&mut self, batch: Vec<u8>) -> Result<(), types::BatchRefusal> {
        let refuse = |accepted: usize, reason: String| types::BatchRefusal {
            accepted: accepted as u32,
            reason,
        };
        if self.declaring {
            return Err(refuse(0, IN_INFO.into()));
        }
        let msgs = super::batch::unpack_sends(&batch).map_err(|e| refuse(0, e))?;
        if self.suppress == 0 && self.script.is_empty() {
            return self.send_runs(&msgs).map_err(|(n, e)| refuse(n, e));
        }
        // Being made again: each message is one effect, as if sent on its
        // own, and the first ones already happened.
        for (i, o) in msgs.into_iter().enumerate() {
            self.tapped(|| sent(&o));
            if let Some(first_time) = self.fallible() {
                first_time.map_err(|e| refuse(i, e))?;
                continue;
            }
            let msg = Message {
                from: String::new(),
                kind: o.kind.to_string(),
                proto: o.proto,
                body: o.body.to_vec(),
            };
            let r = self.host.send(&self.name, &self.speaks, o.to, msg);
            self.record(r).map_err(|e| refuse(i, e))?;
        }
        Ok(())
    }

    fn batch_served(&mut self, outcome: Result<(), String>) {
        if self.progress.active {
            self.progress.done.push((self.effects, outcome));
        }
    }

    fn publish(&mut self, event: String, body: Vec<u8>) -> Result<(), String> {
        if self.declaring {
            return Err(IN_INFO.into());
        }
        self.tapped(|| Effect::Publish {
            event: event.clone(),
            body: body.clone(),
        });
        if let Some(first_time) = self.fallible() {
            return first_time;
        }
        let r = self.host.publish(&self.name, &self.speaks, &event, &body);
        self.record(r)
    }

    fn subscribe(&mut self, publisher: String, event: String) -> Result<(), String> {
        if self.declaring {
            return Err(IN_INFO.into());
        }
        if !super::valid_name(&publisher) {
            return Err(format!(
                "`{}` is not a valid module name",
                crate::limits::clip(&publisher, 64)
            ));
        }
        if event.is_empty() {
            return Err("the event name is empty".into());
        }
        self.tapped(|| Effect::Subscribe {
            publisher: publisher.clone(),
            event: event.clone(),
        });
        if !self.effect() {
            return Ok(());
        }
        self.host.subscribe(&self.name, &publisher, &event)
    }

    fn unsubscribe(&mut self, publisher: String, event: String) {
        if self.declaring {
            return;
        }
        self.tapped(|| Effect::Unsubscribe {
            publisher: publisher.clone(),
            event: event.clone(),
        });
        if !self.effect() {
            return;
        }
        self.host.unsubscribe(&self.name, &publisher, &event);
    }

    fn set_timer(&mut self, name: String, interval_ms: u32) {
        if self.declaring {
            return;
        }
        self.tapped(|| Effect::SetTimer {
            name: name.clone(),
            interval_ms,
        });
        if !self.effect() {
            return;
        }
        let every = Duration::from_millis(u64::from(interval_ms.max(1)));
        if let Err(e) = self.host.set_timer(&self.name, &name, every) {
            // The WIT call has no result: the refusal is the module's log.
            self.gate.log(self.version(), Level::Warn, e);
        }
    }

    fn cancel_timer(&mut self, name: String) {
        if self.declaring {
            return;
        }
        self.tapped(|| Effect::CancelTimer { name: name.clone() });
        if !self.effect() {
            return;
        }
        self.host.cancel_timer(&self.name, &name);
    }

    fn log(&mut self, level: Level, line: String) {
        if self.declaring {
            return;
        }
        self.tapped(|| Effect::Log {
            level,
            line: line.clone(),
        });
        if !self.effect() {
            return;
        }
        self.gate.log(self.version(), level, line);
    }

    fn self_name(&mut self) -> String {
        self.name.to_string()
    }
}
