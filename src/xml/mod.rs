//! XML: the one-pass firewall and validator ([`validate`]), the schemas, SOAP Faults.

pub mod fault;

pub mod soap;

pub use fault::{FAULT_NS, FaultText, plain_fault, soap_fault};
pub use soap::{SOAP11_NS, SOAP12_NS, SoapVersion};
pub mod chars;
pub mod content;
pub mod facts;
pub mod firewall;
pub mod validate;
pub mod xsd;
