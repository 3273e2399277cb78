//! The routes the gateway serves, by name: one type where the configuration (`[xml.routes.*]`),
//! the policy bundle (`[rate.*]`, Cedar's `Spoc::Route` entities) and the route table name them,
//! instead of a list of strings in each.

use std::fmt;

/// A route of the contract (CONTRACT.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteName {
    /// `/bio/v1` on the police listener.
    BioV1,
    /// `/spoc/csn369791` on the police listener.
    Csn369791,
    /// `/spoc/csn369791` on the callback listener.
    Csn369791Callback,
}

impl RouteName {
    pub const ALL: [RouteName; 3] = [RouteName::BioV1, RouteName::Csn369791, RouteName::Csn369791Callback];

    /// The name as configuration, policy, records and metrics write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RouteName::BioV1 => "bio_v1",
            RouteName::Csn369791 => "csn369791",
            RouteName::Csn369791Callback => "csn369791_callback",
        }
    }

    /// The route named `name`, if there is one.
    pub fn parse(name: &str) -> Option<RouteName> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Every name, for messages: `bio_v1, csn369791, csn369791_callback`.
    pub fn list() -> String {
        Self::ALL.map(RouteName::as_str).join(", ")
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for r in RouteName::ALL {
            assert_eq!(RouteName::parse(r.as_str()), Some(r));
        }
        assert_eq!(RouteName::parse("bio"), None);
        assert_eq!(RouteName::list(), "bio_v1, csn369791, csn369791_callback");
    }
}
