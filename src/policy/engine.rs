//! Decisions: the principal built from the client certificate (and the bundle's entity data),
//! the action from the operation, the resource from the route (or the reply field), the context
//! from the validated message facts and the time. Deny unless a policy permits and none forbids.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression,
};

use super::bundle::Bundle;
use crate::xml::facts::MessageFacts;

/// What a decision needs to know about the caller (from its certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub common_name: String,
    pub organization: String,
    pub unit: String,
    pub fingerprint: String,
    pub issuer: String,
}

impl Caller {
    pub fn from_peer(p: &crate::tls::PeerIdentity) -> Self {
        Self {
            common_name: p.common_name.clone().unwrap_or_default(),
            organization: p.organization.clone().unwrap_or_default(),
            unit: p.organizational_unit.clone().unwrap_or_default(),
            fingerprint: p.fingerprint.clone(),
            issuer: p.issuer.clone(),
        }
    }
}

/// A decision and the policies that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// IDs of the policies that determined the decision (the permits that applied, or the
    /// forbids that did); empty for a default deny.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that could not be evaluated does not apply).
    pub errors: Vec<String>,
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(ty).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

/// The time parts of the context: hour (0-23) and ISO weekday (1 = Monday) in the bundle's zone.
pub fn local_time(now_unix: i64, utc_offset: i32) -> (i64, i64) {
    let t = now_unix + i64::from(utc_offset);
    let days = t.div_euclid(86_400);
    let hour = t.rem_euclid(86_400) / 3600;
    // 1970-01-01 was a Thursday (ISO weekday 4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    (hour, weekday)
}

impl Bundle {
    /// The Terminal entity for a caller: roles from the certificate's OU, authority from its O,
    /// plus whatever the bundle's entity data says about the same terminal.
    ///
    /// # Errors
    /// The caller's entity cannot be built from its attributes (a value the entity type does not
    /// allow).
    pub fn principal(&self, c: &Caller) -> Result<(EntityUid, Entity), String> {
        let id = if c.common_name.is_empty() { &c.fingerprint } else { &c.common_name };
        let principal = uid("Spoc::Terminal", id)?;
        let mut direct = Vec::new();
        if !c.unit.is_empty() {
            direct.push(uid("Spoc::Role", &c.unit)?);
        }
        if !c.organization.is_empty() {
            direct.push(uid("Spoc::Authority", &c.organization)?);
        }
        if let Some(known) = self.entities.ancestors(&principal) {
            // Entity data may add groups to a named terminal (never remove the certificate's).
            direct.extend(known.cloned());
        }
        // Parents are given with all their ancestors, so a decision needs no entity graph
        // beyond the principal and the resource.
        let mut parents = HashSet::new();
        for p in direct {
            if let Some(up) = self.entities.ancestors(&p) {
                parents.extend(up.cloned());
            }
            parents.insert(p);
        }
        let attrs = HashMap::from([
            ("commonName".to_owned(), RestrictedExpression::new_string(c.common_name.clone())),
            ("organization".to_owned(), RestrictedExpression::new_string(c.organization.clone())),
            ("unit".to_owned(), RestrictedExpression::new_string(c.unit.clone())),
            ("fingerprint".to_owned(), RestrictedExpression::new_string(c.fingerprint.clone())),
            ("issuer".to_owned(), RestrictedExpression::new_string(c.issuer.clone())),
        ]);
        let entity = Entity::new(principal.clone(), attrs, parents).map_err(|e| e.to_string())?;
        Ok((principal, entity))
    }

    /// The context of a decision (JSON-like pairs, for `explain` too).
    pub fn context_pairs(&self, facts: &MessageFacts, now_unix: i64) -> Vec<(String, RestrictedExpression)> {
        let (hour, weekday) = local_time(now_unix, self.utc_offset);
        let mut pairs = vec![
            ("chipFingerprints".to_owned(), RestrictedExpression::new_long(i64::from(facts.chip_fingerprints))),
            ("liveFingerprints".to_owned(), RestrictedExpression::new_long(i64::from(facts.live_fingerprints))),
            (
                "formats".to_owned(),
                RestrictedExpression::new_set(
                    facts.formats.iter().map(|f| RestrictedExpression::new_string((*f).to_owned())),
                ),
            ),
            ("hour".to_owned(), RestrictedExpression::new_long(hour)),
            ("weekday".to_owned(), RestrictedExpression::new_long(weekday)),
        ];
        for (key, value) in [
            ("purpose", &facts.purpose),
            ("caseReference", &facts.case_reference),
            ("borderCrossingPoint", &facts.border_crossing_point),
            ("issuingState", &facts.issuing_state),
            ("officerId", &facts.officer_id),
            ("authority", &facts.authority),
            ("callerId", &facts.caller_id),
            ("status", &facts.result),
        ] {
            if let Some(v) = value {
                pairs.push((key.to_owned(), RestrictedExpression::new_string(v.clone())));
            }
        }
        pairs
    }

    fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        resource: EntityUid,
        facts: &MessageFacts,
        now_unix: i64,
    ) -> Decision {
        let deny = |e: String| Decision { allowed: false, policies: vec![], errors: vec![e] };
        let (principal, entity) = match self.principal(caller) {
            Ok(p) => p,
            Err(e) => return deny(e),
        };
        let action = match uid("Spoc::Action", action) {
            Ok(a) => a,
            Err(e) => return deny(e),
        };
        let context = match Context::from_pairs(self.context_pairs(facts, now_unix)) {
            Ok(c) => c,
            Err(e) => return deny(e.to_string()),
        };
        let resource_uid = resource.clone();
        let request = match Request::new(principal, action, resource, context, None) {
            Ok(r) => r,
            Err(e) => return deny(e.to_string()),
        };
        // The principal (with its ancestors expanded) and the resource (for its attributes): all
        // the policies can look at.
        let mut members = vec![entity];
        if let Some(r) = self.entities.get(&resource_uid) {
            members.push(r.clone());
        }
        let entities: Entities = match Entities::from_entities(members, None) {
            Ok(e) => e,
            Err(e) => return deny(e.to_string()),
        };
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        let mut policies: Vec<String> = response.diagnostics().reason().map(|p| p.to_string()).collect();
        policies.sort_by_key(|id| self.policy_ids.iter().position(|p| p == id).unwrap_or(usize::MAX));
        Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policies,
            errors: response.diagnostics().errors().map(|e| e.to_string()).collect(),
        }
    }

    /// May `caller` perform `operation` on `route` with these facts?
    pub fn decide(
        &self,
        caller: &Caller,
        operation: &str,
        route: &str,
        facts: &MessageFacts,
        now_unix: i64,
    ) -> Decision {
        self.cached(caller, operation, "Spoc::Route", route, facts, now_unix)
    }

    /// A decision from the cache, or made and remembered.
    fn cached(
        &self,
        caller: &Caller,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        facts: &MessageFacts,
        now_unix: i64,
    ) -> Decision {
        let (hour, weekday) = local_time(now_unix, self.utc_offset);
        let resource = format!("{resource_type}::{resource_id}");
        let key = self.cache.key(caller, action, &resource, facts, hour, weekday);
        if let Some(d) = self.cache.get(&key) {
            return d;
        }
        let d = match uid(resource_type, resource_id) {
            Ok(r) => self.authorize(caller, action, r, facts, now_unix),
            Err(e) => Decision { allowed: false, policies: vec![], errors: vec![e] },
        };
        self.cache.put(key, &d);
        d
    }

    /// May the reply field `field` (e.g. `Holder/Address`) flow back to `caller`?
    pub fn may_receive(&self, caller: &Caller, field: &str, facts: &MessageFacts, now_unix: i64) -> Decision {
        self.cached(caller, "ReceiveField", "Spoc::Field", field, facts, now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are built without schema checks on the hot path; this pins that what we build
    /// conforms to the bundle's schema.
    #[test]
    fn principals_and_contexts_conform_to_the_schema() {
        let b = Bundle::embedded().unwrap();
        let caller = Caller {
            common_name: "officer-0001".into(),
            organization: "Border Police".into(),
            unit: "border-verifier".into(),
            fingerprint: "ab".repeat(32),
            issuer: "CN=ca".into(),
        };
        let facts = MessageFacts {
            purpose: Some("IDENTITY_DOUBT".into()),
            caller_id: Some("CZ".into()),
            formats: vec!["WSQ"],
            ..MessageFacts::default()
        };
        let (principal, entity) = b.principal(&caller).unwrap();
        b.entities.clone().add_entities([entity], Some(&b.schema)).unwrap();
        let context = Context::from_pairs(b.context_pairs(&facts, 0)).unwrap();
        let action = uid("Spoc::Action", "VerifyFingerprintRequest").unwrap();
        Request::new(principal, action, uid("Spoc::Route", "bio_v1").unwrap(), context, Some(&b.schema)).unwrap();
    }

    #[test]
    fn weekdays_and_hours() {
        // 2026-11-23 was a Monday; 07:30 UTC is 08:30 at +01:00.
        let t = 1_795_419_000; // 2026-11-23T07:30:00Z
        assert_eq!(local_time(t, 3600), (8, 1));
        assert_eq!(local_time(t, -8 * 3600), (23, 7));
    }
}
