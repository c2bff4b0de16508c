//! `liveswap keygen`, `sign` and `run --trust` as a user runs them: the
//! real binary, real files, and the exit status a script acts on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn liveswap(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liveswap"))
        .args(args)
        .output()
        .expect("liveswap runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `run --once --no-admin --trust <public>` of a script that loads `wasm`.
fn run_loading(dir: &Path, public: &Path, wasm: &Path, name: &str) -> (i32, String, String) {
    let script = dir.join(format!("{name}.ls"));
    std::fs::write(&script, format!("Load A {}\nVersions\n", wasm.display())).unwrap();
    liveswap(&[
        "run",
        "--once",
        "--no-admin",
        "--trust",
        s(public),
        s(&script),
    ])
}

#[test]
fn keygen_sign_and_run_with_trust() {
    let dir: PathBuf = std::env::temp_dir().join(format!("liveswap-sign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = dir.join("release");

    let (code, out, err) = liveswap(&["keygen", "--out", s(&prefix)]);
    assert_eq!(code, 0, "{out}{err}");
    let (public, secret) = (dir.join("release.pub"), dir.join("release.key"));
    assert!(
        out.contains(s(&public)) && out.contains(s(&secret)),
        "{out}"
    );
    let first = std::fs::read_to_string(&secret).unwrap();
    assert!(first.starts_with("liveswap-ed25519-secret "), "{first}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Never overwrites a key.
    let (code, _, err) = liveswap(&["keygen", "--out", s(&prefix)]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), first);

    let signed = dir.join("probe.wasm");
    let unsigned = dir.join("unsigned.wasm");
    std::fs::copy(liveswap_guests::PROBE_V1, &signed).unwrap();
    std::fs::copy(liveswap_guests::PROBE_V1, &unsigned).unwrap();
    let (code, out, err) = liveswap(&["sign", "--key", s(&secret), s(&signed)]);
    assert_eq!(code, 0, "{out}{err}");
    let sig = dir.join("probe.wasm.sig");
    assert!(
        out.starts_with("sha256:") && out.contains(&format!("-> {}", sig.display())),
        "prints the digest and the signature file: {out}"
    );
    assert!(
        std::fs::read_to_string(&sig)
            .unwrap()
            .starts_with("liveswap-ed25519-signature "),
        "{sig:?}"
    );

    let (code, out, err) = run_loading(&dir, &public, &signed, "good");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("loaded A v1.0"), "{out}");
    assert!(
        out.contains("signatures: required (1 trusted key)"),
        "{out}"
    );

    let (code, out, err) = run_loading(&dir, &public, &unsigned, "bad");
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(&format!("{}: refused: unsigned", unsigned.display())),
        "{err}"
    );

    // A key file that is not one is a startup error naming it.
    let (code, _, err) = run_loading(&dir, &secret, &signed, "wrong-key");
    assert_ne!(code, 0);
    assert!(
        err.contains(s(&secret)) && err.contains("not `liveswap-ed25519-public`"),
        "{err}"
    );
}
