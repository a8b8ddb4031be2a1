//! Raw TCP tunnels: a CONNECT whose first bytes are not TLS is `wx.createTCPSocket` traffic,
//! judged against the `tcp` list and counted against the instance's TCP quota (20 per 5
//! minutes), then relayed byte for byte until either end closes, the
//! app's background cut, or shutdown.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::calllog::Outcome;
use crate::instances::{Instance, Phase};
use crate::policy::{self, Api, AppHints, Call, Refusal, Verdict};
use crate::proxy::call::{net_refusal, outcome_of, record, CallMeta, End};
use crate::proxy::{shape, ConnInfo, TunnelInfo};

pub(crate) async fn relay_tcp<IO>(mut client: IO, conn: &ConnInfo, tunnel: &TunnelInfo)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &conn.shared;
    let url = format!("tcp://{}:{}", tunnel.host, tunnel.port);
    let mut meta = CallMeta::new(
        shared,
        conn.client.ip(),
        &http::Method::CONNECT,
        Arc::from(url.as_str()),
        &http::HeaderMap::new(),
        http::Version::HTTP_11,
    );
    meta.api = Api::Tcp.as_str();
    let instance = match admit(conn, tunnel, &url, &mut meta) {
        Ok(instance) => instance,
        Err(refusal) => return closed(conn, meta, &refusal),
    };
    // Subscribed before the dial: a network change from now on closes the tunnel.
    let net = instance.net_cut();
    let dialed = shared
        .upstream()
        .connector(false)
        .connect_to(&tunnel.host, tunnel.port, false)
        .await;
    let mut upstream = match dialed {
        Ok(s) => s,
        Err(e) => return closed(conn, meta, &Refusal::net(Api::Tcp, &url, e.rule, &e.net)),
    };
    let token = shared.shutdown.token.clone();
    let link = instance.link();
    let mut refusal = None;
    let (outcome, up, down) = tokio::select! {
        result = shape::copy_bidirectional(&mut client, &mut upstream, &link) => match result {
            Ok((up, down)) => (Outcome::Ok, up, down),
            Err(e) => {
                debug!(error = %e, "tcp tunnel ended with an error");
                (Outcome::Aborted, 0, 0)
            }
        },
        () = instance.cut() => (Outcome::Interrupted, 0, 0),
        cut = net => {
            let r = net_refusal(cut, Api::Tcp, &url);
            let outcome = outcome_of(&r);
            refusal = Some(r);
            (outcome, 0, 0)
        },
        () = token.cancelled() => (Outcome::Aborted, 0, 0),
    };
    debug!(bytes.up = up, bytes.down = down, "tcp tunnel closed");
    let end = End {
        bytes_up: up,
        bytes_down: down,
        ..End::default()
    };
    record(shared, meta, outcome, refusal.as_ref(), end);
}

/// Which app, rules 1-5 for `tcp://host:port`, the TCP quota, and the instance. Only a socket
/// that passes the rules counts against the quota, as one the platform lets the app create.
fn admit(
    conn: &ConnInfo,
    tunnel: &TunnelInfo,
    url: &str,
    meta: &mut CallMeta,
) -> Result<Arc<Instance>, Refusal> {
    let shared = &conn.shared;
    let hints = AppHints {
        proxy_authorization: None,
        tunnel_user: tunnel.proxy_user.as_deref(),
        appid_header: tunnel.appid_header.as_deref(),
        referer: None,
        client: conn.client.ip(),
    };
    let config = shared.config();
    let app =
        policy::identify_app(&config, &hints).ok_or_else(|| policy::unknown_app(Api::Tcp, url))?;
    meta.appid = Some(app.id.clone());
    let call = Call {
        client: conn.client.ip(),
        api: Api::Tcp,
        url,
        method: "CONNECT",
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        return Err(refusal);
    }
    let instance = shared
        .instances
        .get(&app.appid, conn.client.ip())
        .map_err(|_| policy::unknown_app(Api::Tcp, url))?;
    if instance.phase() != Phase::Foreground {
        return Err(Refusal::background(Api::Tcp, url));
    }
    let link = instance.link();
    meta.network = Some(link.name.clone());
    if link.profile.offline {
        return Err(Refusal::offline(Api::Tcp, url));
    }
    instance
        .take_tcp(tokio::time::Instant::now())
        .map_err(|e| Refusal::tcp_quota(url, e.limit, e.window_ms, e.wait_ms))?;
    Ok(instance)
}

/// A refusal can't be an HTTP answer here (the 200 is sent): the tunnel is closed instead.
fn closed(conn: &ConnInfo, meta: CallMeta, refusal: &Refusal) {
    info!(app = meta.appid.as_deref().unwrap_or("-"), client = %conn.client.ip(), api = "tcp",
        url = %refusal.url, rule = refusal.rule.as_str(), errmsg = %refusal.errmsg, "refused: tunnel closed");
    record(
        &conn.shared,
        meta,
        outcome_of(refusal),
        Some(refusal),
        End::default(),
    );
}
