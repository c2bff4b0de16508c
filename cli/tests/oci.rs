//! Versions from a real OCI registry (Debian's `docker-registry`, started
//! on a free loopback port; `.ci/run` installs it): push, Load by tag,
//! Replace by digest, a tampered blob refused, an unsigned component
//! refused on a trusting host.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{BIN, Out};

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("liveswap-oci-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A registry on 127.0.0.1, storing into `dir/data`; stopped on drop.
struct Registry {
    child: Child,
    addr: String,
    data: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                data.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("this test needs an OCI registry: Debian: apt-get install docker-registry");
        let addr = format!("127.0.0.1:{port}");
        let r = Registry { child, addr, data };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let up = ureq::get(&format!("http://{}/v2/", r.addr))
                .call()
                .is_ok_and(|resp| resp.status() == 200);
            if up {
                return r;
            }
            assert!(
                Instant::now() < until,
                "the registry did not start on {}",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn oci(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.addr)
    }

    /// The file holding the blob of `digest` (`sha256:<hex>`).
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `liveswap ARGS` in `dir`, with its own cache of pulled components.
fn liveswap(dir: &Path, args: &[&str]) -> Out {
    let o = Command::new(BIN)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .args(args)
        .output()
        .expect("liveswap runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `liveswap push FILE REF`; the digest reference it printed.
fn push(dir: &Path, file: &str, reference: &str) -> String {
    let o = liveswap(dir, &["push", file, reference]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    o.stdout
        .trim()
        .rsplit(": ")
        .next()
        .filter(|r| r.contains("@sha256:"))
        .unwrap_or_else(|| panic!("no digest reference in {}", o.stdout))
        .to_string()
}

/// Run `script` on a fresh host (`extra` arguments before it), which
/// stops at its end.
fn run(dir: &Path, script: &str, extra: &[&str]) -> Out {
    std::fs::write(dir.join("script.txt"), script).unwrap();
    let mut args = vec!["run", "--once", "--no-admin", "--verbose"];
    args.extend_from_slice(extra);
    args.push("script.txt");
    liveswap(dir, &args)
}

#[test]
fn a_component_pushed_is_loaded_by_tag_and_replaced_by_digest_under_load() {
    let dir = temp_dir("roundtrip");
    let reg = Registry::start(&dir);
    let v1 = liveswap_guests::PROBE_V1;
    let v2 = liveswap_guests::PROBE_V2;
    push(&dir, v1, &reg.oci("probe:v1"));
    let by_digest = push(&dir, v2, &reg.oci("probe:v2"));
    assert!(
        by_digest.starts_with(&reg.oci("probe@sha256:")),
        "{by_digest}"
    );
    // The tag moves on; the digest still names v2.
    push(&dir, v1, &reg.oci("probe:v2"));
    let out = run(
        &dir,
        &format!(
            "Load Q {tag}\n\
             Load P {tag} config \"timer t 5; tick-send Q\"\n\
             Wait 300ms\n\
             Replace Q {by_digest}\n\
             Wait 300ms\n\
             Send P do \"cancel t\"\n\
             Wait 100ms\n\
             Quit\n",
            tag = reg.oci("probe:v1"),
        ),
        &[],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let o = out.stdout;
    assert!(
        o.contains(&format!("loaded Q v1.0 from {}", reg.oci("probe:v1"))),
        "{o}"
    );
    assert!(
        o.contains("== transaction 1 COMMITTED: Replace Q oci://"),
        "{o}"
    );
    assert!(o.contains("Q            v1.0 -> v2.0"), "{o}");
    let got: Vec<u64> = o
        .lines()
        .filter_map(|l| l.split_once(" | got ")?.1.split_once(" from P"))
        .map(|(n, _)| n.parse().unwrap())
        .collect();
    assert!(got.len() > 20, "{o}");
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "{o}");
    assert!(!o.contains("GAP") && !o.contains("DUP"), "{o}");
}

#[test]
fn a_tampered_blob_is_refused_before_anything_is_compiled() {
    let dir = temp_dir("tampered");
    let reg = Registry::start(&dir);
    let v3 = liveswap_guests::PROBE_V3;
    push(&dir, v3, &reg.oci("probe:v3"));
    let digest = liveswap::repo::digest(&std::fs::read(v3).unwrap());
    let other = liveswap::repo::digest(&std::fs::read(liveswap_guests::PROBE_V1).unwrap());
    // Someone with write access to the registry's storage swaps the bytes.
    std::fs::copy(liveswap_guests::PROBE_V1, reg.blob(&digest)).unwrap();
    let out = run(&dir, &format!("Load X {}\n", reg.oci("probe:v3")), &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let e = out.stderr;
    assert!(
        e.contains(&format!(
            "the component's blob {digest} did not arrive intact"
        )) && e.contains(&other)
            && e.contains("refused, nothing loaded"),
        "{e}"
    );
    assert!(!out.stdout.contains("loaded X"), "{}", out.stdout);
    assert!(
        !dir.join("cache/liveswap/oci")
            .join(format!("{}.wasm", other.trim_start_matches("sha256:")))
            .exists(),
        "nothing was written to the cache"
    );
}

#[test]
fn a_trusting_host_takes_a_signed_push_and_refuses_an_unsigned_one() {
    let dir = temp_dir("signed");
    let reg = Registry::start(&dir);
    let keys = liveswap(&dir, &["keygen", "--out", "release"]);
    assert_eq!(keys.code, 0, "{}", keys.stderr);
    std::fs::copy(liveswap_guests::PROBE_V2, dir.join("probe.wasm")).unwrap();
    let signed = liveswap(&dir, &["sign", "--key", "release.key", "probe.wasm"]);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    let o = liveswap(&dir, &["push", "probe.wasm", &reg.oci("probe:signed")]);
    assert!(o.stdout.contains(", signed)"), "{}{}", o.stdout, o.stderr);
    let o = liveswap(
        &dir,
        &[
            "push",
            liveswap_guests::PROBE_V1,
            &reg.oci("probe:unsigned"),
        ],
    );
    assert!(o.stdout.contains(", unsigned)"), "{}{}", o.stdout, o.stderr);

    let trusting = ["--trust", "release.pub"];
    let ok = run(
        &dir,
        &format!("Load S {}\nQuit\n", reg.oci("probe:signed")),
        &trusting,
    );
    assert_eq!(ok.code, 0, "{}\n{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("loaded S v2.0"), "{}", ok.stdout);
    let refused = run(
        &dir,
        &format!("Load U {}\n", reg.oci("probe:unsigned")),
        &trusting,
    );
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("refused: unsigned"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("loaded U"), "{}", refused.stdout);
    // A bad reference says what a good one looks like.
    let bad = run(&dir, "Load B oci://\n", &[]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("oci://"), "{}", bad.stderr);
}
