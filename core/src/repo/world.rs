//! What a component asks of the host and offers it, read from its bytes
//! before it is compiled: an import the host does not provide, or a
//! missing export of the `module-imp` world, refuses the file in
//! milliseconds, naming what is wrong, where compiling would have taken
//! seconds (tens of seconds for a big Python or JavaScript guest) before
//! the same refusal.

use std::path::Path;

use wasmparser::{ComponentTypeRef, Parser, Payload};

use crate::error::LoadError;

/// The WASI 0.2 interfaces the host links (wasmtime-wasi's `p2`), by
/// package and name; any 0.2.x version is accepted, as the linker does.
const WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The host's own interfaces (`wit/module.wit`), any 0.1.x version.
const OWN: &[&str] = &["liveswap:module/types", "liveswap:module/host"];

/// What a `module-imp` component must export.
const EXPORTS: &[&str] = &[
    "info",
    "init",
    "service",
    "enable",
    "disable",
    "put-state",
    "get-state",
];

/// Whether the host provides the import `name` (`pkg:ns/iface@version`).
fn provided(name: &str) -> bool {
    let (base, version) = name.split_once('@').unwrap_or((name, ""));
    let compatible = |list: &[&str], prefix: &str| {
        list.contains(&base) && (version.is_empty() || version.starts_with(prefix))
    };
    compatible(WASI, "0.2.") || compatible(OWN, "0.1.")
}

/// The names a component imports and exports at its top level.
fn surface(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 1 => {
                for i in s {
                    let i = i.map_err(|e| e.to_string())?;
                    // A type import (a world's `use`) asks nothing of the
                    // linker.
                    if !matches!(i.ty, ComponentTypeRef::Type(_)) {
                        imports.push(i.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(s) if depth == 1 => {
                for e in s {
                    exports.push(e.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Refuse a component whose imports the host does not provide, or that
/// lacks an export of `module-imp`; before anything is compiled.
pub(crate) fn check(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let refuse = |reason: String| LoadError::WrongWorld {
        path: path.to_path_buf(),
        reason,
    };
    let (imports, exports) = surface(bytes).map_err(|e| LoadError::Compile {
        path: path.to_path_buf(),
        reason: e,
    })?;
    let extra: Vec<&str> = imports
        .iter()
        .map(String::as_str)
        .filter(|i| !provided(i))
        .collect();
    if !extra.is_empty() {
        return Err(refuse(format!(
            "it imports {}, which this host does not provide (it provides WASI 0.2 cli, clocks, filesystem, io, random and sockets, and liveswap:module/host); nothing was compiled",
            quoted(&extra)
        )));
    }
    let missing: Vec<&str> = EXPORTS
        .iter()
        .copied()
        .filter(|e| !exports.iter().any(|x| x == e))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "it does not export {}; nothing was compiled",
            quoted(&missing)
        )));
    }
    Ok(())
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::provided;

    #[test]
    fn versions_within_the_same_minor_are_provided() {
        assert!(provided("wasi:io/streams@0.2.0"));
        assert!(provided("wasi:io/streams@0.2.6"));
        assert!(provided("liveswap:module/host@0.1.0"));
        assert!(!provided("wasi:io/streams@0.3.0"));
        assert!(!provided("wasi:http/outgoing-handler@0.2.0"));
        assert!(!provided("liveswap:module/host@0.2.0"));
    }
}
