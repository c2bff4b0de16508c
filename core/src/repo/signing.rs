//! Verified versions: ed25519 keys and detached signatures over a `.wasm`
//! file's digest, so that a host given trusted public keys loads only
//! files one of those keys signed.
//!
//! Every file is one line of text, easy to read and to diff:
//!
//! - public key, `PREFIX.pub`: `liveswap-ed25519-public <64 hex>` — the
//!   32-byte ed25519 verifying key;
//! - secret key, `PREFIX.key` (mode 0600): `liveswap-ed25519-secret <64 hex>`
//!   — the 32-byte ed25519 seed;
//! - signature, `FILE.wasm.sig` next to `FILE.wasm`:
//!   `liveswap-ed25519-signature <64 hex public key> <128 hex signature>`.
//!
//! The signed message is the file's digest exactly as the repository
//! names versions: the ASCII string `sha256:<64 lowercase hex>` of the
//! file's bytes ([`digest`]). Signing the digest, not
//! the bytes, lets a signature be checked against a version the
//! repository already holds without reading the file twice; SHA-256 makes
//! the two equivalent. The signature names its key so that a refusal can
//! say which key signed; the key is only believed if it is trusted.
//! Verification is `verify_strict` (no malleable or small-order keys).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The digest a version is known by, and what a signature signs:
/// `sha256:<lowercase hex>` of the file's bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A trusted (or signing) public key.
pub type PublicKey = VerifyingKey;
/// A secret key that signs files.
pub type SecretKey = SigningKey;

/// First word of a public key file.
pub const PUBLIC_TAG: &str = "liveswap-ed25519-public";
/// First word of a secret key file.
pub const SECRET_TAG: &str = "liveswap-ed25519-secret";
/// First word of a signature file.
pub const SIGNATURE_TAG: &str = "liveswap-ed25519-signature";

/// Longest key or signature file read: a few lines' worth. A larger file
/// is not one of ours, and is not read into memory.
const MAX_FILE: u64 = 4096;

/// Why a key or signature file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Reading or writing a file failed.
    // The I/O error is part of the message, so not also a `source`: an
    // error chain printed with `{:#}` says it once.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not in the format its role needs.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `keygen` would overwrite a key.
    #[error("{path} already exists; not overwriting a key")]
    Exists {
        /// The file that is in the way.
        path: PathBuf,
    },
    /// The operating system gave no randomness for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// What [`sign_file`] did.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The digest signed (`sha256:<hex>`).
    pub digest: String,
    /// The signature file written.
    pub sig_path: PathBuf,
}

/// The signature file of `wasm`: its name with `.sig` appended.
pub fn sig_path(wasm: &Path) -> PathBuf {
    let mut name = wasm.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A fresh secret key from the operating system's randomness.
pub fn generate() -> Result<SecretKey, SigningError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The one-line text of a public key file.
pub fn public_key_text(key: &PublicKey) -> String {
    format!("{PUBLIC_TAG} {}\n", hex::encode(key.as_bytes()))
}

/// The one-line text of a secret key file.
pub fn secret_key_text(key: &SecretKey) -> String {
    format!("{SECRET_TAG} {}\n", hex::encode(key.to_bytes()))
}

/// `PREFIX.pub` and `PREFIX.key`, the files [`keygen`] writes.
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    (with(".pub"), with(".key"))
}

/// Make a key pair and write `PREFIX.pub` and `PREFIX.key` (mode 0600).
/// Refuses, writing nothing, if either exists. Returns the two paths.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), SigningError> {
    let (public, secret) = key_paths(prefix);
    for p in [&public, &secret] {
        if p.exists() {
            return Err(SigningError::Exists { path: p.clone() });
        }
    }
    let key = generate()?;
    // The secret first: a failure then leaves no public key without its
    // secret. `create_new` still refuses a file that appeared meanwhile.
    write_new(&secret, &secret_key_text(&key), 0o600)?;
    if let Err(e) = write_new(&public, &public_key_text(&key.verifying_key()), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }
    Ok((public, secret))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), SigningError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let io = |error| SigningError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut f = opts.open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => SigningError::Exists {
            path: path.to_path_buf(),
        },
        _ => io(error),
    })?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Read a small text file, refusing anything larger than a key file.
