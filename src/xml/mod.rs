//! XML: reading SOAP envelopes in one pass ([`read_envelope`]) and writing SOAP Faults.

pub mod envelope;
pub mod fault;

pub use envelope::{Envelope, EnvelopeError, SOAP11_NS, SOAP12_NS, SoapVersion, read_envelope};
pub use fault::{FAULT_NS, FaultText, plain_fault, soap_fault};
pub mod content;
pub mod facts;
pub mod firewall;
pub mod validate;
pub mod xsd;
