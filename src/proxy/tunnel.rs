//! Raw TCP tunnels: a CONNECT whose first bytes are not TLS is `wx.createTCPSocket` traffic,
//! judged against the `tcp` list, then relayed byte for byte.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::calllog::Outcome;
use crate::instances::Phase;
use crate::policy::{self, Api, AppHints, Call, Refusal, Verdict};
use crate::proxy::call::{outcome_of, record, CallMeta, End};
use crate::proxy::{ConnInfo, TunnelInfo};

pub(crate) async fn relay_tcp<IO>(mut client: IO, conn: &ConnInfo, tunnel: &TunnelInfo)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &conn.shared;
    let url = format!("tcp://{}:{}", tunnel.host, tunnel.port);
    let hints = AppHints {
        proxy_authorization: tunnel.proxy_authorization.as_deref(),
        appid_header: tunnel.appid_header.as_deref(),
        referer: None,
        client: conn.client.ip(),
    };
    let no_headers = http::HeaderMap::new();
    let mut meta = CallMeta::new(
        shared,
        conn.client.ip(),
        "CONNECT",
        &url,
        &no_headers,
        http::Version::HTTP_11,
    );
    meta.api = Api::Tcp.as_str();
    // A refusal can't be an HTTP answer here (the 200 is sent): the tunnel is closed instead.
    let closed = |meta: CallMeta, refusal: &Refusal| {
        info!(app = meta.appid.as_deref().unwrap_or("-"), client = %conn.client.ip(), api = "tcp", url = %url,
            rule = refusal.rule.as_str(), errmsg = %refusal.errmsg, "refused: tunnel closed");
        record(
            shared,
            meta,
            outcome_of(refusal),
            Some(refusal),
            End::default(),
        );
    };
    let Some(app) = policy::identify_app(&shared.config, &hints) else {
        closed(meta, &policy::unknown_app(Api::Tcp, &url));
        return;
    };
    meta.appid = Some(app.appid.clone());
    let call = Call {
        client: conn.client.ip(),
        api: Api::Tcp,
        url: &url,
        method: "CONNECT",
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        closed(meta, &refusal);
        return;
    }
    let Ok(instance) = shared.instances.get(&app.appid, conn.client.ip()) else {
        closed(meta, &policy::unknown_app(Api::Tcp, &url));
        return;
    };
    if instance.phase() != Phase::Foreground {
        closed(meta, &Refusal::background(Api::Tcp, &url));
        return;
    }
    let mut upstream = match shared
        .upstream
        .connector(false)
        .connect_to(&tunnel.host, tunnel.port, false)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            closed(meta, &Refusal::net(Api::Tcp, &url, e.rule, &e.net));
            return;
        }
    };
    let token = shared.shutdown.token.clone();
    let (outcome, up, down) = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok((up, down)) => (Outcome::Ok, up, down),
            Err(e) => {
                debug!(error = %e, "tcp tunnel ended with an error");
                (Outcome::Aborted, 0, 0)
            }
        },
        () = instance.cut() => (Outcome::Interrupted, 0, 0),
        () = token.cancelled() => (Outcome::Aborted, 0, 0),
    };
    debug!(bytes.up = up, bytes.down = down, "tcp tunnel closed");
    record(
        shared,
        meta,
        outcome,
        None,
        End {
            bytes_up: up,
            bytes_down: down,
            ..End::default()
        },
    );
}
