//! Memoised decisions. A decision is a pure function of the bundle (policies and entity data,
//! both immutable: a reload builds a new bundle and a new cache), the caller's certificate
//! fields, the action, the resource, and the context. The key holds exactly the parts of the
//! context the bundle's policies can see, found by reading their ASTs at load: a value where a
//! policy reads `context.x`, only presence where it asks `context has x`. A policy that uses
//! `context` any other way makes the key hold the whole context. So a cached answer is the
//! answer Cedar would give, and varying case references do not defeat the cache when no policy
//! reads them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cedar_policy::PolicySet;

use super::engine::{Caller, Decision};
use crate::xml::facts::MessageFacts;

/// Entries kept at most; the cache is cleared when full (decisions are cheap to recompute).
const CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Presence,
    Value,
}

/// Every context attribute the gateway builds (see `Bundle::context_pairs`).
const CONTEXT: [&str; 13] = [
    "chipFingerprints",
    "liveFingerprints",
    "formats",
    "hour",
    "weekday",
    "purpose",
    "caseReference",
    "borderCrossingPoint",
    "issuingState",
    "officerId",
    "authority",
    "callerId",
    "status",
];

pub struct DecisionCache {
    /// The context attributes the policies read, and how; None: the whole context matters.
    reads: Option<Vec<(String, Use)>>,
    map: Mutex<HashMap<String, Decision>>,
}

fn context_accessor(node: &serde_json::Map<String, serde_json::Value>) -> Option<(String, Use)> {
    for (op, kind) in [(".", Use::Value), ("has", Use::Presence)] {
        if let Some(inner) = node.get(op).and_then(|v| v.as_object())
            && inner.get("left").and_then(|l| l.get("Var")).and_then(|v| v.as_str()) == Some("context")
            && let Some(attr) = inner.get("attr").and_then(|a| a.as_str())
        {
            return Some((attr.to_owned(), kind));
        }
    }
    None
}

/// Walks a policy's JSON form; false when `context` is used other than by attribute.
fn walk(v: &serde_json::Value, reads: &mut BTreeMap<String, Use>) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            if let Some((attr, kind)) = context_accessor(m) {
                let e = reads.entry(attr).or_insert(kind);
                if kind == Use::Value {
                    *e = Use::Value;
                }
                return true;
            }
            if m.get("Var").and_then(|x| x.as_str()) == Some("context") {
                return false;
            }
            m.values().all(|x| walk(x, reads))
        }
        serde_json::Value::Array(a) => a.iter().all(|x| walk(x, reads)),
        _ => true,
    }
}

impl DecisionCache {
    pub fn for_policies(policies: &PolicySet) -> Self {
        let mut reads = BTreeMap::new();
        let mut exact = policies.templates().next().is_none();
        for p in policies.policies() {
            match p.to_json() {
                Ok(json) => exact &= walk(&json, &mut reads),
                Err(_) => exact = false,
            }
        }
        let reads = exact.then(|| reads.into_iter().collect());
        Self { reads, map: Mutex::new(HashMap::new()) }
    }

