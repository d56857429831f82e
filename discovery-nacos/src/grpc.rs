//! One Nacos 2 gRPC session: `ServerCheckRequest`, the bi-directional stream
//! opened with `ConnectionSetupRequest`, `SubscribeServiceRequest`, then the
//! server's `NotifySubscriberRequest` pushes (each acknowledged) and
//! `ClientDetectionRequest` probes (each answered), with a periodic
//! `HealthCheckRequest` to notice a server that went away silently.
//!
//! Both services share one HTTP/2 connection: the server knows a client's
//! stream by the connection its unary requests come from.

use std::{collections::HashMap, time::Duration};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};

use crate::{
    config::{NacosConfig, ServerAddr},
    model::{
        Ack, Bare, ConnectionSetup, ResponseHead, ServerRequest, ServiceInfo, Subscribe,
        SubscribeResponse, parse,
    },
    pb::{
        Metadata, Payload, bi_request_stream_client::BiRequestStreamClient,
        request_client::RequestClient,
    },
    target::{DEFAULT_NAMESPACE, ServiceKey},
};

/// How many of our messages may wait to be sent on the stream.
const OUTBOUND: usize = 16;

/// How often a subscription is retried while the server has not yet
/// registered the new stream (50 ms apart).
const UNREGISTERED_RETRIES: u32 = 20;

/// The version this client announces.
const CLIENT_VERSION: &str = concat!("Tributary-Nacos-Client:v", env!("CARGO_PKG_VERSION"));

/// An open session with one server.
pub(crate) struct Session {
    server: String,
    unary: RequestClient<Channel>,
    inbound: Streaming<Payload>,
    outbound: mpsc::Sender<Payload>,
    timeout: Duration,
    next_id: u64,
}

// === impl Session ===

