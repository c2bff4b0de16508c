//! Components in OCI registries: `liveswap push FILE.wasm oci://...`, and
//! `oci://registry/repo:tag` (or `@sha256:...`) in `Load` and `Replace`.
//!
//! A component is pushed as the Wasm OCI artifact (config
//! `application/vnd.wasm.config.v0+json`, one layer `application/wasm`);
//! its liveswap signature (`FILE.wasm.sig`), if it has one, travels as an
//! annotation of the manifest. A pull checks the layer's bytes against the
//! digest its manifest names, then writes them and the signature into a
//! cache folder, where the host reads them as any file: pin, signature on
//! a trusting host, world, compile. A registry on a loopback address is
//! spoken to in plain HTTP, any other in HTTPS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use liveswap::repo::{Fetcher, signing};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// The config media type of a Wasm OCI artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a Wasm OCI artifact.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The manifest annotation that carries the liveswap signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.liveswap.signature";

/// `oci://registry/repo:tag` as a reference.
pub fn parse(reference: &str) -> anyhow::Result<Reference> {
    let Some(rest) = reference.strip_prefix("oci://") else {
        bail!("`{reference}` is not an OCI reference: write oci://registry/repository:tag");
    };
    rest.parse::<Reference>()
        .with_context(|| format!("`{reference}` is not an OCI reference"))
}

fn client(r: &Reference) -> Client {
    let host = r
        .registry()
        .rsplit_once(':')
        .map_or(r.registry(), |(h, _)| h);
    let loopback = matches!(host, "localhost" | "[::1]")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    // ring as rustls's provider (reqwest is built without one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if loopback {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// What a push made.
#[derive(Debug)]
pub struct Pushed {
    /// The manifest's digest: `oci://registry/repo@<digest>` names this
    /// push whatever happens to the tag later.
    pub manifest: String,
    /// The component's digest (as a `pin` names it).
    pub component: String,
    /// Whether its signature went with it.
    pub signed: bool,
}

/// Push `file` (and `file.sig`, if there is one) to `reference`.
pub fn push(file: &Path, reference: &str) -> anyhow::Result<Pushed> {
    let r = parse(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{}: not a WebAssembly file (no `\\0asm` header)",
            file.display()
        );
    }
    let component = signing::digest(&bytes);
    let sig = match std::fs::read_to_string(signing::sig_path(file)) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!("{}: {e}", signing::sig_path(file).display()),
    };
    let signed = sig.is_some();
    let annotations = sig.map(|s| BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), s)]));
    let layers = vec![ImageLayer::new(bytes, LAYER_MEDIA_TYPE.to_string(), None)];
    let config = Config {
        data: serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [component],
        })
        .to_string()
        .into(),
        media_type: CONFIG_MEDIA_TYPE.to_string(),
        annotations: None,
    };
    let manifest = OciImageManifest::build(&layers, &config, annotations);
    let c = client(&r);
    let auth = RegistryAuth::Anonymous;
    let manifest = block_on(async {
        c.push(&r, &layers, config, &auth, Some(manifest)).await?;
        c.fetch_manifest_digest(&r, &auth).await
    })?
    .with_context(|| format!("pushing to {reference}"))?;
    Ok(Pushed {
        manifest,
        component,
        signed,
    })
}

/// Pull `reference` into `cache`: the component's file (named by its
/// digest) and its signature beside it, if the manifest carries one.
pub fn pull(reference: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let r = parse(reference)?;
    let c = client(&r);
    let auth = RegistryAuth::Anonymous;
    let (manifest, digest) = block_on(c.pull_manifest(&r, &auth))?
        .with_context(|| format!("no manifest at {}", r.whole()))?;
    if let Some(want) = r.digest()
        && want != digest
    {
        bail!("the registry answered with manifest {digest}, not {want}: refused");
    }
    let OciManifest::Image(image) = manifest else {
        bail!("{digest} is an index of images, not a Wasm component");
    };
    let layer = match image.layers.as_slice() {
        [l] if l.media_type == LAYER_MEDIA_TYPE => l.clone(),
        ls => bail!(
            "{digest} is not a Wasm component: its layers are [{}], not one {LAYER_MEDIA_TYPE}",
            ls.iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut bytes = Vec::new();
    block_on(c.pull_blob(&r, &layer, &mut bytes))?.map_err(|e| {
        anyhow::anyhow!(
            "the component's blob {} did not arrive intact: {e}: refused, nothing loaded",
            layer.digest
        )
    })?;
    let got = signing::digest(&bytes);
    if got != layer.digest {
        bail!(
            "the component's blob is not what its manifest names: {} expected, {got} received: refused, nothing loaded",
            layer.digest
        );
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let file = cache.join(format!("{}.wasm", got.trim_start_matches("sha256:")));
    std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    let sig = signing::sig_path(&file);
    match image
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
    {
        Some(text) => std::fs::write(&sig, text)?,
        None => {
            let _ = std::fs::remove_file(&sig);
        }
    }
    Ok(file)
}

/// The host's fetcher of `oci://` references, into a cache folder.
#[derive(Debug)]
pub struct OciFetcher {
    /// Where pulled components go.
    pub cache: PathBuf,
}

impl OciFetcher {
    /// A fetcher into `$XDG_CACHE_HOME/liveswap/oci` (or
    /// `~/.cache/liveswap/oci`, or the temp folder).
    pub fn default_cache() -> OciFetcher {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        OciFetcher {
            cache: base.join("liveswap").join("oci"),
        }
    }
}

impl Fetcher for OciFetcher {
    fn fetch(&self, reference: &str) -> Result<PathBuf, String> {
        pull(reference, &self.cache).map_err(|e| format!("{e:#}"))
    }
}
