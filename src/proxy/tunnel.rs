//! Raw TCP tunnels: a CONNECT whose first bytes are not TLS is `wx.createTCPSocket` traffic,
//! judged against the `tcp` list, then relayed byte for byte.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::policy::{self, Api, AppHints, Call, Verdict};
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
    // A refusal can't be an HTTP answer here (the 200 is sent): the tunnel is closed instead.
    let Some(app) = policy::identify_app(&shared.config, &hints) else {
        info!(client = %conn.client.ip(), api = "tcp", url = %url, rule = "appid", "refused: tunnel closed");
        return;
    };
    let call = Call {
        client: conn.client.ip(),
        api: Api::Tcp,
        url: &url,
        method: "CONNECT",
    };
    if let Verdict::Refuse(refusal) = policy::judge(app, &call, shared.switches()) {
        info!(app = %app.appid, client = %conn.client.ip(), api = "tcp", url = %url,
            rule = refusal.rule.as_str(), "refused: tunnel closed");
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
            info!(app = %app.appid, url = %url, error = %e, "tcp upstream failed: tunnel closed");
            return;
        }
    };
    let token = shared.shutdown.token.clone();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok((up, down)) => debug!(bytes.up = up, bytes.down = down, "tcp tunnel closed"),
            Err(e) => debug!(error = %e, "tcp tunnel ended with an error"),
        },
        () = token.cancelled() => debug!("tcp tunnel closed by shutdown"),
    }
}