impl Session {
    /// Connects to `server`'s gRPC port and sets the session up.
    pub(crate) async fn open(server: &ServerAddr, cfg: &NacosConfig) -> Result<Self, String> {
        let uri = server.grpc_uri(cfg.grpc_port_offset)?;
        let fail = |what: &str, e: String| format!("nacos gRPC {uri}: {what}: {e}");
        let channel = Channel::from_shared(uri.clone())
            .map_err(|e| fail("bad address", e.to_string()))?
            .connect_timeout(cfg.request_timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| fail("cannot connect", describe(&e)))?;
        let mut unary = RequestClient::new(channel.clone()).max_decoding_message_size(cfg.max_body);
        let check = Bare {
            module: "internal",
            request_id: "0".into(),
            headers: HashMap::new(),
        };
        let answer = call(
            &mut unary,
            &uri,
            cfg.request_timeout,
            "ServerCheckRequest",
            &check,
            None,
        )
        .await?;
        expect_ok("ServerCheckRequest", &uri, &answer)?;

        let (outbound, rx) = mpsc::channel(OUTBOUND);
        let setup = ConnectionSetup {
            client_version: CLIENT_VERSION.into(),
            tenant: String::new(),
            labels: HashMap::from([
                ("source".to_string(), "sdk".to_string()),
                ("module".to_string(), "naming".to_string()),
            ]),
            abilities: serde_json::json!({
                "remoteAbility": {"supportRemoteConnection": true},
                "configAbility": {"supportRemoteMetrics": false},
                "namingAbility": {"supportDeltaPush": false, "supportRemoteMetric": false},
            }),
            module: "internal",
            headers: HashMap::new(),
        };
        outbound
            .try_send(payload("ConnectionSetupRequest", &setup, HashMap::new()))
            .map_err(|e| fail("cannot queue ConnectionSetupRequest", e.to_string()))?;
        let mut bi = BiRequestStreamClient::new(channel).max_decoding_message_size(cfg.max_body);
        let inbound = tokio::time::timeout(
            cfg.request_timeout,
            bi.request_bi_stream(ReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| {
            fail(
                "opening the stream",
                format!("no answer within {:?}", cfg.request_timeout),
            )
        })?
        .map_err(|s| fail("opening the stream", status(&s)))?
        .into_inner();
        Ok(Self {
            server: uri,
            unary,
            inbound,
            outbound,
            timeout: cfg.request_timeout,
            next_id: 0,
        })
    }

    /// The server, for messages.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// Subscribes to `key`; the answer is the service as it is now.
    pub(crate) async fn subscribe(
        &mut self,
        key: &ServiceKey,
        token: Option<String>,
    ) -> Result<ServiceInfo, String> {
        let request = Subscribe {
            namespace: key.namespace.clone(),
            service_name: key.service.clone(),
            group_name: key.group.clone(),
            clusters: key.clusters_param(),
            subscribe: true,
            module: "naming",
            request_id: self.request_id(),
            headers: HashMap::new(),
        };
        let what = format!("SubscribeServiceRequest for {}", key.label());
        let mut tries = 0;
        let body = loop {
            let body = self
                .call("SubscribeServiceRequest", &request, token.clone())
                .await?;
            match expect_ok(&what, &self.server, &body) {
                // A Nacos server registers the stream a moment after it opens.
                Err(e) if e.contains("unregistered") && tries < UNREGISTERED_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
                Ok(()) => break body,
            }
        };
        let r: SubscribeResponse = parse(&format!("{what} answer"), &body)?;
        r.service_info
            .ok_or_else(|| format!("{what} answer from {} has no serviceInfo", self.server))
    }

    /// Asks the server whether it still knows this session.
    pub(crate) async fn health_check(&mut self) -> Result<(), String> {
        let request = self.bare("internal");
        let body = self.call("HealthCheckRequest", &request, None).await?;
        expect_ok("HealthCheckRequest", &self.server, &body)
    }

    /// Waits for the next push of `key`'s service, answering the server's
    /// probes meanwhile. Cancel-safe: the only wait is for the next message.
    pub(crate) async fn next_push(&mut self, key: &ServiceKey) -> Result<ServiceInfo, String> {
        loop {
            let m = self
                .inbound
                .message()
                .await
                .map_err(|s| format!("nacos gRPC {}: stream failed: {}", self.server, status(&s)))?
                .ok_or_else(|| {
                    format!("nacos gRPC {}: the server closed the stream", self.server)
                })?;
            let kind = m
                .metadata
                .as_ref()
                .map(|m| m.r#type.clone())
                .unwrap_or_default();
            let body = m.body.map(|b| b.value).unwrap_or_default();
            let request: ServerRequest = match parse(&format!("{kind} from {}", self.server), &body)
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let id = request.request_id.clone().unwrap_or_default();
            match kind.as_str() {
                "NotifySubscriberRequest" => {
                    self.ack("NotifySubscriberResponse", id)?;
                    let same =
                        |got: &Option<String>, want: &str| got.as_deref().is_none_or(|g| g == want);
                    let ours = same(&request.service_name, &key.service)
                        && same(&request.group_name, &key.group)
                        && same(
                            &request.namespace.map(|n| {
                                if n.is_empty() {
                                    DEFAULT_NAMESPACE.to_string()
                                } else {
                                    n
                                }
                            }),
                            &key.namespace,
                        );
                    match request.service_info {
                        Some(info) if ours => return Ok(info),
                        Some(_) => {}
                        None => tracing::warn!(
                            server = %self.server,
                            "NotifySubscriberRequest without serviceInfo ignored"
                        ),
                    }
                }
                "ClientDetectionRequest" => self.ack("ClientDetectionResponse", id)?,
                "ConnectResetRequest" => {
                    self.ack("ConnectResetResponse", id)?;
                    return Err(format!(
                        "nacos gRPC {}: the server asked the client to reconnect",
                        self.server
                    ));
                }
                other => {
                    tracing::debug!(server = %self.server, kind = other, "server request ignored")
                }
            }
        }
    }

    fn ack(&self, kind: &str, request_id: String) -> Result<(), String> {
        let ack = Ack {
            result_code: 200,
            error_code: 0,
            request_id,
        };
        self.outbound
            .try_send(payload(kind, &ack, HashMap::new()))
            .map_err(|e| format!("nacos gRPC {}: cannot answer {kind}: {e}", self.server))
    }

    fn bare(&mut self, module: &'static str) -> Bare {
        Bare {
            module,
            request_id: self.request_id(),
            headers: HashMap::new(),
        }
    }

    fn request_id(&mut self) -> String {
        self.next_id += 1;
        self.next_id.to_string()
    }

    async fn call(
        &mut self,
        kind: &str,
        body: &impl Serialize,
        token: Option<String>,
    ) -> Result<Vec<u8>, String> {
        call(
            &mut self.unary,
            &self.server,
            self.timeout,
            kind,
            body,
            token,
        )
        .await
    }
}

/// One unary request; the answer's body, whatever its result code.
async fn call(
    unary: &mut RequestClient<Channel>,
    server: &str,
    timeout: Duration,
    kind: &str,
    body: &impl Serialize,
    token: Option<String>,
) -> Result<Vec<u8>, String> {
    let mut headers = HashMap::new();
    if let Some(t) = token {
        headers.insert("accessToken".to_string(), t);
    }
    let request = payload(kind, body, headers);
    let answer = tokio::time::timeout(timeout, unary.request(request))
        .await
        .map_err(|_| format!("nacos gRPC {server}: {kind}: no answer within {timeout:?}"))?
        .map_err(|s| format!("nacos gRPC {server}: {kind}: {}", status(&s)))?
        .into_inner();
    Ok(answer.body.map(|b| b.value).unwrap_or_default())
}

fn payload(kind: &str, body: &impl Serialize, headers: HashMap<String, String>) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: kind.to_string(),
            client_ip: String::new(),
            headers,
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            // Serializing these plain structs cannot fail.
            value: serde_json::to_vec(body).unwrap_or_default(),
        }),
    }
}

/// Fails unless the answer's `resultCode` is 200.
fn expect_ok(what: &str, server: &str, body: &[u8]) -> Result<(), String> {
    let head: ResponseHead = parse(&format!("{what} answer from {server}"), body)?;
    if head.result_code == 200 {
        return Ok(());
    }
    let message = head.message.unwrap_or_default();
    let hint = if head.error_code == 403 || message.contains("unknown user") {
        " (the server requires a login: check --username and the password)"
    } else {
        ""
    };
    Err(format!(
        "nacos gRPC {server}: {what} refused: code {} error {}: {message}{hint}",
        head.result_code, head.error_code
    ))
}

fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
