//! HTTP plumbing below both the proxy and the control API: the one body type, the
//! answers (refusals, plain statuses, the business-domain page) and the CA page a phone opens.
//! Nothing here holds state: callers pass what a page shows.

use std::time::Duration;

pub mod answer;
pub mod body;
pub mod certpage;

/// A control-port client has this long to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
