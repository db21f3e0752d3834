//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), served by
//! [`serve_grpc`](crate::serve_grpc) on a listener of its own (HTTP/2, with or without TLS). The same
//! router underneath as the HTTP routes: the same services and versions (`model_version` pins one), the
//! same credentials (`authorization: Bearer <key or token>` metadata), and the same scoring flow
//! (`score.rs`: split, queue, batching, mirror, metrics, request logs and data collection). Errors are
//! gRPC status codes, mapped from the status an HTTP answer would carry (`status.rs`).

mod convert;
mod deadline;

use std::sync::Arc;

use http::HeaderValue;
use http::header::AUTHORIZATION;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

pub(crate) use self::deadline::Deadline;
use self::proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use self::proto::*;
use crate::host::Host;
use crate::ids::REQUEST_ID;
use crate::oip;
use crate::score::{Answer, Payload, VERSION_HEADER};
use crate::service::Service;
use crate::status::status_of;
use crate::{Error, Version};

/// The protocol's messages and service, generated from `proto/inference.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// The gRPC inference service of a [`Host`].
#[derive(Clone)]
pub struct Grpc {
    host: Arc<Host>,
}

/// The tower service [`serve_grpc`](crate::serve_grpc) runs.
pub type GrpcServer = GrpcInferenceServiceServer<Grpc>;

impl Grpc {
    pub fn new(host: Arc<Host>) -> Self {
        Grpc { host }
    }

    /// How long a request's message may take to arrive (the host's body-read timeout).
    pub(crate) fn body_timeout(&self) -> std::time::Duration {
        self.host.body_timeout
    }

    pub(crate) fn metrics(&self) -> &Arc<crate::Metrics> {
        self.host.metrics()
    }

    /// The service, taking messages up to the host's request body limit.
    pub fn into_server(self) -> GrpcServer {
        let limit = self.host.max_body_bytes;
        GrpcInferenceServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }

    /// The refusal of a call whose `authorization` metadata no service on this host accepts (an open
    /// service accepts any), decided before its message is read: a stream of up to the body limit costs
    /// an unauthenticated client nothing but its own upload. The health and server-metadata calls take
    /// no credential. The call's own service is checked again once its message names it.
    pub(crate) fn refuse_unadmitted<B>(&self, request: &http::Request<B>) -> Option<Status> {
        const OPEN: [&str; 3] = ["/ServerLive", "/ServerReady", "/ServerMetadata"];
        let path = request.uri().path();
        if OPEN.iter().any(|open| path.ends_with(open)) {
            return None;
        }
        let credential = request.headers().get(AUTHORIZATION);
        if self.host.router.admits_any(&self.host.auth, credential) {
            return None;
        }
        Some(Status::unauthenticated(match credential {
            None => "this host's models need an 'authorization: Bearer <key or token>' metadata entry",
            Some(_) => "the credential in 'authorization' is not accepted by any model on this host",
        }))
    }

    /// The service named `name`, its caller's credential checked first.
    fn service(&self, name: &str, metadata: &MetadataMap) -> Result<Arc<Service>, Status> {
        let service = self
            .host
            .router
            .get(name)
            .ok_or_else(|| self.host.missing("model", name))
            .map_err(|e| status(&e))?;
        let credential = metadata
            .get(AUTHORIZATION.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        service
            .authorize(&self.host.auth, credential.as_ref())
            .map_err(|e| status(&e))?;
        Ok(service)
    }
}

/// A pinned version by name, or the default when none is pinned; NOT_FOUND naming the known ones.
fn version<'s>(service: &'s Service, pinned: &str) -> Result<&'s Arc<Version>, Status> {
    if pinned.is_empty() {
        return Ok(service.default_version());
    }
    service.version(pinned).map_err(|e| status(&e))
}

/// Protobuf as tonic encodes it, except that a message that does not parse is the client's mistake
/// (INVALID_ARGUMENT naming it), not the server's INTERNAL.
pub struct Codec<T, U>(tonic_prost::ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(tonic_prost::ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = Decoder<<tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(self.0.decoder())
    }
}

/// See [`Codec`].
pub struct Decoder<D>(D);

impl<D: tonic::codec::Decoder<Error = Status>> tonic::codec::Decoder for Decoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => {
                Status::invalid_argument(format!("the request is not a valid protobuf message: {}", s.message()))
            }
            _ => s,
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

/// A `grpc-timeout` value (up to 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`) as a duration.
fn grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for an error: the same judgement as its HTTP status.
pub(crate) fn status(e: &Error) -> Status {
    let code = match status_of(e).as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        413 => Code::ResourceExhausted,
        400..=499 => Code::InvalidArgument,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.host.loading() == 0,
        }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let service = self.service(&request.get_ref().name, request.metadata())?;
        version(&service, &request.get_ref().version)?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "plinth".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let service = self.service(&request.get_ref().name, request.metadata())?;
        let version = version(&service, &request.get_ref().version)?;
        let (platform, inputs, outputs) = oip::platform(version.info());
        let tensors = |specs: &[plinth_runtime::TensorSpec]| {
            specs
                .iter()
                .map(|t| model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.as_str().into(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: service.name().into(),
            versions: service.versions().iter().map(|v| v.name().to_string()).collect(),
            platform: platform.into(),
            inputs: tensors(inputs),
            outputs: tensors(outputs),
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        // The request's id: `x-request-id` metadata, else the message's own `id`, else a fresh one.
        let given = request.metadata().get(REQUEST_ID).and_then(|v| v.to_str().ok());
        let request_id = self
            .host
            .ids
            .for_candidate(given.or(Some(request.get_ref().id.as_str())));
        let name = &request.get_ref().model_name;
        let service = self
            .host
            .router
            .get(name)
            .ok_or_else(|| status(&self.host.missing("model", name)))?;
        // Refused before it reaches a version: counted as the service's, as over HTTP.
        let started = std::time::Instant::now();
        let refused = |e: Error| status(&self.host.refused(service.name(), started, &request_id, e));
        let credential = request
            .metadata()
            .get(AUTHORIZATION.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        service
            .authorize(&self.host.auth, credential.as_ref())
            .map_err(refused)?;
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout);
        let message = request.into_inner();
        let pinned = (!message.model_version.is_empty()).then(|| message.model_version.clone());
        if let Some(v) = &pinned {
            service.version(v).map_err(refused)?;
        }
        let decoded = convert::request(message).map_err(refused)?;
        let payload = Payload::Oip { decoded, raw: None };
        let scoring = self.host.score(&service, payload, pinned.as_deref(), &request_id, None);
        let scored = match deadline {
            Some(d) => tokio::time::timeout(d, scoring).await.map_err(|_| {
                Status::deadline_exceeded(format!("the client's deadline of {d:?} passed before an answer"))
            })?,
            None => scoring.await,
        };
        let version = scored.version;
        let reply = match (scored.result, version) {
            (Ok(Answer::Tensors { request, outputs }), Some(v)) => {
                Ok(convert::response(service.name(), v.name(), &request, outputs))
            }
            (Ok(Answer::Json(answer)), Some(v)) => convert::script_answer(service.name(), v.name(), &answer),
            (Ok(_), None) => Err(Error::Internal("no version answered".into())),
            (Err(e), _) => Err(e),
        };
        let mut response = Response::new(reply.map_err(|e| status(&e))?);
        if let Ok(id) = request_id.parse() {
            response.metadata_mut().insert(REQUEST_ID, id);
        }
        if let Some(v) = version.and_then(|v| v.name().parse().ok()) {
            response.metadata_mut().insert(VERSION_HEADER, v);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
