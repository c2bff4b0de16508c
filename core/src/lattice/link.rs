//! The link to the NATS server: one thread running a small tokio runtime
//! (async-nats needs one), which announces this host, sends what the
//! outboxes hold, takes batches into local mailboxes and acknowledges
//! them. Module threads never wait on it: they leave messages in outboxes
//! and wake it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::moving::Ask;
use super::wire::{self, Payload};
use super::{LatticeOptions, Shared};

/// A batch is cut at this size (NATS' default largest payload is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// The link thread, and how to stop it.
pub(super) struct Link {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Link {
    pub(super) fn start(
        shared: Arc<Shared>,
        opts: &LatticeOptions,
        asked: mpsc::UnboundedReceiver<Ask>,
    ) -> anyhow::Result<Link> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the lattice link's runtime")?;
        let _ = shared.handle.set(rt.handle().clone());
        let (stop, stopped) = oneshot::channel();
        let url = opts.url.clone();
        let token = opts.token.clone();
        let thread = std::thread::Builder::new()
            .name("lattice".into())
            .spawn(move || rt.block_on(run(shared, url, token, stopped, asked)))
            .context("the lattice link's thread")?;
        Ok(Link { stop, thread })
    }

    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

async fn connect(
    shared: &Arc<Shared>,
    url: &str,
    token: Option<String>,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("liveswap host {}", shared.host))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(1000))
        });
    if let Some(t) = token {
        options = options.token(t);
    }
    let events = shared.clone();
    options = options.event_callback(move |e| {
        let shared = events.clone();
        async move { shared.link_event(e) }
    });
    options.connect(url).await.map_err(|e| e.to_string())
}

impl Shared {
    fn link_event(&self, e: async_nats::Event) {
        match e {
            async_nats::Event::Connected => {
                self.connected.store(true, Ordering::Relaxed);
                self.refused_said.store(false, Ordering::Relaxed);
                self.say(format!(
                    "host {} connected to the lattice's NATS server",
                    self.host
                ));
                self.wake.notify_one();
            }
            async_nats::Event::Disconnected => {
                self.connected.store(false, Ordering::Relaxed);
                self.say(format!(
                    "host {} lost the NATS server: local modules serve on; messages for other hosts wait in their outboxes",
                    self.host
                ));
            }
            async_nats::Event::ClientError(async_nats::ClientError::Other(why))
                if why.contains("authoriz") || why.contains("authentic") =>
            {
                if !self.refused_said.swap(true, Ordering::Relaxed) {
                    self.say(format!(
                        "the NATS server refused host {} (authorization violation): is --lattice-token-file the server's token? Trying again; local modules serve on",
                        self.host
                    ));
                }
            }
            // Each failed reconnect is an error: said once, as the loss.
            async_nats::Event::ClientError(_) if !self.connected.load(Ordering::Relaxed) => {}
            other => self.say(format!("NATS: {other}")),
        }
    }
}

async fn publish(client: &async_nats::Client, subject: String, bytes: Vec<u8>) {
    // A failed publish is a lost batch: the outbox sends it again.
    let _ = client.publish(subject, bytes.into()).await;
}

async fn announce(shared: &Shared, client: &async_nats::Client, hello: bool, leaving: bool) {
    let p = shared.presence(hello, leaving);
    let subject = format!("liveswap.{}.hosts", shared.lattice);
    publish(client, subject, wire::presence(&p)).await;
}

/// Send what the outboxes hold (nothing while the link is down: the
/// client would only queue it).
async fn flush(shared: &Shared, client: &async_nats::Client) {
    if !shared.connected.load(Ordering::Relaxed) {
        return;
    }
    let limit = BATCH_BYTES.min(shared.max_payload.load(Ordering::Relaxed));
    for (host, bytes, _) in shared.batches(limit, Instant::now()) {
        publish(client, shared.subject("msg", &host), bytes).await;
    }
    for (host, acks) in shared.durable_acks() {
        publish(client, shared.subject("ack", &host), wire::acks(&acks)).await;
    }
}

