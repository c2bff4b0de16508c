//! Scope change (thesis 3.5): an upgrade must not leave a live
//! edge sender → receiver where the receiver does not accept every
//! protocol the sender speaks. The check names the modules that must join.

use std::collections::{BTreeMap, BTreeSet};

/// Protocol declarations of one module after the transaction.
#[derive(Clone, Debug)]
pub struct Side {
    /// Version label.
    pub version: String,
    /// What it sends.
    pub speaks: Vec<u32>,
    /// What it understands.
    pub accepts: Vec<u32>,
}

/// Check every edge against the modules as they would be after the
/// transaction. `targets` are the modules the transaction changes. Returns
/// the refusal text, naming the modules that must be upgraded too.
pub fn check(
    after: &BTreeMap<String, Side>,
    edges: &BTreeSet<(String, String)>,
    targets: &BTreeSet<String>,
) -> Result<(), String> {
    let mut must_join: BTreeSet<String> = BTreeSet::new();
    let mut why: Vec<String> = Vec::new();
    for (s, r) in edges {
        let (Some(snd), Some(rcv)) = (after.get(s), after.get(r)) else {
            continue;
        };
        let bad: Vec<u32> = snd
            .speaks
            .iter()
            .copied()
            .filter(|p| !rcv.accepts.contains(p))
            .collect();
        if bad.is_empty() {
            continue;
        }
        let (s_in, r_in) = (targets.contains(s), targets.contains(r));
        if !s_in && !r_in {
            continue; // not this transaction's doing
        }
        if !r_in {
            must_join.insert(r.clone());
        }
        if !s_in {
            must_join.insert(s.clone());
        }
        why.push(format!(
            "{s} v{} would speak protocol {bad:?} to {r} v{}, which accepts {:?}",
            snd.version, rcv.version, rcv.accepts
        ));
    }
    if why.is_empty() {
        return Ok(());
    }
    let head = if must_join.is_empty() {
        "the new versions do not understand each other".to_string()
    } else {
        let names: Vec<&str> = must_join.iter().map(String::as_str).collect();
        format!(
            "{} must be upgraded in the same transaction",
            names.join(" and ")
        )
    };
    Err(format!("{head} ({})", why.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(v: &str, speaks: &[u32], accepts: &[u32]) -> Side {
        Side {
            version: v.into(),
            speaks: speaks.to_vec(),
            accepts: accepts.to_vec(),
        }
    }

    #[test]
    fn a_new_protocol_alone_names_the_receiver() {
        let mut after = BTreeMap::new();
        after.insert("IP".to_string(), side("3", &[3], &[1]));
        after.insert("OSPF".to_string(), side("1", &[1], &[1]));
        let edges = [("IP".to_string(), "OSPF".to_string())].into();
        let targets = ["IP".to_string()].into();
        let e = check(&after, &edges, &targets).unwrap_err();
        assert!(e.starts_with("OSPF must be upgraded"), "{e}");
    }

    #[test]
    fn a_receiver_accepting_both_keeps_the_scope_minimal() {
        let mut after = BTreeMap::new();
        after.insert("IP".to_string(), side("3", &[3], &[1]));
        after.insert("VRRP".to_string(), side("1", &[1], &[1]));
        after.insert("OSPF".to_string(), side("3", &[1], &[1, 3]));
        let edges = [
            ("IP".to_string(), "OSPF".to_string()),
            ("VRRP".to_string(), "OSPF".to_string()),
        ]
        .into();
        let targets = ["IP".to_string(), "OSPF".to_string()].into();
        assert!(check(&after, &edges, &targets).is_ok());
    }
}
