//! XML: the one-pass firewall and validator ([`validate`]), the schemas, SOAP Faults.

pub mod soap_fault;

pub mod soap;

pub use soap::{SOAP11_NS, SOAP12_NS, SoapVersion};
pub use soap_fault::{FAULT_NS, FaultText, plain_fault, soap_fault};
pub mod chars;
pub mod content;
pub mod facts;
pub mod limits;
pub mod validate;
pub mod xsd;
