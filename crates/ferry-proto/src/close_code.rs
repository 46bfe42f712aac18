//! Close status codes (RFC 6455 §7.4): what a close frame, a failure and an abnormal end
//! report. Its own file because errors name the code they close with and close frames carry
//! one, and neither should depend on the other for it.

use std::fmt;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// An open newtype rather than a closed enum: codes 3000-3999 are registered by libraries and
/// frameworks and 4000-4999 belong to applications, so any `u16` can be held. The registered
/// codes have named constants.
///
/// ```
/// use ferry_proto::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4001).is_sendable());
/// assert!(!CloseCode::ABNORMAL.is_sendable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose for which the connection was established has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: an endpoint is going away (server shutting down, browser leaving the page).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint cannot accept this type of data (text or binary).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Reserved: never sent on the wire; reported locally
    /// when the peer's close frame had no code.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame. Reserved: never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data was not consistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension it did not.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (the server is overloaded).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway or proxy received an invalid response from the upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Reserved: never sent on the wire.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// RFC 6455 §7.4.1/§7.4.2: 1000-1003 and 1007-1014 are defined for use; 1004, 1005, 1006 and
    /// 1015 are reserved and MUST NOT be sent; below 1000 is unused; 1016-2999 are reserved for
    /// future protocol revisions; 3000-4999 are for libraries and applications; 5000 and up are
    /// not defined.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// A short name for logs and metrics ("normal", "protocol_error", "application", ...).
    pub fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going_away",
            1002 => "protocol_error",
            1003 => "unsupported_data",
            1005 => "no_status",
            1006 => "abnormal",
            1007 => "invalid_payload",
            1008 => "policy_violation",
            1009 => "message_too_big",
            1010 => "mandatory_extension",
            1011 => "internal_error",
            1012 => "service_restart",
            1013 => "try_again_later",
            1014 => "bad_gateway",
            1015 => "tls_handshake",
            3000..=3999 => "registered",
            4000..=4999 => "application",
            _ => "reserved",
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