    /// The names of the context attributes in the key (for tests and `policy check`).
    pub fn keyed_on(&self) -> Vec<String> {
        match &self.reads {
            Some(r) => r.iter().map(|(a, u)| if *u == Use::Value { a.clone() } else { format!("has {a}") }).collect(),
            None => CONTEXT.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub fn key(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        facts: &MessageFacts,
        hour: i64,
        weekday: i64,
    ) -> String {
        let mut k = String::with_capacity(256);
        for part in [&caller.common_name, &caller.organization, &caller.unit, &caller.fingerprint, &caller.issuer] {
            k.push_str(part);
            k.push('\u{1f}');
        }
        k.push_str(action);
        k.push('\u{1f}');
        k.push_str(resource);
        let mut push = |name: &str, kind: Use| {
            k.push('\u{1e}');
            k.push_str(name);
            let at = k.len();
            k.push('=');
            if !push_value(&mut k, facts, hour, weekday, name) {
                k.truncate(at);
                k.push('-');
            } else if kind == Use::Presence {
                k.truncate(at);
                k.push('+');
            }
        };
        match &self.reads {
            Some(reads) => reads.iter().for_each(|(name, kind)| push(name, *kind)),
            None => CONTEXT.iter().for_each(|name| push(name, Use::Value)),
        }
        k
    }

    pub fn get(&self, key: &str) -> Option<Decision> {
        self.map.lock().ok().and_then(|m| m.get(key).cloned())
    }

    pub fn put(&self, key: String, d: &Decision) {
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= CAPACITY {
                m.clear();
            }
            m.insert(key, d.clone());
        }
    }
}

/// Appends a context attribute's value as the key spells it; false when the context lacks it.
fn push_value(k: &mut String, f: &MessageFacts, hour: i64, weekday: i64, name: &str) -> bool {
    use std::fmt::Write as _;
    let text = |k: &mut String, v: &Option<String>| v.as_deref().map(|v| k.push_str(v)).is_some();
    match name {
        "chipFingerprints" => write!(k, "{}", f.chip_fingerprints).is_ok(),
        "liveFingerprints" => write!(k, "{}", f.live_fingerprints).is_ok(),
        "formats" => {
            let mut v: Vec<&str> = f.formats.to_vec();
            v.sort_unstable();
            v.dedup();
            k.push_str(&v.join(","));
            true
        }
        "hour" => write!(k, "{hour}").is_ok(),
        "weekday" => write!(k, "{weekday}").is_ok(),
        "purpose" => text(k, &f.purpose),
        "caseReference" => text(k, &f.case_reference),
        "borderCrossingPoint" => text(k, &f.border_crossing_point),
        "issuingState" => text(k, &f.issuing_state),
        "officerId" => text(k, &f.officer_id),
        "authority" => text(k, &f.authority),
        "callerId" => text(k, &f.caller_id),
        "status" => text(k, &f.result),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(src: &str) -> DecisionCache {
        DecisionCache::for_policies(&src.parse().unwrap())
    }

    #[test]
    fn reads_values_and_presence() {
        let c = cache(
            r#"permit(principal, action, resource) when { context.purpose == "X" && context has caseReference };"#,
        );
        assert_eq!(c.keyed_on(), vec!["has caseReference".to_owned(), "purpose".to_owned()]);
        let mut f = MessageFacts { purpose: Some("X".into()), case_reference: Some("A".into()), ..Default::default() };
        let caller = Caller::default();
        let k1 = c.key(&caller, "a", "r", &f, 1, 1);
        f.case_reference = Some("B".into());
        assert_eq!(k1, c.key(&caller, "a", "r", &f, 9, 3), "only presence of caseReference, no time");
        f.case_reference = None;
        assert_ne!(k1, c.key(&caller, "a", "r", &f, 1, 1));
        f.case_reference = Some("A".into());
        f.purpose = Some("Y".into());
        assert_ne!(k1, c.key(&caller, "a", "r", &f, 1, 1));
    }

    #[test]
    fn any_other_use_of_context_keys_on_everything() {
        let c = cache(r#"permit(principal, action, resource) when { context == {"purpose": "X"} };"#);
        assert_eq!(c.keyed_on().len(), CONTEXT.len());
        let caller = Caller::default();
        let mut f = MessageFacts { case_reference: Some("A".into()), ..Default::default() };
        let k1 = c.key(&caller, "a", "r", &f, 1, 1);
        f.case_reference = Some("B".into());
        assert_ne!(k1, c.key(&caller, "a", "r", &f, 1, 1));
    }

    #[test]
    fn caller_action_and_resource_are_in_the_key() {
        let c = cache("permit(principal, action, resource);");
        let f = MessageFacts::default();
        let a = Caller { unit: "analyst".into(), ..Default::default() };
        let b = Caller { unit: "border-verifier".into(), ..Default::default() };
        assert_ne!(c.key(&a, "x", "r", &f, 0, 1), c.key(&b, "x", "r", &f, 0, 1));
        assert_ne!(c.key(&a, "x", "r", &f, 0, 1), c.key(&a, "y", "r", &f, 0, 1));
        assert_ne!(c.key(&a, "x", "r", &f, 0, 1), c.key(&a, "x", "s", &f, 0, 1));
    }
}