/// Ask another host a step of a move, and pass its answer on.
async fn ask(shared: Arc<Shared>, client: async_nats::Client, a: Ask) {
    let subject = shared.subject("rpc", &a.host);
    let asked = client.request(subject, a.payload.into());
    let answer = match tokio::time::timeout(a.timeout, asked).await {
        Err(_) => Err(format!(
            "host {} did not answer within {:?}",
            a.host, a.timeout
        )),
        Ok(Err(e)) => Err(format!("host {} could not be asked: {e}", a.host)),
        Ok(Ok(m)) => match m.payload.strip_prefix(b"ERR:") {
            Some(why) => Err(String::from_utf8_lossy(why).into_owned()),
            None => {
                let text = m.payload.strip_prefix(b"OK:").unwrap_or_default();
                Ok(String::from_utf8_lossy(text).into_owned())
            }
        },
    };
    (a.answer)(answer);
}

/// Take a step of a move asked by `from` (off this thread: compiling and
/// instantiating take a while), and answer.
async fn answer(
    shared: Arc<Shared>,
    client: async_nats::Client,
    from: String,
    step: crate::bus::MoveStep,
    reply: Option<async_nats::Subject>,
) {
    let taker = shared.clone();
    let done =
        tokio::task::spawn_blocking(move || taker.arrive(&from, step).map(|()| String::new()));
    reply_with(&client, reply, done.await).await;
}

/// Run a command another host forwarded here (off this thread: it may
/// take as long as a transaction), and answer with its text.
async fn run_forwarded(
    shared: Arc<Shared>,
    client: async_nats::Client,
    from: String,
    origin: String,
    line: String,
    reply: Option<async_nats::Subject>,
) {
    let done = tokio::task::spawn_blocking(move || match shared.commands.get() {
        Some(run) => run(&line, &format!("{origin} via host {from}")),
        None => Err(format!(
            "host {} takes no commands from the lattice",
            shared.host
        )),
    });
    reply_with(&client, reply, done.await).await;
}

async fn reply_with(
    client: &async_nats::Client,
    reply: Option<async_nats::Subject>,
    done: Result<Result<String, String>, tokio::task::JoinError>,
) {
    let bytes = match done {
        Ok(Ok(text)) => format!("OK:{text}").into_bytes(),
        Ok(Err(why)) => format!("ERR:{why}").into_bytes(),
        Err(e) => format!("ERR:{e}").into_bytes(),
    };
    if let Some(r) = reply {
        let _ = client.publish(r, bytes.into()).await;
    }
}

async fn on_payload(shared: &Arc<Shared>, client: &async_nats::Client, m: async_nats::Message) {
    match wire::decode(&m.payload) {
        Ok(Payload::Presence(p)) if p.host != shared.host => {
            let hello = p.hello;
            shared.heard(p);
            if hello {
                announce(shared, client, false, false).await;
            }
        }
        Ok(Payload::Presence(_)) => {}
        Ok(Payload::Batch(b)) => {
            let to = b.host.clone();
            if let Some(acks) = shared.take(b) {
                publish(client, shared.subject("ack", &to), wire::acks(&acks)).await;
            }
        }
        Ok(Payload::Acks(a)) => {
            shared.acked(a);
            shared.wake.notify_one();
        }
        Ok(Payload::Step(from, step)) => {
            tokio::spawn(answer(shared.clone(), client.clone(), from, step, m.reply));
        }
        Ok(Payload::Group(from, step)) => {
            let (s, c, reply) = (shared.clone(), client.clone(), m.reply);
            tokio::spawn(async move {
                let done = tokio::task::spawn_blocking(move || s.group_step(&from, step));
                reply_with(&c, reply, done.await).await;
            });
        }
        Ok(Payload::Forward(from, origin, line)) => {
            let (s, c) = (shared.clone(), client.clone());
            tokio::spawn(run_forwarded(s, c, from, origin, line, m.reply));
        }
        Err(e) => shared.say(format!("dropped a malformed lattice payload: {e}")),
    }
}

