//! Decide: the access policy for the caller, the operation, the route and the message facts,
//! with the bundle taken once (the reply's minimisation follows the same one).

use std::sync::Arc;

use super::super::refusal::Refusal;
use super::super::routes::{Operation, Route};
use super::exchange::{Decided, Exchange, Outcome};
use crate::policy::{Bundle, PolicyState};

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The policy in force.
pub(super) struct Decider {
    policy: Arc<PolicyState>,
}

impl Decider {
    pub(super) fn new(policy: Arc<PolicyState>) -> Decider {
        Decider { policy }
    }

    pub(super) fn decide(
        &self,
        x: &mut Exchange<'_>,
        route: &Route,
        operation: Operation,
    ) -> Result<Arc<Bundle>, Outcome> {
        let bundle = self.policy.current();
        let (caller, facts) = x.caller_and_facts();
        let d = bundle.decide(caller, operation.element(), route.name, facts, unix_now());
        let policies = d.policies.join(",");
        x.decided(Decided { allowed: d.allowed, policies: policies.clone(), bundle: bundle.digest[..16].to_owned() });
        if !d.allowed {
            let why = if d.errors.is_empty() { String::new() } else { format!("; errors: {}", d.errors.join("; ")) };
            let by =
                if policies.is_empty() { "no policy permits".to_owned() } else { format!("forbidden by {policies}") };
            return Err(Outcome::Refused(Refusal::PolicyDenied, format!("{by}{why}")));
        }
        Ok(bundle)
    }
}
