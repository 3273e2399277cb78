//! Admit: the body within the route's limit and the listener's deadline, the in-flight slot
//! (the gateway's and the client's share), and the caller's rate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use super::super::body::{BodyError, MessageBody, read_limited};
use super::super::per_key::{PerKey, Slot};
use super::super::refusal::Refusal;
use super::super::routes::Route;
use super::exchange::{Exchange, Outcome};
use crate::policy::PolicyState;
use crate::tls::PeerIdentity;

/// Whether an HTTP/1.1 client waits for `100 Continue` before sending its body: then a body
/// never asked for is not there to linger over.
pub(super) fn expects_continue(req: &Parts) -> bool {
    req.version == http::Version::HTTP_11
        && req.headers.get(http::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A request admitted under the in-flight cap: its slot and its place in
/// `spocgw_requests_in_flight`, both given back when it is dropped, however the request ends.
pub(super) struct Admitted<'p> {
    _permit: tokio::sync::SemaphorePermit<'p>,
    _client: Slot<String>,
    gauge: &'p Gauge,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The caps and deadlines a request is admitted under.
pub(super) struct Admission {
    request_timeout: Duration,
    in_flight: Semaphore,
    /// Requests in process per client certificate, bounded within `in_flight`.
    per_client: PerKey<String>,
    /// `spocgw_requests_in_flight`.
    gauge: Gauge,
    /// The rates, in the policy bundle.
    policy: Arc<PolicyState>,
}

impl Admission {
    pub(super) fn new(
        request_timeout: Duration,
        (max_in_flight, max_per_client): (usize, usize),
        gauge: Gauge,
        policy: Arc<PolicyState>,
    ) -> Admission {
        Admission {
            request_timeout,
            in_flight: Semaphore::new(max_in_flight),
            per_client: PerKey::new(max_per_client),
            gauge,
            policy,
        }
    }

    /// The body, within the route's limit (else the refusal) and the listener's deadline.
    pub(super) async fn read_body<B: MessageBody>(&self, route: &Route, body: &mut B) -> Result<Bytes, Outcome> {
        match tokio::time::timeout(self.request_timeout, read_limited(body, route.max_body)).await {
            Err(_) => Err(Outcome::Refused(
                Refusal::RequestTimeout,
                format!("body not received within {} ms", self.request_timeout.as_millis()),
            )),
            Ok(Err(BodyError::TooLarge)) => {
                Err(Outcome::Refused(Refusal::PayloadTooLarge, format!("over {} bytes", route.max_body)))
            }
            Ok(Err(BodyError::Read(e))) => Err(Outcome::Abandoned(format!("request body read failed: {e}"))),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// Admits a request whose body has arrived, under the in-flight cap: the cap counts
    /// requests the gateway is processing, not bodies a slow client is still sending, so a
    /// client trickling bodies cannot take every slot. One client certificate has at most its
    /// share of the slots. The refusal names the cap that was reached.
    pub(super) fn admit(&self, peer: &PeerIdentity) -> Result<Admitted<'_>, Outcome> {
        let full = |cap: &str| Outcome::Refused(Refusal::Overloaded, cap.into());
        let permit = self.in_flight.try_acquire().map_err(|_| full("the gateway's in-flight cap reached"))?;
        let client =
            self.per_client.take(&peer.fingerprint).ok_or_else(|| full("the client's in-flight cap reached"))?;
        self.gauge.inc();
        Ok(Admitted { _permit: permit, _client: client, gauge: &self.gauge })
    }

    /// The caller's rate on this route counts every request it sends, before any work is
    /// spent on it: invalid and denied ones too (each would cost validation and a record).
    pub(super) fn check_rate(&self, x: &mut Exchange<'_>, route: &Route) -> Result<(), Outcome> {
        if let Err(wait) = self.policy.check_rate(route.name, &x.peer().fingerprint) {
            x.rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Err(Outcome::Refused(Refusal::RateLimited, format!("over the rate of {}", route.name)));
        }
        Ok(())
    }
}