fn read_small(path: &Path) -> Result<String, SigningError> {
    let io = |error| SigningError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let malformed = |reason: &str| SigningError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() as u64 > MAX_FILE {
        return Err(malformed("too large to be a key or signature file"));
    }
    String::from_utf8(bytes).map_err(|_| malformed("not a text file"))
}

/// The words of a one-line file after its tag, or why it is not one.
fn fields<'a>(text: &'a str, tag: &str, count: usize) -> Result<Vec<&'a str>, String> {
    let mut words = text.split_whitespace();
    match words.next() {
        Some(t) if t == tag => {}
        Some(t) => return Err(format!("starts with `{}`, not `{tag}`", clip(t))),
        None => return Err(format!("empty; expected `{tag} ...`")),
    }
    let rest: Vec<&str> = words.collect();
    if rest.len() != count {
        return Err(format!(
            "expected `{tag}` and {count} hex field(s), found {}",
            rest.len()
        ));
    }
    Ok(rest)
}

fn clip(word: &str) -> String {
    word.chars().take(40).collect()
}

/// Decode exactly `N` bytes of hex, naming `what` on failure.
fn hex_bytes<const N: usize>(word: &str, what: &str) -> Result<[u8; N], String> {
    if word.len() != 2 * N {
        return Err(format!(
            "the {what} should be {} hex digits, not {}",
            2 * N,
            word.len()
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(word, &mut out)
        .map_err(|_| format!("the {what} is not hexadecimal (`{}`)", clip(word)))?;
    Ok(out)
}

fn public_from_hex(word: &str) -> Result<PublicKey, String> {
    let bytes = hex_bytes::<32>(word, "public key")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "the public key is not a valid ed25519 key".into())
}

/// Parse the text of a public key file.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let f = fields(text, PUBLIC_TAG, 1)?;
    public_from_hex(f[0])
}

/// Parse the text of a secret key file.
pub fn parse_secret_key(text: &str) -> Result<SecretKey, String> {
    let f = fields(text, SECRET_TAG, 1)?;
    Ok(SigningKey::from_bytes(&hex_bytes::<32>(
        f[0],
        "secret key",
    )?))
}

/// Read a public key file (`liveswap-ed25519-public <hex>`).
pub fn read_public_key(path: &Path) -> Result<PublicKey, SigningError> {
    parse_public_key(&read_small(path)?).map_err(|reason| SigningError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// Read a secret key file (`liveswap-ed25519-secret <hex>`).
pub fn read_secret_key(path: &Path) -> Result<SecretKey, SigningError> {
    parse_secret_key(&read_small(path)?).map_err(|reason| SigningError::Malformed {
        path: path.to_path_buf(),
        reason,
    })
}

/// A detached signature: who signed, and the signature.
#[derive(Clone, Debug)]
pub struct DetachedSignature {
    /// The key that made it (claimed; believed only if trusted).
    pub key: PublicKey,
    /// The ed25519 signature over the digest string.
    pub signature: Signature,
}

impl DetachedSignature {
    /// Sign `digest` (`sha256:<hex>`) with `key`.
    pub fn sign(key: &SecretKey, digest: &str) -> Self {
        DetachedSignature {
            key: key.verifying_key(),
            signature: key.sign(digest.as_bytes()),
        }
    }

    /// Parse the text of a signature file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f = fields(text, SIGNATURE_TAG, 2)?;
        let key = public_from_hex(f[0])?;
        let signature = Signature::from_bytes(&hex_bytes::<64>(f[1], "signature")?);
        Ok(DetachedSignature { key, signature })
    }

    /// The one-line text of its signature file.
    pub fn to_text(&self) -> String {
        format!(
            "{SIGNATURE_TAG} {} {}\n",
            hex::encode(self.key.as_bytes()),
            hex::encode(self.signature.to_bytes())
        )
    }

    /// Check it over `digest` against the `trusted` keys. The error says
    /// why, in words for the person who has to fix it.
    pub fn verify(&self, digest: &str, trusted: &[PublicKey]) -> Result<(), String> {
        if !trusted.contains(&self.key) {
            return Err(format!(
                "signed by key {}, which this host does not trust",
                hex::encode(self.key.as_bytes())
            ));
        }
        self.key
            .verify_strict(digest.as_bytes(), &self.signature)
            .map_err(|_| {
                format!(
                    "the signature does not verify over this file's digest {digest}: \
                     it was made for other bytes, or the file changed since it was signed"
                )
            })
    }
}

/// Sign `wasm`: write `<wasm>.sig` (replacing an older one) over the
/// digest of its bytes now.
pub fn sign_file(key: &SecretKey, wasm: &Path) -> Result<Signed, SigningError> {
    let bytes = std::fs::read(wasm).map_err(|error| SigningError::Io {
        path: wasm.to_path_buf(),
        error,
    })?;
    let digest = digest(&bytes);
    let sig_path = sig_path(wasm);
    std::fs::write(&sig_path, DetachedSignature::sign(key, &digest).to_text()).map_err(
        |error| SigningError::Io {
            path: sig_path.clone(),
            error,
        },
    )?;
    Ok(Signed { digest, sig_path })
}

/// What reading a `.sig` file found.
#[derive(Debug)]
pub enum SignatureCheck {
    /// There is no signature file.
    Missing,
    /// There is one, but it is unreadable, malformed, untrusted or wrong.
    Bad(String),
    /// It verifies over the digest with a trusted key.
    Valid,
}

/// Check the signature file of `wasm` over `digest` (the digest of the
/// bytes about to be used, not of the file read again).
pub fn check_file(wasm: &Path, digest: &str, trusted: &[PublicKey]) -> SignatureCheck {
    let path = sig_path(wasm);
    let text = match read_small(&path) {
        Ok(t) => t,
        Err(SigningError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return SignatureCheck::Missing;
        }
        Err(SigningError::Io { error, .. }) => {
            return SignatureCheck::Bad(format!("cannot read {}: {error}", path.display()));
        }
        Err(e) => return SignatureCheck::Bad(e.to_string()),
    };
    let sig = match DetachedSignature::parse(&text) {
        Ok(s) => s,
        Err(reason) => return SignatureCheck::Bad(format!("{}: {reason}", path.display())),
    };
    match sig.verify(digest, trusted) {
        Ok(()) => SignatureCheck::Valid,
        Err(reason) => SignatureCheck::Bad(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("liveswap-signing-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn wasm_in(dir: &Path) -> PathBuf {
        let p = dir.join("m.wasm");
        std::fs::write(&p, b"\0asm\x0d\0\x01\0some bytes of a component").unwrap();
        p
    }

    fn check(wasm: &Path, trusted: &[PublicKey]) -> SignatureCheck {
        let digest = digest(&std::fs::read(wasm).unwrap());
        check_file(wasm, &digest, trusted)
    }

    #[test]
    fn keygen_sign_and_verify_round_trip() {
        let dir = temp_dir("round-trip");
        let (public, secret) = keygen(&dir.join("k")).unwrap();
        assert_eq!(public, dir.join("k.pub"));
        assert_eq!(secret, dir.join("k.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
        }
        let text = std::fs::read_to_string(&public).unwrap();
        assert!(text.starts_with("liveswap-ed25519-public ") && text.len() == 24 + 64 + 1);
        let pk = read_public_key(&public).unwrap();
        let sk = read_secret_key(&secret).unwrap();
        assert_eq!(sk.verifying_key(), pk);

        let wasm = wasm_in(&dir);
        let signed = sign_file(&sk, &wasm).unwrap();
        assert_eq!(signed.sig_path, dir.join("m.wasm.sig"));
        assert!(signed.digest.starts_with("sha256:"));
        let line = std::fs::read_to_string(&signed.sig_path).unwrap();
        assert!(
            line.starts_with(&format!(
                "liveswap-ed25519-signature {} ",
                hex::encode(pk.as_bytes())
            )),
            "{line}"
        );
        assert!(matches!(check(&wasm, &[pk]), SignatureCheck::Valid));
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = temp_dir("overwrite");
        keygen(&dir.join("k")).unwrap();
        let before = std::fs::read(dir.join("k.key")).unwrap();
        let err = keygen(&dir.join("k")).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(dir.join("k.key")).unwrap(), before);
        // Only one of the pair in the way is enough to refuse.
        std::fs::write(dir.join("j.pub"), "x").unwrap();
        assert!(matches!(
            keygen(&dir.join("j")),
            Err(SigningError::Exists { .. })
        ));
        assert!(!dir.join("j.key").exists());
    }

    #[test]
    fn a_flipped_byte_fails() {
        let dir = temp_dir("flipped");
        let sk = generate().unwrap();
        let wasm = wasm_in(&dir);
        sign_file(&sk, &wasm).unwrap();
        let mut bytes = std::fs::read(&wasm).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&wasm, bytes).unwrap();
        match check(&wasm, &[sk.verifying_key()]) {
            SignatureCheck::Bad(r) => assert!(r.contains("does not verify"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_untrusted_key_fails_and_is_named() {
        let dir = temp_dir("untrusted");
        let (signer, trusted) = (generate().unwrap(), generate().unwrap());
        let wasm = wasm_in(&dir);
        sign_file(&signer, &wasm).unwrap();
        match check(&wasm, &[trusted.verifying_key()]) {
            SignatureCheck::Bad(r) => {
                assert!(r.contains("does not trust"), "{r}");
                assert!(
                    r.contains(&hex::encode(signer.verifying_key().as_bytes())),
                    "{r}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_signature_is_told_apart() {
        let dir = temp_dir("missing");
        let wasm = wasm_in(&dir);
        let pk = generate().unwrap().verifying_key();
        assert!(matches!(check(&wasm, &[pk]), SignatureCheck::Missing));
    }

    #[test]
    fn malformed_files_give_clear_errors() {
        let sk = generate().unwrap();
        let pk_hex = hex::encode(sk.verifying_key().as_bytes());
        let sig_hex = hex::encode([7u8; 64]);
        for (text, why) in [
            ("", "empty"),
            ("hello world", "starts with `hello`"),
            ("liveswap-ed25519-signature", "found 0"),
            (
                &format!("liveswap-ed25519-signature {pk_hex}"),
                "2 hex field(s), found 1",
            ),
            (
                &format!("liveswap-ed25519-signature zz{} {sig_hex}", &pk_hex[2..]),
                "public key is not hexadecimal",
            ),
            (
                &format!("liveswap-ed25519-signature {pk_hex} {}", &sig_hex[..100]),
                "signature should be 128 hex digits, not 100",
            ),
            (
                &format!("liveswap-ed25519-public {pk_hex} {sig_hex}"),
                "not `liveswap-ed25519-signature`",
            ),
        ] {
            let err = DetachedSignature::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let err = parse_public_key(&format!("liveswap-ed25519-secret {pk_hex}")).unwrap_err();
        assert!(err.contains("not `liveswap-ed25519-public`"), "{err}");
        let err = parse_secret_key("liveswap-ed25519-secret 12").unwrap_err();
        assert!(
            err.contains("secret key should be 64 hex digits, not 2"),
            "{err}"
        );

        // Through files, the error names the file.
        let dir = temp_dir("malformed");
        let p = dir.join("bad.pub");
        std::fs::write(&p, "liveswap-ed25519-public nothex").unwrap();
        let err = read_public_key(&p).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
        std::fs::write(&p, vec![b'a'; 10_000]).unwrap();
        let err = read_public_key(&p).unwrap_err().to_string();
        assert!(err.contains("too large"), "{err}");
        let wasm = wasm_in(&dir);
        std::fs::write(sig_path(&wasm), "liveswap-ed25519-signature 00").unwrap();
        match check(&wasm, &[sk.verifying_key()]) {
            SignatureCheck::Bad(r) => {
                assert!(r.contains("m.wasm.sig") && r.contains("found 1"), "{r}")
            }
            other => panic!("{other:?}"),
        }
        let err = read_public_key(&dir.join("absent.pub"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.pub"), "{err}");
    }
}
