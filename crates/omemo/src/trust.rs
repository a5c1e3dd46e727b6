//! Trust in (bare JID, identity key) pairs, and Conversations' BTBV policy ("blind trust before
//! verification"): a contact's new keys are trusted blindly until the user verifies one key of
//! that contact; from then on new keys stay undecided until the user decides.

/// What the user (or the policy) decided about one identity key of one contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustLevel {
    /// Seen, not decided: messages from it are shown as untrusted; calls get no shield.
    Undecided,
    /// Trusted by the BTBV policy without verification: calls get at most "encrypted".
    BlindlyTrusted,
    /// Verified by the user (QR code, URI or comparison): calls can get the shield.
    Verified,
    /// Refused by the user.
    Distrusted,
}

impl TrustLevel {
    /// True for levels we encrypt to and accept messages from as trusted.
    pub fn is_trusted(self) -> bool {
        matches!(self, Self::BlindlyTrusted | Self::Verified)
    }

    /// Stable lower-case name (storage, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecided => "undecided",
            Self::BlindlyTrusted => "trusted",
            Self::Verified => "verified",
            Self::Distrusted => "untrusted",
        }
    }

    /// Inverse of [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "undecided" => Self::Undecided,
            "trusted" => Self::BlindlyTrusted,
            "verified" => Self::Verified,
            "untrusted" => Self::Distrusted,
            _ => return None,
        })
    }
}

/// BTBV: the level a newly seen key of a contact gets, given the levels of that contact's known keys.
pub fn initial_trust(known: impl IntoIterator<Item = TrustLevel>) -> TrustLevel {
    if known.into_iter().any(|t| t == TrustLevel::Verified) {
        TrustLevel::Undecided
    } else {
        TrustLevel::BlindlyTrusted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btbv() {
        assert_eq!(initial_trust([]), TrustLevel::BlindlyTrusted);
        assert_eq!(
            initial_trust([TrustLevel::BlindlyTrusted, TrustLevel::Undecided]),
            TrustLevel::BlindlyTrusted
        );
        assert_eq!(
            initial_trust([TrustLevel::BlindlyTrusted, TrustLevel::Verified]),
            TrustLevel::Undecided
        );
    }

    #[test]
    fn names_round_trip() {
        for t in [
            TrustLevel::Undecided,
            TrustLevel::BlindlyTrusted,
            TrustLevel::Verified,
            TrustLevel::Distrusted,
        ] {
            assert_eq!(TrustLevel::parse(t.as_str()), Some(t));
        }
        assert!(TrustLevel::Verified.is_trusted() && !TrustLevel::Undecided.is_trusted());
    }
}