/// The key-value store where groups spanning hosts record decisions (a
/// JetStream bucket per lattice); then settle what this host coordinated
/// in an earlier run and never saw end.
async fn open_store(shared: &Arc<Shared>, client: &async_nats::Client) {
    use async_nats::jetstream::stream;
    let js = async_nats::jetstream::new(client.clone());
    let bucket = format!("liveswap-{}-groups", shared.lattice);
    // The bucket's stream, as the client's own `create_key_value` makes
    // it; made by hand because that asks the account's limits first, in a
    // form NATS servers before 2.10 do not answer in.
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("decisions of liveswap group upgrades spanning hosts".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 4,
        max_age: Duration::from_secs(7 * 24 * 3600),
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let made = match js.get_or_create_stream(config).await {
        Ok(_) => js.get_key_value(bucket).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match made {
        Ok(store) => {
            *shared.kv.lock().expect("kv poisoned") = Some(store);
            let s = shared.clone();
            tokio::task::spawn_blocking(move || {
                for text in s.settle_earlier().into_iter().chain(s.resolve_voted()) {
                    s.say(text);
                }
            });
        }
        Err(e) => shared.say(format!(
            "the NATS server keeps no key-value store ({e}): group upgrades spanning hosts are refused here (start nats-server with -js)"
        )),
    }
}

async fn run(
    shared: Arc<Shared>,
    url: String,
    token: Option<String>,
    mut stop: oneshot::Receiver<()>,
    mut asked: mpsc::UnboundedReceiver<Ask>,
) {
    let client = match connect(&shared, &url, token).await {
        Ok(c) => c,
        Err(e) => {
            shared.say(format!(
                "cannot use the NATS server {url}: {e}; this host serves alone"
            ));
            return;
        }
    };
    let subscribed = async {
        let hosts = client
            .subscribe(format!("liveswap.{}.hosts", shared.lattice))
            .await?;
        let msgs = client
            .subscribe(shared.subject("msg", &shared.host))
            .await?;
        let acks = client
            .subscribe(shared.subject("ack", &shared.host))
            .await?;
        let rpc = client
            .subscribe(shared.subject("rpc", &shared.host))
            .await?;
        Ok::<_, async_nats::SubscribeError>(futures_util::stream::select(
            futures_util::stream::select(hosts, rpc),
            futures_util::stream::select(msgs, acks),
        ))
    };
    let mut inbound = match subscribed.await {
        Ok(s) => s,
        Err(e) => {
            shared.say(format!(
                "cannot subscribe on the NATS server {url}: {e}; this host serves alone"
            ));
            return;
        }
    };
    shared.max_payload.store(
        client.server_info().max_payload.max(64 * 1024),
        Ordering::Relaxed,
    );
    open_store(&shared, &client).await;
    announce(&shared, &client, true, false).await;
    let mut beat = tokio::time::interval(shared.lease / 4);
    let mut resend = tokio::time::interval(super::outbox::RESEND_AFTER / 2);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = shared.wake.notified() => {
                if shared.announce.swap(false, Ordering::Relaxed) {
                    announce(&shared, &client, false, false).await;
                }
                flush(&shared, &client).await
            }
            Some(m) = inbound.next() => on_payload(&shared, &client, m).await,
            Some(a) = asked.recv() => {
                tokio::spawn(ask(shared.clone(), client.clone(), a));
            }
            _ = beat.tick() => {
                announce(&shared, &client, false, false).await;
                let said = shared.directory.lock().expect("directory poisoned").expire(Instant::now());
                for s in said {
                    shared.say(s);
                }
            }
            _ = resend.tick() => flush(&shared, &client).await,
        }
    }
    // Leaving: a lease of zero, so the others mark this host down now.
    announce(&shared, &client, false, true).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
}
