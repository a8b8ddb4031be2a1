//! What a refusal looks like on the wire (SPEC section 4): the JSON body and the ASCII errMsg
//! header.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::Refusal;

/// Bytes escaped in the `X-Wxsandbox-Errmsg` header: controls and non-ASCII (by the encoder), and `%`.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

impl Refusal {
    /// The JSON body of SPEC section 4.
    pub fn refusal_json(&self, appid: Option<&str>) -> String {
        serde_json::json!({
            "errMsg": self.errmsg,
            "errno": self.errno,
            "rule": self.rule.as_str(),
            "appid": appid,
            "api": self.api.as_str(),
            "url": self.url,
            "detail": self.detail,
        })
        .to_string()
    }

    /// The errMsg as an ASCII header value (non-ASCII bytes percent-encoded).
    pub fn errmsg_header(&self) -> String {
        utf8_percent_encode(&self.errmsg, HEADER_UNSAFE).to_string()
    }
}
