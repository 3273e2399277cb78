//! Rate limits per client certificate and route (`[rate.<route>]` in `routes.toml`), GCRA via
//! governor. Over the rate: 429 `RateLimited` with `Retry-After` in whole seconds.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::bundle::Rate;

/// One keyed limiter per route that has a rate.
pub struct RateLimits {
    limiters: BTreeMap<String, (Rate, DefaultKeyedRateLimiter<String>)>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(rates: &BTreeMap<String, Rate>) -> Self {
        let mut limiters = BTreeMap::new();
        for (route, r) in rates {
            let (Some(per), Some(burst)) = (NonZeroU32::new(r.per_second), NonZeroU32::new(r.burst)) else { continue };
            limiters.insert(route.clone(), (*r, RateLimiter::keyed(Quota::per_second(per).allow_burst(burst))));
        }
        Self { limiters, clock: DefaultClock::default() }
    }

    /// True when the configured rates equal `rates` (a reload keeps the counters then).
    pub fn same_rates(&self, rates: &BTreeMap<String, Rate>) -> bool {
        self.limiters.len() == rates.len() && self.limiters.iter().all(|(k, (r, _))| rates.get(k) == Some(r))
    }

    /// Ok, or how long the caller must wait.
    ///
    /// # Errors
    /// How long the caller must wait, when it is over the rate.
    pub fn check(&self, route: &str, caller: &str) -> Result<(), Duration> {
        let Some((_, limiter)) = self.limiters.get(route) else { return Ok(()) };
        limiter.check_key(&caller.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets callers that are back to a full allowance (bounds memory).
    pub fn prune(&self) {
        for (_, l) in self.limiters.values() {
            l.retain_recent();
        }
    }
}
