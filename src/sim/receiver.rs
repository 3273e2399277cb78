//! The police side's callback receiver, for the demo and tests: a mutual-TLS server that
//! accepts `SendCertificatesRequest` forwarded by the gateway, answers `ok_received_correctly`, and
//! remembers which messageIDs it received.

use std::path::Path;
use std::sync::{Arc, Mutex};

use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::messages;
use super::ministry::SimBody;
use crate::config::{ConfigError, read_toml};
use crate::gateway::body::read_limited;
use crate::gateway::config::ListenerConfig;
use crate::gateway::routes::CSN_NS;
use crate::xml::SoapVersion;
use crate::xml::limits::Limits;
use crate::xml::validate::{Expect, validate};
use crate::xml::xsd::Schema;

/// `receiver.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub server: ListenerConfig,
}

impl ReceiverConfig {
    /// # Errors
    /// A [`ConfigError`] naming the key at fault.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let mut cfg: ReceiverConfig = read_toml(file)?;
        let base = file.parent().unwrap_or(Path::new("."));
        cfg.server.resolve(base, file, "server")?;
        Ok(cfg)
    }
}

/// The messageIDs of the callbacks received so far.
#[derive(Clone)]
pub struct Receiver {
    received: Arc<Mutex<Vec<String>>>,
    schema: Arc<Schema>,
}

impl Receiver {
    pub fn new(schema: Arc<Schema>) -> Self {
        Self { received: Arc::default(), schema }
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// # Errors
    /// The request's body cannot be read.
    pub async fn answer(self, req: Request<Incoming>) -> Result<Response<SimBody>, std::io::Error> {
        let body = read_limited(&mut req.into_body(), 1024 * 1024)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let (status, result) = match validate(&self.schema, &Limits::default(), &body, Expect::Any) {
            Ok(v) if v.namespace == CSN_NS && v.operation == "SendCertificatesRequest" => {
                let id = v.facts.message_id.unwrap_or_default();
                let status = v.facts.result.unwrap_or_default();
                tracing::info!(message_id = %id, status = %status, "callback received");
                if let Ok(mut v) = self.received.lock() {
                    v.push(id);
                }
                (StatusCode::OK, "ok_received_correctly")
            }
            _ => (StatusCode::OK, "failure_syntax"),
        };
        let text = messages::envelope(
            SoapVersion::V11,
            &format!(
                "<SendCertificatesResponse xmlns=\"{CSN_NS}\"><result>{result}</result></SendCertificatesResponse>"
            ),
        );
        let mut resp = Response::new(SimBody::whole(text));
        *resp.status_mut() = status;
        if let Ok(v) = "text/xml; charset=utf-8".parse() {
            resp.headers_mut().insert(CONTENT_TYPE, v);
        }
        Ok(resp)
    }
}
