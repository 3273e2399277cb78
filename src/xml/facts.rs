//! The few facts of a message that policy and audit need, taken during validation so no
//! second parse is made. A fact is kept whole: the schemas bound every one of them (an
//! `Authority` of 100 two-byte letters is 200 bytes), and a value longer than [`MAX_FACT`]
//! makes the message invalid rather than go unrecorded. The document number is personal data,
//! kept in zeroizing memory and never printed by `Debug`.

use std::fmt;

use zeroize::Zeroizing;

/// Longest value of a fact, in bytes: the audit record takes every fact whole up to this.
pub const MAX_FACT: usize = 1024;

#[derive(Default, Clone)]
pub struct MessageFacts {
    pub message_id: Option<String>,
    pub caller_id: Option<String>,
    pub officer_id: Option<String>,
    pub authority: Option<String>,
    pub border_crossing_point: Option<String>,
    pub purpose: Option<String>,
    pub case_reference: Option<String>,
    pub issuing_state: Option<String>,
    /// CSN 36 9791 `result` (of a reply) or `statusInfo` (of a callback).
    pub result: Option<String>,
    pub document_number: Option<Zeroizing<String>>,
    pub chip_fingerprints: u32,
    pub live_fingerprints: u32,
    /// Image formats present, each once.
    pub formats: Vec<&'static str>,
}

impl fmt::Debug for MessageFacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageFacts")
            .field("message_id", &self.message_id)
            .field("caller_id", &self.caller_id)
            .field("officer_id", &self.officer_id)
            .field("authority", &self.authority)
            .field("border_crossing_point", &self.border_crossing_point)
            .field("purpose", &self.purpose)
            .field("case_reference", &self.case_reference)
            .field("issuing_state", &self.issuing_state)
            .field("result", &self.result)
            .field("document_number", &self.document_number.as_ref().map(|_| "<redacted>"))
            .field("chip_fingerprints", &self.chip_fingerprints)
            .field("live_fingerprints", &self.live_fingerprints)
            .field("formats", &self.formats)
            .finish()
    }
}

impl MessageFacts {
    /// Records the value of a simple element named `local`, if it is a fact; false (nothing
    /// recorded) for a fact longer than [`MAX_FACT`].
    #[must_use]
    pub fn record(&mut self, local: &str, value: &str) -> bool {
        let long = value.len() > MAX_FACT;
        let slot = match local {
            "MessageID" | "messageID" => &mut self.message_id,
            "callerID" => &mut self.caller_id,
            "OfficerID" => &mut self.officer_id,
            "Authority" => &mut self.authority,
            "BorderCrossingPoint" => &mut self.border_crossing_point,
            "Purpose" => &mut self.purpose,
            "CaseReference" => &mut self.case_reference,
            "IssuingState" => &mut self.issuing_state,
            "result" | "statusInfo" => &mut self.result,
            "DocumentNumber" => {
                if long {
                    return false;
                }
                if self.document_number.is_none() {
                    self.document_number = Some(Zeroizing::new(value.to_owned()));
                }
                return true;
            }
            "Format" => {
                if let Some(f) = super::content::known_format(value)
                    && !self.formats.contains(&f)
                {
                    self.formats.push(f);
                }
                return true;
            }
            _ => return true,
        };
        if long {
            return false;
        }
        if slot.is_none() {
            *slot = Some(value.to_owned());
        }
        true
    }

    /// Counts container elements as they open.
    pub fn open(&mut self, local: &str) {
        match local {
            "ChipFingerprint" => self.chip_fingerprints += 1,
            "LiveFingerprint" => self.live_fingerprints += 1,
            _ => {}
        }
    }
}
